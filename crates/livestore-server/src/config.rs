//! Server configuration: listening address, data directory or Postgres database, authentication and limits.
//!
//! Configuration comes from a TOML file, then environment variables and command-line flags override it (the CLI
//! crate applies the overrides). Secrets are redacted from `Debug` output so that logging a config never leaks them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ServerError;

/// Default listening address: loopback only, so the no-auth default is safe.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8787";

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./livestore-data";

/// Everything `livestore serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Where the event database lives (SQLite), and the embedded object store unless `[files]` says otherwise.
    pub data_dir: PathBuf,
    /// A PostgreSQL database for the event log instead of SQLite in `data_dir`. Several nodes may share one.
    pub database_url: Option<DatabaseUrl>,
    /// Who may connect.
    pub auth: AuthConfig,
    /// Size limits for frames and bodies.
    pub limits: Limits,
    /// File services (signer and object store). Unset: the embedded object store in `<data_dir>/objects`.
    pub files: Option<livestore_objects::FilesConfig>,
    /// A directory of static files (e.g. a built web app) served under `/` to GET requests no other route takes.
    pub static_dir: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: DEFAULT_ADDR.parse().expect("the default address is valid"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            auth: AuthConfig::default(),
            limits: Limits::default(),
            files: None,
            static_dir: None,
        }
    }
}

impl ServerConfig {
    /// The file-services configuration in effect: the configured one, or the embedded store in the data dir.
    pub fn files_config(&self) -> livestore_objects::FilesConfig {
        self.files.clone().unwrap_or_else(|| {
            livestore_objects::FilesConfig::embedded(self.data_dir.join("objects"))
        })
    }

    /// Reads a TOML config file; unknown keys are errors so typos do not silently fall back to defaults.
    pub fn from_file(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ServerError::ConfigRead { path: path.to_owned(), source })?;
        toml::from_str(&text)
            .map_err(|source| ServerError::ConfigParse { path: path.to_owned(), source })
    }

    /// Checks the rules that span several fields.
    pub fn validate(&self) -> Result<(), ServerError> {
        if !self.auth.is_enabled() && !self.addr.ip().is_loopback() {
            return Err(ServerError::InvalidConfig(format!(
                "refusing to listen on {} without authentication: anyone on the network could read and write every \
                 store. Configure auth tokens (LIVESTORE_AUTH_TOKENS or [auth] tokens) or a JWT secret \
                 (LIVESTORE_JWT_SECRET or [auth] jwt_secret), or bind to a loopback address such as 127.0.0.1",
                self.addr
            )));
        }
        if self.limits.max_message_bytes < 1024 * 1024 {
            return Err(ServerError::InvalidConfig(
                "limits.max_message_bytes must be at least 1 MiB: sync-cf clients send frames of up to ~900 KB".into(),
            ));
        }
        if self.limits.header_read_timeout_seconds == 0 {
            return Err(ServerError::InvalidConfig(
                "limits.header_read_timeout_seconds must be at least 1".into(),
            ));
        }
        if let Some(url) = &self.database_url {
            url.to_postgres_config()?;
        }
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            return Err(ServerError::InvalidConfig(format!(
                "static_dir {} is not a directory",
                dir.display()
            )));
        }
        self.files_config()
            .validate()
            .map_err(|error| ServerError::InvalidConfig(format!("[files]: {error}")))?;
        for entry in &self.auth.tokens {
            if entry.token().is_empty() {
                return Err(ServerError::InvalidConfig(
                    "auth.tokens contains an empty token".into(),
                ));
            }
        }
        if let Some(secret) = &self.auth.jwt_secret
            && secret.0.len() < 16
        {
            return Err(ServerError::InvalidConfig(
                "auth.jwt_secret must be at least 16 bytes".into(),
            ));
        }
        Ok(())
    }
}

/// Authentication settings. With no tokens and no JWT secret, the server runs without auth (loopback only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Static bearer tokens, each valid for all stores or for a list of stores.
    pub tokens: Vec<TokenEntry>,
    /// HS256 secret for JWTs.
    pub jwt_secret: Option<Secret>,
    /// The JWT claim listing the store ids a token may use (`"*"` for all).
    pub jwt_stores_claim: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { tokens: Vec::new(), jwt_secret: None, jwt_stores_claim: "storeIds".to_owned() }
    }
}

impl AuthConfig {
    /// Whether any credential is required.
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty() || self.jwt_secret.is_some()
    }
}

/// A static token, either bare (all stores) or with the stores it may use.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenEntry {
    /// A token valid for every store.
    AllStores(Secret),
    /// A token valid for the listed stores only.
    Scoped {
        /// The token.
        token: Secret,
        /// Store ids it may use; `"*"` means all.
        stores: Vec<String>,
    },
}

