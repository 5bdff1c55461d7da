//! Session-bound state under transaction pooling. A statement that leaves
//! something on its server connection beyond the transaction — a session
//! advisory lock, a `WITH HOLD` cursor, a temporary table, an SQL
//! `PREPARE`, a `LISTEN` — pins the client to that connection: it is not
//! given back to the pool while any such state is there. Whether it still
//! is, is asked of Postgres itself each time the client would give the
//! connection back (one query, only for pinned clients), so the pin ends
//! exactly when the state goes (lock released, cursor closed, table
//! dropped, `UNLISTEN`, `DEALLOCATE`, `DISCARD ALL`), however the client
//! released it. A pinned client also gets its notifications: its server
//! connection is read while it is idle, as in session mode.

use std::sync::Arc;

use bytes::BytesMut;

use crate::backend::ServerConn;
use crate::observe::Metrics;

/// What a server session holds that outlives a transaction, counted.
/// Between transactions only session-level advisory locks and holdable
/// cursors remain, so no filter on lock or cursor kind is needed.
const BOUND_STATE_SQL: &str = "SELECT \
    (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) \
    + (SELECT count(*) FROM pg_cursors) \
    + (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) \
    + (SELECT count(*) FROM pg_listening_channels()) \
    + (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())";

/// A client pinned to its server connection; counted in
/// `pgstash_pinned_clients` while it lives.
pub struct Pinned {
    metrics: Arc<Metrics>,
}

impl Pinned {
    pub fn new(metrics: &Arc<Metrics>) -> Pinned {
        metrics.pinned_clients.inc();
        metrics.pins.inc();
        Pinned {
            metrics: metrics.clone(),
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.metrics.pinned_clients.dec();
    }
}

/// Whether `server` still holds session-bound state. A connection that
/// cannot answer is marked broken (it will not be reused) and holds
/// nothing any more. Notifications that arrive meanwhile go to `client`.
pub async fn still_bound(server: &mut ServerConn, client: &mut BytesMut) -> bool {
    match server.run_internal(BOUND_STATE_SQL).await {
        Ok(result) => {
            for notification in &result.notifications {
                client.extend_from_slice(notification);
            }
            result
                .rows
                .first()
                .and_then(|row| row.first().cloned().flatten())
                .is_some_and(|count| count != "0")
        }
        Err(e) => {
            tracing::debug!(error = %e, "could not check a pinned connection's session state");
            server.broken = true;
            false
        }
    }
}
