#!/usr/bin/env node
// JSON-lines driver for real LiveStore 0.4.0 Node clients.
//
// stdin : one JSON command per line   {"id":1,"cmd":"open","name":"A",...}
// stdout: exactly one JSON response line per command
//         {"id":1,"ok":true,"result":...}  or  {"id":1,"ok":false,"error":"..."}
// stderr: everything else (LiveStore / Effect logs, driver diagnostics).
//
// See README.md in this folder for the full command list.

import { Console } from 'node:console'
import fs from 'node:fs'
import path from 'node:path'
import readline from 'node:readline'

import { WebSocket as WsWebSocket } from 'ws'

// ---------------------------------------------------------------------------
// 1. stdout guard: only this driver's responses may reach stdout.
//    LiveStore has stray console.log calls and its default Effect logger prints
//    to the console, so both console.* and process.stdout.write are redirected
//    to stderr before any LiveStore module is loaded.
// ---------------------------------------------------------------------------
const writeStdout = process.stdout.write.bind(process.stdout)
process.stdout.write = (chunk, encoding, cb) => process.stderr.write(chunk, encoding, cb)
const stderrConsole = new Console({ stdout: process.stderr, stderr: process.stderr })
for (const method of ['log', 'info', 'debug', 'warn', 'error', 'trace', 'dir', 'dirxml', 'table', 'group', 'groupEnd', 'time', 'timeEnd', 'timeLog', 'count', 'assert']) {
  if (typeof stderrConsole[method] === 'function') console[method] = stderrConsole[method].bind(stderrConsole)
}

// 2. Node 20 has no global WebSocket; the sync-cf WS client needs one.
if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WsWebSocket

// 3. HTTP transport fix for Node 20: @effect/platform-node pulls in the npm `undici` 7.x
//    package, whose global.js claims the shared global-dispatcher symbol if nobody has yet.
//    Node 20's built-in fetch would then dispatch through npm undici's Agent, whose strict
//    validator rejects the duplicated "N, N" content-length that the built-in fetch produces
//    for Effect's explicit content-length header -> "invalid content-length header" and the
//    HTTP transport never works. Initialising the built-in fetch first makes it own the symbol.
await fetch('data:text/plain,init').then((r) => r.arrayBuffer()).catch(() => {})

// 4. Load LiveStore only now (dynamic imports run after the guards above).
const { createStorePromise, makeShutdownDeferred, StoreInternalsSymbol, Schema } = await import('@livestore/livestore')
const { makeAdapter } = await import('@livestore/adapter-node')
const { makeWsSync, makeHttpSync } = await import('@livestore/sync-cf/client')
const { Deferred, Effect, LogLevel } = await import('effect')
const { FileSystem } = await import('@effect/platform')
const { loadSqlite3Wasm } = await import('@livestore/sqlite-wasm/load-wasm')
const { sqliteDbFactory } = await import('@livestore/sqlite-wasm/node')
const { schema, events, tables } = await import('./todo-schema.mjs')

const log = (...args) => process.stderr.write(`[driver] ${args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}\n`)

const eventDefsByName = new Map(Object.values(events).map((def) => [def.name, def]))
const DATE_SCHEMAS = new Set([Schema.Date, Schema.DateFromString])
const EVENTLOG_FILE = 'eventlog@6.db'

/** name -> { store, storeId, opts, status: { shutdown, reason, error } } */
const clients = new Map()

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const errorMessage = (err) => {
  if (err === undefined || err === null) return String(err)
  if (typeof err === 'string') return err
  const tag = err._tag ? `${err._tag}: ` : ''
  const msg = err.message ?? (typeof err.toString === 'function' ? err.toString() : JSON.stringify(err))
  return `${tag}${msg}`
}

