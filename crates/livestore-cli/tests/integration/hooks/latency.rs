//! What a hook costs on loopback, measured and printed (docs/hooks.md quotes the figures).

use std::time::{Duration, Instant};

use super::receiver::Receiver;
use super::{connect, http_ping, http_url, metrics, start, users};
use crate::support::*;

/// What a hook costs on loopback: HTTP pings (each one asks the connect hook) and WebSocket pushes (each one asks
/// the push hook), with and without hooks, plus the server's own `livestore_hook_seconds`. Printed for the docs.
#[tokio::test]
async fn a_hook_call_on_loopback_costs_about_a_millisecond() {
    const ROUNDS: u64 = 200;
    let receiver = Receiver::start(users).await;
    let (hooked, _dir) = start(&receiver, "connect_cache_seconds = 0\n", "", &[]);
    let plain = TestServer::start();
    let mut report = Vec::new();
    for (name, server, user_url) in [
        ("with hooks", &hooked, http_url(&hooked, "timed", "ann")),
        ("without", &plain, format!("{}/?storeId=timed&transport=http", plain.http_url())),
    ] {
        let client = reqwest::Client::new();
        let mut pings = Vec::new();
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let response = client.post(&user_url).body(http_ping("timed")).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
            pings.push(started.elapsed());
        }
        let mut ws = match name {
            "with hooks" => connect(server, "timed", "ann").await,
            _ => WsClient::connect(&server.ws_url("timed")).await,
        };
        let mut pushes = Vec::new();
        for seq in 1..=ROUNDS {
            let started = Instant::now();
            ws.send(&push_request("p", "timed", events(seq, 1), None)).await;
            assert_eq!(ws.frame().await["exit"]["_tag"], "Success");
            pushes.push(started.elapsed());
        }
        report.push(format!(
            "{name}: HTTP ping {}, WebSocket push {}",
            summary(pings),
            summary(pushes)
        ));
    }
    let metrics = metrics(&hooked).await;
    for hook in ["connect", "push"] {
        let sum = metric_value(&metrics, &format!("livestore_hook_seconds_sum{{hook=\"{hook}\"}}"))
            .unwrap();
        let count =
            metric_value(&metrics, &format!("livestore_hook_seconds_count{{hook=\"{hook}\"}}"))
                .unwrap();
        assert!(count >= ROUNDS as f64, "{hook}: {count} calls timed");
        let mean = Duration::from_secs_f64(sum / count);
        report.push(format!(
            "{hook} hook call, as the server timed it: mean {mean:.2?} over {count} calls"
        ));
        assert!(mean < Duration::from_millis(50), "a loopback hook call took {mean:?} on average");
    }
    eprintln!("hook latency on loopback:\n  {}", report.join("\n  "));
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction) as usize];
    format!("p50 {:.2?} p99 {:.2?}", at(0.5), at(0.99))
}
