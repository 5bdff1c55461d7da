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
///
/// # Memory
/// One per session, idle or not: the four names are kept end to end in one
/// allocation (issue #20: memory per idle client).
pub struct SessionInfo {
    /// Unique per client session in this process (kept when the
    /// application name changes): what the N+1 detector keys sessions by.
    pub id: u64,
    /// The user, the database, the application name and the client's
    /// address, end to end.
    names: Box<str>,
    /// Where the database, the application name and the client start.
    starts: [u32; 3],
    /// The session's fields as they end a log line, made on first use.
    json: OnceLock<Box<str>>,
}

impl std::fmt::Debug for SessionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionInfo")
            .field("id", &self.id)
            .field("user", &self.user())
            .field("database", &self.database())
            .field("application_name", &self.application_name())
            .field("client", &self.client())
            .finish()
    }
}

impl SessionInfo {
    pub fn new(user: &str, database: &str, application_name: &str, client: &str) -> SessionInfo {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SessionInfo::with_id(
            NEXT.fetch_add(1, Ordering::Relaxed),
            [user, database, application_name, client],
        )
    }

    fn with_id(id: u64, names: [&str; 4]) -> SessionInfo {
        let mut starts = [0u32; 3];
        let mut end = 0;
        for (start, name) in starts.iter_mut().zip(&names) {
            end += name.len();
            // Each name came in one message, capped far below 4 GiB.
            *start = u32::try_from(end).unwrap_or(u32::MAX);
        }
        SessionInfo {
            id,
            names: names.concat().into_boxed_str(),
            starts,
            json: OnceLock::new(),
        }
    }

    /// The `n`th name (0 user, 1 database, 2 application name, 3 client).
    fn name(&self, n: usize) -> &str {
        let start = if n == 0 {
            0
        } else {
            self.starts[n - 1] as usize
        };
        let end = self.starts.get(n).map_or(self.names.len(), |&e| e as usize);
        self.names.get(start..end).unwrap_or_default()
    }

    pub fn user(&self) -> &str {
        self.name(0)
    }

    pub fn database(&self) -> &str {
        self.name(1)
    }

    pub fn application_name(&self) -> &str {
        self.name(2)
    }

    /// The client's address.
    pub fn client(&self) -> &str {
        self.name(3)
    }

    /// The same session under another application name.
    pub fn with_application_name(&self, application_name: &str) -> SessionInfo {
        SessionInfo::with_id(
            self.id,
            [
                self.user(),
                self.database(),
                application_name,
                self.client(),
            ],
        )
    }

    /// `"user":…,"database":…,"application_name":…,"client":…}`
    pub fn json_tail(&self) -> &str {
        self.json.get_or_init(|| {
            let mut out = Vec::with_capacity(96);
            out.extend_from_slice(b"\"user\":");
            push_str(&mut out, self.user());
            out.extend_from_slice(b",\"database\":");
            push_str(&mut out, self.database());
            out.extend_from_slice(b",\"application_name\":");
            push_str(&mut out, self.application_name());
            out.extend_from_slice(b",\"client\":");
            push_str(&mut out, self.client());
            out.push(b'}');
            into_text(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::SessionInfo;

    #[test]
    fn names_packed_together_come_back_apart() {
        let info = SessionInfo::new("alice", "shop", "", "127.0.0.1:5000");
        assert_eq!(info.user(), "alice");
        assert_eq!(info.database(), "shop");
        assert_eq!(info.application_name(), "");
        assert_eq!(info.client(), "127.0.0.1:5000");
        let renamed = info.with_application_name("worker é");
        assert_eq!(renamed.id, info.id);
        assert_eq!(renamed.user(), "alice");
        assert_eq!(renamed.database(), "shop");
        assert_eq!(renamed.application_name(), "worker é");
        assert_eq!(renamed.client(), "127.0.0.1:5000");
        assert_eq!(
            renamed.json_tail(),
            r#""user":"alice","database":"shop","application_name":"worker é","client":"127.0.0.1:5000"}"#
        );
    }
}
