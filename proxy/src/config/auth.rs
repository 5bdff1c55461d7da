//! How clients authenticate to pgstash, and the users it knows.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// The method pgstash asks clients to authenticate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum AuthMethod {
    /// No password is asked; meant for local development.
    #[default]
    #[serde(rename = "trust")]
    Trust,
    #[serde(rename = "md5")]
    Md5,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(rename = "type")]
    pub method: AuthMethod,
    pub users: Vec<UserConfig>,
    /// The role that looks up the secrets of users not in `users` with
    /// `auth_query` (its password: its `[[auth.users]]` entry, or the
    /// upstream URL's). Unset: only `users` may log in.
    pub auth_user: Option<String>,
    /// Returns (name, Postgres' stored secret) of the user `$1`.
    pub auth_query: String,
    /// The database the lookup runs in; unset: the client's.
    pub auth_dbname: Option<String>,
    /// How long a looked-up secret (or its absence) is reused: a password
    /// changed in Postgres takes effect for new logins within this.
    #[serde(with = "humantime_serde")]
    pub auth_query_cache: Duration,
}

/// PgBouncer's default `auth_query`.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename = $1";

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            method: AuthMethod::default(),
            users: Vec::new(),
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.to_owned(),
            auth_dbname: None,
            auth_query_cache: Duration::from_secs(5),
        }
    }
}

/// A user clients may log in as. Exactly one password source is allowed.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// The password in clear (prefer `password_env` or `password_file`).
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// File whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// A Postgres SCRAM verifier (`SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`,
    /// as in `pg_authid.rolpassword`). Checks client logins without storing the
    /// password; upstream, a client's login passes its key through when the
    /// verifier is Postgres' own (else the upstream URL's password is used).
    pub scram_verifier: Option<String>,
}

impl UserConfig {
    /// The clear-text password, read from whichever source is configured.
    pub fn resolve_password(&self) -> Result<Option<String>, ConfigError> {
        let fail = |reason: String| ConfigError::Password {
            user: self.name.clone(),
            reason,
        };
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map(Some)
                .map_err(|_| fail(format!("environment variable {var} is not set")));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| fail(format!("{}: {e}", path.display())))?;
            return Ok(Some(text.lines().next().unwrap_or("").to_owned()));
        }
        Ok(None)
    }
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for user in &self.users {
            if user.name.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth.users.name",
                    reason: "must not be empty".into(),
                });
            }
            let sources = [
                user.password.is_some(),
                user.password_env.is_some(),
                user.password_file.is_some(),
                user.scram_verifier.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() > 1 {
                return Err(ConfigError::Invalid {
                    key: "auth.users",
                    reason: format!("user {:?} has more than one password source", user.name),
                });
            }
            if self.method == AuthMethod::Md5 && user.scram_verifier.is_some() {
                return Err(ConfigError::Invalid {
                    key: "auth.users.scram_verifier",
                    reason: format!(
                        "user {:?}: md5 needs the password, not a SCRAM verifier",
                        user.name
                    ),
                });
            }
        }
        if let Some(auth_user) = &self.auth_user {
            if auth_user.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth.auth_user",
                    reason: "must not be empty".into(),
                });
            }
            if self.method == AuthMethod::Trust {
                return Err(ConfigError::Invalid {
                    key: "auth.auth_user",
                    reason: "auth_query checks passwords: set auth.type to md5 or scram-sha-256"
                        .into(),
                });
            }
            if self.auth_query.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth.auth_query",
                    reason: "must not be empty".into(),
                });
            }
        }
        if self.method != AuthMethod::Trust && self.users.is_empty() && self.auth_user.is_none() {
            return Err(ConfigError::Invalid {
                key: "auth.type",
                reason: "password authentication needs [[auth.users]] entries or an auth_user"
                    .into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    fn load(toml: &str) -> Result<Config, ConfigError> {
        Config::from_toml(toml, Path::new("x.toml"))
    }

    #[test]
    fn an_auth_user_stands_in_for_listed_users() {
        let config = load(
            "[auth]\ntype = \"scram-sha-256\"\nauth_user = \"pgstash_auth\"\nauth_query_cache = \"2s\"\n",
        )
        .unwrap();
        assert_eq!(config.auth.auth_user.as_deref(), Some("pgstash_auth"));
        assert_eq!(config.auth.auth_query, super::DEFAULT_AUTH_QUERY);
        assert_eq!(config.auth.auth_query_cache.as_secs(), 2);
    }

    #[test]
    fn an_auth_user_needs_a_password_method() {
        let err = load("[auth]\nauth_user = \"pgstash_auth\"\n").unwrap_err();
        assert!(
            matches!(
                err.problem(),
                ConfigError::Invalid {
                    key: "auth.auth_user",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().starts_with("x.toml:2:13: "), "{err}");
    }
}
