//! `objects-bench`: measures the signer (signatures per second, median and
//! p99 latency) and the embedded store (PUT and GET throughput of one large
//! object with SHA-256 verification, and peak RSS growth) over real loopback
//! HTTP, and prints one JSON document.
//!
//! The server runs on its own single-worker runtime (plus tokio's blocking
//! pool for disk IO), the load generator on another, so "one core" numbers
//! are about the server's async worker.
//!
//! Usage: `objects-bench [--size-mib 1024] [--data-dir DIR] [--sign-seconds 3]
//! [--sign-concurrency 8]`. The data dir defaults to a temp dir; on a slow
//! disk the PUT number is bound by fsync, so also try a tmpfs (`/dev/shm`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use livestore_objects::{AllowAll, FileServices, FilesConfig};
use sha2::{Digest, Sha256};

const CHUNK_BYTES: usize = 1024 * 1024;

struct Options {
    size_mib: usize,
    data_dir: Option<PathBuf>,
    sign_seconds: u64,
    sign_concurrency: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut options =
        Options { size_mib: 1024, data_dir: None, sign_seconds: 3, sign_concurrency: 8 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--size-mib" => {
                options.size_mib = value()?.parse().map_err(|_| "--size-mib: not a number")?
            }
            "--data-dir" => options.data_dir = Some(PathBuf::from(value()?)),
            "--sign-seconds" => {
                options.sign_seconds =
                    value()?.parse().map_err(|_| "--sign-seconds: not a number")?
            }
            "--sign-concurrency" => {
                options.sign_concurrency =
                    value()?.parse().map_err(|_| "--sign-concurrency: not a number")?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.size_mib == 0 || options.sign_concurrency == 0 {
        return Err("--size-mib and --sign-concurrency must be positive".into());
    }
    Ok(options)
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("objects-bench: {message}");
            std::process::exit(2);
        }
    };
    if let Err(message) = run(&options) {
        eprintln!("objects-bench: {message}");
        std::process::exit(1);
    }
}

fn run(options: &Options) -> Result<(), String> {
    let parent = options.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    let bench_dir = parent.join(format!("objects-bench-{}", std::process::id()));
    let data_dir = bench_dir.join("objects");
    let result = run_in(&data_dir, options);
    // Remove the 1 GiB object and everything else this run wrote.
    let _ = std::fs::remove_dir_all(&bench_dir);
    result
}

fn run_in(data_dir: &std::path::Path, options: &Options) -> Result<(), String> {
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;

    let base = server_runtime.block_on(async {
        let mut config = FilesConfig::embedded(data_dir);
        config.ttl_seconds = 3600;
        let services = FileServices::start(config, Arc::new(AllowAll))
            .await
            .map_err(|error| error.to_string())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|error| error.to_string())?;
        let address = listener.local_addr().map_err(|error| error.to_string())?;
        let app = services.router();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("server stopped: {error}");
            }
        });
        Ok::<_, String>(format!("http://{address}"))
    })?;

    let in_process = bench_signing_in_process(data_dir, options.sign_seconds)?;
    let report = client_runtime.block_on(async {
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().map_err(|error| error.to_string())?;
        let signing = bench_signing(&http, &base, options).await?;
        let transfer = bench_transfer(&http, &base, options.size_mib).await?;
        Ok::<_, String>(serde_json::json!({
            "signer_in_process_one_core": in_process,
            "signer": signing,
            "embedded_store": transfer,
            "data_dir_filesystem_note": "PUT includes fsync of the whole object before the response",
        }))
    })?;
    println!("{}", serde_json::to_string_pretty(&report).map_err(|error| error.to_string())?);
    drop(server_runtime);
    Ok(())
}

/// Signing cost without TCP: requests go straight into the router on a
/// current-thread runtime, i.e. exactly one core of server work.
fn bench_signing_in_process(
    data_dir: &std::path::Path,
    seconds: u64,
) -> Result<serde_json::Value, String> {
    use tower::ServiceExt as _;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    runtime.block_on(async {
        let mut config = FilesConfig::embedded(data_dir.join("in-process"));
        config.public_url = Some("http://127.0.0.1:8787".into());
        let services = FileServices::start(config, Arc::new(AllowAll))
            .await
            .map_err(|error| error.to_string())?;
        let router = services.router();
        let body = sign_request_body();
        let request = || {
            axum::http::Request::post("/api/v1/sign/upload")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.clone()))
                .map_err(|error| error.to_string())
        };
        let mut latencies = Vec::with_capacity(200_000);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        while Instant::now() < deadline {
            let begun = Instant::now();
            let response =
                router.clone().oneshot(request()?).await.map_err(|error| error.to_string())?;
            if !response.status().is_success() {
                return Err(format!("in-process sign failed: {}", response.status()));
            }
            axum::body::to_bytes(response.into_body(), 64 * 1024)
                .await
                .map_err(|error| error.to_string())?;
            latencies.push(begun.elapsed());
        }
        let elapsed = started.elapsed().as_secs_f64();
        Ok(latency_report(latencies, elapsed, "in-process router, current-thread runtime"))
    })
}

fn sign_request_body() -> String {
    serde_json::json!({
        "key": "bench-store/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "contentType": "application/octet-stream",
        "contentLength": 1_048_576,
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    })
    .to_string()
}

