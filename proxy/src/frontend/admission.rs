//! Admission of client connections: the count of open ones against
//! `max_client_conn`, and the answer to the one too many (`53300`, as
//! Postgres gives it), which still routes a CancelRequest: a full proxy must
//! still be able to cancel the queries that keep it full.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::context::Context;

/// One open client connection, counted (and in `pgstash_client_connections`)
/// until dropped.
pub struct Admitted {
    context: Arc<Context>,
    /// Whether this connection is over `max_client_conn`: it is then only
    /// told so.
    pub over_limit: bool,
}

impl Admitted {
    pub fn new(context: &Arc<Context>, max_client_conn: usize) -> Admitted {
        let open = context.front.clients.fetch_add(1, Ordering::Relaxed) + 1;
        context.metrics.client_connections.inc();
        Admitted {
            context: context.clone(),
            over_limit: open > max_client_conn,
        }
    }

    /// Counts a client stopped by a `[client]` limit.
    pub fn limit_hit(&self, limit: &str) {
        self.context
            .metrics
            .client_limits
            .with_label_values(&[limit])
            .inc();
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.context.front.clients.fetch_sub(1, Ordering::Relaxed);
        self.context.metrics.client_connections.dec();
    }
}
