// A photo gallery on LiveStore 0.4 and livestore-filesync 0.8, synced through `livestore serve`.
//
// - Events (v1.FileCreated/Updated/Deleted) sync over the sync-cf WebSocket protocol; state lives in OPFS SQLite.
// - Bytes live in OPFS on each device and move through presigned URLs from the server's signer (`/api`) to its
//   object store (`/s3`), in the background, with progress.
//
// URL parameters: `token` (auth token for sync and signer; without it a session cookie, if the server's connect
// hook signs users in by cookie), `store` (store id, default `gallery`), `server` (origin of `livestore serve`;
// default: the page's own origin, i.e. when `livestore serve --static-dir` serves it), `transport` (`ws`, the
// default, or `http`).
import './style.css'

import { createFileSync, getFileDisplayState, getFileMetadata } from '@livestore-filesync/core'
import { layer as opfsLayer } from '@livestore-filesync/opfs'
import { makePersistedAdapter } from '@livestore/adapter-web'
import LiveStoreSharedWorker from '@livestore/adapter-web/shared-worker?sharedworker'
import { createStorePromise, queryDb } from '@livestore/livestore'
import { Effect } from 'effect'

import LiveStoreWorker from './livestore.worker.js?worker'
import { events, schema, tables } from './schema.js'

const params = new URLSearchParams(location.search)
const serverOrigin = (params.get('server') ?? location.origin).replace(/\/+$/, '')
const token = params.get('token') || undefined
const storeId = params.get('store') || 'gallery'
const signerBaseUrl = `${serverOrigin}/api`

const $ = (selector) => document.querySelector(selector)
const grid = $('[data-testid=gallery]')
const input = $('[data-testid=file-input]')
const dropZone = $('[data-testid=drop-zone]')
const syncPill = $('[data-testid=sync-status]')
const filesPill = $('[data-testid=files-status]')
const viewer = $('[data-testid=viewer]')
$('[data-testid=store-id]').textContent = storeId

const toast = (message) => {
  const item = document.createElement('div')
  item.className = 'toast'
  item.textContent = message
  $('[data-testid=toasts]').append(item)
  setTimeout(() => item.remove(), 8000)
}

const setPill = (pill, state, text) => {
  pill.dataset.state = state
  pill.textContent = text
}

// ---------------------------------------------------------------------------------------------------------------
// Store and file sync

const adapter = makePersistedAdapter({
  storage: { type: 'opfs' },
  worker: LiveStoreWorker,
  sharedWorker: LiveStoreSharedWorker,
})

const syncPayload = {
  ...(token ? { authToken: token } : {}),
  ...(params.has('server') ? { server: serverOrigin } : {}),
  ...(params.get('transport') === 'http' ? { transport: 'http' } : {}),
}

const store = await createStorePromise({
  schema,
  adapter,
  storeId,
  syncPayload,
  disableDevtools: true,
  batchUpdates: (run) => run(),
})

/** Live transfer progress by file id: `{ kind, loaded, total }`. */
const progress = new Map()
let filesOnline = true

const onFileSyncEvent = (event) => {
  switch (event.type) {
    case 'upload:progress':
    case 'download:progress':
      progress.set(event.fileId, event.progress)
      scheduleRender()
      break
    case 'upload:complete':
    case 'download:complete':
    case 'upload:error':
    case 'download:error':
      progress.delete(event.fileId)
      scheduleRender()
      break
    case 'online':
      filesOnline = true
      // Transfers that gave up while the server was away (state `error`) are not retried on their own.
      fileSync.retryErrors().catch((error) => console.warn('retryErrors failed', error))
      renderStatus()
      break
    case 'offline':
      filesOnline = false
      renderStatus()
      break
    case 'transfer:exhausted':
      toast(`${event.kind} of a file failed for now; it is retried when the server is reachable`)
      break
    default:
      break
  }
}

