#!/usr/bin/env node
// End-to-end self-check of driver.mjs against a running sync server.
//
//   node selfcheck.mjs URL [URL2]      e.g. http://127.0.0.1:8787 [http://127.0.0.1:8788]
//   VERBOSE=1 streams the driver's stderr.
//
// URL2 (optional) must be a second, independent server (different backendId). It enables
// the backend-reset check: a persisted client that moves to URL2 gets BackendIdMismatchError,
// wipes its local data and shuts down, and the driver must report that via syncState.
//
// Spawns driver.mjs and talks to it exactly like a test would (JSON lines on stdin/stdout).
// Prints PASS/FAIL lines and exits non-zero on the first failure.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'

const url = process.argv[2]
const url2 = process.argv[3]
if (!url) {
  console.error('usage: node selfcheck.mjs SYNC_URL [SECOND_SYNC_URL]   (e.g. http://127.0.0.1:8787)')
  process.exit(2)
}
const here = path.dirname(fileURLToPath(import.meta.url))
const verbose = process.env.VERBOSE === '1'
const t0 = Date.now()
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`

// ---------------------------------------------------------------- driver process
const driver = spawn(process.execPath, [path.join(here, 'driver.mjs')], { stdio: ['pipe', 'pipe', 'pipe'] })
const stderrTail = []
let stderrLines = 0
readline.createInterface({ input: driver.stderr }).on('line', (line) => {
  stderrLines++
  stderrTail.push(line)
  if (stderrTail.length > 60) stderrTail.shift()
  if (verbose) process.stderr.write(`  [driver] ${line}\n`)
})
const pending = new Map()
let nonJsonStdout = 0
readline.createInterface({ input: driver.stdout }).on('line', (line) => {
  let msg
  try {
    msg = JSON.parse(line)
  } catch {
    nonJsonStdout++
    console.log(`FAIL stdout carried a non-JSON line: ${line.slice(0, 200)}`)
    return
  }
  const p = pending.get(msg.id)
  if (p === undefined) {
    console.log(`FAIL response for unknown id: ${line.slice(0, 200)}`)
    return
  }
  pending.delete(msg.id)
  msg.ok ? p.resolve(msg.result) : p.reject(new Error(`${p.cmd}: ${msg.error}`))
})
driver.on('exit', (code, signal) => {
  for (const p of pending.values()) p.reject(new Error(`driver exited (code ${code}, signal ${signal})`))
  pending.clear()
})

let nextId = 1
const send = (cmd, args = {}) =>
  new Promise((resolve, reject) => {
    const id = nextId++
    pending.set(id, { resolve, reject, cmd })
    driver.stdin.write(`${JSON.stringify({ id, cmd, ...args })}\n`)
  })

// ---------------------------------------------------------------- checks
let failures = 0
const pass = (msg) => console.log(`PASS ${msg}  (${elapsed()})`)
const fail = (msg) => {
  failures++
  console.log(`FAIL ${msg}  (${elapsed()})`)
}
const check = (cond, msg, detail) => (cond ? pass(msg) : fail(`${msg}${detail !== undefined ? `: ${detail}` : ''}`))
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const waitTodos = async (name, predicate, timeoutMs = 15000) => {
  const deadline = Date.now() + timeoutMs
  let rows
  for (;;) {
    rows = await send('todos', { name })
    if (predicate(rows)) return rows
    if (Date.now() > deadline) throw new Error(`timeout waiting for todos on ${name}: ${JSON.stringify(rows)}`)
    await sleep(50)
  }
}

const isContiguous = (log) => log.every((e, i) => e.seqNum === i + 1 && e.parentSeqNum === i)

// ---------------------------------------------------------------- scenario
const storeId = `selfcheck-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`
const fsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-selfcheck-'))
const wsUrl = url.replace(/^http/, 'ws')
console.log(`selfcheck against ${url}  storeId=${storeId}`)

const main = async () => {
  await send('ping')

  // 1. two in-memory WS clients on a fresh store
  let r = await send('open', { name: 'A', storeId, url: wsUrl, transport: 'ws', storage: 'memory', clientId: 'client-A' })
  check(r.booted === true, `open A (memory, ws) in ${r.bootMs} ms`)
  r = await send('open', { name: 'B', storeId, url, transport: 'ws', storage: 'memory', clientId: 'client-B' })
  check(r.booted === true, `open B (memory, ws via http:// URL) in ${r.bootMs} ms`)

  // 2. A commits 3 todos (one commit of 2 events + one of 1), B sees them
  await send('commit', {
    name: 'A',
    events: [
      { name: 'v1.TodoCreated', args: { id: 't1', text: 'buy milk' } },
      { name: 'v1.TodoCreated', args: { id: 't2', text: 'walk dog' } },
    ],
  })
  await send('commit', { name: 'A', events: [{ name: 'v1.TodoCreated', args: { id: 't3', text: 'write tests' } }] })
  let st = await send('waitSynced', { name: 'A', timeoutMs: 15000 })
  check(st.upstreamHead === 'e3' && st.pending === 0 && st.isConnected === true, 'A synced: upstreamHead e3, pending 0, connected', JSON.stringify(st))
  let ts = Date.now()
  let rowsB = await waitTodos('B', (rows) => rows.length === 3)
  pass(`B sees A's 3 todos after ${Date.now() - ts} ms`)
  check(same(rowsB.map((x) => x.text), ['buy milk', 'walk dog', 'write tests']), 'B rows match', JSON.stringify(rowsB))

  // 3. concurrent commits on A and B (forces a ServerAheadError + rebase on one of them)
  await Promise.all([
    send('commit', { name: 'A', events: [{ name: 'v1.TodoCompleted', args: { id: 't1' } }] }),
    send('commit', { name: 'B', events: [{ name: 'v1.TodoCreated', args: { id: 't4', text: 'from B' } }] }),
  ])
  await Promise.all([send('waitSynced', { name: 'A' }), send('waitSynced', { name: 'B' })])
  await Promise.all([send('waitHead', { name: 'A', head: 5 }), send('waitHead', { name: 'B', head: 5 })])
  await waitTodos('A', (rows) => rows.length === 4)
  await waitTodos('B', (rows) => rows.find((x) => x.id === 't1')?.completed === true)
  let [logA, logB] = await Promise.all([send('eventlog', { name: 'A' }), send('eventlog', { name: 'B' })])
  check(logA.length === 5 && isContiguous(logA), 'A eventlog has 5 contiguous events after concurrent commits', JSON.stringify(logA))
  check(same(logA, logB), 'A and B eventlogs identical after concurrent commits')

  // 4. A goes away; B commits while A is offline
  await send('shutdown', { name: 'A' })
  st = await send('syncState', { name: 'A' })
  check(st.shutdown === true && st.reason === 'requested', 'A shut down (status visible in syncState)', JSON.stringify(st))
  await send('commit', {
    name: 'B',
    events: [
      { name: 'v1.TodoDeleted', args: { id: 't2', deletedAt: '2024-01-02T03:04:05.000Z' } },
      { name: 'v1.TodoCreated', args: { id: 't5', text: 'while A was away' } },
    ],
  })
  await send('waitSynced', { name: 'B' })

  // 5. A comes back with fs storage (fresh dir -> full pull), commits, restarts on the same dir
  r = await send('open', { name: 'A', storeId, url: wsUrl, storage: 'fs', dir: fsDir, clientId: 'client-A' })
  check(r.booted === true, `reopen A with fs storage in ${r.bootMs} ms`)
  ts = Date.now()
  await waitTodos('A', (rows) => rows.length === 5)
  pass(`A (fs) pulled the backlog after ${Date.now() - ts} ms`)
  await send('commit', { name: 'A', events: [{ name: 'v1.TodoUncompleted', args: { id: 't1' } }] })
  await send('waitSynced', { name: 'A' })
  await send('shutdown', { name: 'A' })
  const persisted = await send('eventlog', { name: 'A' })
  check(persisted.length === 8 && isContiguous(persisted), 'A eventlog readable from eventlog@6.db after shutdown (8 events)', JSON.stringify(persisted.map((e) => e.seqNum)))
  await send('commit', { name: 'B', events: [{ name: 'v1.TodoClearedCompleted', args: { deletedAt: 1704164645000 } }] })
  await send('waitSynced', { name: 'B' })
  r = await send('open', { name: 'A', storeId, url: wsUrl, storage: 'fs', dir: fsDir, clientId: 'client-A' })
  check(r.booted === true, `restart A on the same fs dir in ${r.bootMs} ms`)
  st = await send('syncState', { name: 'A' })
  check(st.upstreamGlobal >= 8, `A resumed from persisted head (upstreamHead ${st.upstreamHead} right after boot)`)
  await send('commit', { name: 'A', events: [{ name: 'v1.TodoCreated', args: { id: 't6', text: 'after restart' } }] })
  await Promise.all([send('waitSynced', { name: 'A' }), send('waitSynced', { name: 'B' })])
  await waitTodos('B', (rows) => rows.length === 6)
  await waitTodos('A', (rows) => rows.length === 6)
  ;[logA, logB] = await Promise.all([send('eventlog', { name: 'A' }), send('eventlog', { name: 'B' })])
  const [todosA, todosB] = await Promise.all([send('todos', { name: 'A' }), send('todos', { name: 'B' })])
  check(logA.length === 10 && isContiguous(logA), 'A eventlog has 10 contiguous events', JSON.stringify(logA.map((e) => `${e.seqNum}:${e.name}`)))
  check(same(logA, logB), 'A (fs, restarted) and B (memory) eventlogs identical', `${JSON.stringify(logA)} vs ${JSON.stringify(logB)}`)
  check(same(todosA, todosB), 'A and B todos identical', `${JSON.stringify(todosA)} vs ${JSON.stringify(todosB)}`)
  const expected = [
    { id: 't1', text: 'buy milk', completed: false, deletedAt: null },
    { id: 't2', text: 'walk dog', completed: false, deletedAt: Date.parse('2024-01-02T03:04:05.000Z') },
    { id: 't3', text: 'write tests', completed: false, deletedAt: null },
    { id: 't4', text: 'from B', completed: false, deletedAt: null },
    { id: 't5', text: 'while A was away', completed: false, deletedAt: null },
    { id: 't6', text: 'after restart', completed: false, deletedAt: null },
  ]
  check(same(todosA, expected), 'todos have the expected final content', JSON.stringify(todosA))
  const cleared = logA.find((e) => e.name === 'v1.TodoClearedCompleted')
  check(cleared?.args?.deletedAt === '2024-01-02T03:04:05.000Z', 'Date args travel as ISO strings (epoch ms input converted)', JSON.stringify(cleared))

  // 6. an HTTP-transport client sees the same rows and its push reaches the WS clients
  r = await send('open', { name: 'H', storeId, url, transport: 'http', storage: 'memory', clientId: 'client-H', httpPollMs: 500 })
  check(r.booted === true, `open H (memory, http) in ${r.bootMs} ms`)
  ts = Date.now()
  const todosH = await waitTodos('H', (rows) => rows.length === 6)
  check(same(todosH, todosA), `H (http) sees identical todos after ${Date.now() - ts} ms`)
  await send('commit', { name: 'H', events: [{ name: 'v1.TodoCompleted', args: { id: 't6' } }] })
  await send('waitSynced', { name: 'H', timeoutMs: 15000 })
  ts = Date.now()
  await waitTodos('A', (rows) => rows.find((x) => x.id === 't6')?.completed === true)
  await waitTodos('B', (rows) => rows.find((x) => x.id === 't6')?.completed === true)
  pass(`H's http push reached A and B after ${Date.now() - ts} ms`)
  const logs = await Promise.all(['A', 'B', 'H'].map((name) => send('eventlog', { name })))
  check(logs[0].length === 11 && same(logs[0], logs[1]) && same(logs[1], logs[2]), 'A, B and H end with identical 11-event eventlogs')

  // 7. error path: unknown client / bad event are clean errors, driver stays alive
  const err = await send('commit', { name: 'nope', events: [{ name: 'v1.TodoCreated', args: { id: 'x', text: 'x' } }] }).then(
    () => null,
    (e) => e.message,
  )
  check(err !== null && err.includes("unknown client 'nope'"), 'errors come back as {ok:false}', err)

  // 8. optional: backend reset -> BackendIdMismatchError -> wipe + shutdown, observable, isolated
  if (url2) {
    const dir2 = path.join(fsDir, 'x')
    await send('open', { name: 'X', storeId, url, storage: 'fs', dir: dir2, clientId: 'client-X' })
    await waitTodos('X', (rows) => rows.length === 6)
    await send('shutdown', { name: 'X' })
    r = await send('open', { name: 'Y', storeId, url: url2, storage: 'memory', clientId: 'client-Y' })
    await send('commit', { name: 'Y', events: [{ name: 'v1.TodoCreated', args: { id: 'y1', text: 'other backend' } }] })
    await send('waitSynced', { name: 'Y' })
    await send('open', { name: 'X', storeId, url: url2, storage: 'fs', dir: dir2, clientId: 'client-X' })
    ts = Date.now()
    const deadline = Date.now() + 20000
    for (;;) {
      st = await send('syncState', { name: 'X' })
      if (st.shutdown || Date.now() > deadline) break
      await sleep(100)
    }
    check(st.shutdown === true && st.reason === 'backend-id-mismatch', `X moved to another backend: shut down with reason backend-id-mismatch after ${Date.now() - ts} ms`, JSON.stringify(st))
    const wiped = await send('eventlog', { name: 'X', includePending: true })
    check(wiped.events.length === 0 && wiped.pending.length === 0 && wiped.backendId === null, 'X local eventlog wiped by the reset policy', JSON.stringify(wiped))
    st = await send('syncState', { name: 'Y' })
    check(st.shutdown === false, "Y (same storeId, same driver) unaffected by X's reset (per-client shutdown channel)", JSON.stringify(st))
    await send('shutdown', { name: 'Y' })
  }

  for (const name of ['A', 'B', 'H']) await send('shutdown', { name })
  await send('exit')
}

let crashed = false
try {
  await main()
} catch (err) {
  crashed = true
  fail(`exception: ${err.message}`)
}
check(nonJsonStdout === 0, 'driver stdout carried only JSON response lines')
if (failures > 0 || crashed) {
  console.log('--- last driver stderr lines ---')
  for (const line of stderrTail) console.log(`  ${line}`)
}
console.log(`driver stderr lines: ${stderrLines}`)
if (driver.exitCode === null) {
  await Promise.race([new Promise((r) => driver.once('exit', r)), sleep(5000)])
  if (driver.exitCode === null) driver.kill('SIGKILL')
}
fs.rmSync(fsDir, { recursive: true, force: true })
console.log(failures === 0 ? `SELFCHECK PASS (${elapsed()})` : `SELFCHECK FAIL: ${failures} failure(s) (${elapsed()})`)
process.exit(failures === 0 ? 0 : 1)
