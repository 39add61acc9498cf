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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIVESTORE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}
