//! `livestore files`: local-first file sync from the command line, on top of `livestore-files`.
//!
//! `livestore files --store ID [--data-dir DIR] [--server URL] [--token T] [--json]
//! (add PATH… | ls | get ID -o OUT | update ID PATH | rm ID | status | sync | serve)`.
//!
//! Flags resolve into [`Resolved`] (validated URLs and options); commands then open the store in `--data-dir`
//! (eventlog under `<data-dir>/<store>/`, files under `<data-dir>/livestore-filesync-files/`). `add`, `ls`,
//! `update`, `rm` and `status` work offline; `get` downloads when the bytes are not here; `sync` pushes and pulls
//! events and transfers files until nothing is pending (exit 0) or the timeout passes (exit 1 with the reasons);
//! `serve` keeps syncing and serves `/livestore-filesync-files/<store>/<hash>` over HTTP. All behaviour lives in
//! the libraries; this module parses, prints and waits.

mod progress;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use livestore_client::sync::{DriverOptions, DriverState, SyncHandle};
use livestore_client::{Storage, Store, StoreOptions};
use livestore_files::{FileSource, FileSync, FileSyncOptions, FilesError, RemoteConfig};

/// Flags of `livestore files`, as given.
#[derive(Debug, Args)]
pub(crate) struct FilesArgs {
    /// The LiveStore store id the files belong to.
    #[arg(long = "store", env = "LIVESTORE_STORE")]
    store: String,
    /// Where this client keeps its event log and its local files.
    #[arg(long, env = "LIVESTORE_FILES_DATA_DIR", default_value = "./livestore-files-data")]
    data_dir: PathBuf,
    /// Base URL of `livestore serve`; the sync endpoint and the signer (`<server>/api`) derive from it.
    #[arg(long, env = "LIVESTORE_SERVER", default_value = "http://127.0.0.1:8787")]
    server: String,
    /// Auth token: sync payload `{"authToken": T}` and signer `Authorization: Bearer T`.
    #[arg(long, env = "LIVESTORE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print machine-readable JSON on stdout (no progress bars).
    #[arg(long, global = true)]
    json: bool,
    /// Never contact the file signer (files stay on this device; events still sync on `sync`).
    #[arg(long, global = true)]
    local_only: bool,
    /// Keep at most this many bytes of file content locally (suffixes K, M, G, KiB, MiB, GiB).
    #[arg(long, global = true, value_parser = parse_bytes)]
    budget: Option<u64>,
    /// Uploads at once.
    #[arg(long, global = true, default_value_t = 4)]
    uploads: usize,
    /// Downloads at once.
    #[arg(long, global = true, default_value_t = 4)]
    downloads: usize,
    /// Files at least this large upload in resumable parts.
    #[arg(long, global = true, value_parser = parse_bytes)]
    multipart_threshold: Option<u64>,
    /// Part size of multipart uploads.
    #[arg(long, global = true, value_parser = parse_bytes)]
    part_size: Option<u64>,
    #[command(subcommand)]
    command: FilesCommand,
}

