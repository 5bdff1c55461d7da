//! `auth_query`: the secret Postgres stores for a user pgstash's
//! configuration does not list, looked up at the user's login through a
//! connection as `auth_user` (to `auth_dbname`, or the client's database).
//! The client is then checked against that secret, and logged in upstream
//! by pass-through, so a deployment names no users and keeps no passwords.
//!
//! The lookup connections are kept (one per database) and answers are
//! reused for `auth_query_cache`, absent users included, so that a burst
//! of logins costs one query; a password changed in Postgres takes effect
//! for new logins within that time. The cache is bounded (it starts over
//! at `CACHE_MAX` names: clients choose the names they try).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::backend::connect::ConnectTarget;
use crate::backend::control;
use crate::backend::passthrough::Md5Hash;
use crate::backend::BackendError;
use crate::config::{parse_verifier, AuthConfig, ScramKeys};

/// Above this many cached names the cache starts over.
const CACHE_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("auth_query: cannot connect as auth_user: {0}")]
    Connect(#[from] BackendError),
    #[error("auth_query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// A user's secret as Postgres stores it.
#[derive(Debug, Clone)]
pub enum Stored {
    Scram(ScramKeys),
    Md5(Md5Hash),
}

/// What `auth_query` said about a name, and when.
#[derive(Debug, Clone)]
struct Answer {
    at: Instant,
    stored: Option<Stored>,
}

/// Lookup connections and recent answers.
#[derive(Default)]
pub struct AuthQuery {
    clients: Mutex<HashMap<String, Arc<tokio_postgres::Client>>>,
    answers: Mutex<HashMap<(String, String), Answer>>,
}

impl std::fmt::Debug for AuthQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthQuery").finish_non_exhaustive()
    }
}

impl AuthQuery {
    /// `user`'s stored secret (`None`: no such user, or no password), by
    /// `settings.auth_query` run as `settings.auth_user`; `target` says how
    /// to connect as a user to a database. Only called with `auth_user` set.
    pub async fn lookup(
        &self,
        settings: &AuthConfig,
        target: impl FnOnce(&str, &str) -> ConnectTarget,
        database: &str,
        user: &str,
    ) -> Result<Option<Stored>, LookupError> {
        let Some(auth_user) = settings.auth_user.as_deref() else {
            return Ok(None);
        };
        let database = settings.auth_dbname.as_deref().unwrap_or(database);
        let key = (database.to_owned(), user.to_owned());
        if let Some(answer) = self.cached(&key, settings) {
            return Ok(answer.stored);
        }
        let client = self
            .client(database, || target(database, auth_user))
            .await?;
        let row = match client
            .query_opt(settings.auth_query.as_str(), &[&user])
            .await
        {
            Ok(row) => row,
            Err(e) => {
                // A broken connection is opened afresh next time.
                if client.is_closed() {
                    self.forget_client(database);
                }
                return Err(e.into());
            }
        };
        let secret = match row {
            Some(row) => row.try_get::<_, Option<String>>(1)?,
            None => None,
        };
        let stored = secret.as_deref().and_then(|text| parse(text, user));
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if answers.len() >= CACHE_MAX {
            answers.clear();
        }
        answers.insert(
            key,
            Answer {
                at: Instant::now(),
                stored: stored.clone(),
            },
        );
        Ok(stored)
    }

    /// Forgets every answer and connection (after a reload).
    pub fn clear(&self) {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn cached(&self, key: &(String, String), settings: &AuthConfig) -> Option<Answer> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers
            .get(key)
            .filter(|a| a.at.elapsed() < settings.auth_query_cache)
            .cloned()
    }

    async fn client(
        &self,
        database: &str,
        target: impl FnOnce() -> ConnectTarget,
    ) -> Result<Arc<tokio_postgres::Client>, LookupError> {
        let kept = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(database)
            .filter(|c| !c.is_closed())
            .cloned();
        if let Some(client) = kept {
            return Ok(client);
        }
        let client = Arc::new(control::connect(&target(), "pgstash-auth-query").await?);
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(database.to_owned(), client.clone());
        Ok(client)
    }

    fn forget_client(&self, database: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(database);
    }
}

/// A stored secret pgstash can check a client against: a SCRAM verifier
/// or an md5 hash (anything else, say a clear-text password, is refused
/// like a missing one, with a warning).
fn parse(text: &str, user: &str) -> Option<Stored> {
    if let Some(keys) = parse_verifier(text) {
        return Some(Stored::Scram(keys));
    }
    if let Some(hash) = Md5Hash::parse(text) {
        return Some(Stored::Md5(hash));
    }
    tracing::warn!(%user, "auth_query returned a secret that is neither a SCRAM-SHA-256 verifier nor an md5 hash; the login is refused");
    None
}
