//! The store contract: what every cache store promises the engine, and what
//! the shared conformance suite (`tests/tests/stores.rs`) checks of each —
//! the in-process store, Redis in strict mode and Redis in fast mode.
//!
//! A store keeps *entries* (a cached answer's wire bytes) under *full keys*,
//! and a *version* per table. A full key is the request's [`KeyBase`], the
//! store's epoch and the current version of every table the request reads;
//! the store builds it at lookup time, so:
//!
//! 1. **Lookup** returns the entry stored under the full key built from the
//!    current epoch and versions, and that key (a later [`CacheStore::put`]
//!    of the answer uses it unchanged).
//! 2. **No stale fill (G1).** An entry put under a key built before an
//!    invalidation of one of its tables is never returned by a lookup that
//!    starts after that invalidation returned: its key names an old version.
//! 3. **Read-your-writes (G2, G3).** When [`CacheStore::invalidate`] returns
//!    `Ok`, every lookup that starts afterwards — on this instance, and in
//!    strict mode on every instance sharing the store — builds keys with the
//!    new versions. (Fast mode: other instances follow within their bound;
//!    see `local.rs`.)
//! 4. **Fail closed (G4).** A call that fails returns an error and the
//!    caller goes upstream. Once an invalidation may have been lost (it
//!    failed, or the store lost data or its connection), no entry from before
//!    is served again: lookups fail until the store has renewed its epoch.
//! 5. **Bounded.** Every call returns within the store's timeout; once a
//!    call has failed, lookups and fills fail at once ([`StoreError::Down`])
//!    until the store answers again: an outage costs a query nothing.
//! 6. [`CacheStore::invalidate_all`] makes every entry unreachable.
//! 7. TTLs hold: an entry is not served after its time to live.
//! 8. A miss names who fills it ([`Lookup::filler`]): at most one
//!    instance at a time holds an entry's lease; a put or an abandon by
//!    the holder gives it up, and it expires after `coalesce_wait`.
//!
//! Adding a store: implement [`CacheStore`] in a file of its own, add a
//! variant to [`super::Store`], and add it to the conformance suite.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::cache::key::{KeyBase, TableKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cache store timed out after {0:?}")]
    Timeout(Duration),
    #[error("cache store error: {0}")]
    Backend(String),
    /// Redis answered, with an error (a script error, `TRYAGAIN` while a
    /// slot migrates, out of memory): it is reachable, so this does not
    /// count as the store being down.
    #[error("cache store refused the call: {0}")]
    Refused(String),
    /// An invalidation may have been lost; nothing is served until the
    /// global epoch has been moved on (guarantee G4).
    #[error("cache store recovering from an outage (epoch not yet renewed)")]
    Recovering,
    #[error("cannot connect to the cache store: {0}")]
    Connect(String),
    /// A recent call failed: the store is not asked until it answers a
    /// probe again (the query goes upstream at once).
    #[error("cache store down (a recent call failed; probing)")]
    Down,
}

/// The answer to a lookup: the full key (for a later fill) and the entry.
#[derive(Debug)]
pub struct Lookup {
    pub key: String,
    pub value: Option<Bytes>,
    /// The table versions `key` names, in the order of the lookup's
    /// tables, for [`CacheStore::put`] to tell a dead fill (Redis; empty
    /// where nothing later asks).
    pub versions: Vec<u64>,
    /// On a miss, who fills the entry among the instances sharing the
    /// store (see [`Filler`]).
    pub filler: Filler,
}

/// Who fills a missed entry. Instances sharing a store take a short lease
/// per entry in it, so that one fills an expired hot entry while the
/// others wait for its fill (bounded by `cache.coalesce_wait`) instead of
/// all sending the query upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filler {
    /// No lease in play: a hit, an in-process store, or leases off.
    Unclaimed,
    /// This instance holds the lease: it fills.
    Us,
    /// Another instance holds it: look again until its fill lands.
    Other,
}

/// What a cache store does (see the module documentation for its promises).
pub trait CacheStore: Send + Sync {
    /// Reads the current versions of `tables`, builds the full key and
    /// fetches the entry under it, as one step (one round trip for Redis).
    fn lookup(
        &self,
        base: &KeyBase,
        tables: &[TableKey],
    ) -> impl Future<Output = Result<Lookup, StoreError>> + Send;

    /// Stores a fill under the full `key` a lookup of `tables` returned,
    /// with the `versions` it read. Returns whether it was stored: a fill a
    /// later invalidation has already made unreachable may be dropped.
    fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tables: &[TableKey],
        versions: &[u64],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Keeps a fill in process, before its coalesced waiters are released.
    /// Returns whether that stored it for good (then no `put` follows).
    fn keep_local(&self, key: &str, value: &Bytes, ttl: Duration) -> bool;

    /// A fill of the full `key` was abandoned (the query failed, or its
    /// answer is not cached): gives up this instance's lease on it, so the
    /// instances waiting for it fill it themselves.
    fn abandon(&self, key: &str);

    /// Moves the versions of `tables` on: every entry that read them
    /// becomes unreachable.
    fn invalidate(
        &self,
        tables: &[TableKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes every entry unreachable (a flush, or DDL that may change
    /// anything).
    fn invalidate_all(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether the store can serve now (reachable and not recovering).
    fn ready(&self) -> impl Future<Output = bool> + Send;

    /// (entries, bytes) held in process, for metrics.
    fn memory_usage(&self) -> Option<(u64, u64)>;

    /// Fast mode: whether invalidations from other instances are arriving.
    fn local_live(&self) -> Option<bool>;

    /// `memory` or `redis`, for logs.
    fn kind(&self) -> &'static str;
}
