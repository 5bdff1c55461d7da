//! G4 fail closed: when an invalidation may have been lost (Redis down,
//! frozen, refusing writes, or restarted from an older snapshot), no entry
//! it should have invalidated is ever served afterwards; while Redis is
//! unavailable queries go upstream, no slower than the store timeout.
//!
//! Each test runs a redis-server of its own (`RedisProcess`), never the
//! shared one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgstash_tests::cache::CachingProxy;
use pgstash_tests::fixture::caching;
use pgstash_tests::postgres::{describe, try_value, value};
use pgstash_tests::redis_process::RedisProcess;
use pgstash_tests::TestPostgres;
use tokio_postgres::Client;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'old')";
const RULES: &str = "[[rule]]\nname = \"t\"\ntables = [\"t\"]\nttl = \"5m\"\n";
const READ: &str = "SELECT v FROM t WHERE id = 1";
const STORE_TIMEOUT: Duration = Duration::from_millis(100);
/// How long any single query may take while the store misbehaves:
/// the store timeout plus a generous margin for a loaded test machine.
const QUERY_BOUND: Duration = Duration::from_secs(1);

/// The table in a fresh database, and a pgstash caching it in `redis`
/// with a short store timeout.
async fn cached_in(redis: &RedisProcess) -> (TestPostgres, CachingProxy) {
    caching(&[TABLE], RULES, |c| {
        redis.configure(c);
        c.cache.key_prefix = pgstash_tests::unique_name("g4");
        c.cache.store_timeout = STORE_TIMEOUT;
    })
    .await
}

/// Row 1's value through the simple or the extended protocol, and how long
/// the query took.
async fn timed_read(client: &Client, extended: bool) -> (String, Duration) {
    let started = Instant::now();
    let got = value(client, READ, extended).await;
    (got, started.elapsed())
}

/// Reads in both protocols; each must return `want` within QUERY_BOUND.
async fn read_both(client: &Client, want: &str, when: &str) {
    for extended in [false, true] {
        let (got, took) = timed_read(client, extended).await;
        let protocol = if extended { "extended" } else { "simple" };
        assert_eq!(got, want, "{when} ({protocol} protocol)");
        assert!(
            took < QUERY_BOUND,
            "{when}: a {protocol} read took {took:?} (store timeout {STORE_TIMEOUT:?})"
        );
    }
}

/// Reads row 1 in both protocols until both entries are stored and hit.
async fn fill(proxy: &CachingProxy, client: &Client, want: &str) {
    let (fills, misses) = (proxy.fills("t"), proxy.misses("t"));
    read_both(client, want, "filling").await;
    proxy
        .wait_for_fills("t", fills + proxy.misses("t") - misses)
        .await;
    let hits = proxy.hits("t");
    read_both(client, want, "filled").await;
    assert_eq!(proxy.hits("t"), hits + 2, "the entries are cached in redis");
}

/// A write through pgstash that must be acknowledged within QUERY_BOUND.
async fn write(client: &Client, value: &str) {
    let started = Instant::now();
    let n = client
        .execute("UPDATE t SET v = $1 WHERE id = 1", &[&value])
        .await
        .unwrap_or_else(|e| panic!("update: {}", describe(&e)));
    assert_eq!(n, 1);
    let took = started.elapsed();
    assert!(
        took < QUERY_BOUND,
        "a write took {took:?} while redis misbehaved (store timeout {STORE_TIMEOUT:?})"
    );
}

/// Reads for `period`, every read in both protocols returning `want`.
async fn always(client: &Client, want: &str, period: Duration, when: &str) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        read_both(client, want, when).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Clients reading row 1 in a tight loop (both protocols) while something
/// happens to Redis: any answer other than `want` is recorded. Many reads in
/// flight make it likely that one lands right as Redis comes back.
struct Hammer {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Hammer {
    async fn start(proxy: &CachingProxy, clients: usize, want: &'static str) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = proxy.connect().await;
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let (mut reads, mut wrong) = (0, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    for extended in [false, true] {
                        let started = Instant::now();
                        let got = try_value(&client, READ, extended).await;
                        let took = started.elapsed();
                        reads += 1;
                        if got.as_deref() != Ok(want) || took >= QUERY_BOUND {
                            wrong.push(format!(
                                "{} read returned {got:?} in {took:?}",
                                if extended { "extended" } else { "simple" }
                            ));
                        }
                        if got.is_err() {
                            return (reads, wrong);
                        }
                    }
                }
                (reads, wrong)
            }));
        }
        Hammer { stop, tasks }
    }

    /// Stops the readers; fails the test if any read was wrong.
    async fn finish(self, when: &str) {
        self.stop.store(true, Ordering::SeqCst);
        let (mut reads, mut wrong) = (0, Vec::new());
        for task in self.tasks {
            let (n, w) = task.await.expect("reader task panicked");
            reads += n;
            wrong.extend(w);
        }
        assert!(
            wrong.is_empty(),
            "{when}: {} of {reads} reads were wrong, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        assert!(reads > 0);
    }
}

