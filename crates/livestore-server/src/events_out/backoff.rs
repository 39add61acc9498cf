//! When to retry a failed delivery: exponential backoff with jitter, capped, forever.
//!
//! Delivery never gives up on a batch and never skips one (the next batch of a store waits for it), so the policy
//! only decides how hard a failing receiver is knocked on. The wait doubles from `initial` up to `max`; each wait
//! is drawn uniformly from its upper half ("equal jitter"): never less than half the nominal wait, so a failing
//! receiver is not hammered, and spread, so many stores that failed together do not retry in lockstep.

use std::time::Duration;

use rand::Rng;

/// Default first wait after a failure.
pub(crate) const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(500);

/// How long to wait between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// The nominal wait after the first failure.
    pub(crate) initial: Duration,
    /// The longest wait.
    pub(crate) max: Duration,
}

impl RetryPolicy {
    /// The wait after the `failures`th failure in a row (1 for the first).
    pub(crate) fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        let nominal = self.initial.saturating_mul(1 << doublings.min(31)).min(self.max);
        let half = nominal / 2;
        let spread = u64::try_from((nominal - half).as_micros()).unwrap_or(u64::MAX);
        half + Duration::from_micros(rng.random_range(0..=spread))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const POLICY: RetryPolicy =
        RetryPolicy { initial: Duration::from_millis(500), max: Duration::from_secs(60) };

    #[test]
    fn waits_double_within_their_upper_half_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        for failures in 1..=12 {
            let nominal = Duration::from_millis(500 * (1 << (failures - 1))).min(POLICY.max);
            for _ in 0..200 {
                let delay = POLICY.delay(failures, &mut rng);
                assert!(
                    delay >= nominal / 2 && delay <= nominal,
                    "{failures}: {delay:?} vs {nominal:?}"
                );
            }
        }
        assert!(
            POLICY.delay(u32::MAX, &mut rng) <= POLICY.max,
            "no overflow after endless failures"
        );
    }

    #[test]
    fn waits_are_spread() {
        let mut rng = StdRng::seed_from_u64(11);
        let delays: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| POLICY.delay(8, &mut rng)).collect();
        assert!(delays.len() > 40, "jitter spreads retries: {} distinct of 50", delays.len());
        let below_cap = delays.iter().filter(|delay| **delay < POLICY.max).count();
        assert!(below_cap > 40, "capped waits are jittered too");
    }
}
