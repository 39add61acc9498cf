//! The retry delay after a failure: capped exponential backoff with ±20 % jitter, where the jitter comes from a
//! random value the caller draws (so a simulator can inject its own).

use std::time::Duration;

/// `min(base × 2^(attempts-1), max)`, scaled by a factor in `[0.8, 1.2)` picked by `random` (in `[0, 1)`).
pub fn backoff(base: Duration, max: Duration, attempts: u32, random: f64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let delay = base.saturating_mul(1u32 << exponent).min(max);
    delay.mul_f64(0.8 + 0.4 * random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn doubles_per_attempt_then_stays_at_the_cap() {
        let delays: Vec<u64> =
            (1..=8).map(|attempts| backoff(BASE, MAX, attempts, 0.5).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        // Zero attempts counts as the first; huge counts neither overflow nor pass the cap.
        assert_eq!(backoff(BASE, MAX, 0, 0.5), BASE);
        assert_eq!(backoff(BASE, MAX, u32::MAX, 0.5), MAX);
    }

    #[test]
    fn jitter_spans_plus_minus_twenty_percent() {
        assert_eq!(backoff(BASE, MAX, 1, 0.0), Duration::from_millis(800));
        assert_eq!(backoff(BASE, MAX, 3, 0.0), Duration::from_millis(3200));
        assert!(backoff(BASE, MAX, 1, 0.999_999) < Duration::from_millis(1200));
        assert!(backoff(BASE, MAX, 1, 0.999_999) > Duration::from_millis(1199));
        // Out-of-range draws are clamped, never negative or beyond +20 %.
        assert_eq!(backoff(BASE, MAX, 1, -3.0), Duration::from_millis(800));
        assert_eq!(backoff(BASE, MAX, 1, 7.0), Duration::from_millis(1200));
    }
}