impl TokenEntry {
    /// The token text.
    pub fn token(&self) -> &str {
        match self {
            TokenEntry::AllStores(secret) | TokenEntry::Scoped { token: secret, .. } => &secret.0,
        }
    }

    /// Whether the token may use `store_id`.
    pub fn allows_store(&self, store_id: &str) -> bool {
        match self {
            TokenEntry::AllStores(_) => true,
            TokenEntry::Scoped { stores, .. } => {
                stores.iter().any(|store| store == "*" || store == store_id)
            }
        }
    }
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenEntry::AllStores(_) => formatter.write_str("TokenEntry(<redacted>, all stores)"),
            TokenEntry::Scoped { stores, .. } => {
                write!(formatter, "TokenEntry(<redacted>, stores: {stores:?})")
            }
        }
    }
}

/// A secret string whose `Debug` output is redacted.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("<redacted>")
    }
}

/// A PostgreSQL connection string (`postgres://user:password@host:port/dbname` or `host=... user=...`).
///
/// It usually carries a password, so `Debug` and [`DatabaseUrl::redacted`] show only where it points.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    /// Parses the connection string; the error never repeats the string (it may hold a password).
    pub fn to_postgres_config(&self) -> Result<tokio_postgres::Config, ServerError> {
        self.0.parse::<tokio_postgres::Config>().map_err(|error| {
            ServerError::InvalidConfig(format!(
                "database_url is not a postgres:// URL or a key=value connection string ({error})"
            ))
        })
    }

    /// `user@host:port/dbname`, without the password: safe for logs.
    pub fn redacted(&self) -> String {
        let Ok(config) = self.to_postgres_config() else {
            return "<unparseable database url>".to_owned();
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(index, host)| {
                let host = match host {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    #[cfg(unix)]
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                };
                match config.get_ports().get(index).or(config.get_ports().first()) {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                }
            })
            .collect();
        format!(
            "{}@{}/{}",
            config.get_user().unwrap_or("<default user>"),
            hosts.join(","),
            config.get_dbname().unwrap_or("<default database>")
        )
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "DatabaseUrl({})", self.redacted())
    }
}

/// Size limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest WebSocket message and HTTP sync body, in bytes. Clients send up to ~900 KB per request.
    pub max_message_bytes: usize,
    /// Outgoing frames buffered per connection before a slow client is disconnected.
    pub outbound_queue_frames: usize,
    /// Seconds a connection may take to send its first bytes and each request's headers; also how long an idle
    /// keep-alive connection stays open. Guards against clients that connect and send nothing, or dribble headers.
    pub header_read_timeout_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            outbound_queue_frames: 256,
            header_read_timeout_seconds: 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_token_forms_and_redacts_them() {
        let config: ServerConfig = toml::from_str(
            r#"
            addr = "0.0.0.0:9000"
            [auth]
            tokens = ["plain-token", { token = "scoped-token", stores = ["a", "b"] }]
            jwt_secret = "0123456789abcdef0123"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert!(config.auth.tokens[0].allows_store("z"));
        assert!(
            config.auth.tokens[1].allows_store("a") && !config.auth.tokens[1].allows_store("z")
        );
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("plain-token")
                && !debug.contains("scoped-token")
                && !debug.contains("0123456789")
        );
    }

    #[test]
    fn refuses_public_bind_without_auth() {
        let config =
            ServerConfig { addr: "0.0.0.0:8787".parse().unwrap(), ..ServerConfig::default() };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("without authentication"), "{message}");
    }

    #[test]
    fn database_urls_are_redacted_and_checked() {
        let config: ServerConfig = toml::from_str(
            r#"database_url = "postgres://livestore:s3cret-pw@db.internal:6543/sync""#,
        )
        .unwrap();
        config.validate().unwrap();
        let url = config.database_url.as_ref().unwrap();
        assert_eq!(url.redacted(), "livestore@db.internal:6543/sync");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret-pw") && debug.contains("db.internal"), "{debug}");
        let key_value = DatabaseUrl("host=/run/pg user=ls password=s3cret-pw dbname=x".into());
        assert!(!key_value.redacted().contains("s3cret-pw"));
        let broken = DatabaseUrl("postgres://u:s3cret-pw@h:notaport/db".into());
        let message = broken.to_postgres_config().unwrap_err().to_string();
        assert!(!message.contains("s3cret-pw"), "{message}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<ServerConfig>("adress = \"127.0.0.1:1\"").is_err());
    }
}
