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
    /// With per-worker runtimes, the runtime of the worker whose share
    /// this pool is: connections open there (bb8 opens them on whichever
    /// runtime asked), so that their sockets belong to its reactor.
    home: Option<(usize, tokio::runtime::Handle)>,
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
        let connecting = tokio::time::timeout(timeout, connect_owned(self.target.clone()));
        let connected = match &self.home {
            Some((worker, home)) if crate::workers::current() != Some(*worker) => {
                home.spawn(connecting).await.unwrap_or_else(|e| {
                    Ok(Err(BackendError::from(std::io::Error::other(format!(
                        "the worker that opens this pool's connections is gone: {e}"
                    )))))
                })
            }
            _ => connecting.await,
        };
        let result = match connected {
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

/// [`connect`] with a target of its own, to run on another runtime.
async fn connect_owned(target: ConnectTarget) -> Result<ServerConn, BackendError> {
    connect(&target).await
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
    /// With per-worker runtimes, the other shares of the same (database,
    /// user), the next one first, whose idle connections this pool's
    /// clients take when this one has none left to give (see
    /// [`PoolEntry::acquire`]).
    siblings: OnceLock<Vec<Weak<PoolEntry>>>,
    /// Checkouts of this pool in progress: a share lends no connection
    /// while its own clients wait. (bb8's count of pending gets is not
    /// used: a checkout given up, by a client gone or a connect error,
    /// stays pending in it for good.)
    waiting: AtomicUsize,
}

/// Counts a checkout in [`PoolEntry::waiting`] while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
    /// out hands over an idle one of another worker's share, one no client
    /// of that share waits for, instead of making its client wait: the
    /// configured size is the (database, user)'s, not each worker's. Such a
    /// connection's socket stays with the other worker's reactor (its
    /// readiness comes through that thread), and it goes back to its own
    /// share. Should that idle connection be taken between the look and
    /// the checkout (a race of a few instructions), the client waits in
    /// the other share's queue, up to `acquire_timeout`.
    pub fn acquire(&self) -> Boxed<'_, Result<Pooled, BackendError>> {
        Box::pin(async move {
            if let Some(sibling) = self.idle_sibling() {
                return sibling.acquire_inline().await;
            }
            self.acquire_inline().await
        })
    }

    /// Another worker's share with an idle connection and no client
    /// waiting, when this one has none idle and cannot open more.
    ///
    /// # Performance
    /// Under load every share has checkouts in progress: the atomic counts
    /// say so before any pool's lock is taken.
    fn idle_sibling(&self) -> Option<Arc<PoolEntry>> {
        let siblings = self.siblings.get()?;
        let unhurried = |sibling: &Arc<PoolEntry>| sibling.waiting.load(Ordering::Relaxed) == 0;
        let mut candidates = siblings.iter().filter_map(Weak::upgrade).filter(unhurried);
        let first = candidates.next()?;
        let state = self.pool.state();
        if state.idle_connections > 0 || state.connections < self.size {
            return None;
        }
        std::iter::once(first)
            .chain(candidates)
            .find(|sibling| sibling.pool.state().idle_connections > 0)
    }

    async fn acquire_inline(&self) -> Result<Pooled, BackendError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
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
/// runtimes (`workers.rs`) each (database, user) has a pool per worker (a
/// *share*), a part of the configured size each, whose connections open
/// on that worker's runtime; a worker's clients take another share's idle
/// connections when their own are all in use (see [`PoolEntry::acquire`]).
/// A pool smaller than the worker count has one share per connection,
/// each used by several workers: the configured size is never exceeded.
#[derive(Debug)]
pub struct Pools {
    /// Each (database, user)'s shares, in worker order.
    entries: Mutex<HashMap<PoolKey, Arc<[Arc<PoolEntry>]>>>,
    /// Schema changes seen through any pool (see `statement_names.rs`).
    schema_era: Arc<AtomicU32>,
    /// Shares per (database, user) at most: the worker count, or 1.
    shards: AtomicUsize,
}

