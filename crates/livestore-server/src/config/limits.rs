//! Resource limits: what one client may make the server hold, and for how long.
//!
//! Every number here is range-checked at startup ([`Limits::validate`]) with the allowed range in the message, so a
//! setting that would panic on the first connection (a zero-sized queue, a timeout that overflows a clock) is refused
//! before the server binds. RELIABILITY.md ("What one client can make us hold") explains each bound and what happens
//! at it.

use serde::Deserialize;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Size, time and count limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest WebSocket message and HTTP sync body, in bytes. Clients send up to ~900 KB per request.
    pub max_message_bytes: usize,
    /// Outgoing frames queued per connection before a slow client is disconnected.
    pub outbound_queue_frames: usize,
    /// Outgoing bytes queued per connection (backlog pages, live batches, replies) before a slow client is
    /// disconnected (live) or made to wait (backlog). At least `max_message_bytes`: one live batch must fit.
    pub outbound_queue_bytes: usize,
    /// Seconds a connection may take to send its first bytes and each request's headers; also how long an idle
    /// keep-alive connection stays open. Guards against clients that connect and send nothing, or dribble headers.
    pub header_read_timeout_seconds: u64,
    /// Seconds a buffered request body (sync, signer) may take in all, a streamed upload may go without a byte, and
    /// a started WebSocket message may take to complete.
    pub body_read_timeout_seconds: u64,
    /// Seconds a client may leave written data unread (a WebSocket, a streamed pull, any response) before its
    /// connection is closed.
    pub write_timeout_seconds: u64,
    /// Pulls one WebSocket connection may have open at once; one more closes the connection (1008).
    pub max_pulls_per_connection: usize,
    /// Pushes one WebSocket connection may have submitted and not yet answered; the connection's reader waits
    /// (TCP backpressure) beyond that.
    pub max_pushes_in_flight: usize,
    /// Process-wide budget for bytes held on behalf of clients: request bodies being read, WebSocket messages
    /// being received, pushes waiting for their commit, and queued outbound frames. At the budget new requests get
    /// 503 and connections that need more are closed with 1013.
    pub memory_budget_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 * MIB as usize,
            outbound_queue_frames: 256,
            outbound_queue_bytes: 8 * MIB as usize,
            header_read_timeout_seconds: 30,
            body_read_timeout_seconds: 30,
            write_timeout_seconds: 30,
            max_pulls_per_connection: 64,
            max_pushes_in_flight: 64,
            memory_budget_bytes: GIB,
        }
    }
}

/// One range rule: the setting's name, its value and the inclusive range it must be in.
struct Range {
    name: &'static str,
    value: u64,
    min: u64,
    max: u64,
    unit: &'static str,
}

impl Limits {
    /// Checks every setting against its range; the message names the setting, the value and the range.
    pub fn validate(&self) -> Result<(), String> {
        let as_u64 = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
        let rules = [
            Range {
                name: "max_message_bytes",
                value: as_u64(self.max_message_bytes),
                // sync-cf clients send frames of up to ~900 KB.
                min: MIB,
                max: 64 * MIB,
                unit: " bytes",
            },
            Range {
                name: "outbound_queue_frames",
                value: as_u64(self.outbound_queue_frames),
                min: 16,
                max: 65_536,
                unit: "",
            },
            Range {
                name: "outbound_queue_bytes",
                value: as_u64(self.outbound_queue_bytes),
                min: as_u64(self.max_message_bytes),
                max: GIB,
                unit: " bytes (at least max_message_bytes)",
            },
            Range {
                name: "header_read_timeout_seconds",
                value: self.header_read_timeout_seconds,
                min: 1,
                max: 3_600,
                unit: " s",
            },
            Range {
                name: "body_read_timeout_seconds",
                value: self.body_read_timeout_seconds,
                min: 1,
                max: 3_600,
                unit: " s",
            },
            Range {
                name: "write_timeout_seconds",
                value: self.write_timeout_seconds,
                min: 1,
                max: 3_600,
                unit: " s",
            },
            Range {
                name: "max_pulls_per_connection",
                value: as_u64(self.max_pulls_per_connection),
                min: 1,
                max: 10_000,
                unit: "",
            },
            Range {
                name: "max_pushes_in_flight",
                value: as_u64(self.max_pushes_in_flight),
                min: 1,
                max: 4_096,
                unit: "",
            },
            Range {
                name: "memory_budget_bytes",
                value: self.memory_budget_bytes,
                min: 64 * MIB,
                max: 1024 * GIB,
                unit: " bytes",
            },
        ];
        for rule in rules {
            if rule.value < rule.min || rule.value > rule.max {
                return Err(format!(
                    "limits.{} = {} is out of range: allowed {}..={}{}",
                    rule.name, rule.value, rule.min, rule.max, rule.unit
                ));
            }
        }
        if as_u64(self.max_message_bytes) * 2 > self.memory_budget_bytes {
            return Err(format!(
                "limits.memory_budget_bytes = {} is out of range: it must hold at least two messages of \
                 limits.max_message_bytes ({})",
                self.memory_budget_bytes, self.max_message_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_bound_names_its_range() {
        Limits::default().validate().unwrap();
        let zero_queue = Limits { outbound_queue_frames: 0, ..Limits::default() };
        assert_eq!(
            zero_queue.validate().unwrap_err(),
            "limits.outbound_queue_frames = 0 is out of range: allowed 16..=65536"
        );
        let huge_timeout = Limits { header_read_timeout_seconds: u64::MAX, ..Limits::default() };
        assert!(huge_timeout.validate().unwrap_err().contains("allowed 1..=3600 s"));
        let small_outbound = Limits { outbound_queue_bytes: MIB as usize, ..Limits::default() };
        assert!(small_outbound.validate().unwrap_err().contains("at least max_message_bytes"));
        let tiny_budget = Limits {
            max_message_bytes: 64 * MIB as usize,
            outbound_queue_bytes: 64 * MIB as usize,
            memory_budget_bytes: 100 * MIB,
            ..Limits::default()
        };
        assert!(tiny_budget.validate().unwrap_err().contains("at least two messages"));
    }
}
