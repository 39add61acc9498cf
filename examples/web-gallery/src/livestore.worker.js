// LiveStore's leader worker: owns the OPFS databases and the WebSocket to `livestore serve`.
//
// The sync URL is the page's own origin (the page is served by `livestore serve --static-dir`), or the `server`
// the page put into the sync payload (`?server=http://host:port`, e.g. when the page runs under `vite dev`).
import { makeWorker } from '@livestore/adapter-web/worker'
import { makeWsSync } from '@livestore/sync-cf/client'

import { schema } from './schema.js'

const syncUrl = (payload) => {
  const origin = typeof payload?.server === 'string' ? payload.server : self.location.origin
  return origin.replace(/^http/, 'ws')
}

makeWorker({
  schema,
  sync: { backend: (args) => makeWsSync({ url: syncUrl(args.payload) })(args) },
})
