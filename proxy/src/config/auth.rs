//! How clients authenticate to pgstash, and the users it knows.

use std::path::PathBuf;

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

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(rename = "type")]
    pub method: AuthMethod,
    pub users: Vec<UserConfig>,
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
    /// password; upstream then needs the password from the upstream URL.
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
        if self.method != AuthMethod::Trust && self.users.is_empty() {
            return Err(ConfigError::Invalid {
                key: "auth.type",
                reason: "password authentication needs at least one [[auth.users]] entry".into(),
            });
        }
        Ok(())
    }
}
