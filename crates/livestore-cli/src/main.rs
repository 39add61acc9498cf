//! The `livestore` command. Parses arguments, sets up logging, and hands off to a subcommand module.
//!
//! Subcommands own their argument resolution (flags as given → validated configuration); the libraries own all
//! behaviour. Errors are printed with their whole cause chain and turn into a non-zero exit code.

mod files;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Local-first sync for LiveStore: a self-hosted sync server compatible with @livestore/sync-cf 0.4.
#[derive(Debug, Parser)]
#[command(name = "livestore", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync server (WebSocket and HTTP transports) on an embedded SQLite database.
    Serve(serve::ServeArgs),
    /// Local-first file sync: add, list, get, update and remove files; sync them; serve them over HTTP.
    Files(files::FilesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Files(args) => files::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

/// Libraries whose debug and trace output quotes what crosses the wire: frames (tokens ride in sync payloads),
/// request headers (`Authorization`, `Cookie`), URLs (presigned signatures). Whatever `LIVESTORE_LOG` asks for, they
/// log at `info` at most, so no log level can print a credential.
const WIRE_LOGGING_TARGETS: [&str; 10] = [
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "tokio_postgres",
    "tower_http",
    "axum::rejection",
];

fn init_logging() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIVESTORE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let wire_capped = tracing_subscriber::filter::filter_fn(|metadata| {
        let target = metadata.target();
        let is_wire = WIRE_LOGGING_TARGETS.iter().any(|prefix| {
            target
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        });
        !is_wire || *metadata.level() <= tracing::Level::INFO
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_filter(filter.and(wire_capped));
    tracing_subscriber::registry().with(output).init();
}