/** Records a file's name and, for images, its size; both sync with the file's row (metadataJson). */
const describe = async (file) => {
  const metadata = { custom: { name: file.name } }
  if (file.type.startsWith('image/')) {
    try {
      const bitmap = await createImageBitmap(file)
      metadata.image = { width: bitmap.width, height: bitmap.height }
      bitmap.close()
    } catch {
      // not decodable here: keep it as a plain file
    }
  }
  return { file, metadata }
}

const fileSync = createFileSync({
  store,
  schema: { tables, events, queryDb },
  fileSystem: opfsLayer(),
  remote: { signerBaseUrl, ...(token ? { authToken: token } : {}) },
  options: {
    healthCheckIntervalMs: 3000,
    preprocessors: { '*': describe, '*/*': describe },
    onEvent: onFileSyncEvent,
  },
})
fileSync.start()

// ---------------------------------------------------------------------------------------------------------------
// Queries

let files = []
let localRows = new Map()

store.subscribe(
  queryDb(tables.files.where({ deletedAt: null }).orderBy('createdAt', 'desc'), { label: 'files' }),
  (rows) => {
    files = rows
    scheduleRender()
  },
)
store.subscribe(queryDb(tables.localFileState.orderBy('fileId', 'asc'), { label: 'localFileState' }), (rows) => {
  localRows = new Map(rows.map((row) => [row.fileId, row]))
  scheduleRender()
})

// ---------------------------------------------------------------------------------------------------------------
// Rendering

const percentOf = (p) => (p && p.total > 0 ? Math.round((p.loaded / p.total) * 100) : null)
const formatSize = (bytes) =>
  bytes == null
    ? ''
    : bytes < 1024
      ? `${bytes} B`
      : bytes < 1024 * 1024
        ? `${(bytes / 1024).toFixed(1)} KB`
        : `${(bytes / 1024 / 1024).toFixed(1)} MB`

/** One of: pending, queued, uploading, downloading, uploaded, error; plus a label for people. */
const statusOf = (file, local) => {
  const display = getFileDisplayState(file, local)
  const percent = percentOf(progress.get(file.id))
  const withPercent = (text) => (percent == null ? text : `${text} ${percent}%`)
  if (local?.uploadStatus === 'error' || local?.downloadStatus === 'error') {
    return { status: 'error', label: `error: ${local.lastSyncError || 'transfer failed'}` }
  }
  if (local?.uploadStatus === 'inProgress') return { status: 'uploading', label: withPercent('uploading'), percent }
  if (local?.downloadStatus === 'inProgress') {
    return { status: 'downloading', label: withPercent('downloading'), percent }
  }
  if (local?.uploadStatus === 'queued') return { status: 'queued', label: 'queued for upload' }
  if (local?.downloadStatus === 'queued') return { status: 'queued', label: 'queued for download' }
  if (display.isUploaded && display.hasLocalCopy) return { status: 'uploaded', label: 'uploaded' }
  if (display.isUploaded) return { status: 'queued', label: 'on the server' }
  if (display.hasLocalCopy) return { status: 'queued', label: 'waiting to upload' }
  return { status: 'pending', label: 'not uploaded yet' }
}

/** Card elements and their current thumbnail source by file id. */
const cards = new Map()
/** Every status a card went through, in order (shown states only): `{ id, status, label, at }`. */
const transitions = []

const makeCard = (id) => {
  const card = document.createElement('li')
  card.className = 'card'
  card.dataset.testid = 'file-card'
  card.dataset.fileId = id
  card.innerHTML = `
    <button type="button" class="thumb" data-action="open" title="Open"><span class="kind"></span><img alt="" /></button>
    <div class="meta"><span class="name"></span><span class="size"></span></div>
    <div class="status"><span class="label" data-testid="file-status"></span><progress max="100"></progress></div>
    <div class="actions">
      <button type="button" data-action="open" data-testid="open-file">Open</button>
      <button type="button" data-action="retry" data-testid="retry-file" hidden>Retry</button>
      <button type="button" data-action="delete" data-testid="delete-file">Delete</button>
    </div>`
  card.addEventListener('click', (event) => {
    const action = event.target.closest('[data-action]')?.dataset.action
    if (action === 'open') void openFile(id)
    if (action === 'delete') void deleteFile(id)
    if (action === 'retry') void fileSync.retryErrors()
  })
  return { element: card, thumbKey: null, thumbUrl: null }
}

