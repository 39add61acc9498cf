//! Deliberate bugs in the *model server* or the simulator's own file engine (never in the real client or the real
//! planners), to prove the invariants catch them.
//!
//! Each mutant breaks one promise the real server keeps (`crates/livestore-server`); the simulator must report a
//! violation within a bounded number of seeds for each (`tests/sim.rs`). They are chosen with the hidden
//! `--mutant NAME` flag of the binary.

use std::fmt;
use std::str::FromStr;

/// A deliberate server bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutant {
    /// Accept a push without checking its first parent against the head.
    NoParentCheck,
    /// Acknowledge a push before its events are appended (the append lands a little later, or never).
    AckBeforeAppend,
    /// Fan a push out to other subscribers before its events are appended.
    FanoutBeforeAppend,
    /// Leave out the first event of a backlog that starts after a cursor.
    BacklogSkipsEvent,
    /// The sim's file engine records an upload as done (`remoteKey` written) even when the put failed.
    UploadDoneBeforePut,
    /// The sim's file engine deletes an object without checking that an active row still uses it.
    DeleteReferencedObject,
}

impl Mutant {
    /// Every mutant.
    pub const ALL: [Mutant; 6] = [
        Mutant::NoParentCheck,
        Mutant::AckBeforeAppend,
        Mutant::FanoutBeforeAppend,
        Mutant::BacklogSkipsEvent,
        Mutant::UploadDoneBeforePut,
        Mutant::DeleteReferencedObject,
    ];

    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::NoParentCheck => "no-parent-check",
            Mutant::AckBeforeAppend => "ack-before-append",
            Mutant::FanoutBeforeAppend => "fanout-before-append",
            Mutant::BacklogSkipsEvent => "backlog-skips-event",
            Mutant::UploadDoneBeforePut => "upload-done-before-put",
            Mutant::DeleteReferencedObject => "delete-referenced-object",
        }
    }
}

impl fmt::Display for Mutant {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// An unknown mutant name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown mutant {0:?}; known: no-parent-check, ack-before-append, fanout-before-append, backlog-skips-event, \
     upload-done-before-put, delete-referenced-object"
)]
pub struct UnknownMutant(pub String);

impl FromStr for Mutant {
    type Err = UnknownMutant;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Mutant::ALL
            .into_iter()
            .find(|mutant| mutant.name() == text)
            .ok_or_else(|| UnknownMutant(text.to_owned()))
    }
}
