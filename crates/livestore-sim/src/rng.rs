//! Seeded random streams: one root seed forked into independent streams per subsystem.
//!
//! Each subsystem (plan generation, network latencies, runtime fault decisions, each client's reconnect jitter)
//! draws from its own [`StdRng`], seeded from the root seed and a fixed stream label. Draws in one stream never
//! shift another's, so removing a client or a fault while shrinking leaves the other streams' draws alone. This
//! module knows nothing about what the draws mean; `plan`, `net` and `client` do.

use rand::SeedableRng;
use rand::rngs::StdRng;

/// The subsystems that draw random numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The workload half of the plan: clients, operations, their times and sizes.
    Workload,
    /// The fault half of the plan: which faults, when, for how long.
    Faults,
    /// Per-frame network latency.
    Network,
    /// One client's reconnect jitter (by client index).
    Client(usize),
    /// The file half of the plan: file saves, replaces and deletes (drawn apart, so todo plans stay as they were).
    FileWorkload,
    /// The blob store's runtime fault decisions.
    Blob,
    /// One client's file engine: transfer latencies and backoff jitter (by client index).
    FileEngine(usize),
}

impl Stream {
    fn label(self) -> u64 {
        match self {
            Stream::Workload => 1,
            Stream::Faults => 2,
            Stream::Network => 3,
            Stream::Client(index) => 1_000 + index as u64,
            Stream::FileWorkload => 5,
            Stream::Blob => 6,
            Stream::FileEngine(index) => 2_000 + index as u64,
        }
    }
}

/// The RNG of one stream of a seed.
pub fn fork(seed: u64, stream: Stream) -> StdRng {
    StdRng::seed_from_u64(splitmix64(seed ^ splitmix64(stream.label())))
}

/// SplitMix64's finalizer: spreads nearby seeds and labels over the whole `u64` range.
fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;

    #[test]
    fn streams_are_independent_and_reproducible() {
        let draw = |seed, stream| fork(seed, stream).random::<u64>();
        assert_eq!(draw(7, Stream::Network), draw(7, Stream::Network));
        assert_ne!(draw(7, Stream::Network), draw(7, Stream::Faults));
        assert_ne!(draw(7, Stream::Client(0)), draw(7, Stream::Client(1)));
        assert_ne!(draw(7, Stream::Network), draw(8, Stream::Network));
    }
}
