//! The Redis half of a fill: the answer written under the stamp its
//! lookup read, in the entry's group, with this instance's fill lease
//! released in the same script; or, for a fill already dead, the lease
//! given up alone.

use std::time::Duration;

use bytes::Bytes;

use super::layout::frame;
use super::RedisStore;
use crate::cache::key::TableKey;
use crate::cache::store::contract::StoreError;

impl RedisStore {
    /// Writes a fill under `key` (the full key a lookup of `tables`
    /// built from `versions`). Returns `Ok(false)` without a Redis call
    /// when the fill is already dead (see `is_dead`).
    pub(super) async fn fill(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tables: &[TableKey],
        versions: &[u64],
    ) -> Result<bool, StoreError> {
        if self.breaker.is_down() {
            return Err(StoreError::Down);
        }
        if self.marks.dirt.is_dirty() {
            return Err(StoreError::Recovering);
        }
        let Some((hex, stamp)) = self.layout.split(key) else {
            return Err(StoreError::Backend(format!(
                "not a key of this store: {key}"
            )));
        };
        if self.is_dead(self.layout.group_of(hex), tables, versions) {
            // Nothing to store; waiting instances fill it themselves.
            self.give_up_lease(key);
            return Ok(false);
        }
        let ms = ttl.as_millis().clamp(1, i64::MAX as u128).to_string();
        let framed = frame(stamp, &value);
        let (entry, lease) = (self.layout.entry(hex), self.layout.fill_lease(hex));
        let keys = [entry.as_bytes(), lease.as_bytes()];
        let args = [&framed[..], ms.as_bytes(), &self.holder[..]];
        // Cluster: the entry's master, as for its lookup.
        let pipes = self.pipes_for(self.layout.group_of(hex));
        self.eval(pipes.as_deref(), &self.scripts.put, &keys, &args)
            .await?;
        Ok(true)
    }

    /// Gives up this instance's fill lease on `key`'s entry, in the
    /// background (a lease not given up expires after `coalesce_wait`).
    pub(super) fn give_up_lease(&self, key: &str) {
        let (Some(store), Some((hex, _))) = (self.me.upgrade(), self.layout.split(key)) else {
            return;
        };
        if store.lease_ms.is_empty() || store.breaker.is_down() {
            return;
        }
        let (lease, pipes) = (
            store.layout.fill_lease(hex),
            store.pipes_for(store.layout.group_of(hex)),
        );
        tokio::spawn(async move {
            let (keys, args) = ([lease.as_bytes()], [&store.holder[..]]);
            let script = &store.scripts.release;
            let _ = store.eval(pipes.as_deref(), script, &keys, &args).await;
        });
    }
}
