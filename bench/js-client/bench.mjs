#!/usr/bin/env node
// The Rust client's benchmark workloads (crates/livestore-client-tools/src/bin/client-bench) on the JavaScript
// reference client: @livestore/adapter-node 0.4.0 with the TodoMVC schema (tests/js/todo-schema.mjs), syncing through
// @livestore/sync-cf's WebSocket transport. Prints one JSON object per workload on stdout, in the same shape as
// client-bench ("client": "livestore-js"); progress and LiveStore's own logging go to stderr.
//
//   node bench.mjs [--quick] [--url http://127.0.0.1:8787] [--catchup-store ID --events N] [--only a,b] [--dir DIR]
//
// catchup, rebuild and cold_start need --url and --catchup-store (a server store holding exactly N events, e.g.
// filled by `client-bench --url URL fill --store ID --events N`); sync_latency needs --url.
//
// What "durable" means here: the adapter's leader has written the events to its eventlog database. adapter-node
// 0.4.0 uses a rollback journal (WAL is disabled in @livestore/common) and its Node VFS never fsyncs, so a
// returned commit survives a process crash but not a power loss. There is no per-commit fsync mode, so the
// *_full workloads are not run.

import { Console } from 'node:console'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'

import { WebSocket as WsWebSocket } from 'ws'

// stdout carries only results: LiveStore logs through console.
const writeStdout = process.stdout.write.bind(process.stdout)
process.stdout.write = (chunk, encoding, cb) => process.stderr.write(chunk, encoding, cb)
const stderrConsole = new Console({ stdout: process.stderr, stderr: process.stderr })
for (const method of ['log', 'info', 'debug', 'warn', 'error', 'trace', 'dir', 'table']) {
  console[method] = stderrConsole[method].bind(stderrConsole)
}
if (typeof globalThis.WebSocket === 'undefined') globalThis.WebSocket = WsWebSocket

const { createStorePromise, StoreInternalsSymbol } = await import('@livestore/livestore')
const { makeAdapter } = await import('@livestore/adapter-node')
const { makeWsSync } = await import('@livestore/sync-cf/client')
const { Effect, LogLevel } = await import('effect')
const { schema, events, tables } = await import('./todo-schema.mjs')

const CLIENT = 'livestore-js'

// ---------------------------------------------------------------------------------------------------------------
// arguments
// ---------------------------------------------------------------------------------------------------------------
const argv = process.argv.slice(2)
const flag = (name) => argv.includes(`--${name}`)
const option = (name) => {
  const index = argv.indexOf(`--${name}`)
  return index === -1 ? undefined : argv[index + 1]
}
const quick = flag('quick')
const url = option('url')?.replace(/^http/, 'ws')
const catchupStore = option('catchup-store')
const events_ = Number(option('events') ?? (quick ? 2_000 : 5_000))
const only = option('only')?.split(',') ?? []
const selected = (name) => only.length === 0 || only.includes(name)
const pick = (full, small) => (quick ? small : full)
const workDir = option('dir') ?? fs.mkdtempSync(path.join(os.tmpdir(), 'js-client-bench-'))
const removeWorkDir = option('dir') === undefined

// ---------------------------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------------------------
const progress = (what) => process.stderr.write(`js-client-bench: ${what}\n`)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const round = (value) => Math.round(value * 1000) / 1000

const quantile = (samples, fraction) => {
  if (samples.length === 0) return 0
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = Math.min(Math.max(Math.ceil(sorted.length * fraction), 1), sorted.length)
  return sorted[rank - 1]
}

/** Samples are milliseconds (performance.now()); `unit` is what the result reports them in. */
const inUnit = (ms, unit) => (unit === 'us' ? ms * 1000 : ms)

/** CPU seconds (user + system, all threads) this process used since `start` (a `process.cpuUsage()`). */
const cpuSince = (start) => {
  const used = process.cpuUsage(start)
  return round((used.user + used.system) / 1e6)
}