const updateThumbnail = (entry, file, local, isImage) => {
  const display = getFileDisplayState(file, local)
  // Prefer the local copy; before it exists, a remote file can be shown through a signed URL.
  const key = display.hasLocalCopy ? `local:${file.contentHash}` : display.isUploaded ? `remote:${file.remoteKey}` : null
  if (!isImage || key === entry.thumbKey) return
  entry.thumbKey = key
  const img = entry.element.querySelector('img')
  if (key == null) {
    img.removeAttribute('src')
    return
  }
  const resolve = display.hasLocalCopy ? fileSync.getFileUrl(file.path) : fileSync.resolveFileUrl(file.id)
  resolve
    .then((url) => {
      if (entry.thumbKey !== key || !url) return
      if (entry.thumbUrl?.startsWith('blob:')) URL.revokeObjectURL(entry.thumbUrl)
      entry.thumbUrl = url
      img.src = url
    })
    .catch((error) => console.warn('thumbnail', error))
}

const render = () => {
  const seen = new Set()
  let previous = null
  for (const file of files) {
    seen.add(file.id)
    let entry = cards.get(file.id)
    if (!entry) {
      entry = makeCard(file.id)
      cards.set(file.id, entry)
    }
    const card = entry.element
    const local = localRows.get(file.id)
    const metadata = getFileMetadata(file)
    const name = metadata?.custom?.name ?? file.contentHash.slice(0, 12)
    const isImage = (metadata?.mimeType ?? '').startsWith('image/')
    const { status, label, percent } = statusOf(file, local)
    if (card.dataset.status !== status || card.querySelector('.label').textContent !== label) {
      transitions.push({ id: file.id, status, label, at: Math.round(performance.now()) })
    }
    card.dataset.status = status
    card.dataset.contentHash = file.contentHash
    card.dataset.name = name
    card.querySelector('.name').textContent = name
    card.querySelector('.name').title = name
    card.querySelector('.size').textContent = [
      formatSize(metadata?.sizeBytes),
      metadata?.image ? `${metadata.image.width}×${metadata.image.height}` : '',
    ]
      .filter(Boolean)
      .join(' · ')
    card.querySelector('.kind').textContent = isImage ? '' : (name.split('.').pop() ?? 'file').slice(0, 5)
    card.querySelector('.status').className = `status status-${status}`
    card.querySelector('.label').textContent = label
    const bar = card.querySelector('progress')
    bar.hidden = percent == null
    if (percent != null) bar.value = percent
    card.querySelector('[data-action=retry]').hidden = status !== 'error'
    updateThumbnail(entry, file, local, isImage)
    // Keep DOM order equal to query order without re-inserting unchanged cards.
    const expectedNext = previous ? previous.nextSibling : grid.firstChild
    if (expectedNext !== card) grid.insertBefore(card, expectedNext)
    previous = card
  }
  for (const [id, entry] of cards) {
    if (!seen.has(id)) {
      if (entry.thumbUrl?.startsWith('blob:')) URL.revokeObjectURL(entry.thumbUrl)
      entry.element.remove()
      cards.delete(id)
    }
  }
  $('[data-testid=empty-hint]').hidden = files.length > 0
}

let renderQueued = false
function scheduleRender() {
  if (renderQueued) return
  renderQueued = true
  requestAnimationFrame(() => {
    renderQueued = false
    render()
  })
}

