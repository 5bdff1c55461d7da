//! The Redis store, on one Redis, Redis Cluster or behind Sentinel:
//! entries as keys with a TTL, table versions as counters, and a
//! global epoch; an entry is served only under the epoch and versions it
//! was filled under (`layout.rs`). A lookup is one script on one node
//! (`fetch.rs`): on Cluster every group of slots holds its own copy of the
//! epoch and versions beside its entries, and a write bumps them all.
//!
//! Fail closed (G4): while an invalidation may have been lost the store is
//! *dirty* and serves nothing until its epoch is renewed (`dirt.rs`); while
//! a call fails it is *down* and nothing waits on it (`breaker.rs`).
//!
//! Every invalidation and epoch renewal is also published on the
//! `{prefix}inv` channel, in the same script as the write. In fast mode an
//! instance subscribes to it and serves hits from its local tier (see
//! `local.rs`); strict-mode instances ignore it.
//!
//! The calls reads and writes make go over the store's own connections
//! (`pipe/`, `eval.rs`); `fred` carries the rest, and everything behind
//! Sentinel.

mod breaker;
mod bumped;
mod direct;
mod dirt;
mod eval;
mod everywhere;
mod fetch;
mod fill;
mod follow;
mod invalidations;
mod layout;
mod lease;
mod pipe;
mod scripts;
mod wire;

pub use lease::Leases;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;

use self::breaker::Breaker;
use self::bumped::Bumped;
use self::direct::Direct;
use self::dirt::Marks;
use self::fetch::Fetched;
use self::follow::{follow, SUBSCRIBER_BUFFER};
use self::invalidations::run_invalidations;
use self::layout::{stamp_versions, Layout};
use self::pipe::{Endpoint, Pipes};
use self::scripts::{builder, Scripts};
use super::coalesce::Coalescer;
use super::contract::{CacheStore, Filler, Lookup, StoreError};
use super::local::{LocalCounters, LocalTier};
use crate::cache::key::{KeyBase, TableKey};
use crate::config::{CacheConfig, CacheMode, RedisTarget, Topology};
use crate::observe::Metrics;

/// How long startup waits for Redis before serving without it.
const STARTUP_WAIT: Duration = Duration::from_secs(2);

/// How often the background task retries renewing the epoch while dirty.
const REPAIR_INTERVAL: Duration = Duration::from_millis(200);

pub struct RedisStore {
    pool: Pool,
    /// One Redis: the store's own connections, for lookups, fills, lease
    /// releases and invalidations (`pipe/`).
    pipes: Option<Arc<Pipes>>,
    /// Cluster: lookups go straight to their group's master (`direct.rs`).
    direct: Option<Direct>,
    /// Where every key lives.
    layout: Layout,
    timeout: Duration,
    scripts: Scripts,
    /// This instance's name in fill leases (its own bytes once, shared by
    /// every call's argument).
    holder: Bytes,
    /// A fill lease's time to live in ms (`cache.coalesce_wait`); empty
    /// when leases are off.
    lease_ms: Bytes,
    /// `{prefix}inv`: where invalidations and epoch renewals are published.
    channel: String,
    /// Fast mode's local tier.
    local: Option<Arc<LocalTier>>,
    /// Whether an invalidation may have been lost, and the generation that
    /// moves on at every connection error or reconnection (`dirt.rs`).
    marks: Marks,
    /// Versions this instance bumped tables to.
    bumped: Bumped,
    /// A renewal is running: concurrent lookups go upstream instead of
    /// renewing again (each renewal empties every fast-mode tier).
    renewing: AtomicBool,
    /// Invalidations waiting for the next script call.
    coalescer: Coalescer,
    /// This store, for the invalidation runner it spawns.
    me: std::sync::Weak<RedisStore>,
    breaker: Breaker,
}

