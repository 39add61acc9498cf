// The @livestore-filesync/core 0.8.0 data model (createFileSyncSchema) as a LiveStore 0.4.0 schema, for the
// Rust <-> JavaScript file sync interop tests. Names, payload schemas and materializers follow the package:
// dates travel as ISO strings (Schema.DateFromString) and are stored as epoch ms (Schema.DateFromNumber; the package says DateFromMillis, the same encoding);
// metadataJson is optional, and in v1.FileUpdated an absent field leaves the stored value alone.
//
// Exports `schema`, `events` and `tables` like todo-schema.mjs, so filesync-driver.mjs can run driver.mjs on it.
import { Events, makeSchema, Schema, State } from '@livestore/livestore'

const TransferStatus = Schema.Literal('pending', 'queued', 'inProgress', 'done', 'error')

export const tables = {
  files: State.SQLite.table({
    name: 'files',
    columns: {
      id: State.SQLite.text({ primaryKey: true }),
      path: State.SQLite.text({ default: '' }),
      remoteKey: State.SQLite.text({ default: '' }),
      contentHash: State.SQLite.text({ default: '' }),
      metadataJson: State.SQLite.text({ nullable: true }),
      createdAt: State.SQLite.integer({ schema: Schema.DateFromNumber }),
      updatedAt: State.SQLite.integer({ schema: Schema.DateFromNumber }),
      deletedAt: State.SQLite.integer({ nullable: true, schema: Schema.DateFromNumber }),
    },
  }),
  localFileState: State.SQLite.table({
    name: 'localFileState',
    columns: {
      fileId: State.SQLite.text({ primaryKey: true }),
      path: State.SQLite.text({ default: '' }),
      localHash: State.SQLite.text({ default: '' }),
      downloadStatus: State.SQLite.text({ default: 'pending' }),
      uploadStatus: State.SQLite.text({ default: 'pending' }),
      lastSyncError: State.SQLite.text({ default: '' }),
    },
  }),
  fileSyncCursor: State.SQLite.clientDocument({
    name: 'fileSyncCursor',
    schema: Schema.Struct({ lastEventSequence: Schema.String, updatedAt: Schema.DateFromNumber }),
    default: { id: 'global', value: { lastEventSequence: 'e0', updatedAt: new Date(0) } },
  }),
}

export const events = {
  fileCreated: Events.synced({
    name: 'v1.FileCreated',
    schema: Schema.Struct({
      id: Schema.String,
      path: Schema.String,
      contentHash: Schema.String,
      metadataJson: Schema.optional(Schema.NullOr(Schema.String)),
      createdAt: Schema.DateFromString,
      updatedAt: Schema.DateFromString,
    }),
  }),
  fileUpdated: Events.synced({
    name: 'v1.FileUpdated',
    schema: Schema.Struct({
      id: Schema.String,
      path: Schema.String,
      remoteKey: Schema.String,
      contentHash: Schema.String,
      metadataJson: Schema.optional(Schema.NullOr(Schema.String)),
      updatedAt: Schema.DateFromString,
    }),
  }),
  fileDeleted: Events.synced({
    name: 'v1.FileDeleted',
    schema: Schema.Struct({ id: Schema.String, deletedAt: Schema.DateFromString }),
  }),
  localFileStateUpsert: Events.clientOnly({
    name: 'v1.LocalFileStateUpsert',
    schema: Schema.Struct({
      fileId: Schema.String,
      path: Schema.String,
      localHash: Schema.String,
      downloadStatus: TransferStatus,
      uploadStatus: TransferStatus,
      lastSyncError: Schema.String,
    }),
  }),
  localFileStateRemove: Events.clientOnly({
    name: 'v1.LocalFileStateRemove',
    schema: Schema.Struct({ fileId: Schema.String }),
  }),
  localFileStateClear: Events.clientOnly({ name: 'v1.LocalFileStateClear', schema: Schema.Struct({}) }),
  fileSyncCursorSet: tables.fileSyncCursor.set,
}

export const materializers = State.SQLite.materializers(events, {
  'v1.FileCreated': ({ id, path, contentHash, metadataJson, createdAt, updatedAt }) =>
    tables.files.insert({ id, path, contentHash, metadataJson: metadataJson ?? null, createdAt, updatedAt }),
  'v1.FileUpdated': ({ id, path, remoteKey, contentHash, metadataJson, updatedAt }) =>
    tables.files
      .update({ path, remoteKey, contentHash, ...(metadataJson !== undefined ? { metadataJson } : {}), updatedAt })
      .where({ id }),
  'v1.FileDeleted': ({ id, deletedAt }) => tables.files.update({ deletedAt }).where({ id }),
  'v1.LocalFileStateUpsert': ({ fileId, path, localHash, downloadStatus, uploadStatus, lastSyncError }) => [
    tables.localFileState.delete().where({ fileId }),
    tables.localFileState.insert({ fileId, path, localHash, downloadStatus, uploadStatus, lastSyncError }),
  ],
  'v1.LocalFileStateRemove': ({ fileId }) => tables.localFileState.delete().where({ fileId }),
  'v1.LocalFileStateClear': () => tables.localFileState.delete(),
})

const state = State.SQLite.makeState({ tables, materializers })

export const schema = makeSchema({ events, state })