const emit = (result) => {
  const cpu = result.cpu_seconds ?? null
  const perCpu = cpu !== null && cpu > 0 ? round(result.events / cpu) : null
  writeStdout(`${JSON.stringify({ client: CLIENT, note: null, cpu_seconds: cpu, events_per_cpu_second: perCpu, ...result })}\n`)
}

const throughput = (workload, description, events, elapsedMs, samples, latencyUnit, note) => ({
  workload,
  description,
  events,
  value: round(events / (elapsedMs / 1000)),
  unit: 'events/s',
  higher_is_better: true,
  p50: round(inUnit(quantile(samples, 0.5), latencyUnit)),
  p99: round(inUnit(quantile(samples, 0.99), latencyUnit)),
  latency_unit: latencyUnit,
  samples: samples.length,
  note: note ?? null,
})

const latency = (workload, description, events, samples, unit, note) => {
  const p50 = round(inUnit(quantile(samples, 0.5), unit))
  return {
    workload,
    description,
    events,
    value: p50,
    unit,
    higher_is_better: false,
    p50,
    p99: round(inUnit(quantile(samples, 0.99), unit)),
    latency_unit: unit,
    samples: samples.length,
    note: note ?? null,
  }
}

let storeCounter = 0
const openStore = async ({ storeId, storage = 'memory', dir, sync = false, clientId }) => {
  const adapter = makeAdapter({
    storage: storage === 'fs' ? { type: 'fs', baseDirectory: dir } : { type: 'in-memory' },
    clientId: clientId ?? `bench-${process.pid}-${++storeCounter}`,
    sync: sync ? { backend: makeWsSync({ url }), onSyncError: 'ignore' } : undefined,
  })
  return createStorePromise({ schema, adapter, storeId, disableDevtools: true, logLevel: LogLevel.Error })
}

const leaderState = (store) =>
  Effect.runPromise(store[StoreInternalsSymbol].clientSession.leaderThread.syncState.get)

/** Waits until the leader has written everything up to `global` (local head) to its databases. */
const waitLeaderLocal = async (store, global) => {
  for (;;) {
    const state = await leaderState(store)
    if (state.localHead.global >= global) return
    await new Promise((resolve) => setImmediate(resolve))
  }
}

const created = (id, text) => events.todoCreated({ id, text })

// ---------------------------------------------------------------------------------------------------------------
// workloads
// ---------------------------------------------------------------------------------------------------------------
const commitMemory = async (commits) => {
  const store = await openStore({ storeId: `commit-memory-${process.pid}` })
  store.commit(created('t', 'x'))
  let notified = 0
  let resolveNext = null
  const unsubscribe = store.subscribe(tables.todos.select('completed').where({ id: 't' }), () => {
    notified++
    resolveNext?.()
  })
  const samples = []
  for (let iteration = 0; iteration < commits; iteration++) {
    const before = notified
    const start = performance.now()
    store.commit(iteration % 2 === 0 ? events.todoCompleted({ id: 't' }) : events.todoUncompleted({ id: 't' }))
    if (notified === before) await new Promise((resolve) => (resolveNext = resolve))
    samples.push(performance.now() - start)
    resolveNext = null
  }
  unsubscribe()
  await store.shutdownPromise()
  return latency('commit_memory', 'commit one event + materialize + subscriber notified (in-memory store)', commits, samples, 'us')
}

