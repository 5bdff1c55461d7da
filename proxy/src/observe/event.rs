//! What the observers of queries (the slow-query log, the digest) are told
//! of each finished request: a [`QueryEvent`], and the [`SessionInfo`] of
//! the session that ran it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use super::json::{into_text, push_str};

/// One finished request.
#[derive(Debug)]
pub struct QueryEvent {
    pub session: Arc<SessionInfo>,
    pub text: Arc<str>,
    /// When the request started (the session's clock).
    pub started: Instant,
    /// The same as wall-clock time: set by the recorder when it drains
    /// the event (sessions read no wall clock per query).
    pub at: SystemTime,
    pub duration: Duration,
    /// hit, miss, bypass or write.
    pub path: &'static str,
    pub rows: u64,
    pub upstream: Duration,
    pub pool_wait: Duration,
    pub rule: Option<Arc<str>>,
    /// The session was inside a transaction block when the request ended
    /// (its ReadyForQuery said `T` or `E`).
    pub in_transaction: bool,
    /// Transaction mode: the client was pinned to its server connection
    /// by session-bound state (`pgstash_pinned_clients`).
    pub pinned: bool,
}

/// Who ran a query (shared by all events of a session).
pub struct SessionInfo {
    /// Unique per client session in this process (kept when the
    /// application name changes): what the N+1 detector keys sessions by.
    pub id: u64,
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub client: String,
    /// The session's fields as they end a log line, made on first use.
    json: OnceLock<Box<str>>,
}

impl std::fmt::Debug for SessionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionInfo")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("application_name", &self.application_name)
            .field("client", &self.client)
            .finish()
    }
}

impl SessionInfo {
    pub fn new(
        user: String,
        database: String,
        application_name: String,
        client: String,
    ) -> SessionInfo {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SessionInfo {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            user,
            database,
            application_name,
            client,
            json: OnceLock::new(),
        }
    }

    /// The same session under another application name.
    pub fn with_application_name(&self, application_name: String) -> SessionInfo {
        SessionInfo {
            id: self.id,
            user: self.user.clone(),
            database: self.database.clone(),
            application_name,
            client: self.client.clone(),
            json: OnceLock::new(),
        }
    }

    /// `"user":…,"database":…,"application_name":…,"client":…}`
    pub fn json_tail(&self) -> &str {
        self.json.get_or_init(|| {
            let mut out = Vec::with_capacity(96);
            out.extend_from_slice(b"\"user\":");
            push_str(&mut out, &self.user);
            out.extend_from_slice(b",\"database\":");
            push_str(&mut out, &self.database);
            out.extend_from_slice(b",\"application_name\":");
            push_str(&mut out, &self.application_name);
            out.extend_from_slice(b",\"client\":");
            push_str(&mut out, &self.client);
            out.push(b'}');
            into_text(out)
        })
    }
}
