//! The reconnect decision as a pure state machine: after a connection ends, how long to wait before the next.
//!
//! Jittered exponential backoff: the delay starts at `min_backoff` and doubles per failed connection up to
//! `max_backoff`, each wait drawn ±25 % around it so many clients do not reconnect in lockstep. A connection
//! that ended after making progress ([`EndReason::resets_backoff`]) reconnects at once and resets the backoff.
//! Randomness comes from the caller's RNG, so a seeded RNG gives the same delays every run.

use std::time::Duration;

use rand::Rng;

use super::reason::EndReason;

/// The short pause before reconnecting after a connection that made progress (not zero, so a server that keeps
/// failing the same way cannot make the driver spin).
pub const RECONNECT_SOON: Duration = Duration::from_millis(50);

/// The backoff state between connections.
#[derive(Debug, Clone)]
pub struct Reconnect {
    backoff: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl Reconnect {
    /// Backoff from `min_backoff` doubling up to `max_backoff`.
    pub fn new(min_backoff: Duration, max_backoff: Duration) -> Self {
        Reconnect { backoff: min_backoff, min_backoff, max_backoff }
    }

    /// How long to wait before connecting again after a connection ended for `reason`, drawing the jitter from
    /// `rng`. (A [`ConnectionEnd::Stop`](super::ConnectionEnd::Stop) needs no decision: the driver stops.)
    pub fn delay_after(&mut self, reason: &EndReason, rng: &mut impl Rng) -> Duration {
        if reason.resets_backoff() {
            self.backoff = self.min_backoff;
            return RECONNECT_SOON;
        }
        let delay = jitter(self.backoff, rng);
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        delay
    }

    /// The delay the next backoff is drawn around.
    pub fn backoff(&self) -> Duration {
        self.backoff
    }
}

/// ±25 % jitter.
fn jitter(delay: Duration, rng: &mut impl Rng) -> Duration {
    delay.mul_f64(rng.random_range(0.75..1.25))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::sync::reason::{StallReason, TransportFailure};

    const CLOSED: EndReason = EndReason::Transport(TransportFailure::Closed);

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let mut reconnect = Reconnect::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut rng = StdRng::seed_from_u64(7);
        let mut around = Vec::new();
        for _ in 0..8 {
            let expected = reconnect.backoff();
            let delay = reconnect.delay_after(&CLOSED, &mut rng);
            assert!(delay >= expected.mul_f64(0.75) && delay < expected.mul_f64(1.25), "{delay:?}");
            around.push(expected.as_secs());
        }
        assert_eq!(around, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let delays = |seed| {
            let mut reconnect = Reconnect::new(Duration::from_secs(1), Duration::from_secs(30));
            let mut rng = StdRng::seed_from_u64(seed);
            (0..5).map(|_| reconnect.delay_after(&CLOSED, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(delays(42), delays(42));
        assert_ne!(delays(42), delays(43));
    }

    #[test]
    fn progress_resets_the_backoff() {
        let mut reconnect = Reconnect::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut rng = StdRng::seed_from_u64(1);
        reconnect.delay_after(&CLOSED, &mut rng);
        reconnect.delay_after(&CLOSED, &mut rng);
        assert_eq!(reconnect.backoff(), Duration::from_secs(4));
        let stalled = EndReason::Stalled(StallReason::PushUnanswered);
        assert_eq!(reconnect.delay_after(&stalled, &mut rng), RECONNECT_SOON);
        assert_eq!(reconnect.backoff(), Duration::from_secs(1));
    }
}
