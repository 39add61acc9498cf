//! Resuming a multipart upload after `kill -9`, and re-signing a part URL that expired on the way, against the real
//! binary and server: only the parts the store does not have are sent again, and the object is right.
//!
//! Between the client and the server runs a small request-aware TCP proxy (`PartGate`): it forwards bytes unchanged
//! but can hold part uploads from some part number on (so the client is killed with a known set of parts stored)
//! and delay one part upload past its URL's lifetime (so the store answers "expired" and the client must sign that
//! part again). What the store received is read from the server's `/metrics` counters.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What the proxy does to part uploads (`PUT ...?partNumber=N&...`).
#[derive(Debug, Default)]
struct GateRules {
    /// Requests for this part number or higher are never forwarded (the client waits until it is killed).
    hold_from_part: Option<u32>,
    /// The first request for this part number is forwarded only after this delay.
    delay_part_once: Option<(u32, Duration)>,
    /// Request lines of part uploads seen, in order (part number, the line).
    seen: Vec<(u32, String)>,
    /// Requests currently held.
    holding: usize,
}

#[derive(Clone)]
struct PartGate {
    port: u16,
    rules: Arc<Mutex<GateRules>>,
}

impl PartGate {
    async fn start(target_port: u16) -> PartGate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let rules = Arc::new(Mutex::new(GateRules::default()));
        let gate = PartGate { port, rules };
        let accepting = gate.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let gate = accepting.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                        return;
                    };
                    gate.pump(client, upstream).await;
                });
            }
        });
        gate
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, GateRules> {
        self.rules.lock().unwrap()
    }

    /// Client → server bytes go through `gate`; server → client bytes are copied as they are.
    async fn pump(&self, client: TcpStream, upstream: TcpStream) {
        let (mut client_read, mut client_write) = client.into_split();
        let (mut upstream_read, mut upstream_write) = upstream.into_split();
        let answers = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
        });
        let mut buffer = vec![0u8; 64 * 1024];
        // The end of the previous chunk, so a request line split across two reads is still recognised.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let read = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let mut window = std::mem::take(&mut tail);
            window.extend_from_slice(&buffer[..read]);
            if let Some((part, line)) = part_request_line(&window) {
                let (hold, delay) = {
                    let mut rules = self.rules();
                    rules.seen.push((part, line));
                    let hold = rules.hold_from_part.is_some_and(|from| part >= from);
                    let delay = match rules.delay_part_once {
                        Some((delayed, delay)) if delayed == part => {
                            rules.delay_part_once = None;
                            Some(delay)
                        }
                        _ => None,
                    };
                    if hold {
                        rules.holding += 1;
                    }
                    (hold, delay)
                };
                if hold {
                    // Never forwarded: the server must not see this part. Ends when the client goes away.
                    let mut sink = vec![0u8; 64 * 1024];
                    while matches!(client_read.read(&mut sink).await, Ok(read) if read > 0) {}
                    self.rules().holding -= 1;
                    break;
                }
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
            }
            tail = window[window.len().saturating_sub(256)..].to_vec();
            if upstream_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
        let _ = upstream_write.shutdown().await;
        answers.abort();
    }
}

/// The part number and request line of a part upload that ends in `window`, if one does.
fn part_request_line(window: &[u8]) -> Option<(u32, String)> {
    let text = String::from_utf8_lossy(window);
    let start = text.rfind("PUT /")?;
    let line = text[start..].split("\r\n").next()?;
    let number = line.split("partNumber=").nth(1)?;
    let digits: String = number.chars().take_while(char::is_ascii_digit).collect();
    // A request line is complete once its HTTP version is there; until then the next read completes it.
    if !line.contains(" HTTP/1.1") {
        return None;
    }
    Some((digits.parse().ok()?, line.to_owned()))
}

/// One counter of the server's `/metrics`.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let text =
        reqwest::get(format!("{}/metrics", server.http_url())).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn files_command(data_dir: &Path, server: &str, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_livestore"));
    command
        .arg("files")
        .args(["--store", "files-resume", "--server", server, "--data-dir"])
        .arg(data_dir)
        .args(["--multipart-threshold", "8MiB", "--part-size", "5MiB", "--uploads", "1"])
        .args(args)
        .env("LIVESTORE_LOG", "warn")
        .env_remove("LIVESTORE_TOKEN");
    command
}

