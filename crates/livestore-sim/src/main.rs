//! `livestore-sim`: runs seeds of the deterministic simulation and reports passes, failures and fault hits.
//!
//! `--seeds N` runs seeds `start..start+N` (in `--jobs` child processes, each running its seeds one at a time:
//! SQLite's PRNG is process-wide, so seeds never share a process concurrently); `--seed S` runs one seed and
//! prints its trace hash. A failing seed prints its reproduction line and a minimized plan. The last line is
//! always `N passed, M failed`. The wrapper is `scripts/sim`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Parser;
use livestore_sim::shrink::shrink;
use livestore_sim::stats::Hits;
use livestore_sim::{Mutant, Plan, PlanSize, RunOptions, run_plan};

/// Deterministic simulation of LiveStore sync.
#[derive(Debug, Parser)]
#[command(name = "livestore-sim")]
struct Args {
    /// Run this many seeds.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// Run just this seed, and print its trace hash.
    #[arg(long)]
    seed: Option<u64>,
    /// The first seed of `--seeds`.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Child processes to run seeds in (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Replays the shrinker may spend on each failing seed.
    #[arg(long, default_value_t = 150)]
    shrink_attempts: usize,
    /// A deliberate server bug, to check the checks (see `mutant.rs`).
    #[arg(long, hide = true)]
    mutant: Option<Mutant>,
    /// Fail on objects no active file uses at quiescence (off by default: an open finding, see RELIABILITY.md).
    #[arg(long)]
    strict_files: bool,
    /// Internal: run as a child, printing one JSON line per seed.
    #[arg(long, hide = true)]
    child: bool,
}

/// One seed's result as a child reports it.
#[derive(Debug, Default)]
struct SeedResult {
    seed: u64,
    violation: Option<String>,
    virtual_nanos: u64,
    hits: Hits,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = RunOptions {
        mutant: args.mutant,
        strict_files: args.strict_files,
        ..RunOptions::default()
    };
    if let Some(seed) = args.seed {
        return single(seed, &options, args.shrink_attempts);
    }
    if args.child {
        for seed in args.start..args.start + args.seeds {
            println!("{}", to_json(&run_one(seed, &options)));
        }
        return ExitCode::SUCCESS;
    }
    many(&args, &options)
}

fn run_one(seed: u64, options: &RunOptions) -> SeedResult {
    let plan = Plan::generate(seed, PlanSize::default());
    match run_plan(seed, &plan, options) {
        Ok(report) => SeedResult {
            seed,
            violation: report.violation.map(|violation| violation.to_string()),
            virtual_nanos: report.virtual_time.as_nanos() as u64,
            hits: report.hits,
        },
        Err(error) => SeedResult {
            seed,
            violation: Some(format!("simulator error: {error}")),
            ..SeedResult::default()
        },
    }
}

