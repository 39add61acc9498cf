#!/usr/bin/env node
// driver.mjs with the filesync schema (filesync-schema.mjs) instead of the TodoMVC schema: same JSON-lines
// protocol and commands (open, commit, query, syncState, waitSynced, shutdown, exit, ...). The todo-specific
// commands (todos, setUiState) do not apply.
//
// It registers a module resolve hook that maps driver.mjs's `./todo-schema.mjs` import to
// `./filesync-schema.mjs`, then loads driver.mjs unchanged.
import { register } from 'node:module'

const hook = `
export async function resolve(specifier, context, nextResolve) {
  if (specifier === './todo-schema.mjs') return nextResolve('./filesync-schema.mjs', context)
  return nextResolve(specifier, context)
}`
register(`data:text/javascript,${encodeURIComponent(hook)}`, import.meta.url)
await import('./driver.mjs')