impl RedisStore {
    /// Builds the client and starts connecting in the background. An
    /// unreachable Redis is not an error here: queries go upstream until it
    /// answers.
    pub async fn connect(
        url: &str,
        config: &CacheConfig,
        metrics: &Metrics,
    ) -> Result<Arc<RedisStore>, StoreError> {
        let counters = LocalCounters {
            hits: metrics.local_hits.clone(),
            resets: metrics.local_resets.clone(),
        };
        let target =
            RedisTarget::new(url, config).map_err(|e| StoreError::Connect(e.to_string()))?;
        let builder = builder(&target, config.store_timeout)?;
        // On one Redis the calls of reads and writes go over the store's
        // own connections (`pipe/`): fred's pool is left the rest.
        let fred_clients = match target.topology {
            Topology::Single => 1,
            _ => config.redis_pool_size,
        };
        let pool = builder
            .build_pool(fred_clients)
            .map_err(|e| StoreError::Connect(e.to_string()))?;
        let marks = Marks::default();
        // Connection tasks run (and reconnect) in the background; startup
        // waits briefly so a reachable Redis is used from the first query.
        let init_pool = pool.clone();
        let init = tokio::spawn(async move { init_pool.init().await.map(|_| ()) });
        let (pipes, _) = tokio::join!(
            Pipes::for_target(&target, config.redis_pool_size, marks.clone(), STARTUP_WAIT),
            tokio::time::timeout(STARTUP_WAIT, init),
        );
        let cluster = target.topology == Topology::Cluster;
        let layout = Layout::new(&config.key_prefix, cluster);
        let local = (config.mode == CacheMode::Fast).then(|| {
            Arc::new(LocalTier::new(
                config.max_memory_bytes,
                config.local_max_age,
                (0..layout.groups())
                    .map(|g| layout.version_prefix(g))
                    .collect(),
                counters,
            ))
        });
        let direct = match (cluster, Endpoint::of(&target)) {
            (true, Some(endpoint)) => Some(Direct::new(
                endpoint,
                config.redis_pool_size,
                layout.groups(),
            )),
            _ => None,
        };
        let store = Arc::new_cyclic(|me| RedisStore {
            me: me.clone(),
            pool,
            pipes: pipes.map(Arc::new),
            direct,
            channel: layout.channel(),
            layout,
            timeout: config.store_timeout,
            scripts: Scripts::default(),
            holder: Bytes::from(format!("{:016x}", rand::random::<u64>())),
            lease_ms: match config.coalesce_wait.as_millis() {
                0 => Bytes::new(),
                ms => Bytes::from(ms.to_string()),
            },
            local,
            marks,
            renewing: AtomicBool::new(false),
            coalescer: Coalescer::default(),
            bumped: Bumped::default(),
            breaker: Breaker::new(
                metrics.store_up.clone(),
                metrics.store_transitions.with_label_values(&["down"]),
                metrics.store_transitions.with_label_values(&["up"]),
            ),
        });
        for client in store.pool.clients() {
            dirt::watch(client, store.marks.clone());
        }
        store.route_direct().await;
        if let Some(local) = &store.local {
            let mut builder = builder;
            // Messages queue here between the connection task and `follow`;
            // an overflow costs a reset of the local tier.
            builder.with_performance_config(|p| p.broadcast_channel_capacity = SUBSCRIBER_BUFFER);
            let subscriber = builder
                .build()
                .map_err(|e| StoreError::Connect(e.to_string()))?;
            tokio::spawn(follow(
                Arc::downgrade(&store),
                local.clone(),
                subscriber,
                store.channel.clone(),
            ));
        }
        let weak = Arc::downgrade(&store);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REPAIR_INTERVAL).await;
                let Some(store) = weak.upgrade() else { return };
                store.route_direct().await;
                if store.breaker.is_down() {
                    store.probe().await;
                }
                if store.marks.dirt.is_dirty() && !store.breaker.is_down() {
                    let _ = store.repair().await;
                }
            }
        });
        Ok(store)
    }

    /// Cluster: routes each group's lookups to its master as fred's view of
    /// the cluster has it (see `direct.rs`).
    async fn route_direct(&self) {
        if let Some(direct) = &self.direct {
            // Always the same cluster client: the one that relearns the
            // slots after a redirection is the one whose view is read.
            let Some(cluster) = self.pool.clients().first() else {
                return;
            };
            direct
                .refresh(cluster, self.layout.slots(), &self.marks)
                .await;
        }
    }

    /// Asks Redis for a PING; an answer closes the breaker.
    async fn probe(&self) {
        let call = Box::pin(self.pool.next().ping::<String>(None));
        if scripts::bounded(self.timeout, call).await.is_ok() {
            self.breaker.reset();
        }
    }

    /// Leases for work one instance does for all that share this store.
    pub fn leases(&self) -> Leases<'_> {
        Leases {
            pool: &self.pool,
            tag: self.layout.tag(),
            timeout: self.timeout,
        }
    }

    /// `call` within the store's timeout (see [`scripts::bounded`]); a
    /// timeout or a connection failure trips the breaker.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, StoreError> {
        let result = scripts::bounded(self.timeout, call).await;
        // An error reply says Redis is there; only silence or a broken
        // connection makes the store down.
        if matches!(&result, Err(e) if !matches!(e, StoreError::Refused(_))) {
            self.breaker.trip();
        }
        result
    }

    /// Whether a fill's versions (those its lookup read, one per table of
    /// `tables`) name a version of one of its tables older
    /// than one that table is known to have reached since: this
    /// instance's own invalidations (acknowledged, so already in Redis)
    /// and, in fast mode, versions heard from other instances. Every
    /// lookup from now on reads the newer version and builds another key,
    /// so the `SET` would only take Redis memory until its TTL.
    ///
    /// # Performance
    /// Under writes to a table its reads miss, and most of their fills
    /// are dead before they complete (an update-heavy mix at 8 clients):
    /// skipping them saves a Redis command per miss.
    fn is_dead(&self, group: usize, tables: &[TableKey], versions: &[u64]) -> bool {
        if versions.len() != tables.len() {
            return false;
        }
        if let Some(local) = &self.local {
            if local.knows_newer(group, tables, versions) {
                return true;
            }
        }
        let pairs = tables.iter().map(|t| self.layout.version(group, t));
        self.bumped.newer_than(pairs.zip(versions))
    }

    /// Renews the epoch unless a renewal is already running (then the
    /// caller goes upstream).
    async fn repair(&self) -> Result<(), StoreError> {
        if self.renewing.swap(true, Ordering::SeqCst) {
            return Err(StoreError::Recovering);
        }
        let result = self.renew_epoch().await;
        self.renewing.store(false, Ordering::SeqCst);
        result
    }

    /// Replaces the epoch with a fresh random value, the same in every
    /// group: every entry written before becomes unreachable. Clears the
    /// marks of lost invalidations made before it began. A group that
    /// could not be renewed leaves the store dirty (and renewing again).
    pub async fn renew_epoch(&self) -> Result<(), StoreError> {
        let seen = self.marks.dirt.seen();
        let epoch = format!("{:016x}", rand::random::<u64>());
        let result = self.set_epoch_everywhere(&epoch).await;
        match &result {
            Ok(_) => {
                if let Some(local) = &self.local {
                    local.reset("this instance renewed the epoch");
                }
                // Entries under the old epoch are unreachable: versions seen
                // before no longer matter.
                self.bumped.clear();
                if self.marks.dirt.clean(seen) {
                    tracing::info!("cache epoch renewed; serving from redis again");
                }
            }
            Err(_) => {
                self.marks.dirt.mark();
            }
        }
        result.map_err(|_| StoreError::Recovering)
    }
}

