//! The trace hash: every step of a run folded into one SHA-256, so two runs of a seed can be compared by a line.
//!
//! A step is `(virtual time, node, kind, payload)`; the payload is whatever identifies what happened (a frame's
//! text, an operation's index). The hash says only *whether* two runs diverged; a failing seed is then replayed
//! with `--seed` to see where. Nothing here decides anything.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// Which node a step happened at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// The sync server model.
    Server,
    /// A client, by index.
    Client(usize),
    /// The network (connection set-up and tear-down).
    Network,
    /// The plan (operations and faults firing).
    Plan,
}

impl Node {
    fn code(self) -> u64 {
        match self {
            Node::Server => 0,
            Node::Network => 1,
            Node::Plan => 2,
            Node::Client(index) => 16 + index as u64,
        }
    }
}

/// The running hash of a run.
#[derive(Debug, Clone, Default)]
pub struct TraceHash {
    hasher: Sha256,
    steps: u64,
}

impl TraceHash {
    /// Folds one step in.
    pub fn step(&mut self, now: Duration, node: Node, kind: &str, payload: &[u8]) {
        self.steps += 1;
        let nanos = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        self.hasher.update(nanos.to_le_bytes());
        self.hasher.update(node.code().to_le_bytes());
        // Lengths first, so ("ab", "c") and ("a", "bc") hash differently.
        self.hasher.update((kind.len() as u64).to_le_bytes());
        self.hasher.update(kind.as_bytes());
        self.hasher.update((payload.len() as u64).to_le_bytes());
        self.hasher.update(payload);
    }

    /// How many steps were folded.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The hash as lowercase hex.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}
