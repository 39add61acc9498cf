// A minimal application backend for the gallery: people sign in with a name and get a session cookie, and
// `livestore serve` asks this backend (its connect hook) whether a request's cookie belongs to a signed-in person.
// Plain Node, no dependencies: the point is what a backend in any language has to do.
//
//   LIVESTORE_HOOKS_SECRET=... node login-backend.mjs --port 8788 --app http://127.0.0.1:8787/
//
// Routes:
//   GET  /login            a sign-in form
//   POST /login            name=<who> -> sets `gallery_session` (HttpOnly, SameSite=Lax) and redirects to the app
//   POST /logout           forgets the session
//   POST /hooks/connect    livestore serve's connect hook: checks the signature, then the cookie it forwards
//   GET  /calls            the connect hook calls so far: transport, store, decision (for tests)
//
// Cookies belong to a host, not a port, so a session set here (127.0.0.1:8788) goes along with the app's requests
// to livestore serve (127.0.0.1:8787): the WebSocket upgrade, HTTP-transport requests and signer calls.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import http from 'node:http'

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, index, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[index + 1]])
    return pairs
  }, []),
)
const PORT = Number(args.port ?? 8788)
const APP = args.app ?? 'http://127.0.0.1:8787/'
const SECRET = process.env.LIVESTORE_HOOKS_SECRET
if (!SECRET) throw new Error('LIVESTORE_HOOKS_SECRET is required: the connect hook checks every call against it')
const SESSION_SECONDS = Number(args['session-seconds'] ?? 3600)
const COOKIE = 'gallery_session'

/** session id -> { name, expiresAt (Unix seconds) } */
const sessions = new Map()
/** What the connect hook was asked and answered, oldest first. */
const calls = []

const readBody = (request) =>
  new Promise((resolve, reject) => {
    const chunks = []
    let size = 0
    request.on('data', (chunk) => {
      size += chunk.length
      if (size > 64 * 1024) reject(new Error('body too large'))
      else chunks.push(chunk)
    })
    request.on('end', () => resolve(Buffer.concat(chunks)))
    request.on('error', reject)
  })

const cookieValue = (header, name) =>
  (header ?? '')
    .split(';')
    .map((part) => part.trim().split('='))
    .find(([key]) => key === name)?.[1]

/** The signature livestore serve sends: `sha256=<hex HMAC-SHA256 of the raw body>`, compared in constant time. */
const signedByServer = (body, header) => {
  const expected = Buffer.from(`sha256=${createHmac('sha256', SECRET).update(body).digest('hex')}`)
  const given = Buffer.from(String(header ?? ''))
  return given.length === expected.length && timingSafeEqual(given, expected)
}

const json = (response, status, value) => {
  response.writeHead(status, { 'content-type': 'application/json' })
  response.end(JSON.stringify(value))
}

const connectHook = async (request, response) => {
  const body = await readBody(request)
  if (!signedByServer(body, request.headers['x-livestore-signature'])) {
    return json(response, 401, { error: 'bad signature' })
  }
  const call = JSON.parse(body.toString('utf8'))
  // A replayed call is refused: the server stamps each one.
  if (typeof call.sentAt === 'number' && Math.abs(Date.now() - call.sentAt) > 60_000) {
    return json(response, 401, { error: 'stale call' })
  }
  const session = sessions.get(cookieValue(call.headers?.cookie, COOKIE))
  const now = Math.floor(Date.now() / 1000)
  const allowed = Boolean(session && session.expiresAt > now)
  calls.push({ transport: call.transport, storeId: call.storeId, allowed, name: allowed ? session.name : null })
  if (!allowed) {
    return json(response, 200, { allow: false, reason: 'not signed in' })
  }
  json(response, 200, {
    allow: true,
    subject: session.name,
    claims: { name: session.name },
    expiresAt: session.expiresAt,
  })
}

const loginForm = (search) => `<!doctype html><meta charset="utf-8"><title>Sign in</title>
<form method="post" action="/login${search}"><label>Name <input name="name" data-testid="name" required></label>
<button data-testid="sign-in">Sign in</button></form>`

const server = http.createServer(async (request, response) => {
  try {
    const url = new URL(request.url, `http://${request.headers.host}`)
    if (request.method === 'GET' && url.pathname === '/login') {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      return response.end(loginForm(url.search.replace(/[<>"]/g, '')))
    }
    if (request.method === 'POST' && url.pathname === '/login') {
      const name = new URLSearchParams((await readBody(request)).toString('utf8')).get('name')?.trim()
      if (!name || !/^[A-Za-z0-9_-]{1,64}$/.test(name)) return json(response, 400, { error: 'bad name' })
      const id = randomBytes(32).toString('hex')
      sessions.set(id, { name, expiresAt: Math.floor(Date.now() / 1000) + SESSION_SECONDS })
      // Only back into the app: a `next` elsewhere would make this an open redirect.
      const asked = url.searchParams.get('next')
      const next = asked?.startsWith(`${new URL(APP).origin}/`) ? asked : APP
      response.writeHead(303, {
        'set-cookie': `${COOKIE}=${id}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${SESSION_SECONDS}`,
        location: next,
      })
      return response.end()
    }
    if (request.method === 'POST' && url.pathname === '/logout') {
      sessions.delete(cookieValue(request.headers.cookie, COOKIE))
      response.writeHead(303, { 'set-cookie': `${COOKIE}=; Path=/; Max-Age=0`, location: '/login' })
      return response.end()
    }
    if (request.method === 'POST' && url.pathname === '/hooks/connect') return await connectHook(request, response)
    if (request.method === 'GET' && url.pathname === '/calls') return json(response, 200, calls)
    json(response, 404, { error: 'not found' })
  } catch (error) {
    json(response, 500, { error: String(error.message ?? error) })
  }
})

server.listen(PORT, '127.0.0.1', () => console.error(`login backend on http://127.0.0.1:${PORT}`))
