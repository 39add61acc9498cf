//! A seeded chaos run on several stores at once: raw protocol writers, real JS LiveStore clients and Rust clients
//! (`livestore_client::Store` with its sync driver, most of them with `livestore_files` file sync), each behind its
//! own `FaultProxy`, while a seeded schedule commits TodoMVC events, saves and deletes files (a few KiB to a few MiB),
//! takes participants offline, injects network faults (cuts mid-frame and mid-body, stalls, blackholes, refusals,
//! byte limits), restarts Rust clients from their data dirs (gracefully or with the store shut down under running
//! transfers) and restarts the server (SIGTERM or `kill -9`).
//!
//! Afterwards, per store (`chaos::checks`): every client and the server have the same head and the same eventlog
//! (ids, order), every Rust and JS client the same state hash (todos and files), a Rust client's state equals its
//! rebuild from its eventlog, every commit of every participant is in the log exactly once (raw writers: every
//! acknowledged event), the log is contiguous, `backendId` is stable, every active file's bytes are on every file
//! client and hash to `contentHash`, no visible local file is corrupt, and no deleted file's object is left behind.
//!
//! Short mode (part of the default suite): `CHAOS_SECONDS` defaults to 20 s of chaos, and JS clients commit one event
//! at a time (`js_full_on`). Long mode: `scripts/chaos-long` (longer, and `CHAOS_JS_FULL=1`).
//! `SEED=<n>` replays a schedule (decisions, bytes and targets; not thread timing); a failing run prints its seed.

mod checks;
mod rust_client;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use livestore_client::NewEvent;
use livestore_client::todo::{
    TodoClearedCompleted, TodoCompleted, TodoCreated, TodoDeleted, TodoUncompleted,
};
use livestore_testkit::FaultProxy;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value, json};

use crate::faults::{CONVERGE_MS, Seed, env_number, inject_random_fault, summarize};
use crate::js_driver::JsDriver;
use crate::resilient::{RawWriter, assert_contiguous_and_unique, read_log, ws_url};
use crate::support::*;
use checks::{Commits, SavedFile};
use rust_client::RustClient;

const STORES: [&str; 2] = ["chaos-a", "chaos-b"];
/// Raw protocol writers: name and store.
const RAW: [(&str, usize); 3] = [("raw0", 0), ("raw1", 0), ("raw2", 1)];
/// JS clients: name and store.
const JS: [(&str, usize); 3] = [("js0", 0), ("js1", 0), ("js2", 1)];
/// Rust clients: name, store, and whether it runs file sync.
const RUST: [(&str, usize, bool); 4] =
    [("rs0", 0, true), ("rs1", 0, false), ("rs2", 1, true), ("rs3", 1, true)];
/// Proxies are numbered raw writers first, then JS clients, then Rust clients.
const JS_PROXY: usize = RAW.len();
const RUST_PROXY: usize = RAW.len() + JS.len();

fn chaos_seconds() -> u64 {
    env_number("CHAOS_SECONDS", 20)
}

/// Whether JS clients commit at any time, several events at once, and restart (`CHAOS_JS_FULL=1`, set by
/// `scripts/chaos-long`). LiveStore 0.4.0's client has races of its own when a session holds several pending events
/// while its leader advances or rebases: it can materialize or push one of its own events twice (fixed upstream
/// after 0.4.0 in livestorejs/livestore#1530 and #1472; reproduced by `tests/js/rebase-duplicate-repro.mjs`, see
/// RELIABILITY.md). In the default suite a JS client therefore commits one event at a time and only once its
/// previous commit is confirmed; Rust clients and raw writers keep the full schedule, and JS clients still go
/// offline, get cut and see every server restart.
fn js_full_on() -> bool {
    env_number("CHAOS_JS_FULL", 0) == 1
}

/// Whether a JS client (leader or session) still has events the server has not confirmed.
async fn js_has_pending(driver: &mut JsDriver, name: &str) -> bool {
    let state = driver.sync_state(name).await;
    state["pending"].as_u64() != Some(0) || state["session"]["pending"].as_u64() != Some(0)
}

