//! LiveStore client store (work in progress).
