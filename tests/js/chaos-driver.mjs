#!/usr/bin/env node
// driver.mjs with the chaos schema (chaos-schema.mjs: TodoMVC plus filesync) instead of the TodoMVC schema: same
// JSON-lines protocol and commands, `todos` included.
//
// It registers a module resolve hook that maps driver.mjs's own `./todo-schema.mjs` import to
// `./chaos-schema.mjs` (chaos-schema.mjs itself still imports the real todo-schema.mjs), then loads driver.mjs
// unchanged.
import { register } from 'node:module'

const hook = `
export async function resolve(specifier, context, nextResolve) {
  if (specifier === './todo-schema.mjs' && context.parentURL?.endsWith('/driver.mjs')) {
    return nextResolve('./chaos-schema.mjs', context)
  }
  return nextResolve(specifier, context)
}`
register(`data:text/javascript,${encodeURIComponent(hook)}`, import.meta.url)
await import('./driver.mjs')