/// JS clients restart only in the full JS mode (`js_full_on`): a restart replays a session's pending events, the
/// situation of the upstream races described there.
fn js_restarts_on() -> bool {
    js_full_on()
}

/// One TodoMVC operation, as the schedule decided it.
enum TodoOp {
    Create(String),
    Complete(String),
    Uncomplete(String),
    Delete(String, i64),
    ClearCompleted(i64),
}

impl TodoOp {
    /// Mostly creates; otherwise changes a todo created anywhere on the store, seen by this client or not (a
    /// change to a todo it has not pulled yet is rebased onto the create later).
    fn random(rng: &mut StdRng, new_id: String, known: &[String], at_ms: i64) -> TodoOp {
        if known.is_empty() || rng.random_bool(0.45) {
            return TodoOp::Create(new_id);
        }
        let target = known[rng.random_range(0..known.len())].clone();
        match rng.random_range(0..100) {
            0..=44 => TodoOp::Complete(target),
            45..=74 => TodoOp::Uncomplete(target),
            75..=96 => TodoOp::Delete(target, at_ms),
            _ => TodoOp::ClearCompleted(at_ms),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            TodoOp::Create(_) => "v1.TodoCreated",
            TodoOp::Complete(_) => "v1.TodoCompleted",
            TodoOp::Uncomplete(_) => "v1.TodoUncompleted",
            TodoOp::Delete(..) => "v1.TodoDeleted",
            TodoOp::ClearCompleted(_) => "v1.TodoClearedCompleted",
        }
    }

    fn js(&self) -> Value {
        let args = match self {
            TodoOp::Create(id) => json!({"id": id, "text": format!("text of {id}")}),
            TodoOp::Complete(id) | TodoOp::Uncomplete(id) => json!({"id": id}),
            TodoOp::Delete(id, at) => json!({"id": id, "deletedAt": at}),
            TodoOp::ClearCompleted(at) => json!({"deletedAt": at}),
        };
        json!({"name": self.name(), "args": args})
    }

    fn rust(&self) -> NewEvent {
        let event = match self {
            TodoOp::Create(id) => {
                NewEvent::new(&TodoCreated { id: id.clone(), text: format!("text of {id}") })
            }
            TodoOp::Complete(id) => NewEvent::new(&TodoCompleted { id: id.clone() }),
            TodoOp::Uncomplete(id) => NewEvent::new(&TodoUncompleted { id: id.clone() }),
            TodoOp::Delete(id, at) => {
                NewEvent::new(&TodoDeleted { id: id.clone(), deleted_at: *at })
            }
            TodoOp::ClearCompleted(at) => NewEvent::new(&TodoClearedCompleted { deleted_at: *at }),
        };
        event.expect("todo events encode")
    }
}

/// What the run did, for the assertions and the figures.
#[derive(Default)]
struct Record {
    /// Todo ids created per store (by JS and Rust clients; raw writers create theirs too, not listed here).
    todo_ids: [Vec<String>; STORES.len()],
    commits: Commits,
    saved: Vec<SavedFile>,
    deleted: HashSet<String>,
    deletes_unseen: u64,
    bytes_saved: u64,
    faults: Vec<&'static str>,
    offline_periods: u64,
    sigterm_restarts: u64,
    kill9_restarts: u64,
}

impl Record {
    /// `count` random todo ops by `client` on `store`; new ids are `<client>-<step>-<n>`.
    fn todo_ops(
        &mut self,
        rng: &mut StdRng,
        client: &str,
        store: usize,
        step: u64,
        count: usize,
    ) -> Vec<TodoOp> {
        let at_ms = 1_700_000_000_000 + step as i64;
        let mut ops = Vec::with_capacity(count);
        for index in 0..count {
            let op = TodoOp::random(
                rng,
                format!("{client}-{step}-{index}"),
                &self.todo_ids[store],
                at_ms,
            );
            if let TodoOp::Create(id) = &op {
                self.todo_ids[store].push(id.clone());
            }
            ops.push(op);
        }
        for op in &ops {
            let args = serde_json::from_str(&op.rust().args_json).expect("args are JSON");
            self.commits.add(client, op.name(), Some(args), step);
        }
        ops
    }
}

