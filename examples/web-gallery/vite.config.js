import { defineConfig } from 'vite'

export default defineConfig({
  // LiveStore's leader worker and shared worker are ES modules.
  worker: { format: 'es' },
  // wa-sqlite ships its own wasm next to its JS; pre-bundling it breaks the wasm URL in `vite dev`.
  optimizeDeps: { exclude: ['@livestore/wa-sqlite'] },
  // main.js awaits the store at the top level.
  // LiveStore's workers and wa-sqlite are large by nature; no point warning about it.
  build: { target: 'es2022', chunkSizeWarningLimit: 2048 },
})