const getClient = (name, { mustBeOpen = true } = {}) => {
  const c = clients.get(name)
  if (c === undefined) throw new Error(`unknown client '${name}'`)
  if (mustBeOpen && c.status.shutdown) {
    const why = [c.status.reason, c.status.error].filter(Boolean).join(': ')
    throw new Error(`client '${name}' is shut down${why ? ` (${why})` : ''}`)
  }
  return c
}

const leaderOf = (store) => store[StoreInternalsSymbol].clientSession.leaderThread

/** Accept ISO strings (the wire encoding) and epoch ms numbers for Schema.Date fields. */
const normalizeArgs = (def, args) => {
  const fields = def.schema?.fields
  if (fields === undefined || args === null || typeof args !== 'object') return args
  const out = { ...args }
  for (const [key, field] of Object.entries(fields)) {
    if (DATE_SCHEMAS.has(field) && typeof out[key] === 'number') out[key] = new Date(out[key]).toISOString()
  }
  return out
}

const buildEvent = ({ name, args }) => {
  const def = eventDefsByName.get(name)
  if (def === undefined) throw new Error(`unknown event '${name}' (known: ${[...eventDefsByName.keys()].join(', ')})`)
  // Args arrive in encoded (JSON) form; decode them to the schema's Type (e.g. ISO string -> Date).
  const decoded = Schema.decodeUnknownSync(def.schema)(normalizeArgs(def, args ?? {}))
  return def(decoded)
}

const seqToString = (s) => {
  const r = s.rebaseGeneration > 0 ? `r${s.rebaseGeneration}` : ''
  return s.client === 0 ? `e${s.global}${r}` : `e${s.global}.${s.client}${r}`
}

let makeSqliteDbPromise
const getMakeSqliteDb = () => {
  makeSqliteDbPromise ??= (async () => {
    const sqlite3 = await loadSqlite3Wasm()
    return Effect.runPromise(sqliteDbFactory({ sqlite3 }).pipe(Effect.provide(FileSystem.layerNoop({}))))
  })()
  return makeSqliteDbPromise
}

/** Reads rows from an eventlog database image (bytes of eventlog@6.db). */
const readEventlogImage = async (bytes, { includePending }) => {
  const makeDb = await getMakeSqliteDb()
  const db = await Effect.runPromise(makeDb({ _tag: 'in-memory' }))
  try {
    db.import(bytes)
    const head = db.select('SELECT head, backendId FROM __livestore_sync_status ORDER BY head DESC LIMIT 1')[0] ?? {
      head: 0,
      backendId: null,
    }
    const rows = db.select(
      `SELECT seqNumGlobal, seqNumClient, seqNumRebaseGeneration, parentSeqNumGlobal, parentSeqNumClient,
              name, argsJson, clientId, sessionId, syncMetadataJson
         FROM eventlog ORDER BY seqNumGlobal ASC, seqNumClient ASC, seqNumRebaseGeneration ASC`,
    )
    const synced = []
    const pending = []
    for (const r of rows) {
      if (r.seqNumClient !== 0) continue // client-only events (e.g. uiStateSet) are never synced
      const ev = {
        seqNum: r.seqNumGlobal,
        parentSeqNum: r.parentSeqNumGlobal,
        name: r.name,
        args: JSON.parse(r.argsJson),
        clientId: r.clientId,
        sessionId: r.sessionId,
      }
      if (r.seqNumGlobal <= head.head) synced.push(ev)
      else pending.push({ ...ev, rebaseGeneration: r.seqNumRebaseGeneration })
    }
    return includePending ? { head: head.head, backendId: head.backendId, events: synced, pending } : synced
  } finally {
    db.close()
  }
}