/// File bytes: mostly small, some up to 1 MiB, a few of several MiB (multipart from 5 MiB).
fn file_bytes(rng: &mut StdRng, seed: u64, index: u64) -> Vec<u8> {
    let size = match rng.random_range(0..20) {
        0..=11 => rng.random_range(2 * 1024..64 * 1024),
        12..=17 => rng.random_range(64 * 1024..1024 * 1024),
        _ => rng.random_range(1024 * 1024..6 * 1024 * 1024),
    };
    let mut bytes = vec![0; size];
    StdRng::seed_from_u64(seed ^ (index << 24)).fill_bytes(&mut bytes);
    bytes
}

/// A network fault on a file client's path: cuts in the middle of bodies, besides the usual faults.
async fn inject_file_fault(proxy: &FaultProxy, rng: &mut StdRng) -> &'static str {
    match rng.random_range(0..3) {
        0 => {
            proxy.cut_all_after_bytes(rng.random_range(16 * 1024..2 * 1024 * 1024));
            "cut-mid-body"
        }
        1 => {
            proxy.set_new_connection_byte_limit(Some(rng.random_range(32 * 1024..3 * 1024 * 1024)));
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
            proxy.set_new_connection_byte_limit(None);
            "byte-limit"
        }
        _ => inject_random_fault(proxy, rng).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_chaos_with_raw_js_and_rust_clients_files_offline_periods_and_restarts() {
    let seed = Seed::from_env("chaos");
    let mut rng = StdRng::seed_from_u64(seed.0);
    let mut server = TestServer::start();
    let server_addr: std::net::SocketAddr = ([127, 0, 0, 1], server.port).into();
    let root = tempfile::tempdir().unwrap();
    let mut names: Vec<&str> = RAW.iter().map(|(name, _)| *name).collect();
    names.extend(JS.iter().map(|(name, _)| *name));
    names.extend(RUST.iter().map(|(name, ..)| *name));
    // One proxy per participant, so each can be offline on its own.
    let mut proxies = Vec::new();
    for index in 0..names.len() {
        proxies.push(Arc::new(
            FaultProxy::start_seeded(server_addr, seed.0.wrapping_add(index as u64)).await.unwrap(),
        ));
    }
    let mut driver = JsDriver::start_script("chaos-driver.mjs").await;
    // On disk, so a JS client restarts from its own eventlog like a Rust client does.
    let js_options =
        |name: &str| json!({"storage": "fs", "dir": root.path().join(name).to_string_lossy()});
    for (index, (name, store)) in JS.iter().enumerate() {
        let url = proxies[JS_PROXY + index].http_url();
        driver.open(name, STORES[*store], &url, js_options(name)).await;
    }
    let mut rust: Vec<RustClient> = RUST
        .iter()
        .enumerate()
        .map(|(index, (name, store, files))| {
            RustClient::new(
                name,
                STORES[*store],
                *files,
                proxies[RUST_PROXY + index].http_url(),
                root.path(),
            )
        })
        .collect();

    let mut record = Record::default();
    // Each store gets its first event from a JS client, so its backendId exists before the first restart.
    let mut backends = Vec::new();
    for (store, store_id) in STORES.iter().enumerate() {
        let (name, _) = JS.iter().find(|(_, s)| *s == store).expect("a JS client per store");
        let ops = record.todo_ops(&mut rng, name, store, 0, 1);
        driver.commit(name, Value::Array(ops.iter().map(TodoOp::js).collect())).await;
        driver.wait_synced(name).await;
        backends.push(read_log(&server_addr.to_string(), store_id).await.0);
    }

    // The raw writers start once every store has its backendId: a JS client's first push would otherwise race them
    // while the driver boots (slow on a loaded machine), and lose (see the known limits on writers that outrun JS).
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer_tasks = Vec::new();
    for (index, (name, store)) in RAW.iter().enumerate() {
        let store = STORES[*store];
        let url = ws_url(&proxies[index].addr().to_string(), store);
        let stop = Arc::clone(&stop);
        let mut writer_rng = StdRng::seed_from_u64(seed.0 ^ (0xC0FFEE + index as u64));
        writer_tasks.push(tokio::spawn(async move {
            let mut writer = RawWriter::new(name, store, &url).with_pipelining(2, 3);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(chaos_seconds() + 90);
            while !stop.load(Ordering::SeqCst) || writer.pending_count() > 0 {
                assert!(tokio::time::Instant::now() < deadline, "{} cannot flush", writer.name);
                if !stop.load(Ordering::SeqCst) && writer.pending_count() < 6 {
                    writer.create(writer_rng.random_range(1..4));
                }
                writer.round().await;
                // A human-scale write rate: a JS client rebases on every event that beats its push, and writers
                // pushing faster than its round trip can starve it (see RELIABILITY.md).
                tokio::time::sleep(Duration::from_millis(writer_rng.random_range(150..700))).await;
            }
            writer.close().await
        }));
    }
    let mut offline_until: Vec<Option<tokio::time::Instant>> = vec![None; proxies.len()];
    let chaos_end = tokio::time::Instant::now() + Duration::from_secs(chaos_seconds());
    let mut step = 0u64;
    let mut files_made = 0u64;
    let mut js_restarts = 0u64;
    let trace = std::env::var("CHAOS_TRACE").is_ok_and(|value| value == "1");
    let started = std::time::Instant::now();
    while tokio::time::Instant::now() < chaos_end {
        step += 1;
        let now = tokio::time::Instant::now();
        for (index, until) in offline_until.iter_mut().enumerate() {
            if until.is_some_and(|until| now >= until) {
                proxies[index].set_refuse(false);
                *until = None;
            }
        }
        let what = match rng.random_range(0..100) {
            // A JS client commits todo ops: in the full JS mode one to three at any time; otherwise one, and only
            // when its last commit is confirmed (see `js_full_on`).
            0..=17 => {
                let (name, store) = JS[rng.random_range(0..JS.len())];
                let count = if js_full_on() { rng.random_range(1..=3) } else { 1 };
                let busy = !js_full_on() && js_has_pending(&mut driver, name).await;
                if busy {
                    format!("{name} still has a commit pending")
                } else {
                    let ops = record.todo_ops(&mut rng, name, store, step, count);
                    driver.commit(name, Value::Array(ops.iter().map(TodoOp::js).collect())).await;
                    format!("{name} commits {count}")
                }
            }
            // A Rust client commits a batch of todo ops, online or not.
            18..=39 => {
                let index = rng.random_range(0..rust.len());
                let (name, store, _) = RUST[index];
                let count = rng.random_range(1..=12);
                let ops = record.todo_ops(&mut rng, name, store, step, count);
                rust[index].commit(ops.iter().map(TodoOp::rust).collect());
                format!("{name} commits {count}")
            }
            // A file client saves a file.
            40..=49 => {
                let index = file_client(&mut rng);
                files_made += 1;
                let bytes = file_bytes(&mut rng, seed.0, files_made);
                let file_id = rust[index].save(&bytes);
                record.commits.add(RUST[index].0, "v1.FileCreated", None, step);
                record.bytes_saved += bytes.len() as u64;
                let what = format!("{} saves {file_id} ({} bytes)", RUST[index].0, bytes.len());
                record.saved.push(SavedFile {
                    store: RUST[index].1,
                    file_id,
                    content_hash: livestore_files::ContentHash::of(&bytes).to_string(),
                    size: bytes.len(),
                });
                what
            }
            // A file client deletes a file of its store (which it may not have seen yet).
            50..=55 => {
                let index = file_client(&mut rng);
                let store = RUST[index].1;
                let candidates: Vec<&SavedFile> = record
                    .saved
                    .iter()
                    .filter(|file| file.store == store && !record.deleted.contains(&file.file_id))
                    .collect();
                if candidates.is_empty() {
                    "nothing to delete".to_owned()
                } else {
                    let file_id = candidates[rng.random_range(0..candidates.len())].file_id.clone();
                    let deleted = rust[index].delete(&file_id);
                    if deleted {
                        record.commits.add(RUST[index].0, "v1.FileDeleted", None, step);
                        record.deleted.insert(file_id.clone());
                    } else {
                        record.deletes_unseen += 1;
                    }
                    format!("{} deletes {file_id}: {deleted}", RUST[index].0)
                }
            }
            // A participant goes offline for a while.
            56..=66 => {
                let index = rng.random_range(0..proxies.len());
                if offline_until[index].is_none() {
                    let offline = Duration::from_millis(rng.random_range(300..3_000));
                    proxies[index].set_refuse(true);
                    proxies[index].cut_all();
                    offline_until[index] = Some(now + offline);
                    record.offline_periods += 1;
                    format!("{} offline for {offline:?}", names[index])
                } else {
                    format!("{} is offline already", names[index])
                }
            }
            // A network fault on one participant's path.
            67..=87 => {
                let index = rng.random_range(0..proxies.len());
                let fault = if index >= RUST_PROXY && RUST[index - RUST_PROXY].2 {
                    inject_file_fault(&proxies[index], &mut rng).await
                } else {
                    inject_random_fault(&proxies[index], &mut rng).await
                };
                record.faults.push(fault);
                format!("{fault} on {}", names[index])
            }
            // A Rust client restarts from its data dir, gracefully or hard.
            88..=92 => {
                let index = rng.random_range(0..rust.len());
                let hard = rng.random_bool(0.5);
                let pause = Duration::from_millis(rng.random_range(0..500));
                rust[index].restart(hard, pause).await;
                format!("{} restarts (hard: {hard})", RUST[index].0)
            }
            // A JS client shuts down and reopens from its data dir (long mode only, see `js_restarts_on`).
            93..=95 => {
                let index = rng.random_range(0..JS.len());
                let (name, store) = JS[index];
                let pause = Duration::from_millis(rng.random_range(0..500));
                if js_restarts_on() {
                    driver.shutdown(name).await;
                    tokio::time::sleep(pause).await;
                    let url = proxies[JS_PROXY + index].http_url();
                    driver.open(name, STORES[store], &url, js_options(name)).await;
                    js_restarts += 1;
                    format!("{name} restarts")
                } else {
                    format!("{name} would restart (CHAOS_JS_FULL is off)")
                }
            }
            // The server restarts: gracefully or by kill -9.
            _ => {
                let kill = rng.random_bool(0.5);
                if kill {
                    server.kill9();
                    record.kill9_restarts += 1;
                } else {
                    server.stop();
                    record.sigterm_restarts += 1;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
                server.spawn();
                format!("server restarts (kill -9: {kill})")
            }
        };
        // CHAOS_TRACE=1 prints the schedule as it runs, to line a failure up with what happened before it.
        if trace {
            eprintln!("chaos step {step} at {:?}: {what}", started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..200))).await;
    }

    // Heal everything, let the writers flush, then wait until every client has everything.
    for proxy in &proxies {
        proxy.heal();
        proxy.set_refuse(false);
    }
    stop.store(true, Ordering::SeqCst);
    let mut writers = Vec::new();
    for task in writer_tasks {
        writers.push(task.await.unwrap());
    }
    let settle_started = std::time::Instant::now();
    let heads = settle(&server_addr.to_string(), &rust, &mut driver).await;
    let settle_ms = settle_started.elapsed().as_millis();

    let mut events = Vec::new();
    let mut bytes_verified = 0;
    let mut files_verified = 0;
    for (store, store_id) in STORES.iter().enumerate() {
        let (backend, log) = read_log(&server_addr.to_string(), store_id).await;
        assert_eq!(backend, backends[store], "{store_id}: backendId changed across restarts");
        assert_eq!(log.len() as u64, heads[store], "{store_id}: the head moved after settling");
        assert_contiguous_and_unique(&log);
        let in_log: HashSet<&str> = log.iter().map(|event| event.id.as_str()).collect();
        for writer in writers
            .iter()
            .filter(|writer| RAW.iter().any(|(n, s)| *n == writer.name && *s == store))
        {
            for id in &writer.acked {
                assert!(in_log.contains(id.as_str()), "{store_id}: acknowledged {id} lost");
            }
            let found = log.iter().filter(|event| event.client_id == writer.name).count();
            assert_eq!(
                found,
                writer.in_log.len(),
                "{store_id}: {}'s events once each",
                writer.name
            );
        }
        let clients: Vec<&str> = JS
            .iter()
            .map(|(name, s)| (*name, *s))
            .chain(RUST.iter().map(|(name, s, _)| (*name, *s)))
            .filter(|(_, s)| *s == store)
            .map(|(name, _)| name)
            .collect();
        record.commits.assert_in(store_id, &clients, &log);

        let expected_log = checks::server_events(&log);
        let mut reference_hash = None;
        for client in rust.iter().filter(|client| client.store_id == *store_id) {
            assert_eq!(
                checks::rust_events(client),
                expected_log,
                "{} holds the server's log",
                client.name
            );
            let hash = checks::rust_state_hash(client);
            client.store().rebuild().expect("rebuild");
            assert_eq!(
                checks::rust_state_hash(client),
                hash,
                "{}: state equals its rebuild",
                client.name
            );
            assert_eq!(
                *reference_hash.get_or_insert_with(|| hash.clone()),
                hash,
                "{}'s state",
                client.name
            );
            let verified = checks::check_files(store, client, &record.saved, &record.deleted);
            if client.with_files {
                bytes_verified += verified;
                files_verified += client.file_rows().iter().filter(|row| row.is_active()).count();
            }
        }
        for (name, _) in JS.iter().filter(|(_, s)| *s == store) {
            let eventlog = driver.eventlog(name).await;
            assert_eq!(checks::js_events(&eventlog), expected_log, "{name} holds the server's log");
            let todos = driver.todos(name).await;
            let files = driver
                .call(
                    json!({"cmd": "query", "name": name, "sql": "SELECT * FROM files ORDER BY id"}),
                )
                .await;
            let hash = checks::js_state_hash(&todos, &files);
            if Some(&hash) != reference_hash.as_ref() {
                let rust_client = rust.iter().find(|client| client.store_id == *store_id);
                let rust_todos = rust_client.map(|client| json!(client.todos()));
                let rust_files = rust_client.map(|client| json!(client.file_rows()));
                panic!(
                    "{name}'s state differs from the Rust clients' over the same eventlog:\n\
                     JS todos {todos}\nRust todos {rust_todos:?}\nJS files {files}\nRust files {rust_files:?}"
                );
            }
        }
        assert_no_orphans(&server.http_url(), store, store_id, &record).await;
        events.push(log.len());
    }

    let faults: u64 = proxies.iter().map(|proxy| proxy.stats().faults_injected).sum();
    let cuts: u64 = proxies.iter().map(|proxy| proxy.stats().connections_cut).sum();
    let raw_events: usize = writers.iter().map(|writer| writer.in_log.len()).sum();
    let graceful: u64 = rust.iter().map(|client| client.graceful_restarts).sum();
    let hard: u64 = rust.iter().map(|client| client.hard_restarts).sum();
    // Requests still open when a SIGTERM's grace ran out (the server closed them; see RELIABILITY.md).
    let forced_closes = server.log().matches("closing HTTP connections whose requests").count();
    eprintln!(
        "reliability: chaos seed={} seconds={} steps={step} stores={} events={events:?} raw={raw_events} \
         client_commits={} faults={faults} ({}) connections_cut={cuts} offline_periods={} sigterm_restarts={} \
         kill9_restarts={} rust_restarts={graceful}+{hard}hard js_restarts={js_restarts} files_saved={} files_deleted={} deletes_unseen={} \
         bytes_saved={} files_verified={files_verified} bytes_verified={bytes_verified} \
         forced_http_closes={forced_closes} settle_ms={settle_ms}",
        seed.0,
        chaos_seconds(),
        STORES.len(),
        record.commits.total(),
        summarize(&record.faults),
        record.offline_periods,
        record.sigterm_restarts,
        record.kill9_restarts,
        record.saved.len(),
        record.deleted.len(),
        record.deletes_unseen,
        record.bytes_saved,
    );
    for client in rust {
        client.finish().await;
    }
    driver.exit().await;
}

/// A Rust client with file sync.
fn file_client(rng: &mut StdRng) -> usize {
    let candidates: Vec<usize> = (0..RUST.len()).filter(|index| RUST[*index].2).collect();
    candidates[rng.random_range(0..candidates.len())]
}

/// Waits until every Rust client has confirmed its store's head with nothing to push and nothing left to transfer,
/// and every JS client has the head and nothing pending, with the heads unchanged meanwhile. Returns the heads.
async fn settle(server: &str, rust: &[RustClient], driver: &mut JsDriver) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(CONVERGE_MS + 30_000);
    loop {
        let mut heads = Vec::new();
        for store_id in STORES {
            heads.push(read_log(server, store_id).await.1.len() as u64);
        }
        let mut settled = true;
        let mut report = Vec::new();
        for client in rust {
            let store = STORES.iter().position(|s| *s == client.store_id).expect("a chaos store");
            let position = client.sync_position().expect("sync status");
            let files = client.files_settled();
            if position != (heads[store], true) || files.is_err() {
                settled = false;
                report.push(format!(
                    "{}: head {} of {}, synced {}, {files:?}",
                    client.name, position.0, heads[store], position.1
                ));
            }
        }
        if settled {
            for (name, store) in JS {
                driver
                    .call(json!({"cmd": "waitHead", "name": name, "head": heads[store], "timeoutMs": CONVERGE_MS}))
                    .await;
                driver
                    .call(json!({"cmd": "waitSynced", "name": name, "timeoutMs": CONVERGE_MS}))
                    .await;
            }
            let mut again = Vec::new();
            for store_id in STORES {
                again.push(read_log(server, store_id).await.1.len() as u64);
            }
            if again == heads && rust.iter().all(|client| client.files_settled().is_ok()) {
                return heads;
            }
            report.push(format!("heads moved from {heads:?} to {again:?}"));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run did not settle: {}",
            report.join("; ")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// No deleted file's object is left in the object store (unless an active file has the same bytes).
async fn assert_no_orphans(server: &str, store: usize, store_id: &str, record: &Record) {
    let active: HashSet<&str> = record
        .saved
        .iter()
        .filter(|file| file.store == store && !record.deleted.contains(&file.file_id))
        .map(|file| file.content_hash.as_str())
        .collect();
    let client = reqwest::Client::new();
    for file in record.saved.iter().filter(|file| file.store == store) {
        if !record.deleted.contains(&file.file_id) || active.contains(file.content_hash.as_str()) {
            continue;
        }
        let key = format!("{store_id}/{}", file.content_hash);
        let response: Value = client
            .post(format!("{server}/api/v1/head"))
            .json(&json!({"key": key}))
            .send()
            .await
            .expect("the signer answers")
            .json()
            .await
            .expect("a JSON answer");
        assert_eq!(
            response["exists"],
            json!(false),
            "{store_id}: deleted {} left its object {key}",
            file.file_id
        );
    }
}
