// End-to-end test of examples/web-gallery in Chromium, as two independent devices (two browser contexts: separate
// OPFS, separate LiveStore clients), against a `livestore serve --static-dir examples/web-gallery/dist` that the
// caller runs. Device A loads the page from the server's own origin; device B loads it from `localhost` and talks
// to the server on `127.0.0.1` (`?server=`), so its signer and object-store requests are cross-origin and go
// through CORS for real.
//
// The caller owns the server. Half-way through, this script asks it on stdout to stop the server
// (`{"request":"stop"}`) and later to start it again on the same port and data dir (`{"request":"start"}`), and
// waits for one line on stdin after each. The last stdout line is the result: `{"ok":true, ...}` or
// `{"ok":false,"error":...}`. Logs go to stderr.
//
//   BASE_URL=http://127.0.0.1:8787 TOKEN=t STORE_ID=s ARTIFACTS=dir [DOCS_SCREENSHOT=file] node gallery-e2e.mjs
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'

import { chromium } from 'playwright-core'

import { testPicture } from './png.mjs'

const BASE_URL = process.env.BASE_URL
const TOKEN = process.env.TOKEN ?? ''
const STORE_ID = process.env.STORE_ID ?? `gallery-e2e-${Date.now()}`
const ARTIFACTS = process.env.ARTIFACTS ?? path.resolve('artifacts')
const DOCS_SCREENSHOT = process.env.DOCS_SCREENSHOT
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'
const STEP_TIMEOUT = Number(process.env.STEP_TIMEOUT_MS ?? 60_000)

const started = Date.now()
const log = (...args) => console.error(`[gallery-e2e +${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args)
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// ---------------------------------------------------------------------------------------------------------------
// Talking to the caller (who owns the server)

const stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const askCaller = async (request) => {
  process.stdout.write(`${JSON.stringify({ request })}\n`)
  const { value, done } = await stdinLines.next()
  if (done) throw new Error(`caller closed stdin instead of answering ${request}`)
  const answer = JSON.parse(value)
  if (answer.done !== request) throw new Error(`caller answered ${value} to ${request}`)
}

// ---------------------------------------------------------------------------------------------------------------
// Page helpers

const waitFor = async (what, probe, timeout = STEP_TIMEOUT) => {
  const deadline = Date.now() + timeout
  let last
  for (;;) {
    last = await probe()
    if (last) return last
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(100)
  }
}

const cards = (page) => page.evaluate(() => window.gallery.cards())
const cardByHash = async (page, hash) => (await cards(page)).find((card) => card.contentHash === hash)

const waitForStatus = (device, hash, status) =>
  waitFor(`${device.name}: ${hash.slice(0, 8)} ${status}`, async () => {
    const card = await cardByHash(device.page, hash)
    return card?.status === status ? card : undefined
  })

const waitForGone = (device, hash) =>
  waitFor(`${device.name}: ${hash.slice(0, 8)} gone`, async () => !(await cardByHash(device.page, hash)))

const addFile = async (device, name, bytes) => {
  await device.page.setInputFiles('[data-testid=file-input]', { name, mimeType: 'image/png', buffer: bytes })
}

const signer = async (route, body) => {
  const response = await fetch(`${BASE_URL}/api/v1/${route}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...(TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {}) },
    body: JSON.stringify(body),
  })
  return response.json()
}

const screenshot = async (device, name) => {
  const file = path.join(ARTIFACTS, `${name}.png`)
  await device.page.screenshot({ path: file })
  return file
}

// ---------------------------------------------------------------------------------------------------------------

