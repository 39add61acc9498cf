//! `tenant-rules`: a LiveStore sync server where each user may open only their own store and push only their own
//! events, enforced by hooks written in Rust (see the library and README.md).
//!
//! `tenant-rules serve` runs the server; `tenant-rules key <user>` prints the sync payload that lets a user in.
//! Both read the signing secret from `TENANT_RULES_SECRET`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use livestore_server::{Server, ServerConfig};
use tenant_rules::{TenantRules, unix_now};

#[derive(Debug, Parser)]
#[command(about = "A LiveStore sync server with per-user tenant rules written in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the sync server until Ctrl-C.
    Serve {
        /// Address to listen on (port 0: any free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8787")]
        addr: SocketAddr,
        /// Directory for the event database.
        #[arg(long, default_value = "./tenant-rules-data")]
        data_dir: PathBuf,
    },
    /// Prints the sync payload (JSON) that lets USER open the store `user-USER`.
    Key {
        /// The user name (letters, digits, - and _).
        user: String,
        /// How long the key is valid, in seconds.
        #[arg(long, default_value_t = 24 * 3600)]
        ttl: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let secret = std::env::var("TENANT_RULES_SECRET").context(
        "set TENANT_RULES_SECRET (e.g. `export TENANT_RULES_SECRET=$(openssl rand -hex 32)`)",
    )?;
    let rules = TenantRules::new(secret.as_bytes()).map_err(anyhow::Error::msg)?;
    match cli.command {
        Command::Key { user, ttl } => {
            let payload = rules.issue(&user, unix_now() + ttl).map_err(anyhow::Error::msg)?;
            println!("{payload}");
            Ok(())
        }
        Command::Serve { addr, data_dir } => serve(rules, addr, data_dir),
    }
}

fn serve(rules: TenantRules, addr: SocketAddr, data_dir: PathBuf) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIVESTORE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = ServerConfig { addr, data_dir, ..ServerConfig::default() };
    let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
    runtime.block_on(async move {
        // The connect hook decides who gets in, so the server needs no credentials of its own.
        let server = Server::builder(config).hooks(Arc::new(rules)).bind().await?;
        println!("listening on {}", server.local_addr());
        server.run_until(async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await?;
        Ok(())
    })
}
