//! `todo`: the TodoMVC example as a command-line client that shares stores with LiveStore's JavaScript example.
//!
//! Run: `todo --store ID --server URL --data-dir DIR [--token T] (add TEXT | complete ID | uncomplete ID |
//! delete ID | clear-completed | list | sync)`. Commands other than `list` and `sync` work offline; `list` syncs
//! first unless `--offline`; `sync` exits 0 only when nothing is left to push.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use livestore_client::schema::Query;
use livestore_client::store::random_id;
use livestore_client::sync::{DriverOptions, sync_until_caught_up};
use livestore_client::todo::{
    self, Todo, TodoClearedCompleted, TodoCompleted, TodoCreated, TodoDeleted, TodoUncompleted,
};
use livestore_client::{Storage, Store, StoreOptions};

#[derive(Debug, Parser)]
#[command(name = "todo", about = "TodoMVC over LiveStore sync")]
struct Args {
    /// The store id shared by all clients of this todo list.
    #[arg(long = "store")]
    store: String,
    /// The sync server URL (ws:// or http://).
    #[arg(long)]
    server: String,
    /// Where this client keeps its databases.
    #[arg(long)]
    data_dir: PathBuf,
    /// Auth token, sent as the sync payload `{"authToken": T}`.
    #[arg(long)]
    token: Option<String>,
    /// Do not contact the server for `list`.
    #[arg(long, global = true)]
    offline: bool,
    /// How long `sync` and `list` may take, in seconds.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates a todo and prints its id.
    Add { text: String },
    /// Marks a todo completed.
    Complete { id: String },
    /// Marks a todo not completed.
    Uncomplete { id: String },
    /// Deletes a todo (sets deletedAt).
    Delete { id: String },
    /// Deletes all completed todos.
    ClearCompleted,
    /// Prints all todos as JSON, ordered by id.
    List,
    /// Pushes pending events, pulls until caught up and prints the sync status.
    Sync,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(Args::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("todo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open(
        StoreOptions::new(&args.store, Storage::Dir(args.data_dir.clone())),
        todo::schema(),
    )
    .with_context(|| format!("opening store {} in {}", args.store, args.data_dir.display()))?;
    let mut options = DriverOptions::new(&args.server);
    options.sync_payload =
        args.token.as_ref().map(|token| serde_json::json!({ "authToken": token }));
    let timeout = Duration::from_secs(args.timeout);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let code = match args.command {
        Command::Add { text } => {
            let id = random_id(16);
            store.commit(&TodoCreated { id: id.clone(), text })?;
            println!("{id}");
            ExitCode::SUCCESS
        }
        Command::Complete { id } => commit_ok(store.commit(&TodoCompleted { id }))?,
        Command::Uncomplete { id } => commit_ok(store.commit(&TodoUncompleted { id }))?,
        Command::Delete { id } => {
            commit_ok(store.commit(&TodoDeleted { id, deleted_at: now_ms() }))?
        }
        Command::ClearCompleted => {
            commit_ok(store.commit(&TodoClearedCompleted { deleted_at: now_ms() }))?
        }
        Command::List => {
            if !args.offline {
                match runtime.block_on(sync_until_caught_up(&store, options, timeout)) {
                    Ok(true) => {}
                    Ok(false) => {
                        eprintln!("todo: warning: could not fully sync; listing local state")
                    }
                    Err(error) => {
                        eprintln!("todo: warning: sync failed ({error}); listing local state")
                    }
                }
            }
            let todos: Vec<Todo> = store.query(&Query::select("todos").order_by("id"))?;
            println!("{}", serde_json::to_string(&todos)?);
            ExitCode::SUCCESS
        }
        Command::Sync => {
            let synced = runtime.block_on(sync_until_caught_up(&store, options, timeout))?;
            let status = store.sync_status()?;
            println!("{}", serde_json::to_string(&status)?);
            if synced && status.pending_synced_count == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    };
    if !store.is_shut_down() {
        store.shutdown()?;
    }
    Ok(code)
}

fn commit_ok<T>(result: Result<T, livestore_client::StoreError>) -> anyhow::Result<ExitCode> {
    result?;
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}
