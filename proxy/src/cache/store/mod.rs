//! Where cache entries and table versions live: Redis (shared by pgstash
//! instances) or an in-process store. Every call is bounded by
//! `store_timeout`; a failed or slow call is an error the caller answers by
//! going upstream.

mod coalesce;
mod entries;
mod local;
mod memory;
mod redis;

pub use local::LocalCounters;
pub use memory::MemoryStore;
pub use redis::RedisStore;

use std::time::Duration;

use bytes::Bytes;

use super::key::{KeyBase, TableKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cache store timed out after {0:?}")]
    Timeout(Duration),
    #[error("cache store error: {0}")]
    Backend(String),
    /// An invalidation may have been lost; nothing is served until the
    /// global epoch has been moved on (guarantee G4).
    #[error("cache store recovering from an outage (epoch not yet renewed)")]
    Recovering,
    #[error("cannot connect to the cache store: {0}")]
    Connect(String),
}

/// The answer to a lookup: the full key (for a later fill) and the entry.
#[derive(Debug)]
pub struct Lookup {
    pub key: String,
    pub value: Option<Bytes>,
    /// The table versions `key` names, in the order of the lookup's
    /// tables, for [`Store::put`] to tell a dead fill (Redis; empty where
    /// nothing later asks).
    pub versions: Vec<u64>,
}

/// The configured store.
pub enum Store {
    Memory(MemoryStore),
    Redis(std::sync::Arc<RedisStore>),
}

impl Store {
    /// Reads the current versions of `tables`, builds the full key and
    /// fetches the entry under it, as one step (one round trip for Redis).
    pub async fn lookup(&self, base: &KeyBase, tables: &[TableKey]) -> Result<Lookup, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.lookup(base, tables)),
            // Boxed: inline, the Redis call's large state would size (and be
            // copied with) every lookup, the in-process store's included.
            Store::Redis(s) => Box::pin(s.lookup(base, tables)).await,
        }
    }

    /// Stores a fill under the full `key` a lookup of `tables` returned,
    /// with the `versions` it read. Returns whether it was stored: a fill
    /// a write has already made unreachable is not (Redis; the in-process
    /// store keeps fills in [`Store::keep_local`]).
    pub async fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tables: &[TableKey],
        versions: &[u64],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => {
                s.put(key, value, ttl);
                Ok(true)
            }
            Store::Redis(s) => s.put(key, value, ttl, tables, versions).await,
        }
    }

    /// Keeps a fill in process, before its coalesced waiters are released.
    /// Returns whether that stored it for good (the in-process store);
    /// otherwise `put` must follow (Redis, which in fast mode also keeps a
    /// local copy here).
    pub fn keep_local(&self, key: &str, value: &Bytes, ttl: Duration) -> bool {
        match self {
            Store::Memory(s) => {
                s.put(key, value.clone(), ttl);
                true
            }
            Store::Redis(s) => {
                s.keep_local(key, value.clone(), ttl);
                false
            }
        }
    }

    /// Moves the versions of `tables` on: every entry that read them
    /// becomes unreachable.
    pub async fn invalidate(&self, tables: &[TableKey]) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => {
                s.invalidate(tables);
                Ok(())
            }
            Store::Redis(s) => s.invalidate(tables).await,
        }
    }

    /// Makes every entry unreachable (admin flush).
    pub async fn invalidate_all(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => {
                s.invalidate_all();
                Ok(())
            }
            Store::Redis(s) => s.renew_epoch().await,
        }
    }

    /// Whether the store can serve now (reachable and not recovering).
    pub async fn ready(&self) -> bool {
        match self {
            Store::Memory(_) => true,
            Store::Redis(s) => s.ready().await,
        }
    }

    /// (entries, bytes) held in process, for metrics.
    pub fn memory_usage(&self) -> Option<(u64, u64)> {
        match self {
            Store::Memory(s) => Some(s.usage()),
            Store::Redis(s) => s.local_usage(),
        }
    }

    /// Fast mode: whether invalidations from other instances are arriving.
    pub fn local_live(&self) -> Option<bool> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(s) => s.local_live(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }
}
