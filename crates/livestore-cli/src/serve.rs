//! `livestore serve`: resolves flags, environment and config file into a `ServerConfig`, then runs the server
//! until SIGINT or SIGTERM.
//!
//! Precedence, lowest first: built-in defaults, the config file, environment variables, command-line flags.
//! Secrets (tokens, JWT secret, hooks secret) come only from the config file or the environment, never from flags, so they do
//! not show up in process listings or shell history. The one exception is `--database-url`, which the flag may
//! carry for convenience; deployments pass it in `LIVESTORE_DATABASE_URL` or the config file instead.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use livestore_server::config::{DatabaseUrl, Secret, TokenEntry};
use livestore_server::{Server, ServerConfig};

/// Flags of `livestore serve`, as given.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8787].
    #[arg(long, env = "LIVESTORE_ADDR")]
    addr: Option<SocketAddr>,
    /// Directory for the event database [default: ./livestore-data].
    #[arg(long, env = "LIVESTORE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL database for the event log instead of SQLite in the data dir; several nodes may share one
    /// (postgres://user:password@host:port/dbname). Prefer the environment variable: flags show in process lists.
    #[arg(long, env = "LIVESTORE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Directory of static files (e.g. a built web app) to serve under `/`.
    #[arg(long, env = "LIVESTORE_STATIC_DIR")]
    static_dir: Option<PathBuf>,
    /// TOML config file (see README); flags and environment override it.
    #[arg(long, env = "LIVESTORE_CONFIG")]
    config: Option<PathBuf>,
}

/// Runs the server until a shutdown signal.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = resolve(args)?;
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start tokio")?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        server.run_until(shutdown_signal()).await?;
        Ok(())
    })
}

fn resolve(args: ServeArgs) -> anyhow::Result<ServerConfig> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    if let Ok(tokens) = std::env::var("LIVESTORE_AUTH_TOKENS") {
        let tokens = tokens.split(',').map(str::trim).filter(|token| !token.is_empty());
        config
            .auth
            .tokens
            .extend(tokens.map(|token| TokenEntry::AllStores(Secret(token.to_owned()))));
    }
    if let Ok(secret) = std::env::var("LIVESTORE_JWT_SECRET") {
        config.auth.jwt_secret = Some(Secret(secret));
    }
    if let Ok(secret) = std::env::var("LIVESTORE_HOOKS_SECRET") {
        config.hooks.secret = Some(Secret(secret));
    }
    if let Ok(origins) = std::env::var("LIVESTORE_ALLOWED_ORIGINS") {
        config.cors.allowed_origins = origins
            .split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(str::to_owned)
            .collect();
    }
    if let Some(addr) = args.addr {
        config.addr = addr;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(static_dir) = args.static_dir {
        config.static_dir = Some(static_dir);
    }
    if let Some(database_url) = args.database_url {
        config.database_url = Some(DatabaseUrl(database_url));
    }
    // After the data dir is final: an embedded store that was not configured explicitly lives in it. The upstream
    // s3-signer's variable names (S3_ENDPOINT, S3_BUCKET, ...) select and configure an external store.
    let files = config.files_config().from_env_overrides(|name| std::env::var(name).ok())?;
    config.files = Some(files);
    config.validate()?;
    Ok(config)
}

/// Each WebSocket client holds a file descriptor; the default soft limit (often 1024) is far too low for a server.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler works on Unix");
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
