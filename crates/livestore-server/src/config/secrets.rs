//! Configuration values that carry secrets: redacted from `Debug`, never echoed by errors, and checked for strength.

use serde::Deserialize;

use crate::error::ServerError;

/// Fewest bytes a configured secret (JWT secret, static token) may have.
pub const MIN_SECRET_BYTES: usize = 32;
/// Fewest distinct characters a secret must use, so `"aaaa…"` or `"0000…"` of any length is refused.
const MIN_DISTINCT_CHARACTERS: usize = 8;

/// A secret string whose `Debug` output is redacted.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("<redacted>")
    }
}

impl Secret {
    /// Refuses secrets an attacker could guess: shorter than [`MIN_SECRET_BYTES`], all whitespace, padded with
    /// whitespace (a copy-paste accident that makes the real secret differ from what clients send), or made of a
    /// handful of repeated characters. The message names the setting, never the value.
    pub fn check_strength(&self, setting: &str) -> Result<(), String> {
        let value = self.0.as_str();
        if value.trim().is_empty() {
            return Err(format!("{setting} is empty or all whitespace"));
        }
        if value.trim() != value {
            return Err(format!("{setting} starts or ends with whitespace"));
        }
        if value.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "{setting} is {} bytes long; use at least {MIN_SECRET_BYTES} bytes of random text \
                 (e.g. `openssl rand -hex 32`)",
                value.len()
            ));
        }
        let distinct: std::collections::HashSet<char> = value.chars().collect();
        if distinct.len() < MIN_DISTINCT_CHARACTERS {
            return Err(format!(
                "{setting} uses only {} distinct characters; use random text (e.g. `openssl rand -hex 32`)",
                distinct.len()
            ));
        }
        Ok(())
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

/// A TOML parse error as a message that is safe to print: line and column plus the parser's message with every
/// quoted string literal blanked. `toml`'s own `Display` quotes the offending line, and serde's messages quote the
/// offending value (`invalid type: string "…"`), either of which may be a secret.
pub(crate) fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = blank_quoted(error.message().trim());
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |tail| tail.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Replaces the contents of every `"…"` in `message` with `…`.
fn blank_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for character in message.chars() {
        if character == '"' {
            if inside {
                out.push('…');
            }
            inside = !inside;
            out.push('"');
        } else if !inside {
            out.push(character);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secrets_are_refused_by_name_never_by_value() {
        for (value, problem) in [
            ("                ", "all whitespace"),
            ("", "all whitespace"),
            (" 0123456789abcdef0123456789abcdef", "whitespace"),
            ("short-secret-value", "18 bytes long"),
            (&"ab".repeat(20), "2 distinct characters"),
        ] {
            let message = Secret(value.to_owned()).check_strength("auth.jwt_secret").unwrap_err();
            assert!(message.contains(problem), "{value:?}: {message}");
            assert!(message.starts_with("auth.jwt_secret"), "{message}");
            if !value.trim().is_empty() {
                assert!(!message.contains(value.trim()), "{message}");
            }
        }
        Secret("3f9c1e0b7a5d4c2e8f6a1b3d5e7c9a0b".to_owned()).check_strength("x").unwrap();
    }

    #[test]
    fn toml_errors_name_the_place_not_the_value() {
        let text = "[auth]\njwt_secret = 12\ntokens = [\"s3cret-token-value\", 5]\n";
        let error = toml::from_str::<toml::Value>("a = \"s3cret\nb").unwrap_err();
        let message = describe_toml_error("a = \"s3cret\nb", &error);
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.starts_with("line 2, column"), "{message}");
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Shape {
            auth: std::collections::HashMap<String, u32>,
        }
        let error = toml::from_str::<Shape>(text).unwrap_err();
        let message = describe_toml_error(text, &error);
        assert!(!message.contains("s3cret-token-value"), "{message}");
        assert!(message.starts_with("line 3"), "{message}");
    }
}
