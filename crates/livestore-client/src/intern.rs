//! Reusing the repeated strings of a run of events: the previous event's name, client and session ids are shared
//! (`Arc<str>`) when the next one repeats them, as they nearly always do in a pulled page or an eventlog read, so
//! a page does not allocate three copies of the same strings per event.

use std::sync::Arc;

/// The last name, client id and session id seen.
#[derive(Default)]
pub(crate) struct Interner {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) client_id: Option<Arc<str>>,
    pub(crate) session_id: Option<Arc<str>>,
}

/// `text` as an `Arc<str>`, the one in `slot` when it is equal, else a new one remembered in `slot`.
pub(crate) fn intern(slot: &mut Option<Arc<str>>, text: &str) -> Arc<str> {
    match slot {
        Some(previous) if **previous == *text => Arc::clone(previous),
        _ => Arc::clone(slot.insert(Arc::from(text))),
    }
}
