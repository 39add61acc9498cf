//! `kill -9` of a process that is committing to a store, again and again on one data dir. After every kill the store
//! reopens, and then: the state on disk equals the state rebuilt from the eventlog alone, every commit that
//! returned before the kill is in the eventlog (at most the one batch in flight is there without having returned),
//! the eventlog's numbering is sound, and the store keeps working.
//!
//! The committing process is this test binary itself, run again with `CRASH_CHILD_DIR` set. It commits TodoMVC
//! batches in a loop and, now and then, applies an upstream page the way the sync driver would (confirming some of
//! its pending events, or rebasing them under foreign ones), or rebuilds its state; so kills land in plain commits,
//! in rebases (rollback and replay) and in the rebuild's file swap. It prints each batch after `commit_batch`
//! returned. `SEED=<n>` replays the kill timings and the child's choices.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use livestore_client::schema::Query;
use livestore_client::store::UpstreamEvent;
use livestore_client::todo::{
    self, Todo, TodoCompleted, TodoCreated, TodoDeleted, TodoUncompleted,
};
use livestore_client::{Durability, LocalEvent, NewEvent, Storage, Store, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const STORE: &str = "crash";
const CLIENT: &str = "committer";
const BACKEND: &str = "crash-backend";
/// The largest batch the child commits: what may be in the log without having been reported.
const MAX_BATCH: usize = 5;

fn open(dir: &Path, storage: fn(std::path::PathBuf) -> Storage, durability: Durability) -> Store {
    let mut options = StoreOptions::new(STORE, storage(dir.to_path_buf()));
    options.client_id = Some(CLIENT.to_owned());
    options.durability = durability;
    Store::open(options, todo::schema()).expect("the store reopens after kill -9")
}

fn durability_of(cycle: u64) -> Durability {
    if cycle % 3 == 2 { Durability::Full } else { Durability::Normal }
}

fn todos(store: &Store) -> Vec<Todo> {
    store.query(&Query::select("todos").order_by("id")).expect("todos")
}

/// The child: commits, applies upstream pages and rebuilds until it is killed.
fn child(dir: &Path, seed: u64, cycle: u64) -> ! {
    let store = open(dir, Storage::Dir, durability_of(cycle));
    let mut rng = StdRng::seed_from_u64(seed ^ (cycle << 32));
    let mut known: Vec<String> = todos(&store).into_iter().map(|todo| todo.id).collect();
    let mut foreign = 0u64;
    println!("ready");
    for step in 0u64.. {
        match rng.random_range(0..100) {
            0..=84 => {
                let count = rng.random_range(1..=MAX_BATCH);
                let mut created = Vec::new();
                let mut batch = Vec::new();
                for index in 0..count {
                    if known.is_empty() || rng.random_bool(0.5) {
                        let id = format!("c{cycle}-{step}-{index}");
                        batch
                            .push(NewEvent::new(&TodoCreated { id: id.clone(), text: id.clone() }));
                        created.push(id.clone());
                        known.push(id);
                        continue;
                    }
                    let id = known[rng.random_range(0..known.len())].clone();
                    batch.push(match rng.random_range(0..3) {
                        0 => NewEvent::new(&TodoCompleted { id }),
                        1 => NewEvent::new(&TodoUncompleted { id }),
                        _ => NewEvent::new(&TodoDeleted { id, deleted_at: step as i64 }),
                    });
                }
                let batch: Vec<NewEvent> =
                    batch.into_iter().collect::<Result<_, _>>().expect("events encode");
                store.commit_batch(batch).expect("commit");
                println!("committed {count} {}", created.join(","));
            }
            85..=96 => {
                // An upstream page as the driver would apply it: some of our pending events come back confirmed,
                // and foreign events may follow them (which rebases the rest of ours on top).
                let (head, _) = store.upstream_cursor().expect("cursor");
                let mine = store.push_candidates(rng.random_range(0..4)).expect("candidates");
                let mut page = Vec::new();
                for event in &mine {
                    let seq = head + page.len() as u64 + 1;
                    page.push(upstream(seq, &event.name, &event.args_json, &event.client_id));
                }
                for _ in 0..rng.random_range(0..3) {
                    foreign += 1;
                    let seq = head + page.len() as u64 + 1;
                    let id = format!("f{cycle}-{foreign}");
                    let args = format!(r#"{{"id":"{id}","text":"foreign"}}"#);
                    page.push(upstream(seq, "v1.TodoCreated", &args, "other"));
                    known.push(id);
                }
                store.apply_upstream(&page, BACKEND).expect("upstream page");
            }
            _ => store.rebuild().expect("rebuild"),
        }
    }
    unreachable!("the loop only ends with the process")
}

fn upstream(seq: u64, name: &str, args: &str, client: &str) -> UpstreamEvent {
    UpstreamEvent {
        event: LocalEvent::from_global(seq, seq - 1, name, args, client, "static"),
        metadata_json: None,
    }
}

/// One reopen's checks; returns how many of the child's own events the eventlog holds.
fn check_after_kill(
    dir: &Path,
    cycle: u64,
    reported: &HashSet<String>,
    reported_events: usize,
) -> usize {
    let store = open(dir, Storage::Dir, Durability::Normal);
    let on_disk = todos(&store);
    let events = store.events().expect("eventlog");
    let (head, backend) = store.upstream_cursor().expect("cursor");
    store.shutdown().expect("shutdown");

    // Numbering: confirmed events are 1..=head, pending ones follow the head in order.
    let mut previous: Option<(u64, u32)> = None;
    for event in &events {
        let position = (event.seq_num.global, event.seq_num.client);
        assert!(
            previous.is_none_or(|previous| position > previous),
            "cycle {cycle}: eventlog out of order at {}",
            event.seq_num
        );
        previous = Some(position);
    }
    let confirmed: Vec<u64> =
        events.iter().map(|event| event.seq_num.global).filter(|global| *global <= head).collect();
    assert_eq!(
        confirmed,
        (1..=head).collect::<Vec<_>>(),
        "cycle {cycle}: confirmed events are 1..={head}"
    );
    if head > 0 {
        assert_eq!(backend.as_deref(), Some(BACKEND), "cycle {cycle}: backend id kept");
    }

    // The state on disk is what the eventlog alone materializes to.
    let rebuilt = open(dir, Storage::DirWithMemoryState, Durability::Normal);
    assert_eq!(
        todos(&rebuilt),
        on_disk,
        "cycle {cycle}: state on disk differs from the eventlog's"
    );
    rebuilt.shutdown().expect("shutdown");

    // Every commit that returned is there; at most the batch in flight is there unreported.
    let ids: HashSet<String> = events
        .iter()
        .filter(|event| &*event.name == "v1.TodoCreated")
        .filter_map(|event| serde_json::from_str::<serde_json::Value>(&event.args_json).ok())
        .filter_map(|args| args["id"].as_str().map(str::to_owned))
        .collect();
    for id in reported {
        assert!(ids.contains(id), "cycle {cycle}: committed {id} is missing after kill -9");
    }
    let own = events.iter().filter(|event| &*event.client_id == CLIENT).count();
    assert!(
        own >= reported_events && own <= reported_events + MAX_BATCH,
        "cycle {cycle}: {own} own events in the log, {reported_events} reported committed"
    );
    own
}

#[test]
fn kill_9_while_committing_rebasing_and_rebuilding_keeps_eventlog_and_state_in_agreement() {
    let seed: u64 =
        std::env::var("SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(rand::random);
    if let Some(dir) = std::env::var_os("CRASH_CHILD_DIR") {
        let cycle = std::env::var("CRASH_CHILD_CYCLE")
            .ok()
            .and_then(|cycle| cycle.parse().ok())
            .unwrap_or(0);
        child(Path::new(&dir), seed, cycle);
    }
    eprintln!("crash::kill_9: SEED={seed}");
    let guard = SeedGuard(seed);
    let mut rng = StdRng::seed_from_u64(seed);
    let temp = tempfile::tempdir().expect("temp dir");
    let cycles: u64 =
        std::env::var("CLIENT_CRASH_CYCLES").ok().and_then(|n| n.parse().ok()).unwrap_or(12);
    let mut reported = HashSet::new();
    let mut reported_events = 0;
    let mut kill_delays = Vec::new();
    let mut commits_seen = 0;
    for cycle in 0..cycles {
        let mut child = KillOnDrop(Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "kill_9_while_committing_rebasing_and_rebuilding_keeps_eventlog_and_state_in_agreement",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CRASH_CHILD_DIR", temp.path())
            .env("CRASH_CHILD_CYCLE", cycle.to_string())
            .env("SEED", seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts"));
        let stdout = child.0.stdout.take().expect("child stdout");
        let (lines, receiver) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = receiver
                .recv_timeout(deadline - Instant::now())
                .expect("the child opens its store");
            // The harness prints `test <name> ... ` without a newline before the child's first line.
            if line.ends_with("ready") {
                break;
            }
        }
        let delay = Duration::from_millis(rng.random_range(20..400));
        kill_delays.push(delay.as_millis());
        std::thread::sleep(delay);
        child.0.kill().expect("kill -9");
        let status = child.0.wait().expect("the child is reaped");
        // `kill` succeeds on a child that already exited, so a child that failed a commit, rebase or rebuild (its
        // panic is on stderr above) would otherwise go unnoticed: it must have died of the SIGKILL.
        assert_eq!(
            status.signal(),
            Some(9),
            "cycle {cycle}: the child ended before the kill: {status}"
        );
        reader.join().expect("reader thread");
        let mut cycle_commits = 0;
        for line in receiver.try_iter() {
            let Some(rest) = line.strip_prefix("committed ") else { continue };
            let (count, ids) = rest.split_once(' ').unwrap_or((rest, ""));
            reported_events += count.parse::<usize>().expect("a count");
            reported.extend(ids.split(',').filter(|id| !id.is_empty()).map(str::to_owned));
            cycle_commits += 1;
        }
        commits_seen += cycle_commits;
        // What the log holds from here on is what the next cycle's counts start from.
        reported_events = check_after_kill(temp.path(), cycle, &reported, reported_events);
    }
    // A kill may land before the first commit of a cycle (or in a long rebuild), not in most of them.
    assert!(commits_seen >= cycles, "only {commits_seen} commits returned in {cycles} cycles");
    let store = open(temp.path(), Storage::Dir, Durability::Normal);
    let events = store.events().expect("eventlog").len();
    store
        .commit(&TodoCreated { id: "after".into(), text: "still works".into() })
        .expect("a commit after the kills");
    store.shutdown().expect("shutdown");
    eprintln!(
        "reliability: client.crash seed={seed} kills={cycles} kill_after_ms={kill_delays:?} commits_returned={commits_seen} \
         created_ids={} events={events}",
        reported.len()
    );
    drop(guard);
}

/// A child that must not outlive a failing parent (it would write into a deleted directory).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints the seed when the test fails.
struct SeedGuard(u64);

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "\n*** failed with SEED={} (rerun with SEED={} to replay) ***\n",
                self.0, self.0
            );
        }
    }
}
