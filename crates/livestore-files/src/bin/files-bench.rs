//! `files-bench`: measures the file sync and prints one JSON object.
//!
//! Workloads (each selectable with `--only NAME`, comma-separated):
//! - `hash_1mib`: SHA-256 of 1 MiB buffers, median and p99, plus MB/s;
//! - `save_1mib`: `save_file` of 1 MiB (different bytes each time) into a store on `--data-dir`, durable (fsync,
//!   rename, directory fsync, commit) and then resolvable locally; median and p99 latency;
//! - `e2e_1gib`: one file of `--e2e-mib` MiB (default 1024) saved on client A, uploaded, downloaded and verified
//!   on client B through a `livestore serve` process; MB/s for each step;
//! - `small_files`: `--small-count` files of 4 KiB (default 10,000) saved, then uploaded with `--small-uploads`
//!   concurrent uploads (default: the library's default, 4); files/s;
//! - `rss`: a generated `--rss-gib` GiB stream (default 10) saved, uploaded (multipart) and downloaded on another
//!   client; peak RSS growth of this process (`VmHWM`) over the baseline.
//!
//! The server is spawned from `--livestore-bin` (default: the `livestore` binary next to this one) with its data
//! in `--data-dir/server`. Clients run in this process (two stores, two data dirs).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use livestore_client::sync::{DriverOptions, SyncHandle};
use livestore_client::{Storage, Store, StoreOptions};
use livestore_files::{FileSource, FileSync, FileSyncOptions, FileUrl, RemoteConfig};
use serde_json::{Value, json};

struct Args {
    data_dir: PathBuf,
    livestore_bin: PathBuf,
    only: Option<Vec<String>>,
    save_count: usize,
    e2e_mib: u64,
    small_count: usize,
    small_uploads: usize,
    rss_gib: u64,
    multipart_threshold_mib: Option<u64>,
}

fn parse_args() -> Args {
    let mut args = Args {
        data_dir: std::env::temp_dir().join(format!("files-bench-{}", std::process::id())),
        livestore_bin: std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("livestore")))
            .unwrap_or_else(|| PathBuf::from("livestore")),
        only: None,
        save_count: 300,
        e2e_mib: 1024,
        small_count: 10_000,
        // The library's default, so the headline number is what an application gets without tuning.
        small_uploads: FileSyncOptions::local_only(".").max_concurrent_uploads,
        rss_gib: 10,
        multipart_threshold_mib: None,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(flag) = iter.next() {
        let mut value = || iter.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--data-dir" => args.data_dir = PathBuf::from(value()),
            "--livestore-bin" => args.livestore_bin = PathBuf::from(value()),
            "--only" => args.only = Some(value().split(',').map(str::to_owned).collect()),
            "--save-count" => args.save_count = value().parse().expect("a number"),
            "--e2e-mib" => args.e2e_mib = value().parse().expect("a number"),
            "--small-count" => args.small_count = value().parse().expect("a number"),
            "--small-uploads" => args.small_uploads = value().parse().expect("a number"),
            "--rss-gib" => args.rss_gib = value().parse().expect("a number"),
            "--multipart-threshold-mib" => {
                args.multipart_threshold_mib = Some(value().parse().expect("a number"))
            }
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    std::fs::create_dir_all(&args.data_dir).expect("data dir");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let wanted =
        |name: &str| args.only.as_ref().is_none_or(|only| only.iter().any(|item| item == name));
    let mut report = serde_json::Map::new();
    report
        .insert("cores".into(), json!(std::thread::available_parallelism().map_or(0, usize::from)));
    report.insert("data_dir".into(), json!(args.data_dir.display().to_string()));
    report.insert("data_dir_fs".into(), json!(filesystem_of(&args.data_dir)));
    if wanted("hash_1mib") {
        report.insert("hash_1mib".into(), hash_1mib(&args));
    }
    if wanted("save_1mib") {
        report.insert("save_1mib".into(), runtime.block_on(save_1mib(&args)));
    }
    let needs_server = ["e2e_1gib", "small_files", "rss"].iter().any(|name| wanted(name));
    if needs_server {
        let server = ServerProcess::start(&args);
        if wanted("e2e_1gib") {
            report.insert("e2e_1gib".into(), runtime.block_on(e2e(&args, &server.url)));
        }
        if wanted("small_files") {
            report.insert("small_files".into(), runtime.block_on(small_files(&args, &server.url)));
        }
        if wanted("rss") {
            report.insert("rss".into(), runtime.block_on(rss(&args, &server.url)));
        }
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(report)).unwrap());
    let _ = std::fs::remove_dir_all(&args.data_dir);
}