/** Commits `batch` events per commit and waits until the leader has written them (see the header). */
const durable = async (batch, commits) => {
  const dir = path.join(workDir, `durable-${batch}`)
  const store = await openStore({ storeId: `durable-${batch}`, storage: 'fs', dir })
  let next = 0
  const makeBatch = () => Array.from({ length: batch }, () => created(`d${String(++next).padStart(9, '0')}`, 'durable'))
  store.commit(...makeBatch())
  await waitLeaderLocal(store, next)
  const samples = []
  const cpu = process.cpuUsage()
  for (let commit = 0; commit < commits; commit++) {
    const events = makeBatch()
    const start = performance.now()
    store.commit(...events)
    await waitLeaderLocal(store, next)
    samples.push(performance.now() - start)
  }
  const elapsed = samples.reduce((sum, sample) => sum + sample, 0)
  const cpu_seconds = cpuSince(cpu)
  await store.shutdownPromise()
  fs.rmSync(dir, { recursive: true, force: true })
  const note = 'durable = written to the leader eventlog (adapter-node: rollback journal, no fsync)'
  const result =
    batch === 1
      ? throughput('durable_single_normal', 'durable commits of one event', commits, elapsed, samples, 'us', note)
      : throughput('durable_batched_normal', 'durable commits of 1,000 events each', batch * commits, elapsed, samples, 'ms', note)
  return { ...result, cpu_seconds }
}

const catchupDir = path.join(workDir, 'catchup')
/** Events in the caught-up store (fewer than requested if the catch-up stalled). */
let storeEvents = events_

/** Seconds without progress after which a catch-up is reported as stalled instead of waited for. */
const STALL_SECONDS = 90

const catchup = async () => {
  const cpu = process.cpuUsage()
  const start = performance.now()
  const store = await openStore({ storeId: catchupStore, storage: 'fs', dir: catchupDir, sync: true })
  let reached = -1
  let progressAt = performance.now()
  let stalled = false
  for (;;) {
    const state = await leaderState(store)
    const session = store.syncStatus()
    const sessionGlobal = Number(/^e(\d+)/.exec(String(session.upstreamHead))?.[1] ?? -1)
    const head = Math.min(state.upstreamHead.global, sessionGlobal)
    if (head >= events_) break
    if (head !== reached) {
      reached = head
      progressAt = performance.now()
    } else if (performance.now() - progressAt > STALL_SECONDS * 1000) {
      stalled = true
      break
    }
    await sleep(2)
  }
  const elapsed = (stalled ? progressAt : performance.now()) - start
  const cpu_seconds = cpuSince(cpu)
  await store.shutdownPromise()
  const note = stalled
    ? `stalled: no progress for ${STALL_SECONDS} s at ${reached} of ${events_} events; rate up to the stall; includes store boot`
    : 'includes store boot'
  return {
    reached: stalled ? reached : events_,
    report: {
      ...throughput(
        'catchup',
        'fresh client pulls the whole log from livestore serve over loopback and materializes it',
        stalled ? reached : events_,
        elapsed,
        [elapsed],
        'ms',
        note,
      ),
      cpu_seconds,
    },
  }
}

/** Opens the caught-up store offline and runs the first query. */
const coldStart = async (reps) => {
  const samples = []
  for (let rep = 0; rep < reps; rep++) {
    const start = performance.now()
    const store = await openStore({ storeId: catchupStore, storage: 'fs', dir: catchupDir })
    const rows = store.query(tables.todos.select('id').orderBy('id', 'asc').limit(10))
    samples.push(performance.now() - start)
    if (rows.length !== Math.min(10, storeEvents)) throw new Error(`cold start found ${rows.length} rows`)
    await store.shutdownPromise()
  }
  return latency('cold_start', 'open a synced store and run the first query (no rebuild)', storeEvents, samples, 'ms')
}