impl CacheStore for RedisStore {
    async fn lookup(&self, base: &KeyBase, tables: &[TableKey]) -> Result<Lookup, StoreError> {
        if self.breaker.is_down() {
            return Err(StoreError::Down);
        }
        // Before the dirt is checked (see `Marks::connection`).
        let generation = self.marks.generation.load(Ordering::SeqCst);
        if self.marks.dirt.is_dirty() {
            self.repair().await?;
        }
        let prefix = self.layout.full_key_prefix(base);
        let hex = self.layout.split(&prefix).map_or("", |(hex, _)| hex);
        let group = self.layout.group_of(hex);
        if let Some(local) = &self.local {
            if let Some((key, value)) = local.get(&prefix, group, tables) {
                return Ok(Lookup {
                    key,
                    value: Some(value),
                    versions: Vec::new(),
                    filler: Filler::Unclaimed,
                });
            }
        }
        let ticket = self.local.as_ref().map(|l| l.ticket());
        let bumps_before = self.bumped.sequence();
        let version_keys: Vec<String> = tables
            .iter()
            .map(|t| self.layout.version(group, t))
            .collect();
        let Fetched {
            stamp,
            value,
            remaining,
            filler,
        } = self.fetch(group, hex, &version_keys).await?;
        if self.marks.generation.load(Ordering::SeqCst) != generation || self.marks.dirt.is_dirty()
        {
            // The connection failed or came back while this lookup ran.
            return Err(StoreError::Recovering);
        }
        let (epoch, versions) = stamp_versions(&stamp);
        if self
            .bumped
            .lost_data(&version_keys, &versions, bumps_before)
        {
            self.marks.dirt.mark();
            return Err(StoreError::Recovering);
        }
        let key = prefix + &stamp;
        if let (Some(local), Some(ticket)) = (&self.local, ticket) {
            let entry = value.as_ref().zip(remaining);
            local.learn(ticket, epoch, &version_keys, &versions, &key, entry);
        }
        Ok(Lookup {
            key,
            value,
            versions,
            filler,
        })
    }