const readSyncState = async (c) => {
  const result = { shutdown: c.status.shutdown }
  if (c.status.shutdown) {
    result.reason = c.status.reason ?? null
    if (c.status.error) result.error = c.status.error
    return result
  }
  const leader = leaderOf(c.store)
  const s = await Effect.runPromise(leader.syncState.get)
  const net = await Effect.runPromise(leader.networkStatus.get).catch(() => undefined)
  const session = c.store.syncStatus()
  return {
    ...result,
    upstreamHead: seqToString(s.upstreamHead),
    localHead: seqToString(s.localHead),
    upstreamGlobal: s.upstreamHead.global,
    localGlobal: s.localHead.global,
    pending: s.pending.length,
    isConnected: net?.isConnected ?? null,
    session: {
      upstreamHead: session.upstreamHead,
      localHead: session.localHead,
      pending: session.pendingCount,
    },
  }
}

// The Node adapter creates a process-wide BroadcastChannel `livestore.shutdown.<storeId>`.
// Every store with the same storeId in this process listens on it, so a BackendIdMismatch
// reset, `resetPersistence: true` or an onSyncError shutdown in ONE client would shut down
// ALL driver clients of that storeId. Real clients are separate processes/devices, so by
// default each driver client gets its own channel namespace: while its store boots (the
// channels are created during boot), globalThis.BroadcastChannel prefixes channel names.
// Boots are serialized so the patch never leaks into another client's boot.
const OriginalBroadcastChannel = globalThis.BroadcastChannel
let bootLock = Promise.resolve()
let bootCounter = 0
const withIsolatedBroadcastChannels = (clientName, fn) => {
  const run = bootLock.then(async () => {
    if (clientName === null || OriginalBroadcastChannel === undefined) return fn()
    const prefix = `ls-driver.${clientName}.${++bootCounter}.`
    globalThis.BroadcastChannel = class extends OriginalBroadcastChannel {
      constructor(channelName) {
        super(`${prefix}${channelName}`)
      }
    }
    try {
      return await fn()
    } finally {
      globalThis.BroadcastChannel = OriginalBroadcastChannel
    }
  })
  bootLock = run.catch(() => {})
  return run
}

