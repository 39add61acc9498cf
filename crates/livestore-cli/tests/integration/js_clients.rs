//! Real `@livestore/*` 0.4.0 Node clients syncing through the server (filled in below).
