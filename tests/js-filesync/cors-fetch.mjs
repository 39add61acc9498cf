// A `fetch` for Node that applies the browser's CORS rules, so that a Node test sees what a page on another
// origin would see: non-simple requests are preceded by a real preflight (OPTIONS) whose answer must allow the
// method and headers, every response must allow the origin, and the caller gets only the CORS-safelisted response
// headers plus the ones the server lists in `Access-Control-Expose-Headers`. An object store that forgets to expose
// `ETag` therefore yields `null` from `response.headers.get("ETag")` here, exactly as in a browser.
//
// Not emulated: credentialed requests (cookies), redirects, and the preflight cache (every request preflights).

const SAFELISTED_REQUEST_HEADERS = new Set(['accept', 'accept-language', 'content-language', 'content-type', 'range'])
const SIMPLE_CONTENT_TYPES = new Set(['application/x-www-form-urlencoded', 'multipart/form-data', 'text/plain'])
const SAFELISTED_RESPONSE_HEADERS = new Set([
  'cache-control',
  'content-language',
  'content-length',
  'content-type',
  'expires',
  'last-modified',
  'pragma',
])
const SIMPLE_METHODS = new Set(['GET', 'HEAD', 'POST'])

const listOf = (value) =>
  (value ?? '')
    .split(',')
    .map((item) => item.trim().toLowerCase())
    .filter((item) => item.length > 0)

/** Header names that make a request non-simple (lowercase, sorted), as a browser computes them. */
const unsafeHeaderNames = (headers) => {
  const names = []
  for (const [name, value] of headers.entries()) {
    if (!SAFELISTED_REQUEST_HEADERS.has(name)) {
      names.push(name)
    } else if (name === 'content-type' && !SIMPLE_CONTENT_TYPES.has(value.split(';')[0].trim().toLowerCase())) {
      names.push(name)
    }
  }
  return names.sort()
}

class CorsError extends TypeError {}

/**
 * @param {string} origin the page origin to pretend, e.g. `http://localhost:5173`
 * @param {{ log: Array<object> }} record every preflight and response check is appended to `record.log`
 */
export const makeCorsFetch = (origin, record = { log: [] }, baseFetch = globalThis.fetch) => {
  const allowsOrigin = (headers) => {
    const allowed = headers.get('access-control-allow-origin')
    return allowed === '*' || allowed === origin
  }

  return async (input, init = {}) => {
    const request = new Request(input, init)
    const url = new URL(request.url)
    if (url.origin === origin) return baseFetch(request)
    const method = request.method.toUpperCase()
    const headers = new Headers(request.headers)
    const unsafe = unsafeHeaderNames(headers)
    const needsPreflight = !SIMPLE_METHODS.has(method) || unsafe.length > 0

    if (needsPreflight) {
      const preflightHeaders = { Origin: origin, 'Access-Control-Request-Method': method }
      if (unsafe.length > 0) preflightHeaders['Access-Control-Request-Headers'] = unsafe.join(',')
      const preflight = await baseFetch(request.url, { method: 'OPTIONS', headers: preflightHeaders })
      await preflight.arrayBuffer()
      const allowedMethods = listOf(preflight.headers.get('access-control-allow-methods')).map((m) => m.toUpperCase())
      const allowedHeaders = listOf(preflight.headers.get('access-control-allow-headers'))
      const entry = {
        kind: 'preflight',
        url: `${url.origin}${url.pathname}`,
        method,
        requestHeaders: unsafe,
        status: preflight.status,
        allowOrigin: preflight.headers.get('access-control-allow-origin'),
        allowMethods: allowedMethods,
        allowHeaders: allowedHeaders,
      }
      record.log.push(entry)
      if (preflight.status < 200 || preflight.status > 299) {
        throw new CorsError(`CORS preflight for ${method} ${entry.url} answered ${preflight.status}`)
      }
      if (!allowsOrigin(preflight.headers)) {
        throw new CorsError(`CORS preflight for ${entry.url}: origin ${origin} not allowed (${entry.allowOrigin})`)
      }
      if (!SIMPLE_METHODS.has(method) && !allowedMethods.includes(method) && !allowedMethods.includes('*')) {
        throw new CorsError(`CORS preflight for ${entry.url}: method ${method} not allowed (${allowedMethods})`)
      }
      for (const name of unsafe) {
        // `*` does not cover Authorization (Fetch standard, CORS-non-wildcard request-header names).
        const byWildcard = allowedHeaders.includes('*') && name !== 'authorization'
        if (!allowedHeaders.includes(name) && !byWildcard) {
          throw new CorsError(`CORS preflight for ${entry.url}: header ${name} not allowed (${allowedHeaders})`)
        }
      }
    }

    headers.set('Origin', origin)
    const response = await baseFetch(request.url, {
      method,
      headers,
      body: method === 'GET' || method === 'HEAD' ? undefined : await request.arrayBuffer(),
    })
    const exposed = listOf(response.headers.get('access-control-expose-headers'))
    record.log.push({
      kind: 'response',
      url: `${url.origin}${url.pathname}`,
      method,
      status: response.status,
      allowOrigin: response.headers.get('access-control-allow-origin'),
      exposeHeaders: exposed,
    })
    if (!allowsOrigin(response.headers)) {
      await response.arrayBuffer()
      throw new CorsError(`CORS: response of ${method} ${url.origin}${url.pathname} does not allow origin ${origin}`)
    }
    const visible = new Headers()
    for (const [name, value] of response.headers.entries()) {
      if (SAFELISTED_RESPONSE_HEADERS.has(name) || exposed.includes(name) || exposed.includes('*')) {
        visible.append(name, value)
      }
    }
    const nullBody = [101, 204, 205, 304].includes(response.status)
    return new Response(nullBody ? null : response.body, {
      status: response.status,
      statusText: response.statusText,
      headers: visible,
    })
  }
}
