// LiveStore's leader worker: owns the OPFS databases and the connection to `livestore serve`.
//
// The sync URL is the page's own origin (the page is served by `livestore serve --static-dir`), or the `server`
// the page put into the sync payload (`?server=http://host:port`, e.g. when the page runs under `vite dev`). The
// transport is the WebSocket unless the payload says `transport: 'http'` (`?transport=http`): then requests are
// plain `fetch`es, polled every second for new events. Either way a session cookie of the page's origin goes along,
// for a server whose connect hook signs users in by cookie.
import { makeWorker } from '@livestore/adapter-web/worker'
import { makeHttpSync, makeWsSync } from '@livestore/sync-cf/client'

import { schema } from './schema.js'

const serverOrigin = (payload) =>
  typeof payload?.server === 'string' ? payload.server : self.location.origin

const backend = (args) =>
  args.payload?.transport === 'http'
    ? makeHttpSync({ url: serverOrigin(args.payload), livePull: { pollInterval: 1_000 } })(args)
    : makeWsSync({ url: serverOrigin(args.payload).replace(/^http/, 'ws') })(args)

makeWorker({ schema, sync: { backend } })