// ---------------------------------------------------------------------------
// commands
// ---------------------------------------------------------------------------
const handlers = {
  ping: async () => ({ pong: true }),

  list: async () =>
    Object.fromEntries([...clients].map(([name, c]) => [name, { storeId: c.storeId, ...c.status }])),

  open: async (cmd) => {
    const { name, storeId, url } = cmd
    if (!name || !storeId) throw new Error('open needs name and storeId')
    const existing = clients.get(name)
    if (existing !== undefined && !existing.status.shutdown) throw new Error(`client '${name}' is already open`)

    const transport = cmd.transport ?? 'ws'
    const storage = cmd.storage ?? 'memory'
    let backend
    if (url) {
      if (transport === 'ws') backend = makeWsSync({ url })
      else if (transport === 'http')
        backend = makeHttpSync({ url, livePull: { pollInterval: cmd.httpPollMs ?? 1000 } })
      else throw new Error(`unknown transport '${transport}'`)
    }
    let storageOpt
    if (storage === 'memory' || storage === 'in-memory') storageOpt = { type: 'in-memory' }
    else if (storage === 'fs') {
      if (!cmd.dir) throw new Error('storage "fs" needs dir')
      storageOpt = { type: 'fs', baseDirectory: path.resolve(cmd.dir) }
    } else throw new Error(`unknown storage '${storage}'`)

    const syncOptions = {
      ...(backend ? { backend } : {}),
      onSyncError: cmd.onSyncError ?? 'ignore',
      onBackendIdMismatch: cmd.onBackendIdMismatch ?? 'reset',
      ...(cmd.initialSyncTimeoutMs ? { initialSyncOptions: { _tag: 'Blocking', timeout: cmd.initialSyncTimeoutMs } } : {}),
    }
    const adapter = makeAdapter({
      storage: storageOpt,
      clientId: cmd.clientId ?? name,
      ...(cmd.sessionId ? { sessionId: cmd.sessionId } : {}),
      resetPersistence: cmd.resetPersistence ?? false,
      sync: syncOptions,
    })

    const status = { shutdown: false, reason: null }
    const shutdownDeferred = Effect.runSync(makeShutdownDeferred)
    const logLevel = LogLevel.fromLiteral(cmd.logLevel ?? process.env.LS_DRIVER_LOG_LEVEL ?? 'Warning')
    const t0 = Date.now()
    const store = await withIsolatedBroadcastChannels(cmd.shareShutdownChannel === true ? null : name, () =>
      createStorePromise({
        schema,
        adapter,
        storeId,
        disableDevtools: true,
        logLevel,
        shutdownDeferred,
        ...(cmd.token !== undefined ? { syncPayload: { authToken: cmd.token } } : {}),
        ...(cmd.syncPayload !== undefined ? { syncPayload: cmd.syncPayload } : {}),
      }),
    )
    const entry = { store, storeId, opts: { ...cmd }, status, shutdownRequested: false }
    clients.set(name, entry)

    // Unexpected shutdowns (e.g. BackendIdMismatchError with the reset policy) end up here.
    Effect.runPromise(Deferred.await(shutdownDeferred)).then(
      (cause) => {
        status.shutdown = true
        status.reason = entry.shutdownRequested ? 'requested' : (cause?.reason ?? cause?._tag ?? 'unknown')
        log(`client '${name}' shut down:`, status.reason)
      },
      (err) => {
        status.shutdown = true
        status.reason = entry.shutdownRequested ? 'requested' : (err?._tag ?? 'error')
        status.error = errorMessage(err)
        log(`client '${name}' shut down with error:`, status.error)
      },
    )
    return { booted: true, bootMs: Date.now() - t0 }
  },

  commit: async ({ name, events: evs }) => {
    const c = getClient(name)
    if (!Array.isArray(evs) || evs.length === 0) throw new Error('commit needs a non-empty events array')
    c.store.commit(...evs.map(buildEvent))
    return {}
  },

  setUiState: async ({ name, value }) => {
    const c = getClient(name)
    c.store.commit(tables.uiState.set(value))
    return {}
  },

  query: async ({ name, sql, bindValues }) => {
    const c = getClient(name)
    return c.store.query({ query: sql, bindValues: bindValues ?? {} })
  },

  todos: async ({ name }) => {
    const c = getClient(name)
    const rows = c.store.query({
      query: 'SELECT id, text, completed, deletedAt FROM todos ORDER BY id',
      bindValues: {},
    })
    return rows.map((r) => ({
      id: r.id,
      text: r.text,
      completed: r.completed === 1 || r.completed === true,
      deletedAt: r.deletedAt ?? null,
    }))
  },

  syncState: async ({ name }) => readSyncState(getClient(name, { mustBeOpen: false })),

  eventlog: async ({ name, includePending }) => {
    const c = getClient(name, { mustBeOpen: false })
    let bytes
    if (!c.status.shutdown) {
      bytes = await Effect.runPromise(leaderOf(c.store).getEventlogData)
    } else if (c.opts.storage === 'fs') {
      // Store is closed: read the persisted eventlog file instead.
      const file = path.join(path.resolve(c.opts.dir), c.storeId, EVENTLOG_FILE)
      if (!fs.existsSync(file)) return includePending ? { head: 0, backendId: null, events: [], pending: [] } : []
      bytes = new Uint8Array(fs.readFileSync(file))
    } else {
      throw new Error(`client '${name}' is shut down and has in-memory storage; eventlog is gone`)
    }
    return readEventlogImage(bytes, { includePending: includePending === true })
  },

  waitSynced: async ({ name, timeoutMs = 10000, requireConnected = true }) => {
    const c = getClient(name)
    const deadline = Date.now() + timeoutMs
    let last
    for (;;) {
      if (c.status.shutdown) throw new Error(`client '${name}' shut down while waiting (${c.status.reason})`)
      last = await readSyncState(c)
      const ok =
        last.pending === 0 &&
        last.session.pending === 0 &&
        last.localGlobal === last.upstreamGlobal &&
        (!requireConnected || last.isConnected !== false)
      if (ok) return last
      if (Date.now() > deadline) throw new Error(`waitSynced timed out after ${timeoutMs} ms: ${JSON.stringify(last)}`)
      await sleep(25)
    }
  },

  // Wait until the leader's upstream head (confirmed by the server) is >= `head` and the
  // session has caught up with it (state/todos reflect it). For "B has seen everything".
  waitHead: async ({ name, head, timeoutMs = 10000 }) => {
    const c = getClient(name)
    if (!Number.isInteger(head)) throw new Error('waitHead needs an integer head')
    const deadline = Date.now() + timeoutMs
    let last
    for (;;) {
      if (c.status.shutdown) throw new Error(`client '${name}' shut down while waiting (${c.status.reason})`)
      last = await readSyncState(c)
      const sessionGlobal = Number(/^e(\d+)/.exec(last.session.upstreamHead)?.[1] ?? -1)
      if (last.upstreamGlobal >= head && sessionGlobal >= head) return last
      if (Date.now() > deadline) throw new Error(`waitHead ${head} timed out after ${timeoutMs} ms: ${JSON.stringify(last)}`)
      await sleep(25)
    }
  },

  shutdown: async ({ name }) => {
    const c = getClient(name, { mustBeOpen: false })
    if (!c.status.shutdown) {
      c.shutdownRequested = true
      await c.store.shutdownPromise().catch((err) => log(`shutdown '${name}' (ignored):`, errorMessage(err)))
      c.status.shutdown = true
      c.status.reason ??= 'requested'
    }
    return {}
  },
}