/// Shard `shard`'s part (`shard < shards <= size`) of `size` split over
/// `shards`: the remainder goes to the first shards.
fn share(size: u32, shard: usize, shards: usize) -> u32 {
    debug_assert!(shard < shards && shards as u32 <= size);
    let (shard, shards) = (shard as u32, shards as u32);
    size / shards + u32::from(shard < size % shards)
}

/// A pool of `size` connections to `target`, opened on `home` if given.
fn pool_entry(
    target: &ConnectTarget,
    config: &PoolConfig,
    size: u32,
    statements: Arc<StatementNames>,
    home: Option<(usize, tokio::runtime::Handle)>,
) -> PoolEntry {
    let errors = Arc::new(watch::channel(None).0);
    let manager = ServerManager {
        target: target.clone(),
        config: config.clone(),
        backoff: Mutex::new(Backoff::default()),
        home,
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
        waiting: AtomicUsize::new(0),
    }
}

/// The shares of one (database, user): `size` split over at most `shards`
/// (never more than `size`), sharing their statement names, each knowing
/// the others (the next one first).
fn shares(
    target: &ConnectTarget,
    config: &PoolConfig,
    size: u32,
    shards: usize,
    era: &Arc<AtomicU32>,
) -> Arc<[Arc<PoolEntry>]> {
    let size = size.max(1);
    let shards = shards.clamp(1, size as usize);
    let statements = Arc::new(StatementNames::new(era.clone()));
    let workers = crate::workers::handles();
    let pools: Arc<[Arc<PoolEntry>]> = (0..shards)
        .map(|s| {
            // Share `s` serves workers `s`, `s + shards`…: it opens on `s`.
            let home = workers
                .get(s)
                .filter(|_| shards > 1)
                .map(|h| (s, h.clone()));
            let size = share(size, s, shards);
            Arc::new(pool_entry(target, config, size, statements.clone(), home))
        })
        .collect();
    if shards > 1 {
        for (s, pool) in pools.iter().enumerate() {
            let others = (1..shards).map(|k| Arc::downgrade(&pools[(s + k) % shards]));
            let _ = pool.siblings.set(others.collect());
        }
    }
    pools
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

    /// One share per worker for each (database, user) from now on
    /// (`runtime = "per_worker"`), before any client is served.
    pub fn set_shards(&self, workers: usize) {
        self.shards.store(workers.max(1), Ordering::Relaxed);
    }

    /// The pool for `key` (the calling worker's share, with per-worker
    /// runtimes), created with `target` and `config` if missing, with
    /// every share at once.
    pub fn get(
        &self,
        key: &PoolKey,
        target: impl FnOnce() -> ConnectTarget,
        config: &PoolConfig,
        size: u32,
    ) -> Arc<PoolEntry> {
        let worker = crate::workers::current().unwrap_or(0);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let pools = match entries.get(key) {
            Some(pools) => pools.clone(),
            None => {
                let shards = self.shards.load(Ordering::Relaxed);
                let pools = shares(&target(), config, size, shards, &self.schema_era);
                entries.insert(key.clone(), pools.clone());
                pools
            }
        };
        // Not empty: `shares` makes one at least.
        pools[worker % pools.len()].clone()
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
        let retired = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let before = entries.len();
            entries.retain(|k, _| k.database != database);
            before - entries.len()
        };
        if retired > 0 {
            tracing::debug!(
                database,
                pools = retired,
                "retired the pools of a database a client needs alone"
            );
        }
    }

    /// (database, user, state) counts for metrics and logs: one per pool,
    /// so a (database, user) appears once per share.
    pub fn states(&self) -> Vec<(PoolKey, bb8::State)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .flat_map(|(k, pools)| pools.iter().map(|e| (k.clone(), e.pool.state())))
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