/// Waits (≤ 10 s) until reads hit again, every read returning `want`.
async fn caching_resumes(proxy: &CachingProxy, client: &Client, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let hits = proxy.hits("t");
    while proxy.hits("t") < hits + 2 {
        assert!(
            Instant::now() < deadline,
            "caching did not resume within 10s of redis answering again \
             (errors: lookup {}, put {}, invalidate {})",
            proxy.errors("lookup"),
            proxy.errors("put"),
            proxy.errors("invalidate")
        );
        read_both(client, want, "after recovery").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_while_redis_is_down_is_never_undone_by_its_old_data() {
    let mut redis = RedisProcess::start();
    let (_pg, proxy) = cached_in(&redis).await;
    let client = proxy.connect().await;
    fill(&proxy, &client, "old").await;

    // Down, with the entries saved: a restart brings them back.
    redis.stop_saving();
    read_both(&client, "old", "redis down, before the write").await;
    let errors = proxy.errors("invalidate");
    write(&client, "new").await;
    assert!(
        proxy.errors("invalidate") > errors,
        "the lost invalidation is counted"
    );
    read_both(&client, "new", "redis down, after the write").await;

    let hammer = Hammer::start(&proxy, 6, "new").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    always(
        &client,
        "new",
        Duration::from_millis(1500),
        "redis back with its old data",
    )
    .await;
    hammer.finish("redis back with its old data").await;
    caching_resumes(&proxy, &client, "new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_from_an_older_snapshot_never_serves_invalidated_entries() {
    let mut redis = RedisProcess::start();
    let (_pg, proxy) = cached_in(&redis).await;
    let client = proxy.connect().await;
    fill(&proxy, &client, "old").await;
    // The snapshot holds the entries and the table versions before the write.
    redis.save();
    let errors = proxy.errors("invalidate");
    write(&client, "new").await;
    assert_eq!(
        proxy.errors("invalidate"),
        errors,
        "the invalidation itself succeeded"
    );
    read_both(&client, "new", "after the write").await;

    // Redis loses the invalidation: it comes back from the older snapshot.
    let hammer = Hammer::start(&proxy, 6, "new").await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    always(
        &client,
        "new",
        Duration::from_millis(1500),
        "redis restarted from a snapshot older than the write",
    )
    .await;
    hammer
        .finish("redis restarted from a snapshot older than the write")
        .await;
    caching_resumes(&proxy, &client, "new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_invalidation_while_redis_still_answers_reads_never_serves_the_old_entry() {
    let redis = RedisProcess::start();
    let (_pg, proxy) = cached_in(&redis).await;
    let client = proxy.connect().await;
    fill(&proxy, &client, "old").await;

    // Redis keeps answering reads (the lookup script only GETs) but refuses
    // every write: the invalidation is lost, the connection never drops.
    let reply = redis.cli(&["CONFIG", "SET", "min-replicas-to-write", "1"]);
    assert_eq!(reply.trim(), "OK");
    let errors = proxy.errors("invalidate");
    write(&client, "new").await;
    assert!(
        proxy.errors("invalidate") > errors,
        "the refused invalidation is counted"
    );
    always(
        &client,
        "new",
        Duration::from_millis(1000),
        "invalidation refused by redis",
    )
    .await;

    let reply = redis.cli(&["CONFIG", "SET", "min-replicas-to-write", "0"]);
    assert_eq!(reply.trim(), "OK");
    always(
        &client,
        "new",
        Duration::from_millis(1000),
        "redis accepting writes again",
    )
    .await;
    caching_resumes(&proxy, &client, "new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_delays_queries_by_at_most_the_store_timeout() {
    let mut redis = RedisProcess::start();
    let (_pg, proxy) = cached_in(&redis).await;
    let client = proxy.connect().await;
    fill(&proxy, &client, "old").await;

    redis.freeze();
    read_both(&client, "old", "redis frozen").await;
    assert!(proxy.errors("lookup") >= 1, "timed-out lookups are counted");
    write(&client, "new").await;
    read_both(&client, "new", "redis frozen, after a write").await;
    // A client connecting now is served too.
    let late = proxy.connect().await;
    read_both(&late, "new", "redis frozen, new client").await;

    redis.thaw();
    always(
        &client,
        "new",
        Duration::from_millis(1000),
        "redis thawed after missing an invalidation",
    )
    .await;
    caching_resumes(&proxy, &client, "new").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_at_startup_still_serves_queries_from_upstream() {
    // A port nobody listens on (a redis-server that was started and stopped).
    let mut redis = RedisProcess::start();
    redis.stop_saving();
    let started = Instant::now();
    let (_pg, proxy) = cached_in(&redis).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "pgstash took {:?} to start without redis",
        started.elapsed()
    );
    let client = proxy.connect().await;
    for _ in 0..3 {
        read_both(&client, "old", "redis unreachable").await;
    }
    write(&client, "new").await;
    read_both(&client, "new", "redis unreachable, after a write").await;
    assert_eq!(proxy.hits("t"), 0);
    assert!(
        proxy.errors("lookup") >= 1,
        "failed lookups are counted in pgstash_cache_errors_total"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_comes_up_after_startup_is_used_once_it_answers() {
    let mut redis = RedisProcess::start();
    redis.stop_saving();
    let (_pg, proxy) = cached_in(&redis).await;
    let client = proxy.connect().await;
    read_both(&client, "old", "redis unreachable").await;
    redis.restart();
    caching_resumes(&proxy, &client, "old").await;
}

/// An outage costs a cached query what pass-through costs: after the first
/// call that fails or times out, the store is not asked (lookups and fills
/// go straight upstream) until a probe sees it answer again, and `/readyz`
/// stays 200 while Postgres is up (`/readyz?store=1` reports the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_costs_cached_queries_no_store_timeout_and_readiness_holds() {
    let mut redis = RedisProcess::start();
    // A store timeout no query may pay more than once: a read that waited
    // on the frozen Redis would show it.
    let timeout = Duration::from_secs(2);
    let (_pg, proxy) = caching(&[TABLE], RULES, |c| {
        redis.configure(c);
        c.cache.key_prefix = pgstash_tests::unique_name("outage");
        c.cache.store_timeout = timeout;
    })
    .await;
    let client = proxy.connect().await;
    fill(&proxy, &client, "old").await;
    let get = |path: &'static str| {
        let addr = proxy.metrics_addr;
        async move {
            pgstash_tests::operate::http::request(addr, "GET", path, &[])
                .await
                .expect(path)
        }
    };

    redis.freeze();
    let mut took = Vec::new();
    for i in 0..40 {
        let (got, t) = timed_read(&client, i % 2 == 1).await;
        assert_eq!(got, "old");
        took.push(t);
    }
    took.sort();
    let (p50, p90) = (took[took.len() / 2], took[took.len() * 9 / 10]);
    assert!(
        p90 < timeout / 10,
        "reads during the outage: p50 {p50:?}, p90 {p90:?} (store timeout {timeout:?}): they waited on the store"
    );
    assert!(
        proxy.bypassed("store_down") >= 30,
        "reads skipped the store"
    );
    let ready = get("/readyz").await;
    assert_eq!(ready.status, 200, "queries are answered: {}", ready.body);
    assert!(
        ready.body.contains("cache store unavailable"),
        "{}",
        ready.body
    );
    assert_eq!(get("/readyz?store=1").await.status, 503);
    let metrics = get("/metrics").await;
    assert!(
        metrics.body.contains("\npgstash_cache_store_up 0\n"),
        "{}",
        metrics.body
    );

    // A write meanwhile: its invalidation fails closed as before.
    write(&client, "new").await;
    read_both(&client, "new", "redis frozen, after the write").await;
    redis.thaw();
    always(
        &client,
        "new",
        Duration::from_millis(1500),
        "redis answering again with its old data",
    )
    .await;
    caching_resumes(&proxy, &client, "new").await;
    assert_eq!(get("/readyz?store=1").await.status, 200);
}