let networkConnected = false
const renderStatus = () => {
  setPill(
    syncPill,
    networkConnected ? 'online' : 'offline',
    networkConnected ? 'sync: connected' : 'sync: offline',
  )
  setPill(filesPill, filesOnline ? 'online' : 'offline', filesOnline ? 'files: online' : 'files: offline')
}

const pollNetwork = async () => {
  try {
    const status = await Effect.runPromise(store.networkStatus)
    networkConnected = status.isConnected
  } catch (error) {
    console.warn('network status', error)
  }
  renderStatus()
}
setInterval(pollNetwork, 500)
void pollNetwork()

// ---------------------------------------------------------------------------------------------------------------
// Actions

const addFiles = async (list) => {
  for (const file of list) {
    try {
      await fileSync.saveFile(file)
    } catch (error) {
      console.error('saveFile', error)
      toast(`Could not add ${file.name}: ${error?.message ?? error}`)
    }
  }
}

const deleteFile = async (id) => {
  try {
    await fileSync.deleteFile(id)
  } catch (error) {
    toast(`Could not delete: ${error?.message ?? error}`)
  }
}

const openFile = async (id) => {
  const file = files.find((row) => row.id === id)
  if (!file) return
  const url = await fileSync.resolveFileUrl(id).catch(() => null)
  if (!url) {
    toast('This file is not available yet')
    return
  }
  const metadata = getFileMetadata(file)
  const name = metadata?.custom?.name ?? file.contentHash
  const image = viewer.querySelector('img')
  image.hidden = !(metadata?.mimeType ?? '').startsWith('image/')
  image.src = image.hidden ? '' : url
  image.alt = name
  viewer.querySelector('figcaption').textContent = name
  const link = viewer.querySelector('a')
  link.href = url
  link.download = name
  viewer.dataset.fileId = id
  viewer.showModal()
}

$('[data-testid=viewer-close]').addEventListener('click', () => viewer.close())
viewer.addEventListener('click', (event) => {
  if (event.target === viewer) viewer.close()
})

input.addEventListener('change', () => {
  const list = [...input.files]
  input.value = ''
  void addFiles(list)
})
dropZone.addEventListener('dragover', (event) => {
  event.preventDefault()
  dropZone.classList.add('dragging')
})
dropZone.addEventListener('dragleave', () => dropZone.classList.remove('dragging'))
dropZone.addEventListener('drop', (event) => {
  event.preventDefault()
  dropZone.classList.remove('dragging')
  void addFiles([...(event.dataTransfer?.files ?? [])])
})

// ---------------------------------------------------------------------------------------------------------------
// For tests and curious people: `gallery` in the console.

const hex = (buffer) => [...new Uint8Array(buffer)].map((byte) => byte.toString(16).padStart(2, '0')).join('')

window.gallery = {
  storeId,
  signerBaseUrl,
  store,
  fileSync,
  /** The cards as shown: id, status, label, name, contentHash. */
  cards: () =>
    [...grid.querySelectorAll('[data-testid=file-card]')].map((card) => ({
      id: card.dataset.fileId,
      status: card.dataset.status,
      label: card.querySelector('.label').textContent,
      name: card.dataset.name,
      contentHash: card.dataset.contentHash,
    })),
  /** SHA-256 (hex) of this device's local copy of an active file, or null when it has none. */
  localSha256: async (fileId) => {
    const file = files.find((row) => row.id === fileId)
    return file ? window.gallery.localSha256AtPath(file.path) : null
  },
  /** Every status change of every card, oldest first. */
  transitions: (fileId) => transitions.filter((entry) => fileId == null || entry.id === fileId),
  /** SHA-256 (hex) of the local file at a content-addressed path, or null when it is not on this device. */
  localSha256AtPath: async (path) => {
    try {
      const local = await fileSync.readFile(path)
      return hex(await crypto.subtle.digest('SHA-256', await local.arrayBuffer()))
    } catch {
      return null
    }
  },
  status: () => ({ networkConnected, filesOnline }),
}
document.body.dataset.ready = 'true'
