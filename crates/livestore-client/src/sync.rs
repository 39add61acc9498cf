//! The sync driver (work in progress).
