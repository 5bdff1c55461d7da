//! Pools of server connections, one `bb8` pool per (database, user).
//!
//! bb8 hides connection errors from waiters (it retries or reports them to an
//! error sink). A client waiting for a connection to a database that does
//! not exist must get Postgres' error at once, not a timeout, so each pool's
//! error sink publishes the last connect error on a `watch` channel and
//! [`acquire`] returns whichever comes first: a connection or a new error.
//! Network failures put the pool in a backoff (doubling up to
//! `reconnect_backoff_max`) so a down upstream is not hammered.
//!
//! A checkout takes the connection given back most recently (bb8's LIFO),
//! as PgBouncer does: its backend is warm in the CPU's caches. bb8's
//! default, FIFO, hands out the one idle the longest and so spreads a
//! client's transactions over every backend in turn; for the same bytes
//! sent, `pgbench -S -M extended -c 1` over eight idle connections cost
//! the backends up to twice the CPU per transaction on a loaded machine
//! (bench/README.md, issue #20).
//! Connections at the bottom of the stack stay idle: `idle_timeout`
//! closes them, so the pool shrinks to what the load needs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bb8::{ErrorSink, ManageConnection, PooledConnection, QueueStrategy};
use tokio::sync::watch;

use super::connect::{connect, ConnectTarget};
use super::error::BackendError;
use super::server::ServerConn;
use super::statement_names::StatementNames;
use crate::config::PoolConfig;
use crate::Boxed;

pub type UpstreamPool = bb8::Pool<ServerManager>;
pub type Pooled = PooledConnection<'static, ServerManager>;

/// Which pool a client uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
}

#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// bb8's view of how to make and check server connections.
#[derive(Debug)]
pub struct ServerManager {
    target: ConnectTarget,
    config: PoolConfig,
    backoff: Mutex<Backoff>,
}

impl ServerManager {
    fn record(&self, result: &Result<ServerConn, BackendError>) {
        let Ok(mut backoff) = self.backoff.lock() else {
            return;
        };
        match result {
            Ok(_) => *backoff = Backoff::default(),
            Err(e) if e.is_network() => {
                let factor = 1u32 << backoff.failures.min(16);
                let delay =
                    (self.config.reconnect_backoff * factor).min(self.config.reconnect_backoff_max);
                backoff.failures += 1;
                backoff.retry_at = Some(Instant::now() + delay);
                backoff.last_error = e.to_string();
            }
            Err(_) => {}
        }
    }

    fn backing_off(&self) -> Option<BackendError> {
        let backoff = self.backoff.lock().ok()?;
        let retry_at = backoff.retry_at?;
        let now = Instant::now();
        (retry_at > now).then(|| BackendError::BackingOff {
            retry_in_ms: (retry_at - now).as_millis() as u64,
            last: backoff.last_error.clone(),
        })
    }
}

/// Boxed because bb8 moves a connection several times on every checkout
/// and return; a pointer moves for less than the connection's few hundred
/// bytes (the profile showed those copies at ~3% of pass-through CPU).
impl ManageConnection for ServerManager {
    type Connection = Box<ServerConn>;
    type Error = BackendError;

    async fn connect(&self) -> Result<Box<ServerConn>, BackendError> {
        if let Some(e) = self.backing_off() {
            return Err(e);
        }
        let timeout = self.config.connect_timeout;
        let result = match tokio::time::timeout(timeout, connect(&self.target)).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::ConnectTimeout(timeout)),
        };
        self.record(&result);
        if let Err(e) = &result {
            tracing::warn!(database = %self.target.database, user = %self.target.user, error = %e, "upstream connect failed");
        }
        result.map(Box::new)
    }

    /// Run at checkout. A quiet socket is enough for a recently used
    /// connection; one idle past `health_check_after` answers an empty query.
    async fn is_valid(&self, conn: &mut Box<ServerConn>) -> Result<(), BackendError> {
        if !conn.idle_and_quiet() {
            conn.broken = true;
            return Err(BackendError::Stale);
        }
        if conn.last_used.elapsed() >= self.config.health_check_after
            && conn.run_internal("").await.is_err()
        {
            conn.broken = true;
            return Err(BackendError::Stale);
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut Box<ServerConn>) -> bool {
        conn.broken || conn.status != b'I' || conn.reader.has_buffered()
    }
}

/// Keeps the last connect error where waiting clients can see it.
#[derive(Debug, Clone)]
struct PublishErrors(Arc<watch::Sender<Option<BackendError>>>);