    /// Writes a fill under `key` (see `fill.rs`).
    async fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        tables: &[TableKey],
        versions: &[u64],
    ) -> Result<bool, StoreError> {
        self.fill(key, value, ttl, tables, versions).await
    }

    /// Gives up this instance's fill lease on `key`'s entry (`fill.rs`).
    fn abandon(&self, key: &str) {
        self.give_up_lease(key);
    }

    /// Fast mode keeps a local copy before the `SET`; strict mode nothing.
    fn keep_local(&self, key: &str, value: &Bytes, ttl: Duration) -> bool {
        if let Some(local) = &self.local {
            local.store(key, value.clone(), ttl);
        }
        false
    }

    /// Bumps the versions of `tables`, in a call shared with the other
    /// writers waiting at the time (see `coalesce.rs`).
    async fn invalidate(&self, tables: &[TableKey]) -> Result<(), StoreError> {
        if tables.is_empty() {
            return Ok(());
        }
        let (done, start) = self.coalescer.push(tables);
        if start {
            if let Some(store) = self.me.upgrade() {
                tokio::spawn(run_invalidations(store));
            }
        }
        done.await.unwrap_or_else(|_| {
            // The runner went away without an answer (it panicked, or the
            // runtime is shutting down): the bump may not have happened.
            self.marks.dirt.mark();
            Err(StoreError::Recovering)
        })
    }

    async fn invalidate_all(&self) -> Result<(), StoreError> {
        self.renew_epoch().await
    }

    async fn ready(&self) -> bool {
        if self.marks.dirt.is_dirty() || self.breaker.is_down() {
            return false;
        }
        let client = self.pool.next();
        let call = Box::pin(client.ping::<String>(None));
        self.bounded(call).await.is_ok()
    }

    /// (entries, bytes) held by fast mode's local tier.
    fn memory_usage(&self) -> Option<(u64, u64)> {
        self.local.as_ref().map(|l| l.usage())
    }

    fn local_live(&self) -> Option<bool> {
        self.local.as_ref().map(|l| l.is_live())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