fn latency_report(
    mut latencies: Vec<Duration>,
    elapsed_seconds: f64,
    transport: &str,
) -> serde_json::Value {
    latencies.sort_unstable();
    let percentile = |fraction: f64| {
        let index = ((latencies.len() as f64 - 1.0) * fraction).round() as usize;
        latencies.get(index).map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    serde_json::json!({
        "transport": transport,
        "signatures": latencies.len(),
        "signatures_per_second": (latencies.len() as f64 / elapsed_seconds).round(),
        "latency_median_ms": percentile(0.5),
        "latency_p99_ms": percentile(0.99),
    })
}

async fn bench_signing(
    http: &reqwest::Client,
    base: &str,
    options: &Options,
) -> Result<serde_json::Value, String> {
    let url = format!("{base}/api/v1/sign/upload");
    let body = sign_request_body();
    // Warm up connections and code paths.
    for _ in 0..200 {
        sign_once(http, &url, &body).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(options.sign_seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..options.sign_concurrency)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(100_000);
                while Instant::now() < deadline {
                    let begun = Instant::now();
                    sign_once(&http, &url, &body).await?;
                    latencies.push(begun.elapsed());
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.map_err(|error| error.to_string())??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let transport = format!(
        "HTTP/1.1 keep-alive over loopback, {} concurrent clients, checksum-bound upload signatures",
        options.sign_concurrency
    );
    Ok(latency_report(latencies, elapsed, &transport))
}

async fn sign_once(http: &reqwest::Client, url: &str, body: &str) -> Result<(), String> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if !response.status().is_success() {
        return Err(format!("sign failed: {}", response.status()));
    }
    response.bytes().await.map_err(|error| error.to_string())?;
    Ok(())
}

async fn bench_transfer(
    http: &reqwest::Client,
    base: &str,
    size_mib: usize,
) -> Result<serde_json::Value, String> {
    // One 1 MiB chunk repeated: generating data must not be what we measure.
    let chunk = Bytes::from((0..CHUNK_BYTES).map(|index| (index % 251) as u8).collect::<Vec<u8>>());
    let total = (size_mib * CHUNK_BYTES) as u64;
    let mut hasher = Sha256::new();
    for _ in 0..size_mib {
        hasher.update(&chunk);
    }
    let sha256 = hex::encode(hasher.finalize());
    let key = format!("bench-store/{sha256}");

    let signed: serde_json::Value = http
        .post(format!("{base}/api/v1/sign/upload"))
        .body(
            serde_json::json!({ "key": key, "contentLength": total, "sha256": sha256 }).to_string(),
        )
        .send()
        .await
        .map_err(|error| error.to_string())?
        .json()
        .await
        .map_err(|error| error.to_string())?;
    let url = signed["url"].as_str().ok_or("no url")?.to_owned();
    let checksum =
        signed["headers"]["x-amz-checksum-sha256"].as_str().ok_or("no checksum header")?.to_owned();

    reset_peak_rss();
    let rss_before = rss_kib("VmRSS:");
    let stream = futures_util::stream::iter(
        (0..size_mib).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let started = Instant::now();
    let response = http
        .put(&url)
        .header("content-length", total)
        .header("x-amz-checksum-sha256", checksum)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let put_seconds = started.elapsed().as_secs_f64();
    if !response.status().is_success() {
        return Err(format!(
            "PUT failed: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        ));
    }
    let put_peak = rss_kib("VmHWM:");

    let download: serde_json::Value = http
        .post(format!("{base}/api/v1/sign/download"))
        .body(serde_json::json!({ "key": key }).to_string())
        .send()
        .await
        .map_err(|error| error.to_string())?
        .json()
        .await
        .map_err(|error| error.to_string())?;
    let download_url = download["url"].as_str().ok_or("no download url")?.to_owned();
    reset_peak_rss();
    let started = Instant::now();
    let response = http.get(&download_url).send().await.map_err(|error| error.to_string())?;
    if !response.status().is_success() {
        return Err(format!("GET failed: {}", response.status()));
    }
    let mut body = response.bytes_stream();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|error| error.to_string())?;
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let get_seconds = started.elapsed().as_secs_f64();
    let get_peak = rss_kib("VmHWM:");
    if received != total || hex::encode(hasher.finalize()) != sha256 {
        return Err("GET returned different bytes".into());
    }
    let mib = |kib: Option<u64>| kib.map(|kib| kib as f64 / 1024.0);
    let growth = |peak: Option<u64>| match (peak, rss_before) {
        (Some(peak), Some(before)) => Some(peak.saturating_sub(before) as f64 / 1024.0),
        _ => None,
    };
    let megabytes = total as f64 / 1_000_000.0;
    Ok(serde_json::json!({
        "object_bytes": total,
        "put_seconds": put_seconds,
        "put_mb_per_second": (megabytes / put_seconds).round(),
        "put_verified": "server checks x-amz-checksum-sha256 and the signed Content-Length",
        "get_seconds": get_seconds,
        "get_mb_per_second": (megabytes / get_seconds).round(),
        "get_verified": "client hashes the streamed body and compares SHA-256",
        "rss_before_mib": mib(rss_before),
        "peak_rss_growth_put_mib": growth(put_peak),
        "peak_rss_growth_get_mib": growth(get_peak),
    }))
}

/// Resets the kernel's peak-RSS counter (VmHWM) for the next phase.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rss_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