impl ErrorSink<BackendError> for PublishErrors {
    fn sink(&self, error: BackendError) {
        // A stale pooled connection is replaced, not an error for clients.
        if matches!(error, BackendError::Stale) {
            return;
        }
        self.0.send_replace(Some(error));
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<BackendError>> {
        Box::new(self.clone())
    }
}

/// A pool and the channel its connect errors arrive on.
#[derive(Debug)]
pub struct PoolEntry {
    pub pool: UpstreamPool,
    /// The server-side names of prepared statements (transaction mode),
    /// shared by the workers' pools of one (database, user): a connection
    /// one worker borrows from another's pool holds statements under the
    /// same names.
    pub statements: Arc<StatementNames>,
    errors: Arc<watch::Sender<Option<BackendError>>>,
    acquire_timeout: Duration,
    /// The pool's size (its share, with per-worker runtimes).
    size: u32,
    /// With per-worker runtimes, the other workers' pools of the same
    /// (database, user), whose idle connections this pool's clients take
    /// when this one has none left to give (see [`PoolEntry::acquire`]).
    siblings: OnceLock<Vec<Weak<PoolEntry>>>,
}

impl PoolEntry {
    /// Waits for a server connection, or fails with the first connect error
    /// that happens while waiting, or with a timeout.
    ///
    /// # Cancellation safety
    /// Safe: a connection bb8 hands over after cancellation goes back to the pool.
    ///
    /// The future is boxed: bb8's wait is large, and inline it would size
    /// every session's state machine.
    ///
    /// With per-worker runtimes, a pool that has given all its connections
    /// out hands over an idle one of another worker's pool instead of
    /// making its client wait: the configured size is the (database,
    /// user)'s, not each worker's. Such a connection's socket stays with
    /// the other worker's reactor (its readiness comes through that
    /// thread), and it goes back to its own pool.
    pub fn acquire(&self) -> Boxed<'_, Result<Pooled, BackendError>> {
        Box::pin(async move {
            if let Some(sibling) = self.idle_sibling() {
                return sibling.acquire_inline().await;
            }
            self.acquire_inline().await
        })
    }

    /// Another worker's pool with an idle connection, when this one has
    /// none idle and cannot open more.
    fn idle_sibling(&self) -> Option<Arc<PoolEntry>> {
        let siblings = self.siblings.get()?;
        let state = self.pool.state();
        if state.idle_connections > 0 || state.connections < self.size {
            return None;
        }
        siblings
            .iter()
            .filter_map(Weak::upgrade)
            .find(|sibling| sibling.pool.state().idle_connections > 0)
    }

    async fn acquire_inline(&self) -> Result<Pooled, BackendError> {
        let mut errors = self.errors.subscribe();
        errors.borrow_and_update();
        tokio::select! {
            // The pool first: when a connection is idle it is taken without
            // ever registering as a waiter on the error channel (a lock).
            biased;
            got = self.pool.get_owned() => got.map_err(|e| match e {
                bb8::RunError::User(e) => e,
                bb8::RunError::TimedOut => BackendError::AcquireTimeout(self.acquire_timeout),
            }),
            error = async {
                loop {
                    if errors.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    if let Some(e) = errors.borrow_and_update().clone() {
                        return e;
                    }
                }
            } => Err(error),
        }
    }
}

/// All pools of a pgstash process, created on first use. With per-worker
/// runtimes (`workers.rs`) each (database, user) has a pool per worker, a
/// share of the configured size each, so that a session uses connections
/// opened on its own thread — and another worker's idle ones when its own
/// are all in use (see [`PoolEntry::acquire`]). A pool smaller than the
/// worker count has one pool per connection, workers sharing them.
#[derive(Debug)]
pub struct Pools {
    entries: Mutex<HashMap<(PoolKey, usize), Arc<PoolEntry>>>,
    /// Schema changes seen through any pool (see `statement_names.rs`).
    schema_era: Arc<AtomicU32>,
    /// Pools per (database, user): the worker count, or 1.
    shards: AtomicUsize,
}

/// Shard `shard`'s part (`shard < shards <= size`) of `size` split over
/// `shards`: the remainder goes to the first shards.
fn share(size: u32, shard: usize, shards: usize) -> u32 {
    let (shard, shards) = (shard as u32, shards as u32);
    size / shards + u32::from(shard < size % shards)
}

