// End-to-end test of signing in by session cookie, in Chromium: the web gallery (served by `livestore serve
// --static-dir`) on a server whose connect hook is `examples/web-gallery/login-backend.mjs`. Three devices:
// - A signs in as "ann" on the backend's form and syncs over the WebSocket transport;
// - B signs in as "ann" too and syncs over the HTTP transport;
// - C never signs in.
// A picture A adds reaches B with identical bytes (sync, signer and object store all through the cookie); a
// picture C adds reaches nobody. Then, from the backend's own origin (listed in `cors.allowed_origins`), a
// credentialed `fetch` to the sync HTTP transport works with A's cookie and is refused (403, readable) without one;
// from an origin that is not listed the browser cannot read the answer at all.
//
// The caller owns both servers. The last stdout line is the result: `{"ok":true, ...}` or `{"ok":false,"error"}`.
//
//   BASE_URL=http://127.0.0.1:8787 LOGIN_URL=http://127.0.0.1:8788 STORE_ID=s ARTIFACTS=dir node cookie-login-e2e.mjs
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'

import { chromium } from 'playwright-core'

import { testPicture } from './png.mjs'

const BASE_URL = process.env.BASE_URL
const LOGIN_URL = process.env.LOGIN_URL
const STORE_ID = process.env.STORE_ID ?? `cookie-e2e-${Date.now()}`
const ARTIFACTS = process.env.ARTIFACTS ?? path.resolve('artifacts')
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'
const STEP_TIMEOUT = Number(process.env.STEP_TIMEOUT_MS ?? 60_000)

const started = Date.now()
const log = (...args) => console.error(`[cookie-e2e +${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args)
const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const waitFor = async (what, probe, timeout = STEP_TIMEOUT) => {
  const deadline = Date.now() + timeout
  for (;;) {
    const value = await probe()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`)
    await sleep(100)
  }
}

const cards = (page) => page.evaluate(() => window.gallery.cards())
const cardByHash = async (page, hash) => (await cards(page)).find((card) => card.contentHash === hash)

const appUrl = (transport) => `${BASE_URL}/?${new URLSearchParams({ store: STORE_ID, transport })}`

/** Opens the gallery on a fresh device, signed in as `name` through the backend's form (or not at all). */
const openDevice = async (browser, name, user, transport) => {
  const context = await browser.newContext()
  const page = await context.newPage()
  page.on('console', (message) => log(`${name} console:`, message.text()))
  if (user) {
    await page.goto(`${LOGIN_URL}/login?${new URLSearchParams({ next: appUrl(transport) })}`)
    await page.fill('[data-testid=name]', user)
    await Promise.all([page.waitForURL(`${BASE_URL}/**`), page.click('[data-testid=sign-in]')])
  } else {
    await page.goto(appUrl(transport))
  }
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: STEP_TIMEOUT })
  return { name, context, page }
}

const ping = JSON.stringify({
  _tag: 'Request',
  id: '1',
  tag: 'SyncHttpRpc.Ping',
  payload: { storeId: STORE_ID },
  headers: [],
})

/** A credentialed fetch to the sync HTTP transport from `page`'s origin: status and body, or the error. */
const credentialedPing = (page) =>
  page.evaluate(
    async ({ url, body }) => {
      try {
        const response = await fetch(url, { method: 'POST', credentials: 'include', body })
        return { status: response.status, body: await response.text() }
      } catch (error) {
        return { error: String(error) }
      }
    },
    { url: `${BASE_URL}/?storeId=${STORE_ID}&transport=http`, body: ping },
  )

const main = async () => {
  if (!BASE_URL || !LOGIN_URL) throw new Error('BASE_URL and LOGIN_URL are required')
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  const facts = { storeId: STORE_ID }
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
  try {
    const a = await openDevice(browser, 'A', 'ann', 'ws')
    const b = await openDevice(browser, 'B', 'ann', 'http')
    const c = await openDevice(browser, 'C', null, 'ws')
    log('devices open')

    // C (no session) adds a picture first; then A adds one. B seeing A's proves sync works, after which C's is
    // known to have had every chance to arrive.
    const stranger = testPicture(48, 32, 200, 7)
    await c.page.setInputFiles('[data-testid=file-input]', { name: 'c.png', mimeType: 'image/png', buffer: stranger })
    const picture = testPicture(64, 48, 30, 3)
    const hash = sha256(picture)
    await a.page.setInputFiles('[data-testid=file-input]', { name: 'a.png', mimeType: 'image/png', buffer: picture })
    await waitFor('A: uploaded', async () => (await cardByHash(a.page, hash))?.status === 'uploaded')
    const arrived = await waitFor('B: the picture, downloaded', async () => {
      const card = await cardByHash(b.page, hash)
      return card?.status === 'uploaded' || card?.status === 'downloaded' ? card : undefined
    })
    facts.bSha256 = await waitFor('B: local bytes', () => b.page.evaluate((id) => window.gallery.localSha256(id), arrived.id))
    facts.pictureSha256 = hash
    facts.strangerSha256 = sha256(stranger)
    facts.cardsSeenByA = (await cards(a.page)).map((card) => card.contentHash)
    facts.cardsSeenByB = (await cards(b.page)).map((card) => card.contentHash)
    facts.cStatus = await c.page.evaluate(() => window.gallery.status())
    await a.page.screenshot({ path: path.join(ARTIFACTS, 'cookie-a.png') })
    await c.page.screenshot({ path: path.join(ARTIFACTS, 'cookie-c.png') })

    // Credentialed CORS from the backend's origin (listed) with and without the cookie, and from an unlisted one.
    await a.page.goto(`${LOGIN_URL}/login`)
    facts.corsWithCookie = await credentialedPing(a.page)
    await c.page.goto(`${LOGIN_URL}/login`)
    facts.corsWithoutCookie = await credentialedPing(c.page)
    const unlisted = new URL(LOGIN_URL)
    unlisted.hostname = 'localhost'
    await c.page.goto(`${unlisted.origin}/login`)
    facts.corsUnlisted = await credentialedPing(c.page)
    facts.hookCalls = await (await fetch(`${LOGIN_URL}/calls`)).json()
    process.stdout.write(`${JSON.stringify({ ok: true, ...facts })}\n`)
  } finally {
    await browser.close()
  }
}

main().catch((error) => {
  log(error.stack ?? error)
  process.stdout.write(`${JSON.stringify({ ok: false, error: String(error.message ?? error) })}\n`)
  process.exitCode = 1
})
