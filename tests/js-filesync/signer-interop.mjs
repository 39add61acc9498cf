// The published `makeS3SignerRemoteStorage` of @livestore-filesync/core 0.8.0 against a running `livestore serve`
// (signer under /api, embedded object store under /s3): health, upload, download, delete, and the failures a
// client must see (wrong token, deleted object). Every request goes through a fetch that applies the browser's
// CORS rules for a page on another origin (cors-fetch.mjs), so an ETag the store does not expose is not seen.
//
//   SIGNER_URL=http://127.0.0.1:8787/api TOKEN=secret node signer-interop.mjs
//
// Prints one JSON line on stdout: {"ok":true, ...facts} or {"ok":false,"error":...}; logs go to stderr.
import { createHash, randomBytes } from 'node:crypto'

import { makeS3SignerRemoteStorage, sanitizeStoreId } from '@livestore-filesync/core'
import { Effect, Either } from 'effect'

import { makeCorsFetch } from './cors-fetch.mjs'

const SIGNER_URL = process.env.SIGNER_URL
const TOKEN = process.env.TOKEN
const ORIGIN = process.env.PAGE_ORIGIN ?? 'http://localhost:5173'
const STORE_ID = process.env.STORE_ID ?? 'gallery store/ä'

const log = (...args) => console.error('[signer-interop]', ...args)
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')
const run = (effect) => Effect.runPromise(Effect.either(effect))
const describe = (error) => {
  const causes = []
  for (let current = error; current && causes.length < 4; current = current.cause) {
    causes.push(String(current.message ?? current))
  }
  return causes.join(' <- ')
}

const main = async () => {
  if (!SIGNER_URL) throw new Error('SIGNER_URL is required')
  // The client calls the global fetch; replace it with the CORS-enforcing one for the whole run.
  const nativeFetch = globalThis.fetch
  const cors = { log: [] }
  globalThis.fetch = makeCorsFetch(ORIGIN, cors, nativeFetch)

  // `console.log("checkHealth", ok)` in the client would pollute stdout: keep stdout for the result line.
  console.log = (...args) => console.error(...args)

  const remote = makeS3SignerRemoteStorage({ signerBaseUrl: `${SIGNER_URL}/`, authToken: TOKEN })
  const facts = {}

  facts.health = await Effect.runPromise(remote.checkHealth())

  // Bytes that are not valid UTF-8 and not a multiple of any chunk size.
  const bytes = new Uint8Array(Buffer.concat([randomBytes(300_001), Buffer.from([0, 0xff, 0xfe, 0x80])]))
  const hash = sha256(bytes)
  const key = `${sanitizeStoreId(STORE_ID)}/${hash}`
  facts.key = key
  facts.size = bytes.length
  facts.sha256 = hash

  const file = new File([bytes], hash, { type: 'image/png' })
  const uploaded = await run(remote.upload(file, { key }))
  if (Either.isLeft(uploaded)) throw new Error(`upload failed: ${describe(uploaded.left)}`)
  facts.uploadKey = uploaded.right.key
  facts.etag = uploaded.right.etag ?? null
  log('uploaded', key, 'etag', facts.etag)

  // The signer's existence check (our extension) tells what the store holds for the key.
  const head = await nativeFetch(`${SIGNER_URL}/v1/head`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ key }),
  })
  facts.head = await head.json()

  // Download as FileSync does it: streamed, with progress. (Without `onProgress` the 0.8.0 client takes a reader
  // of the body and then calls `arrayBuffer()` on it, which always fails with "Body is unusable"; FileSync always
  // passes a progress callback, so only that path is used by real apps.)
  const progress = []
  const downloaded = await run(remote.download(key, { onProgress: (p) => progress.push(p) }))
  if (Either.isLeft(downloaded)) throw new Error(`download failed: ${describe(downloaded.left)}`)
  const back = new Uint8Array(await downloaded.right.arrayBuffer())
  facts.downloadedSize = back.length
  facts.downloadedSha256 = sha256(back)
  facts.downloadedType = downloaded.right.type
  facts.downloadedName = downloaded.right.name
  facts.progressEvents = progress.length
  facts.progressLast = progress.at(-1) ?? null
  const plain = await run(remote.download(key))
  facts.plainDownload = Either.isLeft(plain) ? describe(plain.left) : 'ok'

  const url = await run(remote.getDownloadUrl(key))
  if (Either.isLeft(url)) throw new Error(`getDownloadUrl failed: ${describe(url.left)}`)
  facts.downloadUrl = url.right

  const deleted = await run(remote.delete(key))
  facts.deleted = Either.isRight(deleted) ? true : describe(deleted.left)
  const afterDelete = await run(remote.download(key))
  facts.downloadAfterDelete = Either.isLeft(afterDelete) ? describe(afterDelete.left) : 'still there'
  const deletedAgain = await run(remote.delete(key))
  facts.deleteAgain = Either.isRight(deletedAgain) ? true : describe(deletedAgain.left)

  const intruder = makeS3SignerRemoteStorage({ signerBaseUrl: SIGNER_URL, authToken: 'not-a-valid-token' })
  const refused = await run(intruder.upload(new File([bytes.slice(0, 10)], 'x'), { key }))
  facts.wrongToken = Either.isLeft(refused) ? describe(refused.left) : 'accepted'
  const anonymous = makeS3SignerRemoteStorage({ signerBaseUrl: SIGNER_URL })
  const anonymousRefused = await run(anonymous.download(key))
  facts.noToken = Either.isLeft(anonymousRefused) ? describe(anonymousRefused.left) : 'accepted'

  facts.cors = cors.log
  return facts
}

main().then(
  (facts) => {
    process.stdout.write(`${JSON.stringify({ ok: true, ...facts })}\n`)
    process.exit(0)
  },
  (error) => {
    process.stdout.write(`${JSON.stringify({ ok: false, error: describe(error) })}\n`)
    process.exit(1)
  },
)