fn single(seed: u64, options: &RunOptions, shrink_attempts: usize) -> ExitCode {
    let plan = Plan::generate(seed, PlanSize::default());
    print!("{plan}");
    let report = match run_plan(seed, &plan, options) {
        Ok(report) => report,
        Err(error) => {
            println!("seed {seed}: simulator error: {error}");
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "steps {}, simulated {:.1} s, {} events in the server log",
        report.steps,
        report.virtual_time.as_secs_f64(),
        report.server_events
    );
    println!("fault hits: {}", format_hits(&report.hits));
    println!("trace {}", report.trace);
    match report.violation {
        None => {
            println!("1 passed, 0 failed");
            ExitCode::SUCCESS
        }
        Some(violation) => {
            println!("seed {seed} FAILED: {violation}");
            let shrunk = shrink(seed, &plan, &violation, options, shrink_attempts);
            println!("minimized after {} replays ({}):", shrunk.attempts, shrunk.violation);
            print!("{}", shrunk.plan);
            println!("0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the runner measures wall time for the seeds-per-minute figure"
)]
fn many(args: &Args, options: &RunOptions) -> ExitCode {
    let started = std::time::Instant::now();
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |cores| cores.get()))
        .max(1);
    let results = if jobs == 1 {
        (args.start..args.start + args.seeds).map(|seed| run_one(seed, options)).collect()
    } else {
        run_children(args, jobs)
    };
    let elapsed = started.elapsed();
    let mut hits = Hits::default();
    let mut virtual_nanos = 0u64;
    let mut failed = Vec::new();
    for result in &results {
        hits.add(&result.hits);
        virtual_nanos += result.virtual_nanos;
        if let Some(violation) = &result.violation {
            failed.push((result.seed, violation.clone()));
        }
    }
    let passed = results.len() - failed.len();
    let per_minute = results.len() as f64 / elapsed.as_secs_f64().max(1e-9) * 60.0;
    println!(
        "ran {} seeds in {:.1} s with {jobs} job(s): {per_minute:.0} seeds per minute, {:.2} simulated hours",
        results.len(),
        elapsed.as_secs_f64(),
        Duration::from_nanos(virtual_nanos).as_secs_f64() / 3600.0
    );
    println!("fault hits: {}", format_hits(&hits));
    for (seed, violation) in &failed {
        println!("seed {seed} FAILED: {violation}");
        println!("  reproduce: scripts/sim --seed {seed}");
        let plan = Plan::generate(*seed, PlanSize::default());
        if let Ok(report) = run_plan(*seed, &plan, options)
            && let Some(violation) = report.violation
        {
            let shrunk = shrink(*seed, &plan, &violation, options, args.shrink_attempts);
            println!("  minimized after {} replays ({}):", shrunk.attempts, shrunk.violation);
            for line in shrunk.plan.to_string().lines() {
                println!("    {line}");
            }
        }
    }
    let _ = std::io::stdout().flush();
    println!("{passed} passed, {} failed", failed.len());
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Splits the seeds over `jobs` child processes of this binary and collects their JSON lines.
///
/// Each child writes to its own file (not a pipe: reading one child's pipe to the end while another fills its
/// own would run them one after the other).
fn run_children(args: &Args, jobs: usize) -> Vec<SeedResult> {
    let exe = std::env::current_exe().expect("the running binary has a path");
    let out_dir = tempfile::tempdir().expect("a temporary directory for the children's output");
    let per_job = args.seeds.div_ceil(jobs as u64);
    let mut children = Vec::new();
    for job in 0..jobs as u64 {
        let start = args.start + job * per_job;
        let count = per_job.min((args.start + args.seeds).saturating_sub(start));
        if count == 0 {
            continue;
        }
        let path = out_dir.path().join(format!("job-{job}.jsonl"));
        let file = std::fs::File::create(&path).expect("creating a child's output file");
        let mut command = Command::new(&exe);
        command.args(["--child", "--start", &start.to_string(), "--seeds", &count.to_string()]);
        if let Some(mutant) = args.mutant {
            command.args(["--mutant", mutant.name()]);
        }
        if args.strict_files {
            command.arg("--strict-files");
        }
        let child =
            command.stdout(Stdio::from(file)).spawn().expect("spawning a child of this binary");
        children.push((start, count, path, child));
    }
    let mut results = Vec::new();
    for (start, count, path, mut child) in children {
        let _ = child.wait();
        let mut seen = BTreeMap::new();
        let file = std::fs::File::open(&path).expect("a child's output file");
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            if let Some(result) = from_json(&line) {
                seen.insert(result.seed, result);
            }
        }
        for seed in start..start + count {
            // A child that died mid-seed (a panic in the client, say) leaves its seed unreported: a failure.
            results.push(seen.remove(&seed).unwrap_or_else(|| SeedResult {
                seed,
                violation: Some(
                    "the child process died running this seed (see its stderr)".to_owned(),
                ),
                ..SeedResult::default()
            }));
        }
    }
    results
}

fn to_json(result: &SeedResult) -> String {
    serde_json::json!({
        "seed": result.seed,
        "violation": result.violation,
        "virtual_nanos": result.virtual_nanos,
        "hits": result.hits.0,
    })
    .to_string()
}

fn from_json(line: &str) -> Option<SeedResult> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let hits = value
        .get("hits")?
        .as_object()?
        .iter()
        .map(|(name, count)| (name.clone(), count.as_u64().unwrap_or(0)))
        .collect();
    Some(SeedResult {
        seed: value.get("seed")?.as_u64()?,
        violation: value
            .get("violation")
            .and_then(|violation| violation.as_str())
            .map(str::to_owned),
        virtual_nanos: value.get("virtual_nanos")?.as_u64()?,
        hits: Hits(hits),
    })
}

fn format_hits(hits: &Hits) -> String {
    if hits.0.is_empty() {
        return "none".to_owned();
    }
    hits.0.iter().map(|(name, count)| format!("{name} {count}")).collect::<Vec<_>>().join(", ")
}