const main = async () => {
  if (!BASE_URL) throw new Error('BASE_URL is required')
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  const facts = { storeId: STORE_ID, timings: {}, screenshots: [] }
  const timed = async (name, run) => {
    const t0 = Date.now()
    const result = await run()
    facts.timings[name] = Date.now() - t0
    log(`${name}: ${facts.timings[name]} ms`)
    return result
  }

  const base = new URL(BASE_URL)
  const query = new URLSearchParams({ store: STORE_ID, ...(TOKEN ? { token: TOKEN } : {}) })
  const crossOrigin = new URL(BASE_URL)
  crossOrigin.hostname = 'localhost'
  const urls = {
    A: `${base.origin}/?${query}`,
    B: `${crossOrigin.origin}/?${new URLSearchParams({ ...Object.fromEntries(query), server: base.origin })}`,
  }

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  facts.browserVersion = browser.version()
  const devices = {}
  try {
    for (const name of ['A', 'B']) {
      const context = await browser.newContext({ viewport: { width: 1100, height: 720 } })
      const page = await context.newPage()
      const device = { name, context, page, errors: [] }
      page.on('pageerror', (error) => {
        device.errors.push(String(error?.message ?? error))
        log(`${name} pageerror`, error?.message ?? error)
      })
      page.on('console', (message) => {
        if (message.type() === 'error') log(`${name} console.error`, message.text().slice(0, 300))
      })
      devices[name] = device
    }
    const { A, B } = devices

    await timed('bootBoth', () =>
      Promise.all(
        [A, B].map(async (device) => {
          await device.page.goto(urls[device.name])
          await device.page.waitForSelector('body[data-ready=true]', { timeout: STEP_TIMEOUT })
          await waitFor(`${device.name} sync connected`, () =>
            device.page.evaluate(() => window.gallery.status().networkConnected),
          )
        }),
      ),
    )
    facts.origins = { A: await A.page.evaluate(() => location.origin), B: await B.page.evaluate(() => location.origin) }
    facts.signers = {
      A: await A.page.evaluate(() => window.gallery.signerBaseUrl),
      B: await B.page.evaluate(() => window.gallery.signerBaseUrl),
    }

    // 1. A uploads a picture; B sees it and downloads identical bytes.
    const first = testPicture(960, 640, 200, 1)
    const firstHash = sha256(first)
    await addFile(A, 'lagoon.png', first)
    const firstOnA = await timed('uploadOnA', () => waitForStatus(A, firstHash, 'uploaded'))
    await timed('propagateToB', () => waitForStatus(B, firstHash, 'uploaded'))
    const firstOnB = await cardByHash(B.page, firstHash)
    facts.first = {
      name: firstOnB.name,
      expectedSha256: firstHash,
      sha256OnA: await A.page.evaluate((id) => window.gallery.localSha256(id), firstOnA.id),
      sha256OnB: await B.page.evaluate((id) => window.gallery.localSha256(id), firstOnB.id),
      sameIdOnBoth: firstOnA.id === firstOnB.id,
      transitionsA: await A.page.evaluate((id) => window.gallery.transitions(id), firstOnA.id),
      transitionsB: await B.page.evaluate((id) => window.gallery.transitions(id), firstOnB.id),
      remote: await signer('head', { key: `${STORE_ID}/${firstHash}` }),
    }

    // B opens it: the viewer shows the decoded picture.
    await B.page.locator(`[data-file-id="${firstOnB.id}"] [data-testid=open-file]`).click()
    facts.first.viewerSize = await waitFor('B viewer image', () =>
      B.page.evaluate(() => {
        const image = document.querySelector('[data-testid=viewer-image]')
        return image.complete && image.naturalWidth > 0 ? [image.naturalWidth, image.naturalHeight] : undefined
      }),
    )
    facts.screenshots.push(await screenshot(B, '01-b-viewer'))
    await B.page.locator('[data-testid=viewer-close]').click()

    // 2. B uploads one too; A gets it (the other direction, and B's cross-origin upload).
    const second = testPicture(800, 600, 20, 2)
    const secondHash = sha256(second)
    await addFile(B, 'sunset.png', second)
    await timed('uploadOnB', () => waitForStatus(B, secondHash, 'uploaded'))
    const secondOnA = await timed('propagateToA', () => waitForStatus(A, secondHash, 'uploaded'))
    facts.second = {
      expectedSha256: secondHash,
      sha256OnA: await A.page.evaluate((id) => window.gallery.localSha256(id), secondOnA.id),
      transitionsB: await B.page.evaluate(
        async (hash) => window.gallery.transitions(window.gallery.cards().find((c) => c.contentHash === hash).id),
        secondHash,
      ),
    }
    facts.screenshots.push(await screenshot(A, '02-a-two-pictures'), await screenshot(B, '02-b-two-pictures'))

    // 3. A deletes the first picture: gone on both devices, from B's OPFS and from the object store.
    await A.page.locator(`[data-file-id="${firstOnA.id}"] [data-testid=delete-file]`).click()
    await timed('deleteOnA', () => waitForGone(A, firstHash))
    await timed('deletePropagateToB', () => waitForGone(B, firstHash))
    const firstPath = `livestore-filesync-files/${STORE_ID}/${firstHash}`
    facts.afterDelete = {
      localOnB: await waitFor('B local copy removed', async () =>
        (await B.page.evaluate((p) => window.gallery.localSha256AtPath(p), firstPath)) === null ? 'removed' : undefined,
      ),
      localOnA: await A.page.evaluate((p) => window.gallery.localSha256AtPath(p), firstPath),
      remote: await waitFor('remote object deleted', async () => {
        const head = await signer('head', { key: `${STORE_ID}/${firstHash}` })
        return head.exists === false ? head : undefined
      }),
    }

    // 4. Offline: the server goes away, A adds a picture (local-first: it shows at once), the server comes back
    //    on the same port and data dir, and the picture syncs to B on its own.
    await askCaller('stop')
    await waitFor('A notices the server is gone', () =>
      A.page.evaluate(() => !window.gallery.status().networkConnected),
    )
    const third = testPicture(900, 600, 120, 3)
    const thirdHash = sha256(third)
    await addFile(A, 'forest.png', third)
    const thirdOffline = await waitFor('A shows the offline picture', () => cardByHash(A.page, thirdHash))
    await sleep(1500)
    facts.offline = {
      statusOnA: (await cardByHash(A.page, thirdHash)).status,
      labelOnA: (await cardByHash(A.page, thirdHash)).label,
      onB: (await cardByHash(B.page, thirdHash)) ?? null,
      pills: await A.page.evaluate(() => ({
        sync: document.querySelector('[data-testid=sync-status]').textContent,
        files: document.querySelector('[data-testid=files-status]').textContent,
      })),
    }
    facts.screenshots.push(await screenshot(A, '03-a-offline'))
    await askCaller('start')
    await timed('offlineUploadAfterRestart', () => waitForStatus(A, thirdHash, 'uploaded'))
    const thirdOnB = await timed('offlinePropagateToB', () => waitForStatus(B, thirdHash, 'uploaded'))
    facts.third = {
      expectedSha256: thirdHash,
      sha256OnA: await A.page.evaluate((id) => window.gallery.localSha256(id), thirdOffline.id),
      sha256OnB: await B.page.evaluate((id) => window.gallery.localSha256(id), thirdOnB.id),
      transitionsA: await A.page.evaluate((id) => window.gallery.transitions(id), thirdOffline.id),
      remote: await signer('head', { key: `${STORE_ID}/${thirdHash}` }),
    }

    // Final state: both devices show the same two pictures.
    await waitFor('both devices in sync', async () => {
      const [a, b] = await Promise.all([cards(A.page), cards(B.page)])
      const key = (list) =>
        list
          .map((card) => `${card.contentHash}:${card.status}`)
          .sort()
          .join(',')
      return a.length === 2 && key(a) === key(b) && a.every((card) => card.status === 'uploaded')
    })
    facts.final = { A: await cards(A.page), B: await cards(B.page) }
    // Let the thumbnails decode before the last pictures.
    await sleep(500)
    facts.screenshots.push(await screenshot(A, '04-a-final'), await screenshot(B, '04-b-final'))
    if (DOCS_SCREENSHOT) {
      // A picture for the docs, not asserted: A adds three more pictures at once, B is caught while they arrive,
      // so it shows the sync states side by side.
      try {
        const more = [
          ['harbour.png', testPicture(640, 480, 180, 4)],
          ['meadow.png', testPicture(640, 480, 90, 5)],
          ['dunes.png', testPicture(640, 480, 35, 6)],
        ]
        await A.page.setInputFiles(
          '[data-testid=file-input]',
          more.map(([name, buffer]) => ({ name, mimeType: 'image/png', buffer })),
        )
        // Best moment: all five cards on B and as many different states as possible.
        const distinct = async () => {
          const list = await cards(B.page)
          return list.length === 5 ? new Set(list.map((card) => card.status)).size : 0
        }
        let best = 0
        const deadline = Date.now() + 10_000
        while (Date.now() < deadline) {
          const count = await distinct()
          if (count > best) {
            best = count
            await B.page.screenshot({ path: DOCS_SCREENSHOT })
          }
          if (count >= 3) break
          await sleep(40)
        }
        if (best === 0) throw new Error('the pictures did not reach B')
        facts.docsScreenshotStates = best
        facts.docsScreenshot = DOCS_SCREENSHOT
      } catch (error) {
        log('docs screenshot skipped:', error?.message ?? error)
      }
    }
    facts.pageErrors = { A: A.errors, B: B.errors }
    return facts
  } finally {
    await browser.close().catch(() => {})
  }
}

main().then(
  (facts) => {
    facts.totalMs = Date.now() - started
    process.stdout.write(`${JSON.stringify({ ok: true, ...facts })}\n`)
    process.exit(0)
  },
  (error) => {
    log('failed:', error?.stack ?? error)
    process.stdout.write(`${JSON.stringify({ ok: false, error: String(error?.message ?? error) })}\n`)
    process.exit(1)
  },
)
