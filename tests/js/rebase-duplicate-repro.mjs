#!/usr/bin/env node
// Reproduces a LiveStore 0.4.0 client-session failure seen next to the chaos test: a client that commits every
// 10 ms while another client of the same store keeps pushing (and restarting) materializes one of its own pending
// events twice, fails with `UNIQUE constraint failed: todos.id` in ClientSessionSyncProcessor's pull, and shuts
// down. The server's log has no duplicate (read it with a non-live pull); the duplicate exists only inside the
// client session.
//
//   node rebase-duplicate-repro.mjs http://127.0.0.1:PORT [rounds]
//
// Prints `reproduced: <reason>` and exits 1 when client b shut down with an error, `not reproduced` otherwise.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'

const url = process.argv[2]
const rounds = Number(process.argv[3] ?? 30)
if (!url) throw new Error('usage: node rebase-duplicate-repro.mjs URL [rounds]')

const driver = spawn('node', ['driver.mjs'], { cwd: import.meta.dirname, stdio: ['pipe', 'pipe', 'ignore'] })
const waiting = new Map()
let nextId = 0
readline.createInterface({ input: driver.stdout }).on('line', (line) => {
  const response = JSON.parse(line)
  waiting.get(response.id)?.(response)
  waiting.delete(response.id)
})
const call = (command) =>
  new Promise((resolve, reject) => {
    const id = ++nextId
    waiting.set(id, (response) => (response.ok ? resolve(response.result) : reject(new Error(response.error))))
    driver.stdin.write(`${JSON.stringify({ ...command, id })}\n`)
  })
const created = (id) => [{ name: 'v1.TodoCreated', args: { id, text: 'x' } }]

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rebase-duplicate-'))
const storeId = `dup${Date.now()}`
const openA = () => call({ cmd: 'open', name: 'a', storeId, url, storage: 'fs', dir, clientId: 'a' })
await openA()
await call({ cmd: 'open', name: 'b', storeId, url, clientId: 'b' })

let stop = false
let failure
const pusher = (async () => {
  for (let n = 1; !stop; n++) {
    try {
      await call({ cmd: 'commit', name: 'b', events: created(`b${n}`) })
    } catch (error) {
      failure = error.message
      return
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
})()
for (let round = 0; round < rounds && failure === undefined; round++) {
  await call({ cmd: 'commit', name: 'a', events: created(`a${round}`) })
  await call({ cmd: 'shutdown', name: 'a' })
  await openA()
}
stop = true
await pusher
const state = await call({ cmd: 'syncState', name: 'b' })
await call({ cmd: 'exit' }).catch(() => {})
if (state.shutdown) {
  console.log(`reproduced: client b shut down (${state.reason}): ${state.error ?? failure}`)
  process.exit(1)
}
console.log(`not reproduced in ${rounds} rounds`)