fn run_ok(mut command: std::process::Command) -> String {
    let output = command.output().expect("the livestore binary runs");
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

const PART: u64 = 5 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_multipart_upload_resumes_with_the_missing_parts_and_re_signs_an_expired_part_url()
{
    // Part URLs live three seconds; the proxy holds one part back for five.
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("livestore.toml");
    std::fs::write(
        &config,
        format!(
            "[files]\nttl_seconds = 3\n[files.backend]\nkind = \"embedded\"\ndata_dir = {:?}\n",
            config_dir.path().join("objects")
        ),
    )
    .unwrap();
    let server = TestServer::start_with(&[], &["--config", config.to_str().unwrap()]);
    let gate = PartGate::start(server.port).await;
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("big.bin");
    let size: u64 = 64 * 1024 * 1024 + 3;
    let bytes = random_bytes(size as usize, 31);
    std::fs::write(&source, &bytes).unwrap();
    let parts = size.div_ceil(PART) as u32;
    assert_eq!(parts, 13);
    let uploader = temp.path().join("uploader");
    let id = run_ok(files_command(&uploader, &gate.url(), &["add", source.to_str().unwrap()]))
        .trim()
        .to_owned();

    // Parts 1-4 reach the store, part 5 and after are held; then the uploader dies.
    gate.rules().hold_from_part = Some(5);
    let mut child = files_command(&uploader, &gate.url(), &["sync", "--timeout", "120"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("four parts stored and the fifth held", Duration::from_secs(60), async || {
        metric(&server, "livestore_object_parts_stored_total").await == 4
            && gate.rules().holding > 0
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let stored_before = metric(&server, "livestore_object_parts_stored_total").await;
    let bytes_before = metric(&server, "livestore_object_bytes_stored_total").await;
    assert_eq!(stored_before, 4, "a held part reached the store");
    assert_eq!(bytes_before, 4 * PART);
    let record_dir = uploader.join("livestore-filesync-files/.work/files-resume/uploads");
    assert_eq!(std::fs::read_dir(&record_dir).unwrap().count(), 1, "the upload's record survives");

    // The restarted uploader sends parts 5-13 only; the first try of part 13 waits past its URL's lifetime.
    {
        let mut rules = gate.rules();
        rules.hold_from_part = None;
        rules.delay_part_once = Some((parts, Duration::from_secs(5)));
        rules.seen.clear();
    }
    let mut resumed = files_command(&uploader, &gate.url(), &["sync", "--timeout", "120"]);
    resumed.env("LIVESTORE_LOG", "warn,livestore_files::_events=info");
    let output = resumed.output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the resumed sync failed:\n{log}");
    assert!(log.contains("resuming multipart upload"), "{log}");
    // The expired URL was signed again inside the attempt, not noticed as a failure and retried later.
    assert!(log.contains("part URL expired; signing the part again"), "{log}");
    assert!(!log.contains("transfer failed"), "{log}");
    let sent_again = metric(&server, "livestore_object_parts_stored_total").await - stored_before;
    let bytes_again = metric(&server, "livestore_object_bytes_stored_total").await - bytes_before;
    assert_eq!(sent_again, u64::from(parts) - 4, "only the missing parts are stored again");
    assert_eq!(bytes_again, size - 4 * PART, "only the missing parts' bytes are sent again");
    let seen = std::mem::take(&mut gate.rules().seen);
    let mut numbers: Vec<u32> = seen.iter().map(|(part, _)| *part).collect();
    numbers.sort_unstable();
    let mut expected: Vec<u32> = (5..=parts).collect();
    expected.push(parts);
    expected.sort_unstable();
    assert_eq!(numbers, expected, "parts 5-13 once each, part 13 twice (expired, then re-signed)");
    let tries: Vec<&String> =
        seen.iter().filter(|(part, _)| *part == parts).map(|(_, line)| line).collect();
    assert_ne!(tries[0], tries[1], "the second try of the part carries a new signature");
    assert_eq!(std::fs::read_dir(&record_dir).unwrap().count(), 0, "the record is gone when done");

    // The object is the file: another client downloads it and the bytes (and so their SHA-256) match.
    let listed = run_ok(files_command(&uploader, &server.http_url(), &["ls", "--json"]));
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let hash = livestore_files::ContentHash::of(&bytes).to_string();
    assert_eq!(rows[0]["remoteKey"], format!("files-resume/{hash}"));
    let downloader = temp.path().join("downloader");
    run_ok(files_command(&downloader, &server.http_url(), &["sync", "--timeout", "120"]));
    let out = temp.path().join("out.bin");
    run_ok(files_command(
        &downloader,
        &server.http_url(),
        &["get", &id, "-o", out.to_str().unwrap()],
    ));
    let downloaded = std::fs::read(&out).unwrap();
    assert_eq!(downloaded.len() as u64, size);
    assert_eq!(livestore_files::ContentHash::of(&downloaded).to_string(), hash);
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}