/** Deletes the state database and boots: the leader rebuilds the state from the eventlog. */
const rebuild = async (reps) => {
  const samples = []
  const storeDir = path.join(catchupDir, catchupStore)
  const cpu = process.cpuUsage()
  for (let rep = 0; rep < reps; rep++) {
    for (const file of fs.readdirSync(storeDir)) {
      if (file.startsWith('state')) fs.rmSync(path.join(storeDir, file))
    }
    const start = performance.now()
    const store = await openStore({ storeId: catchupStore, storage: 'fs', dir: catchupDir })
    const rows = store.query(tables.todos.select('id').limit(1))
    samples.push(performance.now() - start)
    if (rows.length !== 1) throw new Error('rebuild produced no rows')
    await store.shutdownPromise()
  }
  const median = quantile(samples, 0.5)
  const cpu_seconds = round(cpuSince(cpu) / reps)
  return {
    ...throughput(
      'rebuild',
      'full rebuild of the state from the eventlog (median of repetitions)',
      storeEvents,
      median,
      samples,
      'ms',
      'state file deleted, then a store boot (includes the boot)',
    ),
    cpu_seconds,
  }
}

const syncLatency = async (rounds) => {
  const storeId = `js-latency-${process.pid}-${Date.now()}`
  const a = await openStore({ storeId, storage: 'memory', sync: true, clientId: 'bench-a' })
  const b = await openStore({ storeId, storage: 'memory', sync: true, clientId: 'bench-b' })
  let waiter = null
  b.subscribe(tables.todos.select('completed').where({ id: 'latency' }), (rows) => {
    // A one-column select yields the values themselves.
    const value = rows.length === 0 ? null : typeof rows[0] === 'object' ? rows[0].completed : rows[0]
    const completed = value === null ? null : value === true || value === 1
    if (waiter !== null && waiter.expected === completed) {
      const resolve = waiter.resolve
      waiter = null
      resolve(performance.now())
    }
  })
  const waitFor = (expected) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('B was not notified')), 10_000)
      waiter = {
        expected,
        resolve: (at) => {
          clearTimeout(timer)
          resolve(at)
        },
      }
    })
  const settle = async () => {
    for (;;) {
      const state = await leaderState(a)
      if (state.pending.length === 0) break
      await sleep(0.2)
    }
    await sleep(1)
  }
  let seen = waitFor(false)
  a.commit(created('latency', 'ping'))
  await seen
  const samples = []
  for (let round = 0; round < rounds; round++) {
    await settle()
    const completed = round % 2 === 0
    seen = waitFor(completed)
    const start = performance.now()
    a.commit(completed ? events.todoCompleted({ id: 'latency' }) : events.todoUncompleted({ id: 'latency' }))
    samples.push((await seen) - start)
  }
  await a.shutdownPromise()
  await b.shutdownPromise()
  return latency(
    'sync_latency',
    'commit on client A until a subscription fires on client B (two clients through livestore serve)',
    rounds,
    samples,
    'ms',
  )
}

// ---------------------------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------------------------
try {
  if (selected('commit_memory')) {
    progress('commit_memory')
    emit(await commitMemory(pick(5_000, 1_000)))
  }
  if (selected('durable_batched_normal')) {
    progress('durable_batched_normal')
    emit(await durable(1000, pick(20, 5)))
  }
  if (selected('durable_single_normal')) {
    progress('durable_single_normal')
    emit(await durable(1, pick(2_000, 300)))
  }
  const needsStore = ['catchup', 'rebuild', 'cold_start'].some(selected)
  if (needsStore && (url === undefined || catchupStore === undefined)) {
    progress('catchup, rebuild and cold_start skipped: they need --url and --catchup-store')
  } else if (needsStore) {
    progress(`catchup (${events_} events)`)
    const { reached, report } = await catchup()
    if (selected('catchup')) emit(report)
    storeEvents = reached
    if (selected('cold_start')) {
      progress('cold_start')
      emit(await coldStart(pick(5, 3)))
    }
    if (selected('rebuild')) {
      progress('rebuild')
      emit(await rebuild(pick(2, 1)))
    }
  }
  if (selected('sync_latency')) {
    if (url === undefined) progress('sync_latency skipped: no --url')
    else {
      progress('sync_latency')
      emit(await syncLatency(pick(300, 50)))
    }
  }
} finally {
  if (removeWorkDir) fs.rmSync(workDir, { recursive: true, force: true })
}
process.exit(0)
