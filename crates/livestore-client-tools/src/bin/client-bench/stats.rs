//! The result shape every workload prints (shared with the JavaScript benchmark in `bench/js-client`).

use std::time::Duration;

use serde_json::{Value, json};

/// Which client produced a result.
pub(crate) const CLIENT: &str = "livestore-rs";

/// One workload's result: a headline value plus the latency distribution of its unit of work.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) workload: &'static str,
    pub(crate) description: String,
    pub(crate) events: u64,
    /// The headline: events/s for throughput workloads, the median for latency workloads.
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) higher_is_better: bool,
    /// Per unit of work (a commit, a round, a repetition) in `latency_unit`.
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) latency_unit: &'static str,
    pub(crate) samples: usize,
    pub(crate) note: Option<String>,
    /// CPU time this process used for the measured part (all threads), when known.
    pub(crate) cpu_seconds: Option<f64>,
}

impl Report {
    /// A throughput result: `events` over `elapsed`, with the latencies of the individual operations.
    pub(crate) fn throughput(
        workload: &'static str,
        description: impl Into<String>,
        events: u64,
        elapsed: Duration,
        operations: &mut [Duration],
        latency_unit: &'static str,
    ) -> Report {
        Report {
            workload,
            description: description.into(),
            events,
            value: round(events as f64 / elapsed.as_secs_f64().max(1e-9)),
            unit: "events/s",
            higher_is_better: true,
            p50: in_unit(quantile(operations, 0.50), latency_unit),
            p99: in_unit(quantile(operations, 0.99), latency_unit),
            latency_unit,
            samples: operations.len(),
            note: None,
            cpu_seconds: None,
        }
    }

    /// A latency result: the median is the headline.
    pub(crate) fn latency(
        workload: &'static str,
        description: impl Into<String>,
        events: u64,
        samples: &mut [Duration],
        unit: &'static str,
    ) -> Report {
        let p50 = in_unit(quantile(samples, 0.50), unit);
        Report {
            workload,
            description: description.into(),
            events,
            value: p50,
            unit,
            higher_is_better: false,
            p50,
            p99: in_unit(quantile(samples, 0.99), unit),
            latency_unit: unit,
            samples: samples.len(),
            note: None,
            cpu_seconds: None,
        }
    }

    #[allow(dead_code)] // kept for workloads that need to qualify their numbers
    /// Records the CPU time since `start` (see [`cpu_time`]).
    pub(crate) fn with_cpu_since(mut self, start: Option<Duration>) -> Report {
        if let (Some(start), Some(now)) = (start, cpu_time()) {
            self.cpu_seconds = Some(round(now.saturating_sub(start).as_secs_f64()));
        }
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "client": CLIENT,
            "workload": self.workload,
            "description": self.description,
            "events": self.events,
            "value": self.value,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "p50": self.p50,
            "p99": self.p99,
            "latency_unit": self.latency_unit,
            "samples": self.samples,
            "note": self.note,
            "cpu_seconds": self.cpu_seconds,
            // Load-independent efficiency: what one fully available core would sustain.
            "events_per_cpu_second": self.cpu_seconds.filter(|seconds| *seconds > 0.0).map(|seconds| round(self.events as f64 / seconds)),
        })
    }
}

/// The sample at `fraction` (nearest rank); zero for no samples.
pub(crate) fn quantile(samples: &mut [Duration], fraction: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() as f64 * fraction).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

fn in_unit(duration: Duration, unit: &str) -> f64 {
    let seconds = duration.as_secs_f64();
    round(match unit {
        "us" => seconds * 1e6,
        "ms" => seconds * 1e3,
        _ => seconds,
    })
}

/// Three significant decimals are plenty and keep the JSON readable.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// User plus system CPU time of this process so far (Linux `/proc/self/stat`, 100 ticks per second); `None`
/// elsewhere. Machines shared with other work make wall-clock rates noisy; CPU time is what the client costs.
pub(crate) fn cpu_time() -> Option<Duration> {
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields after its closing parenthesis are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 1000 / TICKS_PER_SECOND))
}
