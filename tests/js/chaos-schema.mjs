// The TodoMVC schema and the @livestore-filesync/core data model in one LiveStore 0.4.0 schema, for the chaos test:
// its stores carry todo events and file events side by side, and a JS client must materialize both (an event
// without a definition would stop its sync). Tables, events and materializers are the ones of todo-schema.mjs and
// filesync-schema.mjs, unchanged.
//
// Exports `schema`, `events` and `tables` like todo-schema.mjs, so chaos-driver.mjs can run driver.mjs on it.
import { makeSchema, State } from '@livestore/livestore'

import * as files from './filesync-schema.mjs'
import * as todo from './todo-schema.mjs'

export const tables = { ...todo.tables, ...files.tables }
export const events = { ...todo.events, ...files.events }

const state = State.SQLite.makeState({ tables, materializers: { ...todo.materializers, ...files.materializers } })

export const schema = makeSchema({ events, state })