/// A pool of `size` connections to `target`.
fn pool_entry(
    target: &ConnectTarget,
    config: &PoolConfig,
    size: u32,
    statements: Arc<StatementNames>,
) -> PoolEntry {
    let errors = Arc::new(watch::channel(None).0);
    let manager = ServerManager {
        target: target.clone(),
        config: config.clone(),
        backoff: Mutex::new(Backoff::default()),
    };
    let pool = bb8::Pool::builder()
        .max_size(size)
        .min_idle(None)
        .connection_timeout(config.acquire_timeout)
        .idle_timeout(Some(config.idle_timeout))
        .max_lifetime(Some(config.max_lifetime))
        .retry_connection(false)
        .test_on_check_out(true)
        .queue_strategy(QueueStrategy::Lifo)
        .error_sink(Box::new(PublishErrors(errors.clone())))
        .build_unchecked(manager);
    PoolEntry {
        pool,
        statements,
        errors,
        acquire_timeout: config.acquire_timeout,
        size,
        siblings: OnceLock::new(),
    }
}

impl Default for Pools {
    fn default() -> Self {
        Self::new()
    }
}

impl Pools {
    pub fn new() -> Pools {
        Pools {
            entries: Mutex::new(HashMap::new()),
            schema_era: Arc::default(),
            shards: AtomicUsize::new(1),
        }
    }

    /// One pool per worker for each (database, user) from now on
    /// (`runtime = "per_worker"`), before any client is served.
    pub fn set_shards(&self, workers: usize) {
        self.shards.store(workers.max(1), Ordering::Relaxed);
    }

    /// The pool for `key` (the calling worker's, with per-worker runtimes),
    /// created with `target` and `config` if missing: with per-worker
    /// runtimes, the pools of every worker at once.
    pub fn get(
        &self,
        key: &PoolKey,
        target: impl FnOnce() -> ConnectTarget,
        config: &PoolConfig,
        size: u32,
    ) -> Arc<PoolEntry> {
        let size = size.max(1);
        // At least 1 (`set_shards`); no more pools than connections.
        let shards = self.shards.load(Ordering::Relaxed).min(size as usize);
        let shard = crate::workers::current().unwrap_or(0) % shards;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get(&(key.clone(), shard)) {
            return entry.clone();
        }
        let target = target();
        let statements = Arc::new(StatementNames::new(self.schema_era.clone()));
        let pools: Vec<Arc<PoolEntry>> = (0..shards)
            .map(|s| {
                let size = share(size, s, shards);
                Arc::new(pool_entry(&target, config, size, statements.clone()))
            })
            .collect();
        if shards > 1 {
            for (s, pool) in pools.iter().enumerate() {
                let others = pools.iter().enumerate().filter(|&(o, _)| o != s);
                let _ = pool
                    .siblings
                    .set(others.map(|(_, p)| Arc::downgrade(p)).collect());
            }
        }
        for (s, pool) in pools.iter().enumerate() {
            entries.insert((key.clone(), s), pool.clone());
        }
        pools[shard].clone()
    }

    /// Forgets every pool (after a reload changed pool settings); their
    /// connections close as clients give them back.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Forgets every pool of `database` (all its users): new clients get
    /// new pools, and each old one closes with its connections once no
    /// session holds it — at once when none does. Called before a client's
    /// statement that needs the database without other sessions (`DROP
    /// DATABASE`…: see `pgstash_rules::exclusive_databases`), which pooled
    /// connections left idle would fail with 55006 when the client, talking
    /// to Postgres directly, would have none. A session still using an old
    /// pool keeps it (and its connections) until it ends, as its own
    /// connection to Postgres would.
    pub fn retire(&self, database: &str) {
        let retired: Vec<Arc<PoolEntry>> = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<(PoolKey, usize)> = entries
                .keys()
                .filter(|(k, _)| k.database == database)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| entries.remove(k)).collect()
        };
        if !retired.is_empty() {
            tracing::debug!(
                database,
                pools = retired.len(),
                "retired the pools of a database a client needs alone"
            );
        }
    }

    /// (database, user, state) counts for metrics and logs: one per pool,
    /// so a (database, user) appears once per worker's pool.
    pub fn states(&self) -> Vec<(PoolKey, bb8::State)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|((k, _), e)| (k.clone(), e.pool.state()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn a_pool_splits_over_workers_keeping_its_size_when_each_gets_one() {
        for (size, shards) in [(20, 2), (21, 2), (20, 3), (7, 4), (1, 1), (64, 8)] {
            let total: u32 = (0..shards).map(|s| share(size, s, shards)).sum();
            assert_eq!(total, size, "{size} over {shards}");
        }
        // Fewer connections than workers: as many pools as connections
        // (`Pools::get`), one each.
        assert_eq!((0..2).map(|s| share(2, s, 2)).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(share(20, 0, 1), 20);
    }
}
