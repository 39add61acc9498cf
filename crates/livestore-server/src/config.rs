//! Server configuration: listening address, data directory or Postgres database, authentication, browser origins
//! and limits.
//!
//! Configuration comes from a TOML file, then environment variables and command-line flags override it (the CLI
//! crate applies the overrides). Secrets are redacted from `Debug` output so that logging a config never leaks them,
//! and a config file that does not parse is reported by line and column, never by quoting it.

mod auth;
mod hooks;
mod limits;
mod paths;
mod secrets;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use self::auth::{AuthConfig, StoreAccess, TokenEntry};
pub use self::hooks::HooksConfig;
pub(crate) use self::hooks::check_url;
pub use self::limits::Limits;
pub use self::secrets::{DatabaseUrl, MIN_SECRET_BYTES, Secret};
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
    /// Which web pages (origins) may call the server from a browser.
    pub cors: CorsConfig,
    /// The application's backend, called over HTTP to decide connects, pushes and pulls, and to receive committed
    /// events.
    pub hooks: HooksConfig,
    /// Size, time and memory limits.
    pub limits: Limits,
    /// File services (signer and object store). Unset: the embedded object store in `<data_dir>/objects`.
    pub files: Option<livestore_objects::FilesConfig>,
    /// A directory of static files (e.g. a built web app) served under `/` to GET requests no other route takes.
    pub static_dir: Option<PathBuf>,
    /// The file this configuration was read from, if any; the static site may never contain it.
    #[serde(skip)]
    pub config_path: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: DEFAULT_ADDR.parse().expect("the default address is valid"),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            auth: AuthConfig::default(),
            cors: CorsConfig::default(),
            hooks: HooksConfig::default(),
            limits: Limits::default(),
            files: None,
            static_dir: None,
            config_path: None,
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
        let mut config: ServerConfig =
            toml::from_str(&text).map_err(|error| ServerError::ConfigParse {
                path: path.to_owned(),
                message: secrets::describe_toml_error(&text, &error),
            })?;
        config.config_path = Some(path.to_owned());
        Ok(config)
    }

    /// Whether requests must carry a credential (or pass the connect hook): false means no-auth mode.
    pub fn requires_credentials(&self) -> bool {
        self.auth.is_enabled() || self.hooks.connect_url.is_some()
    }

    /// Checks every setting and the rules that span several fields.
    pub fn validate(&self) -> Result<(), ServerError> {
        self.validate_for(false)
    }

    /// [`ServerConfig::validate`] for a server whose connect decisions may also come from a connect hook written in
    /// Rust (`rust_connect_hook`), which, like `hooks.connect_url`, makes it safe to listen beyond loopback.
    pub(crate) fn validate_for(&self, rust_connect_hook: bool) -> Result<(), ServerError> {
        let invalid = ServerError::InvalidConfig;
        if !self.requires_credentials() && !rust_connect_hook && !self.addr.ip().is_loopback() {
            return Err(invalid(format!(
                "refusing to listen on {} without authentication: anyone on the network could read and write every \
                 store. Configure auth tokens (LIVESTORE_AUTH_TOKENS or [auth] tokens), JWT verification \
                 (LIVESTORE_JWT_SECRET, LIVESTORE_JWKS_URL or [auth] jwt_public_keys) or a connect hook \
                 ([hooks] connect_url), or bind to a loopback address such as 127.0.0.1",
                self.addr
            )));
        }
        self.limits.validate().map_err(invalid)?;
        if let Some(url) = &self.database_url {
            url.to_postgres_config()?;
        }
        let files = self.files_config();
        files.validate().map_err(|error| invalid(format!("[files]: {error}")))?;
        if let Some(dir) = &self.static_dir {
            if !dir.is_dir() {
                return Err(invalid(format!("static_dir {} is not a directory", dir.display())));
            }
            let mut protected = vec![("the data dir", self.data_dir.clone())];
            if let livestore_objects::BackendConfig::Embedded { data_dir, .. } = &files.backend {
                protected.push(("the embedded object store's directory", data_dir.clone()));
            }
            if let Some(path) = &self.config_path {
                protected.push(("the config file", path.clone()));
            }
            paths::check_static_dir(dir, &protected).map_err(invalid)?;
        }
        self.auth.validate().map_err(invalid)?;
        self.hooks.validate().map_err(invalid)?;
        self.cors.validate().map_err(invalid)?;
        Ok(())
    }
}

