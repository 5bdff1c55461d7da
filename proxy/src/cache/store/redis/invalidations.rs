//! Writing invalidations to Redis: one script call per node bumps, in
//! every group (see `layout.rs`, `everywhere.rs`), the versions of every
//! table a batch of writers touched (see `coalesce.rs`). A call that
//! fails makes the store dirty (G4) and is followed at once by an epoch
//! renewal, before the writers' acknowledgements: instances sharing the
//! store (each reads the epoch at every lookup) then serve nothing from
//! before the writes, instead of serving it until this one repairs.

use std::sync::Arc;
use std::time::Duration;

use super::RedisStore;
use crate::cache::key::TableKey;
use crate::cache::store::contract::StoreError;

/// How long a batch of writes tries Redis while the store is down for
/// this instance (a healthy store gets the full store timeout).
const WHILE_DOWN: Duration = Duration::from_millis(50);

impl RedisStore {
    /// Bumps the versions of `tables`, or (the store dirty, or the bump
    /// failed) renews the epoch, which hides the writes' tables as well.
    async fn record(&self, tables: &[TableKey]) -> Result<(), StoreError> {
        if self.marks.dirt.is_dirty() {
            return self.renew_epoch().await;
        }
        match self.invalidate_now(tables).await {
            Ok(()) => Ok(()),
            Err(e) => self.renew_epoch().await.map_err(|_| e),
        }
    }

    /// Bumps `tables` in every group (see `everywhere.rs`): the write is
    /// recorded only when every group has it, since a lookup reads its
    /// entry's group alone.
    async fn invalidate_now(&self, tables: &[TableKey]) -> Result<(), StoreError> {
        let mut failed = None;
        for result in self.bump_everywhere(tables).await {
            match result {
                Ok((keys, versions)) => {
                    if let Some(local) = &self.local {
                        // Before the write is acknowledged: this instance's
                        // next lookups build keys with the new versions.
                        local.raise(&keys, &versions);
                    }
                    self.bumped.record(keys, &versions);
                }
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            None => Ok(()),
            Some(e) => {
                tracing::error!(error = %e, "invalidation could not be recorded; cache disabled until the epoch is renewed");
                self.marks.dirt.mark();
                Err(e)
            }
        }
    }
}

/// Takes queued invalidations until none is left (see `coalesce.rs`). A
/// batch that finds the store dirty, or whose call fails, renews the
/// epoch: that hides what its writes changed from every instance, as a
/// bump would have. While the store is down for this instance a batch
/// still tries, for at most [`WHILE_DOWN`]: other instances may be
/// serving (the failover of a Redis Cluster master is seen at different
/// moments by different instances), and an acknowledgement released with
/// nothing recorded would let them serve what the writes changed.
pub(super) async fn run_invalidations(store: Arc<RedisStore>) {
    let mut runner = Runner {
        store: &store,
        finished: false,
    };
    while let Some(batch) = store.coalescer.take() {
        let result = if store.breaker.is_down() {
            // Down for this instance, maybe not for the others sharing the
            // store (a failover this one has not got past yet): they would
            // serve what the writes changed. One short try.
            store.marks.dirt.mark();
            match tokio::time::timeout(WHILE_DOWN, store.record(&batch.tables)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Down),
            }
        } else {
            store.record(&batch.tables).await
        };
        batch.finish(result);
    }
    runner.finished = true;
}

/// Dropped only if the runner did not finish (a panic, or its task
/// cancelled at shutdown): the batch in hand may not have been written,
/// so the store turns dirty, and the queue is failed and left ready for
/// a new runner instead of waiting forever for this one.
struct Runner<'a> {
    store: &'a RedisStore,
    finished: bool,
}

impl Drop for Runner<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.store.marks.dirt.mark();
            self.store.coalescer.abandon();
        }
    }
}
