//! The users clients may log in as, with their credentials resolved once
//! when the configuration is loaded (passwords from files or the
//! environment, SCRAM keys derived or parsed from verifiers).

use std::collections::HashMap;

use base64::Engine;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramSecret, SCRAM_ITERATIONS};

use super::{AuthConfig, AuthMethod, ConfigError};

/// SCRAM keys of one user (as in `pg_authid.rolpassword`).
#[derive(Clone)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: usize,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct UserEntry {
    password: Option<String>,
    scram: Option<ScramKeys>,
}

/// The users clients may log in as, with credentials resolved once at load.
#[derive(Debug, Default)]
pub struct UserDirectory {
    method: AuthMethod,
    users: HashMap<String, UserEntry>,
}

impl UserDirectory {
    pub fn from_config(auth: &AuthConfig) -> Result<UserDirectory, ConfigError> {
        let mut users = HashMap::new();
        for user in &auth.users {
            let password = user.resolve_password()?;
            let scram = match (&user.scram_verifier, &password) {
                (Some(verifier), _) => {
                    Some(
                        parse_verifier(verifier).ok_or_else(|| ConfigError::Invalid {
                            key: "auth.users.scram_verifier",
                            reason: format!("user {:?}: not a SCRAM-SHA-256 verifier", user.name),
                        })?,
                    )
                }
                (None, Some(password)) if auth.method == AuthMethod::ScramSha256 => {
                    let salt: [u8; 16] = rand::random();
                    let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
                    match ScramSecret::verifier_from_salted_password(
                        salt.to_vec(),
                        salted,
                        SCRAM_ITERATIONS,
                    ) {
                        ScramSecret::Verifier {
                            salt,
                            iterations,
                            stored_key,
                            server_key,
                        } => Some(ScramKeys {
                            salt,
                            iterations,
                            stored_key,
                            server_key,
                        }),
                        ScramSecret::SaltedPassword { .. } => None,
                    }
                }
                _ => None,
            };
            users.insert(user.name.clone(), UserEntry { password, scram });
        }
        Ok(UserDirectory {
            method: auth.method,
            users,
        })
    }

    /// The password pgstash uses when it logs in upstream as `user`.
    pub fn upstream_password(&self, user: &str) -> Option<String> {
        self.users.get(user).and_then(|u| u.password.clone())
    }

    /// How clients authenticate.
    pub fn method(&self) -> AuthMethod {
        self.method
    }

    /// The password `user` logs in with (md5), if configured.
    pub fn password(&self, user: &str) -> Option<&str> {
        self.users.get(user).and_then(|u| u.password.as_deref())
    }

    /// Whether `user` is configured (then `auth_query` is not asked about it).
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The SCRAM keys of `user`, if configured.
    pub fn scram_keys(&self, user: &str) -> Option<&ScramKeys> {
        self.users.get(user).and_then(|u| u.scram.as_ref())
    }
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64 parts.
pub fn parse_verifier(text: &str) -> Option<ScramKeys> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let rest = text.strip_prefix("SCRAM-SHA-256$")?;
    let (iter_salt, keys) = rest.split_once('$')?;
    let (iterations, salt) = iter_salt.split_once(':')?;
    let (stored, server) = keys.split_once(':')?;
    Some(ScramKeys {
        salt: b64.decode(salt).ok()?,
        iterations: iterations.parse().ok()?,
        stored_key: b64.decode(stored).ok()?,
        server_key: b64.decode(server).ok()?,
    })
}