struct ServerProcess {
    url: String,
    child: Child,
}

impl ServerProcess {
    fn start(args: &Args) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&args.livestore_bin)
            .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(args.data_dir.join("server"))
            .env("LIVESTORE_LOG", "warn")
            .env_remove("S3_ENDPOINT")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start {}: {error}", args.livestore_bin.display())
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        ServerProcess { url: format!("http://127.0.0.1:{port}"), child }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    files: FileSync,
    sync: Option<SyncHandle>,
}

fn open_client(
    dir: &Path,
    store_id: &str,
    server: Option<&str>,
    tweak: impl FnOnce(&mut FileSyncOptions),
) -> Client {
    std::fs::create_dir_all(dir).unwrap();
    let store = Store::open(
        StoreOptions::new(store_id, Storage::Dir(dir.to_path_buf())),
        livestore_files::schema::schema(),
    )
    .expect("store opens");
    let mut options = match server {
        Some(server) => FileSyncOptions::with_remote(
            dir,
            RemoteConfig { signer_url: format!("{server}/api"), auth_token: None },
        ),
        None => FileSyncOptions::local_only(dir),
    };
    tweak(&mut options);
    let sync = server.map(|server| {
        let mut driver = DriverOptions::new(server);
        driver.min_backoff = Duration::from_millis(100);
        livestore_client::sync::start(store.clone(), driver)
    });
    Client { files: FileSync::new(store, options).unwrap(), sync }
}

