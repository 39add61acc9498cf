//! The two storage backends, opened the way `livestore serve` opens them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use livestore_server::ServerConfig;
use livestore_server::config::DatabaseUrl;
use livestore_server::storage::{self, EventStorage};

/// Where a test's log lives; `open` may be called again after the previous instance shut down (or, on Postgres,
/// while it runs: that is a second node).
pub enum Backend {
    Sqlite { dir: tempfile::TempDir },
    Postgres { admin_url: String, database: String },
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite { dir: tempfile::tempdir().unwrap() }
    }

    /// A fresh database in the test cluster, or `None` (after a loud note) when no cluster is configured.
    pub async fn postgres() -> Option<Backend> {
        let admin_url = postgres_admin_url()?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let database = format!(
            "livestore_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            rand_suffix()
        );
        let admin = admin_client(&admin_url).await;
        admin.batch_execute(&format!("CREATE DATABASE {database}")).await.unwrap();
        Some(Backend::Postgres { admin_url, database })
    }

    pub fn config(&self) -> ServerConfig {
        match self {
            Backend::Sqlite { dir } => {
                ServerConfig { data_dir: dir.path().to_owned(), ..ServerConfig::default() }
            }
            Backend::Postgres { admin_url, database } => ServerConfig {
                database_url: Some(DatabaseUrl(with_database(admin_url, database))),
                ..ServerConfig::default()
            },
        }
    }

    pub async fn open(&self) -> Arc<dyn EventStorage> {
        storage::open(&self.config()).await.expect("storage opens")
    }

    /// A client on this backend's database (Postgres only), to inspect or damage it.
    pub async fn sql(&self) -> tokio_postgres::Client {
        match self {
            Backend::Postgres { admin_url, database } => {
                admin_client(&with_database(admin_url, database)).await
            }
            Backend::Sqlite { .. } => panic!("sql() is for Postgres"),
        }
    }

    /// Drops the test database (Postgres); open storages lose their connections.
    pub async fn cleanup(self) {
        if let Backend::Postgres { admin_url, database } = self {
            let admin = admin_client(&admin_url).await;
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .await;
        }
    }
}

/// The cluster's URL from `LIVESTORE_TEST_DATABASE_URL`; without it, a loud note and `None`, or a failure when
/// `LIVESTORE_REQUIRE_POSTGRES` says the Postgres tests must run.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("LIVESTORE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("LIVESTORE_REQUIRE_POSTGRES").is_none(),
                "LIVESTORE_REQUIRE_POSTGRES is set but LIVESTORE_TEST_DATABASE_URL is not: start a cluster with \
                 scripts/with-postgres (scripts/test does)"
            );
            // Straight to stderr, past the test harness's capture, once per run: a skipped suite must be noticed.
            static NOTED: std::sync::Once = std::sync::Once::new();
            NOTED.call_once(|| {
                use std::io::Write;
                let _ = std::io::stderr().write_all(
                    b"\n!!! NOTE: LIVESTORE_TEST_DATABASE_URL is not set: the Postgres storage tests did NOT run and \
                      pass trivially.\n!!! Run `scripts/with-postgres -- cargo test -p livestore-server` (or \
                      scripts/test) to run them.\n\n",
                );
            });
            None
        }
    }
}

pub async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// `postgres://…/old` → `postgres://…/database` (the test URL is a URL, not key=value).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base.find("://").map_or(0, |index| index + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

fn rand_suffix() -> u32 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    nanos % 1_000_000
}
