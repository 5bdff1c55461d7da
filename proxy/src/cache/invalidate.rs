//! The one sink of invalidation. Every source of writes — statements seen
//! on the wire (each session's [`WritePath`](super::write_path::WritePath)),
//! the admin endpoint, and later Postgres' replication stream — hands the
//! tables it saw to [`Invalidator::record`], which moves their versions on
//! in the store (so every entry that read them becomes unreachable, on
//! every instance sharing the store), drops catalog facts that DDL may have
//! changed, and counts it.
//!
//! A source that does not see every write as it happens (the replication
//! stream) also proves, in [`Freshness`], how current it is; while it
//! cannot, the cache answers nothing for the databases it covers.
//!
//! Adding a source: a call to `record` from where the source learns of a
//! write, under a [`Source`] of its own (see ARCHITECTURE.md).

use std::sync::Arc;
use std::time::Instant;

use pgstash_rules::Writes;

use super::catalog::Catalogs;
use super::freshness::Freshness;
use super::key::TableKey;
use super::store::{CacheStore, Store, StoreError};
use crate::observe::Metrics;
use crate::Boxed;

/// Where a write was learned of: a fixed word, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source(&'static str);

impl Source {
    /// A statement a client ran through this pgstash; its acknowledgement
    /// waits for the record (guarantee G2).
    pub const CLIENT: Source = Source("client");
    /// `POST /admin/invalidate` or `/admin/flush`.
    pub const ADMIN: Source = Source("admin");

    /// A source of another kind (a fixed word, never data).
    pub const fn new(label: &'static str) -> Source {
        Source(label)
    }

    pub fn label(self) -> &'static str {
        self.0
    }
}

pub struct Invalidator {
    store: Arc<Store>,
    catalogs: Arc<Catalogs>,
    freshness: Freshness,
    metrics: Arc<Metrics>,
    /// `store_call{op="invalidate"}`, looked up once.
    latency: prometheus::Histogram,
}

impl Invalidator {
    pub fn new(store: Arc<Store>, catalogs: Arc<Catalogs>, metrics: Arc<Metrics>) -> Invalidator {
        Invalidator {
            latency: metrics.store_call.with_label_values(&["invalidate"]),
            store,
            catalogs,
            freshness: Freshness::default(),
            metrics,
        }
    }

    /// The sources' proofs of being current (see `freshness.rs`).
    pub fn freshness(&self) -> &Freshness {
        &self.freshness
    }

    /// Records that `writes` committed in `database`. For a client's write
    /// this runs after the commit and before the client sees its
    /// acknowledgement. A failure is logged and counted; the store then
    /// serves nothing it should have invalidated (guarantee G4).
    pub fn record<'a>(
        &'a self,
        source: Source,
        database: &'a str,
        writes: &'a Writes,
    ) -> Boxed<'a, Result<(), StoreError>> {
        Box::pin(self.record_inline(source, database, writes))
    }

    async fn record_inline(
        &self,
        source: Source,
        database: &str,
        writes: &Writes,
    ) -> Result<(), StoreError> {
        if writes.ddl || writes.all {
            self.catalogs.invalidate(database);
        }
        let started = Instant::now();
        let result = if writes.all {
            self.metrics.invalidations.with_label_values(&["*"]).inc();
            self.store.invalidate_all().await
        } else {
            let keys = TableKey::all(database, &writes.tables);
            for key in &keys {
                self.metrics
                    .invalidations
                    .with_label_values(&[key.as_str()])
                    .inc();
            }
            self.store.invalidate(&keys).await
        };
        self.latency.observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::warn!(error = %e, source = source.label(), "invalidation not recorded");
            self.metrics
                .cache_errors
                .with_label_values(&["invalidate"])
                .inc();
        }
        result
    }

    /// Makes every entry unreachable.
    pub async fn flush(&self, source: Source) -> Result<(), StoreError> {
        let result = self.store.invalidate_all().await;
        if result.is_ok() {
            tracing::info!(source = source.label(), "cache flushed");
        }
        result
    }
}