impl Client {
    async fn close(mut self) {
        self.files.dispose().await;
        if let Some(sync) = self.sync.take() {
            sync.stop().await;
        }
        let _ = self.files.store().shutdown();
    }
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn save_1mib(args: &Args) -> Value {
    let client = open_client(&args.data_dir.join("save"), "bench-save", None, |_| {});
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut latencies = Vec::with_capacity(args.save_count);
    let mut generator = Generator::new(1, u64::MAX);
    for _ in 0..args.save_count {
        generator.read_exact(&mut buffer).unwrap();
        let started = Instant::now();
        let saved = client.files.save_file(FileSource::Bytes(&buffer)).unwrap();
        let url = client.files.get_file_url(&saved.file_id).unwrap();
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(matches!(url, Some(FileUrl::Local { .. })));
    }
    latencies.sort_by(f64::total_cmp);
    client.close().await;
    json!({
        "count": args.save_count,
        "median_ms": percentile(&latencies, 0.5),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().copied().unwrap_or_default(),
        "data_dir": args.data_dir.display().to_string(),
    })
}

/// SHA-256 of 1 MiB buffers (what every save, upload check and download verification costs per MiB).
fn hash_1mib(args: &Args) -> Value {
    let mut buffer = vec![0u8; 1024 * 1024];
    let mut generator = Generator::new(3, u64::MAX);
    let mut latencies = Vec::with_capacity(args.save_count);
    for _ in 0..args.save_count {
        generator.read_exact(&mut buffer).unwrap();
        let started = Instant::now();
        std::hint::black_box(livestore_files::ContentHash::of(&buffer));
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let started = Instant::now();
    for _ in 0..256 {
        std::hint::black_box(livestore_files::ContentHash::of(&buffer));
    }
    let megabytes_per_second = 256.0 * 1024.0 * 1024.0 / 1e6 / started.elapsed().as_secs_f64();
    json!({
        "count": args.save_count,
        "median_ms": percentile(&latencies, 0.5),
        "p99_ms": percentile(&latencies, 0.99),
        "hash_mb_s": megabytes_per_second,
    })
}

/// Deterministic pseudo-random bytes (xorshift), generated on the fly: no buffer of the whole stream.
struct Generator {
    state: u64,
    remaining: u64,
}

impl Generator {
    fn new(seed: u64, length: u64) -> Generator {
        Generator { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, remaining: length }
    }
}

impl Read for Generator {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let want = (buffer.len() as u64).min(self.remaining) as usize;
        for chunk in buffer[..want].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        self.remaining -= want as u64;
        Ok(want)
    }
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Saves `bytes` on A, uploads, downloads on B; returns the three rates and the peak RSS growth.
async fn move_one_file(args: &Args, name: &str, bytes: u64, server: &str) -> Value {
    let store_id = format!("bench-{name}-{}", std::process::id());
    let baseline_kib = peak_rss_kib();
    let threshold = args.multipart_threshold_mib;
    let a =
        open_client(&args.data_dir.join(format!("{name}-a")), &store_id, Some(server), |options| {
            if let Some(mib) = threshold {
                options.multipart_threshold = mib * 1024 * 1024;
            }
        });
    let mut generator = Generator::new(42, bytes);
    let started = Instant::now();
    let saved = a.files.save_file(FileSource::Reader(&mut generator)).unwrap();
    let save_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    a.files.start().unwrap();
    wait_until("upload", Duration::from_secs(3600), || {
        a.files.file(&saved.file_id).is_ok_and(|row| !row.remote_key.is_empty())
    })
    .await;
    let upload_seconds = started.elapsed().as_secs_f64();
    let b = open_client(&args.data_dir.join(format!("{name}-b")), &store_id, Some(server), |_| {});
    wait_until("row on B", Duration::from_secs(120), || {
        b.files.file(&saved.file_id).is_ok_and(|row| !row.remote_key.is_empty())
    })
    .await;
    let started = Instant::now();
    b.files.start().unwrap();
    let hash: livestore_files::ContentHash = saved.content_hash.parse().unwrap();
    wait_until("download", Duration::from_secs(3600), || b.files.local_files().contains(&hash))
        .await;
    let download_seconds = started.elapsed().as_secs_f64();
    let peak_growth_mib = (peak_rss_kib().saturating_sub(baseline_kib)) as f64 / 1024.0;
    let megabytes = bytes as f64 / 1e6;
    a.close().await;
    b.close().await;
    let _ = std::fs::remove_dir_all(args.data_dir.join(format!("{name}-a")));
    let _ = std::fs::remove_dir_all(args.data_dir.join(format!("{name}-b")));
    json!({
        "bytes": bytes,
        "save_mb_s": megabytes / save_seconds,
        "upload_mb_s": megabytes / upload_seconds,
        "download_verified_mb_s": megabytes / download_seconds,
        "multipart": bytes >= args.multipart_threshold_mib.map_or(4 << 30, |mib| mib << 20),
        "peak_rss_growth_mib": peak_growth_mib,
    })
}

async fn e2e(args: &Args, server: &str) -> Value {
    move_one_file(args, "e2e", args.e2e_mib * 1024 * 1024, server).await
}

async fn rss(args: &Args, server: &str) -> Value {
    move_one_file(args, "rss", args.rss_gib * 1024 * 1024 * 1024, server).await
}

async fn small_files(args: &Args, server: &str) -> Value {
    let store_id = format!("bench-small-{}", std::process::id());
    let uploads = args.small_uploads;
    let a = open_client(&args.data_dir.join("small-a"), &store_id, Some(server), |options| {
        options.max_concurrent_uploads = uploads;
    });
    let mut buffer = vec![0u8; 4096];
    let mut generator = Generator::new(7, u64::MAX);
    let started = Instant::now();
    for _ in 0..args.small_count {
        generator.read_exact(&mut buffer).unwrap();
        a.files.save_file(FileSource::Bytes(&buffer)).unwrap();
    }
    let save_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    a.files.start().unwrap();
    assert!(a.files.wait_idle(Duration::from_secs(3600)).await, "small uploads did not finish");
    let upload_seconds = started.elapsed().as_secs_f64();
    a.close().await;
    json!({
        "count": args.small_count,
        "file_bytes": 4096,
        "concurrent_uploads": uploads,
        "saved_files_per_s": args.small_count as f64 / save_seconds,
        "uploaded_files_per_s": args.small_count as f64 / upload_seconds,
    })
}

/// Peak resident set size of this process in KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find(|line| line.starts_with("VmHWM:")).and_then(|line| {
                line.split_whitespace().nth(1).and_then(|value| value.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// The file system type of the mount holding `path` (from `/proc/mounts`, longest matching mount point), so a
/// result says whether it was measured on tmpfs or a disk.
fn filesystem_of(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_device, mount_point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount_point).then(|| (mount_point.len(), kind.to_owned()))
        })
        .max_by_key(|(length, _)| *length)
        .map_or_else(|| "unknown".to_owned(), |(_, kind)| kind)
}
