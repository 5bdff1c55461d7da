//! Helpers for the caching tests: a rules file of the test's own, a pgstash
//! started with it, counters read from the server's metrics, a key prefix of
//! the test's own on the shared Redis, and a way to count how many times
//! Postgres really executed a query.
//!
//! Counting executions is what lets a cache test fail without the cache:
//! metrics are pgstash's own account of what it did, while the
//! [`EXEC_COUNTER`] sequence is advanced by Postgres itself each time it
//! evaluates [`counted`](COUNTER_FUNCTIONS) — a hit that secretly went
//! upstream shows up there.

use std::time::{Duration, Instant};

use pgstash::Config;

use crate::files::RulesToml;
use crate::postgres::TestPostgres;
use crate::proxy::TestProxy;
use crate::redis::TestRedis;

/// The sequence the counting functions advance.
pub const EXEC_COUNTER: &str = "public.exec_counter";

/// SQL creating the execution counter and two functions declared IMMUTABLE
/// (so pgstash may cache queries calling them) that advance it:
/// `counted(x int) → x` and `counted_slow(x int, seconds float8) → x`, which
/// also sleeps. Call them on a column (once per row): with constant
/// arguments Postgres folds the call at planning, and a reused plan (a
/// prepared statement) would not call them again.
pub const COUNTER_FUNCTIONS: &str = r#"
CREATE SEQUENCE public.exec_counter;
GRANT USAGE, SELECT ON SEQUENCE public.exec_counter TO PUBLIC;
CREATE FUNCTION public.counted(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
  PERFORM nextval('public.exec_counter');
  RETURN x;
END $$;
CREATE FUNCTION public.counted_slow(x int, seconds float8) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
  PERFORM nextval('public.exec_counter');
  PERFORM pg_sleep(seconds);
  RETURN x;
END $$;
"#;

/// How many times the counting functions ran, read straight from Postgres.
pub async fn executions(pg: &TestPostgres) -> i64 {
    let row = pg
        .connect()
        .await
        .query_one(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.exec_counter",
            &[],
        )
        .await
        .expect("read exec_counter");
    row.get(0)
}

/// A pgstash with caching on: the proxy and the rules file it reads.
pub struct CachingProxy {
    pub proxy: TestProxy,
    _rules: RulesToml,
}

impl std::ops::Deref for CachingProxy {
    type Target = TestProxy;
    fn deref(&self) -> &TestProxy {
        &self.proxy
    }
}

impl CachingProxy {
    /// Starts pgstash on `pg` with `rules` (TOML text) and the in-process store,
    /// then lets `configure` adjust the config (e.g. set `redis`).
    pub async fn start(
        pg: &TestPostgres,
        rules: &str,
        configure: impl FnOnce(&mut Config),
    ) -> CachingProxy {
        let file = RulesToml::new(rules);
        let path = file.path().to_owned();
        let proxy = TestProxy::start(pg, move |c| {
            c.rules = Some(path);
            // Queries held up by a failing store on purpose would flood
            // stderr with slow-query lines.
            c.slow_query_ms = 60_000;
            configure(c);
        })
        .await;
        CachingProxy {
            proxy,
            _rules: file,
        }
    }

    pub fn hits(&self, rule: &str) -> u64 {
        self.metrics().cache_hits.with_label_values(&[rule]).get()
    }

    pub fn misses(&self, rule: &str) -> u64 {
        self.metrics().cache_misses.with_label_values(&[rule]).get()
    }

    pub fn fills(&self, rule: &str) -> u64 {
        self.metrics().cache_fills.with_label_values(&[rule]).get()
    }

    pub fn coalesced(&self, rule: &str) -> u64 {
        self.metrics()
            .cache_coalesced
            .with_label_values(&[rule])
            .get()
    }

    pub fn bypassed(&self, reason: &str) -> u64 {
        self.metrics()
            .cache_bypass
            .with_label_values(&[reason])
            .get()
    }

    /// `op` is `lookup`, `put` or `invalidate`.
    pub fn errors(&self, op: &str) -> u64 {
        self.metrics().cache_errors.with_label_values(&[op]).get()
    }

    /// 1 while `rule` has been judged not to pay and most of its reads
    /// skip the store, else 0.
    pub fn rule_bypassing(&self, rule: &str) -> i64 {
        self.metrics()
            .rule_bypassing
            .with_label_values(&[rule])
            .get()
    }

    /// Lookups sent to the store (timed calls, every rule).
    pub fn store_lookups(&self) -> u64 {
        self.metrics()
            .store_call
            .with_label_values(&["lookup"])
            .get_sample_count()
    }

    /// Whether the fast mode's invalidation subscription is up (the gauge
    /// is refreshed on scrape; the store answers directly); `None` without
    /// a local tier.
    pub fn local_live(&self) -> Option<bool> {
        self.handle()
            .context()
            .cache
            .as_ref()
            .and_then(|c| pgstash::cache::CacheStore::local_live(c.store()))
    }

    /// Invalidations recorded for `table` of the test database.
    pub fn invalidations(&self, table: &str) -> u64 {
        let label = format!("{}.{table}", self.database);
        self.metrics()
            .invalidations
            .with_label_values(&[label.as_str()])
            .get()
    }

    /// Waits until `rule` has stored `n` entries in total (fills are written
    /// in the background, after the filling client got its answer).
    pub async fn wait_for_fills(&self, rule: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.fills(rule) < n {
            assert!(
                Instant::now() < deadline,
                "rule {rule}: {} fills after 5s, expected {n}",
                self.fills(rule)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A key prefix of a test's own on the shared Redis, for `cache.key_prefix`.
/// pgstash wraps the prefix in `{hash tags}` (`{prefix}` on one Redis),
/// which [`TestRedis`]'s own cleanup does not match; this deletes every
/// key under them (meta keys, entries `{prefix}e:<base>`, leases) on drop.
pub struct RedisPrefix {
    pub redis: TestRedis,
}

impl RedisPrefix {
    pub fn new() -> RedisPrefix {
        RedisPrefix {
            redis: TestRedis::new(),
        }
    }

    pub fn url(&self) -> String {
        self.redis.url().to_owned()
    }

    /// The value for `cache.key_prefix`.
    pub fn prefix(&self) -> String {
        self.redis.prefix.clone()
    }

    /// Points pgstash's `config` at the shared Redis, under this prefix.
    pub fn configure(&self, config: &mut Config) {
        config.redis = Some(self.url());
        config.cache.key_prefix = self.prefix();
    }

    /// Keys pgstash wrote under this prefix: meta keys, entries and leases.
    pub fn keys(&self) -> Vec<String> {
        let prefix = &self.redis.prefix;
        [format!("{{{prefix}*"), format!("{prefix}*")]
            .iter()
            .flat_map(|pattern| self.redis.scan(pattern).unwrap_or_default())
            .collect()
    }
}

impl Default for RedisPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        self.redis.delete(&self.keys());
    }
}
