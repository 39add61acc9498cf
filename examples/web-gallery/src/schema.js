// The gallery's LiveStore schema is exactly livestore-filesync's: the synced `files` table and its three events
// (v1.FileCreated, v1.FileUpdated, v1.FileDeleted), plus the per-device `localFileState` rows and sync cursor.
// A file's display name and image size travel in `metadataJson` (see the preprocessor in main.js).
import { makeSchema, State } from '@livestore/livestore'
import { createFileSyncSchema } from '@livestore-filesync/core/schema'

const fileSync = createFileSyncSchema()

export const tables = { ...fileSync.tables }
export const events = { ...fileSync.events }

const materializers = State.SQLite.materializers(events, { ...fileSync.createMaterializers(tables) })

export const schema = makeSchema({ events, state: State.SQLite.makeState({ tables, materializers }) })