#[derive(Debug, Subcommand)]
enum FilesCommand {
    /// Saves files (works offline) and prints their ids.
    Add {
        /// Files to add.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Lists active files with their local transfer state.
    Ls,
    /// Writes a file's bytes to OUT, downloading them if needed.
    Get {
        /// The file id.
        id: String,
        /// Destination path.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Replaces a file's content.
    Update {
        /// The file id.
        id: String,
        /// The new content.
        path: PathBuf,
    },
    /// Deletes a file (the remote object is removed on the next sync unless other files share it).
    Rm {
        /// The file id.
        id: String,
    },
    /// Prints transfer counts, bytes and errors.
    Status,
    /// Syncs events and transfers files until nothing is pending; exits non-zero with the reasons otherwise.
    Sync {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Serves `/livestore-filesync-files/<store>/<hash>` (local first, then remote, with Range) while syncing.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8788")]
        addr: SocketAddr,
    },
}

/// Flags resolved into what the libraries take.
struct Resolved {
    store_id: String,
    data_dir: PathBuf,
    server: String,
    token: Option<String>,
    json: bool,
    options: FileSyncOptions,
}

/// Runs a `livestore files` command.
pub(crate) fn run(args: FilesArgs) -> anyhow::Result<()> {
    let resolved = resolve(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start tokio")?;
    runtime.block_on(run_command(resolved, args.command))
}

fn resolve(args: &FilesArgs) -> anyhow::Result<Resolved> {
    livestore_proto::url::validate_store_id(&args.store)
        .map_err(|error| anyhow!("invalid --store: {error}"))?;
    let server = args.server.trim_end_matches('/').to_owned();
    let http_base = if let Some(rest) = server.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = server.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if server.starts_with("http://") || server.starts_with("https://") {
        server.clone()
    } else {
        bail!("--server must be an http(s):// or ws(s):// URL, got {server:?}");
    };
    let mut options = if args.local_only {
        FileSyncOptions::local_only(&args.data_dir)
    } else {
        FileSyncOptions::with_remote(
            &args.data_dir,
            RemoteConfig { signer_url: format!("{http_base}/api"), auth_token: args.token.clone() },
        )
    };
    options.local_byte_budget = args.budget;
    options.max_concurrent_uploads = args.uploads.max(1);
    options.max_concurrent_downloads = args.downloads.max(1);
    if let Some(threshold) = args.multipart_threshold {
        options.multipart_threshold = threshold;
    }
    if let Some(part_size) = args.part_size {
        options.part_size = part_size;
    }
    if let FilesCommand::Serve { addr } = &args.command {
        options.local_url_base = Some(format!("http://{addr}"));
    }
    Ok(Resolved {
        store_id: args.store.clone(),
        data_dir: args.data_dir.clone(),
        server: http_base,
        token: args.token.clone(),
        json: args.json,
        options,
    })
}

async fn run_command(resolved: Resolved, command: FilesCommand) -> anyhow::Result<()> {
    std::fs::create_dir_all(&resolved.data_dir)
        .with_context(|| format!("cannot create {}", resolved.data_dir.display()))?;
    let store = Store::open(
        StoreOptions::new(&resolved.store_id, Storage::Dir(resolved.data_dir.clone())),
        livestore_files::schema::schema(),
    )
    .with_context(|| {
        format!("opening store {} in {}", resolved.store_id, resolved.data_dir.display())
    })?;
    let files = FileSync::new(store.clone(), resolved.options.clone())?;
    let result = match command {
        FilesCommand::Add { paths } => add(&files, &paths, resolved.json),
        FilesCommand::Ls => list(&files, resolved.json),
        FilesCommand::Get { id, output } => get(&resolved, &files, &id, &output).await,
        FilesCommand::Update { id, path } => {
            let saved = files
                .update_file(&id, FileSource::Path(&path))
                .with_context(|| format!("updating {id} from {}", path.display()))?;
            print_line(resolved.json, &saved, &saved.content_hash);
            Ok(())
        }
        FilesCommand::Rm { id } => {
            if !files.delete_file(&id)? {
                bail!("no file with id {id:?}");
            }
            Ok(())
        }
        FilesCommand::Status => status(&files, resolved.json),
        FilesCommand::Sync { timeout } => {
            sync(&resolved, &files, Duration::from_secs(timeout)).await
        }
        FilesCommand::Serve { addr } => serve(&resolved, &files, addr).await,
    };
    files.dispose().await;
    if !store.is_shut_down() {
        store.shutdown()?;
    }
    result
}

fn add(files: &FileSync, paths: &[PathBuf], json: bool) -> anyhow::Result<()> {
    let mut saved = Vec::new();
    for path in paths {
        let file = files
            .save_file(FileSource::Path(path))
            .with_context(|| format!("adding {}", path.display()))?;
        if !json {
            println!("{}", file.file_id);
        }
        saved.push(file);
    }
    if json {
        println!("{}", serde_json::to_string(&saved)?);
    }
    Ok(())
}

fn list(files: &FileSync, json: bool) -> anyhow::Result<()> {
    let entries = files.list_files()?;
    if json {
        println!("{}", serde_json::to_string(&entries)?);
        return Ok(());
    }
    for entry in entries {
        let state = entry
            .local_state
            .as_ref()
            .map(|state| format!("up:{} down:{}", state.upload_status, state.download_status))
            .unwrap_or_else(|| "-".to_owned());
        let size = entry.local_size.map_or_else(|| "remote".to_owned(), |size| format!("{size}B"));
        println!(
            "{}  {}  {:>12}  {}",
            entry.record.id,
            &entry.record.content_hash[..12.min(entry.record.content_hash.len())],
            size,
            state
        );
    }
    Ok(())
}

async fn get(
    resolved: &Resolved,
    files: &FileSync,
    id: &str,
    output: &std::path::Path,
) -> anyhow::Result<()> {
    if matches!(files.file(id), Err(FilesError::NotFound(_))) && resolved.options.remote.is_some() {
        // Not known here yet: pull the store's events once, then look again.
        sync_events(resolved, files.store(), Duration::from_secs(20)).await;
    }
    let bytes = files.get_file(id, output).await.with_context(|| format!("getting {id}"))?;
    if resolved.json {
        println!("{}", serde_json::json!({ "id": id, "output": output, "bytes": bytes }));
    }
    Ok(())
}

fn status(files: &FileSync, json: bool) -> anyhow::Result<()> {
    let status = files.sync_status()?;
    let store = files.store().sync_status()?;
    if json {
        println!("{}", serde_json::json!({ "files": status, "events": store }));
        return Ok(());
    }
    println!(
        "uploads: {} running, {} waiting ({} bytes); downloads: {} running, {} waiting; remote deletes: {}",
        status.uploading_count,
        status.queued_upload_count,
        status.upload_bytes_pending,
        status.downloading_count,
        status.queued_download_count,
        status.pending_remote_deletes
    );
    println!(
        "local bytes: {}; unpushed events: {}",
        status.local_bytes, store.pending_synced_count
    );
    for error in &status.errors {
        println!("error: {} (attempt {}): {}", error.file_id, error.attempts, error.error);
    }
    Ok(())
}

fn driver_options(resolved: &Resolved) -> DriverOptions {
    let mut options = DriverOptions::new(&resolved.server);
    options.sync_payload =
        resolved.token.as_ref().map(|token| serde_json::json!({ "authToken": token }));
    options.min_backoff = Duration::from_millis(250);
    options.max_backoff = Duration::from_secs(5);
    options
}

/// Pulls and pushes events until caught up (best effort, bounded).
async fn sync_events(resolved: &Resolved, store: &Store, timeout: Duration) {
    let _ = livestore_client::sync::sync_until_caught_up(store, driver_options(resolved), timeout)
        .await;
}

async fn sync(resolved: &Resolved, files: &FileSync, timeout: Duration) -> anyhow::Result<()> {
    let driver = livestore_client::sync::start(files.store().clone(), driver_options(resolved));
    files.start()?;
    let bars = progress::Bars::new(!resolved.json);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut driver_state = driver.state();
    // Both conditions must hold twice in a row, 100 ms apart: a pulled event can start new transfers.
    let mut settled_once = false;
    let outcome = loop {
        let status = files.sync_status()?;
        bars.update(&status);
        let events_synced = {
            let state = driver_state.borrow_and_update();
            state.caught_up && files.store().sync_status()?.pending_synced_count == 0
        };
        if events_synced && files.wait_idle(Duration::ZERO).await {
            if settled_once {
                break Ok(status);
            }
            settled_once = true;
        } else {
            settled_once = false;
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bars.finish();
    let driver_report: DriverState = driver.state().borrow().clone();
    stop_driver(driver).await;
    match outcome {
        Ok(status) => {
            if resolved.json {
                println!("{}", serde_json::json!({ "ok": true, "files": status }));
            }
            Ok(())
        }
        Err(status) => {
            let mut reasons = Vec::new();
            if !driver_report.caught_up {
                reasons.push(format!(
                    "events not synced{}",
                    driver_report
                        .last_error
                        .as_ref()
                        .map(|error| format!(" ({error})"))
                        .unwrap_or_default()
                ));
            }
            if !status.online {
                reasons.push("file signer unreachable".to_owned());
            }
            for error in &status.errors {
                reasons.push(format!(
                    "{}: {}",
                    if error.file_id.is_empty() { "engine" } else { &error.file_id },
                    error.error
                ));
            }
            if status.has_pending && reasons.is_empty() {
                reasons.push(format!(
                    "{} uploads, {} downloads and {} remote deletes still pending",
                    status.uploading_count + status.queued_upload_count,
                    status.downloading_count + status.queued_download_count,
                    status.pending_remote_deletes
                ));
            }
            if resolved.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "reasons": reasons, "files": status })
                );
            }
            bail!("sync did not finish within the timeout: {}", reasons.join("; "))
        }
    }
}

async fn stop_driver(driver: SyncHandle) {
    let _ = tokio::time::timeout(Duration::from_secs(5), driver.stop()).await;
}

async fn serve(resolved: &Resolved, files: &FileSync, addr: SocketAddr) -> anyhow::Result<()> {
    let driver = livestore_client::sync::start(files.store().clone(), driver_options(resolved));
    files.start()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("serving /livestore-filesync-files/ on http://{local}");
    if resolved.json {
        println!("{}", serde_json::json!({ "listening": format!("http://{local}") }));
    }
    axum::serve(listener, livestore_files::serve::router(files.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("file server failed")?;
    stop_driver(driver).await;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut terminate) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = interrupt.await;
            return;
        };
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn print_line<T: serde::Serialize>(json: bool, value: &T, text: &str) {
    if json {
        println!("{}", serde_json::to_string(value).unwrap_or_default());
    } else {
        println!("{text}");
    }
}

/// Parses `1048576`, `512K`, `64MiB`, `2G` into bytes.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|character: char| !character.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("not a byte count: {text:?}"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} in {text:?}")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("{text:?} is too large"))
}