/// Which browser origins may call the server.
///
/// Without authentication the server accepts browser requests only from loopback origins (`http://localhost:5173`,
/// `http://127.0.0.1:8787`, …) plus these, and only for a loopback `Host`, so a web page a local user visits cannot
/// read or write their stores, directly or through DNS rebinding. With authentication and an empty list any origin
/// may call (the token is the credential); a non-empty list limits browsers to it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins such as `https://app.example.com` (scheme, host, optional port; no path).
    pub allowed_origins: Vec<String>,
}

impl CorsConfig {
    /// Each origin must be `http(s)://host[:port]` exactly as browsers send it.
    pub fn validate(&self) -> Result<(), String> {
        for origin in &self.allowed_origins {
            if origin == "*" {
                return Err("cors.allowed_origins: \"*\" is not an origin: leave the list empty to let any origin call \
                            a server with authentication (without authentication, loopback origins only)"
                    .to_owned());
            }
            let parsed: url::Url = origin
                .parse()
                .map_err(|_| format!("cors.allowed_origins: {origin:?} is not a URL"))?;
            let canonical = parsed.origin().ascii_serialization();
            if !matches!(parsed.scheme(), "http" | "https") || canonical != *origin {
                return Err(format!(
                    "cors.allowed_origins: {origin:?} is not an origin; write it as a browser sends it, e.g. \
                     \"https://app.example.com\" or \"http://localhost:5173\" (scheme, host, port; no path or \
                     trailing slash; \"*\" is not accepted)"
                ));
            }
        }
        Ok(())
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
            tokens = ["plain-token-9f8e7d6c5b4a39281706", { token = "scoped-token-0a1b2c3d4e5f60718293", stores = ["a", "b"] }]
            jwt_secret = "0123456789abcdef0123456789abcdef"
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

    #[test]
    fn weak_tokens_and_secrets_are_refused() {
        let with_token = |token: &str| ServerConfig {
            auth: AuthConfig {
                tokens: vec![TokenEntry::AllStores(Secret(token.to_owned()))],
                ..AuthConfig::default()
            },
            ..ServerConfig::default()
        };
        let message = with_token("short-token").validate().unwrap_err().to_string();
        assert!(message.contains("auth.tokens[0] is 11 bytes long"), "{message}");
        let message = with_token(&" ".repeat(40)).validate().unwrap_err().to_string();
        assert!(message.contains("all whitespace"), "{message}");
        let secret = ServerConfig {
            auth: AuthConfig { jwt_secret: Some(Secret(" ".repeat(16))), ..AuthConfig::default() },
            ..ServerConfig::default()
        };
        let message = secret.validate().unwrap_err().to_string();
        assert!(message.contains("auth.jwt_secret is empty or all whitespace"), "{message}");
    }

    #[test]
    fn origins_must_be_origins() {
        for good in ["https://app.example.com", "http://localhost:5173", "http://[::1]:8787"] {
            let cors = CorsConfig { allowed_origins: vec![good.to_owned()] };
            cors.validate().unwrap();
        }
        for bad in
            ["*", "https://app.example.com/", "app.example.com", "ftp://x.y", "https://a.b/path"]
        {
            let cors = CorsConfig { allowed_origins: vec![bad.to_owned()] };
            assert!(cors.validate().is_err(), "{bad} was accepted");
        }
    }
}