// ---------------------------------------------------------------------------
// main loop: per-name serialization, different names run concurrently
// ---------------------------------------------------------------------------
const respond = (obj) => writeStdout(`${JSON.stringify(obj)}\n`)
const queues = new Map() // name -> tail promise
const inflight = new Set()

const shutdownAll = async () => {
  await Promise.allSettled([...inflight])
  await Promise.allSettled(
    [...clients].map(([name, c]) => (c.status.shutdown ? undefined : handlers.shutdown({ name }))),
  )
}

let exiting
const exitAfter = (id) => {
  exiting ??= shutdownAll()
  exiting.finally(() => {
    if (id !== undefined) respond({ id, ok: true, result: {} })
    process.stdout.write = writeStdout // let the final write flush normally
    process.exitCode = 0
    setTimeout(() => process.exit(0), 50)
  })
}

const dispatch = (line) => {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (err) {
    respond({ id: null, ok: false, error: `invalid JSON: ${errorMessage(err)}` })
    return
  }
  const { id } = cmd
  const kind = cmd.cmd ?? cmd.type ?? cmd.op
  if (kind === 'exit') {
    exitAfter(id)
    return
  }
  const handler = handlers[kind]
  if (handler === undefined) {
    respond({ id, ok: false, error: `unknown command '${kind}'` })
    return
  }
  const key = cmd.name ?? '\u0000global'
  const prev = queues.get(key) ?? Promise.resolve()
  const run = prev.then(async () => {
    try {
      const result = await handler(cmd)
      respond({ id, ok: true, result: result ?? {} })
    } catch (err) {
      respond({ id, ok: false, error: errorMessage(err) })
    }
  })
  queues.set(key, run)
  inflight.add(run)
  run.finally(() => inflight.delete(run))
}

process.on('unhandledRejection', (err) => log('unhandledRejection:', errorMessage(err)))
process.on('uncaughtException', (err) => log('uncaughtException:', errorMessage(err), err?.stack ?? ''))

const rl = readline.createInterface({ input: process.stdin, terminal: false })
rl.on('line', (line) => {
  if (line.trim() !== '') dispatch(line)
})
rl.on('close', () => exitAfter(undefined))
log('ready')
