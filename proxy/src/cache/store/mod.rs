//! Where cache entries and table versions live: Redis (shared by pgstash
//! instances) or an in-process store, behind one contract
//! ([`CacheStore`], in `contract.rs`). [`Store`] is the configured one.

mod coalesce;
mod contract;
mod entries;
mod local;
mod memory;
mod redis;

pub use contract::{CacheStore, Filler, Lookup, StoreError};
pub use local::LocalCounters;
pub use memory::MemoryStore;
pub use redis::RedisStore;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::key::{KeyBase, TableKey};
use crate::config::Config;
use crate::observe::Metrics;

/// The configured store. An enum rather than a `dyn` object: the
/// in-process lookup stays a direct call with no boxed future.
pub enum Store {
    Memory(MemoryStore),
    Redis(Arc<RedisStore>),
}

impl Store {
    /// The store the configuration asks for: Redis when a URL is given,
    /// the in-process store otherwise.
    pub async fn from_config(config: &Config, metrics: &Metrics) -> Result<Store, StoreError> {
        match &config.redis {
            Some(url) => Ok(Store::Redis(
                RedisStore::connect(url, &config.cache, metrics).await?,
            )),
            None => {
                // cache.mode = "fast" means nothing here (`Config::warnings`).
                Ok(Store::Memory(MemoryStore::new(
                    config.cache.max_memory_bytes,
                )))
            }
        }
    }
}

impl CacheStore for Store {
    async fn lookup(&self, base: &KeyBase, tables: &[TableKey]) -> Result<Lookup, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.lookup(base, tables)),
            // Boxed, in a statement of its own (a temporary in the awaited
            // expression would stay in this future's state): inline, the
            // Redis call's state would size (and be copied with) every
            // lookup, the in-process store's included.
            Store::Redis(s) => {
                let lookup = Box::pin(CacheStore::lookup(&**s, base, tables));
                lookup.await
            }
        }
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tables: &[TableKey],
        versions: &[u64],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => CacheStore::put(s, key, value, ttl, tables, versions).await,
            Store::Redis(s) => CacheStore::put(&**s, key, value, ttl, tables, versions).await,
        }
    }

    fn keep_local(&self, key: &str, value: &Bytes, ttl: Duration) -> bool {
        match self {
            Store::Memory(s) => s.keep_local(key, value, ttl),
            Store::Redis(s) => s.keep_local(key, value, ttl),
        }
    }

    fn abandon(&self, key: &str) {
        match self {
            Store::Memory(_) => {}
            Store::Redis(s) => s.abandon(key),
        }
    }

    async fn invalidate(&self, tables: &[TableKey]) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => CacheStore::invalidate(s, tables).await,
            Store::Redis(s) => CacheStore::invalidate(&**s, tables).await,
        }
    }

    async fn invalidate_all(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => CacheStore::invalidate_all(s).await,
            Store::Redis(s) => CacheStore::invalidate_all(&**s).await,
        }
    }

    async fn ready(&self) -> bool {
        match self {
            Store::Memory(s) => s.ready().await,
            Store::Redis(s) => s.ready().await,
        }
    }

    fn memory_usage(&self) -> Option<(u64, u64)> {
        match self {
            Store::Memory(s) => s.memory_usage(),
            Store::Redis(s) => s.memory_usage(),
        }
    }

    fn local_live(&self) -> Option<bool> {
        match self {
            Store::Memory(s) => s.local_live(),
            Store::Redis(s) => s.local_live(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Store::Memory(s) => s.kind(),
            Store::Redis(s) => s.kind(),
        }
    }
}
