//! Latency and throughput statistics.

use std::time::Duration;

use serde_json::{Value, json};

/// Median, p99 and extremes of a set of durations, in milliseconds.
pub fn summarize(samples: &mut [Duration]) -> Value {
    if samples.is_empty() {
        return json!(null);
    }
    samples.sort_unstable();
    let at = |quantile: f64| {
        let index = ((samples.len() as f64 * quantile).ceil() as usize).clamp(1, samples.len()) - 1;
        millis(samples[index])
    };
    json!({
        "count": samples.len(),
        "min_ms": millis(samples[0]),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": millis(samples[samples.len() - 1]),
    })
}

/// A duration in milliseconds with microsecond resolution.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}
