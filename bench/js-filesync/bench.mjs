#!/usr/bin/env node
// @livestore-filesync/core 0.8.0 on Node: the workloads it can run without a browser, the same ones
// `files-bench --only hash_1mib,save_1mib` runs in Rust.
//
// - hash_1mib: hashFile(File) of 1 MiB (the package's Web Crypto HashService), median/p99 ms;
// - save_1mib: what saveFile does before its commit: hash the File, then LocalFileStorage.writeFile (bytes plus the
//   .meta.json sidecar) through @effect/platform-node's FileSystem, median/p99 ms;
// - hash_mb_s: hashing throughput over 256 MiB in 1 MiB Files.
//
// Usage: node bench.mjs [--dir DIR] [--count N]   (prints one JSON object)
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import { NodeFileSystem } from '@effect/platform-node'
import { HashServiceLive, LocalFileStorage, LocalFileStorageLive, hashFile, makeStoredPath } from '@livestore-filesync/core'
import { Effect, Layer } from 'effect'

const args = process.argv.slice(2)
const flag = (name, fallback) => {
  const index = args.indexOf(name)
  return index >= 0 ? args[index + 1] : fallback
}
const dir = path.resolve(flag('--dir', fs.mkdtempSync(path.join(os.tmpdir(), 'js-filesync-bench-'))))
const count = Number(flag('--count', '300'))
fs.mkdirSync(dir, { recursive: true })
process.chdir(dir)

const layer = Layer.mergeAll(HashServiceLive, LocalFileStorageLive.pipe(Layer.provide(NodeFileSystem.layer)))
const run = (effect) => Effect.runPromise(effect.pipe(Effect.provide(layer)))

// Deterministic pseudo-random bytes (xorshift), like files-bench's generator.
let state = 0x9e3779b97f4a7c15n | 1n
const mask = (1n << 64n) - 1n
const randomMiB = () => {
  const bytes = new Uint8Array(1024 * 1024)
  const view = new DataView(bytes.buffer)
  for (let offset = 0; offset < bytes.length; offset += 8) {
    state ^= (state << 13n) & mask
    state ^= state >> 7n
    state ^= (state << 17n) & mask
    view.setBigUint64(offset, state, true)
  }
  return bytes
}
const percentile = (sorted, fraction) => sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * fraction))]
const summary = (latencies) => {
  latencies.sort((a, b) => a - b)
  return { count: latencies.length, median_ms: percentile(latencies, 0.5), p99_ms: percentile(latencies, 0.99) }
}

const buffers = Array.from({ length: Math.min(count, 64) }, randomMiB)
const fileOf = (index) => new File([buffers[index % buffers.length]], `file-${index}.bin`, { type: 'application/octet-stream' })

// Warm up (JIT, Web Crypto).
for (let index = 0; index < 10; index++) await run(hashFile(fileOf(index)))

const hashLatencies = []
for (let index = 0; index < count; index++) {
  const file = fileOf(index)
  const started = performance.now()
  await run(hashFile(file))
  hashLatencies.push(performance.now() - started)
}

const saveLatencies = []
for (let index = 0; index < count; index++) {
  // A fresh content each time, like files-bench (identical bytes would overwrite one file).
  buffers[index % buffers.length][0] = index & 0xff
  buffers[index % buffers.length][1] = (index >> 8) & 0xff
  const file = fileOf(index)
  const started = performance.now()
  await run(
    Effect.gen(function* () {
      const hash = yield* hashFile(file)
      const storage = yield* LocalFileStorage
      yield* storage.writeFile(makeStoredPath('bench-js', hash), file)
    }),
  )
  saveLatencies.push(performance.now() - started)
}

const started = performance.now()
for (let index = 0; index < 256; index++) await run(hashFile(fileOf(index)))
const hashSeconds = (performance.now() - started) / 1000

console.log(
  JSON.stringify(
    {
      node: process.version,
      package: '@livestore-filesync/core@0.8.0',
      hash_1mib: summary(hashLatencies),
      save_1mib: { ...summary(saveLatencies), fsync: false },
      hash_mb_s: (256 * 1024 * 1024) / 1e6 / hashSeconds,
      dir,
    },
    null,
    2,
  ),
)
fs.rmSync(path.join(dir, 'livestore-filesync-files'), { recursive: true, force: true })
