//! The crate's error type.
//!
//! Everything here describes input the core was handed (a malformed sequence-number string, upstream events that
//! break the ordering rules). None of it is a panic: a misbehaving server must not be able to crash a client.

/// Why the core refused its input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreError {
    /// A sequence number in `e{global}[.{client}][r{generation}]` notation did not parse.
    #[error("invalid event sequence number {0:?}: expected e<global>[.<client>][r<generation>]")]
    InvalidSeqNumNotation(String),
    /// Events of one payload are not strictly ascending (by global, then client number).
    #[error("events must be strictly ascending, but {previous} is followed by {next}")]
    NotAscending {
        /// The earlier event in the payload.
        previous: String,
        /// The event that is not greater than it.
        next: String,
    },
    /// The first upstream event is not greater than the upstream head the client already has.
    #[error("upstream event {received} is not after the upstream head {upstream_head}")]
    NotAfterUpstreamHead {
        /// The client's current upstream head.
        upstream_head: String,
        /// The first incoming event.
        received: String,
    },
    /// An upstream event does not continue the chain: its parent is not the previous event.
    #[error("upstream event {received} has parent {parent}, expected {expected_parent}")]
    ChainGap {
        /// The event that breaks the chain.
        received: String,
        /// Its parent as sent.
        parent: String,
        /// The parent it should have had.
        expected_parent: String,
    },
}
