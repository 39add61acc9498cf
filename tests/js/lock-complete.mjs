#!/usr/bin/env node
// Makes a package-lock.json usable by `npm ci` when the npm registry this project can reach
// lacks some platform-specific optional packages at the exact version a parent asks for
// (observed: @rollup/rollup-<platform>@4.68.7 and @msgpackr-extract/*-darwin/-win32/-linux-arm
// @3.0.7 are missing, while the linux-x64 ones exist). `npm install` then silently leaves
// them out of the lock, and `npm ci` refuses that lock ("Missing: ... from lock file").
//
// This adds a minimal `{ version, optional: true }` entry for every optionalDependency that
// has no lock entry. npm ci accepts it; the entries are for other platforms and are never
// installed here. Idempotent. Run it after every `npm install` that rewrites a lock:
//
//   node tests/js/lock-complete.mjs tests/js bench/reference-server
import fs from 'node:fs'
import path from 'node:path'

const dirs = process.argv.slice(2)
if (dirs.length === 0) {
  console.error('usage: node lock-complete.mjs DIR_WITH_PACKAGE_LOCK...')
  process.exit(2)
}

for (const dir of dirs) {
  const file = path.join(dir, 'package-lock.json')
  const lock = JSON.parse(fs.readFileSync(file, 'utf8'))
  const pkgs = lock.packages
  const added = []
  for (const [key, entry] of Object.entries(pkgs)) {
    for (const [dep, version] of Object.entries(entry.optionalDependencies ?? {})) {
      // Resolution walks up from the parent's folder; an entry at any level satisfies it.
      let found = false
      let base = key
      for (;;) {
        if (pkgs[`${base === '' ? '' : `${base}/`}node_modules/${dep}`] !== undefined) {
          found = true
          break
        }
        if (base === '') break
        const idx = base.lastIndexOf('/node_modules/')
        base = idx === -1 ? '' : base.slice(0, idx)
      }
      if (found) continue
      pkgs[`node_modules/${dep}`] = { version, optional: true }
      added.push(`${dep}@${version}`)
    }
  }
  if (added.length > 0) {
    // keep npm's ordering: "" first, then sorted keys
    const sorted = { '': pkgs[''] }
    for (const key of Object.keys(pkgs).filter((k) => k !== '').sort()) sorted[key] = pkgs[key]
    lock.packages = sorted
    fs.writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`)
  }
  console.log(`${file}: added ${added.length} optional entr${added.length === 1 ? 'y' : 'ies'}${added.length ? `: ${added.join(' ')}` : ''}`)
}
