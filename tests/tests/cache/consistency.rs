//! G1 (no stale fill), G2 (read-your-writes) and G3 (instances agree),
//! checked under concurrency against the in-process store and Redis.
//!
//! The checker: writers increment rows through pgstash and, once a write is
//! acknowledged, publish the value it returned; readers note the published
//! value of a row, then read the row through pgstash (a cached rule). A read
//! older than a value acknowledged before it started is a violation. Values
//! only grow, so "older" is "smaller".

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgstash_tests::cache::{CachingProxy, RedisPrefix};
use pgstash_tests::fixture::{caching, database};
use pgstash_tests::postgres::{column, describe};
use pgstash_tests::TestPostgres;
use rand::Rng;

const RULES: &str = r#"
[[rule]]
name = "counters"
tables = ["counters"]
ttl = "60s"
"#;

/// Rows in the table. A write invalidates every entry of the table (versions
/// are per table), so few rows and a bounded write rate keep hits common.
const ROWS: i32 = 4;
const WRITERS: usize = 3;
const READERS: usize = 8;
/// Bounds of one run: whichever comes first.
const MAX_WRITES: u64 = 3_000;
const MAX_READS: u64 = 30_000;
const MAX_TIME: Duration = Duration::from_secs(8);
/// Each writer lets this many reads (of all readers) pass between two of
/// its writes, so the ratio of reads to writes is the same on any machine.
const READS_PER_WRITE: u64 = 50;

#[derive(Default)]
struct Shared {
    /// Per row, the largest value whose write was acknowledged.
    acked: Vec<AtomicI64>,
    writes: AtomicU64,
    reads: AtomicU64,
    stop: AtomicBool,
    violations: Mutex<Vec<String>>,
}

impl Shared {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    fn violation(&self, what: String) {
        let mut v = self.violations.lock().unwrap();
        if v.len() < 20 {
            v.push(what);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The table the checker writes and reads: ROWS counters at 0.
fn counters() -> String {
    format!(
        "CREATE TABLE counters (id int PRIMARY KEY, v bigint NOT NULL); \
         INSERT INTO counters SELECT g, 0 FROM generate_series(1, {ROWS}) g"
    )
}

/// Reads row `id` through the proxy, alternating protocols by reader.
async fn read_row(
    client: &tokio_postgres::Client,
    stmt: &tokio_postgres::Statement,
    simple: bool,
    id: i32,
) -> i64 {
    if simple {
        let sql = format!("SELECT v FROM counters WHERE id = {id}");
        column(client, &sql).await[0]
            .as_deref()
            .expect("v is not null")
            .parse()
            .expect("v is a number")
    } else {
        client
            .query_one(stmt, &[&id])
            .await
            .unwrap_or_else(|e| panic!("read: {}", describe(&e)))
            .get(0)
    }
}

async fn writer(proxy_url: String, shared: Arc<Shared>) {
    let client = pgstash_tests::postgres::connect(&proxy_url).await;
    let update = client
        .prepare("UPDATE counters SET v = v + 1 WHERE id = $1 RETURNING v")
        .await
        .unwrap();
    let read = client
        .prepare("SELECT v FROM counters WHERE id = $1")
        .await
        .unwrap();
    while shared.running() && shared.writes.fetch_add(1, Ordering::SeqCst) < MAX_WRITES {
        let id = rand::rng().random_range(1..=ROWS);
        let reads_before = shared.reads.load(Ordering::SeqCst);
        let v: i64 = client
            .query_one(&update, &[&id])
            .await
            .unwrap_or_else(|e| panic!("update: {}", describe(&e)))
            .get(0);
        shared.acked[id as usize].fetch_max(v, Ordering::SeqCst);
        // Read-your-writes on the writer's own connection.
        let own = read_row(&client, &read, false, id).await;
        if own < v {
            shared.violation(format!(
                "writer read row {id} = {own} right after its write of {v} was acknowledged"
            ));
        }
        while shared.running()
            && shared.reads.load(Ordering::SeqCst) < reads_before + READS_PER_WRITE
            && shared.reads.load(Ordering::SeqCst) < MAX_READS
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn reader(proxy_url: String, shared: Arc<Shared>, simple: bool) {
    let client = pgstash_tests::postgres::connect(&proxy_url).await;
    let stmt = client
        .prepare("SELECT v FROM counters WHERE id = $1")
        .await
        .unwrap();
    while shared.running() && shared.reads.fetch_add(1, Ordering::SeqCst) < MAX_READS {
        let id = rand::rng().random_range(1..=ROWS);
        let noted = shared.acked[id as usize].load(Ordering::SeqCst);
        let got = read_row(&client, &stmt, simple, id).await;
        if got < noted {
            shared.violation(format!(
                "{} read of row {id} returned {got}, but {noted} was acknowledged before the read began",
                if simple { "simple" } else { "extended" }
            ));
        }
    }
}

/// Runs writers and readers against `proxy`, then checks the outcome.
async fn check_no_stale_reads(pg: &TestPostgres, proxy: &CachingProxy, store: &str) {
    let shared = Arc::new(Shared {
        acked: (0..=ROWS).map(|_| AtomicI64::new(0)).collect(),
        ..Shared::default()
    });
    let url = proxy.db_url();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        tasks.push(tokio::spawn(writer(url.clone(), shared.clone())));
    }
    for i in 0..READERS {
        tasks.push(tokio::spawn(reader(
            url.clone(),
            shared.clone(),
            i % 2 == 0,
        )));
    }
    let started = Instant::now();
    let stopper = {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(MAX_TIME).await;
            shared.stop.store(true, Ordering::SeqCst);
        })
    };
    for t in tasks {
        tokio::time::timeout(MAX_TIME + Duration::from_secs(30), t)
            .await
            .expect("a checker task hung")
            .expect("a checker task panicked");
    }
    stopper.abort();

    let reads = shared.reads.load(Ordering::SeqCst).min(MAX_READS);
    let writes = shared.writes.load(Ordering::SeqCst).min(MAX_WRITES);
    let (hits, misses) = (proxy.hits("counters"), proxy.misses("counters"));
    let violations = shared.violations.lock().unwrap().clone();
    eprintln!(
        "{store}: {writes} writes, {reads} reads (+{writes} own reads) in {:?}: \
         {hits} hits, {misses} misses, {} violations",
        started.elapsed(),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{store}: stale reads:\n{}",
        violations.join("\n")
    );

    // The final state agrees with Postgres.
    let direct = pg.connect().await;
    let via = proxy.connect().await;
    for id in 1..=ROWS {
        let want: i64 = direct
            .query_one("SELECT v FROM counters WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        let stmt = via
            .prepare("SELECT v FROM counters WHERE id = $1")
            .await
            .unwrap();
        assert_eq!(read_row(&via, &stmt, false, id).await, want, "row {id}");
        assert_eq!(read_row(&via, &stmt, true, id).await, want, "row {id}");
    }

    // Without hits the run proves nothing about the cache.
    assert!(
        writes >= 100 && reads >= 2_000,
        "{store}: too few operations to mean anything ({writes} writes, {reads} reads)"
    );
    let total_reads = reads + writes;
    assert!(
        hits * 4 >= total_reads,
        "{store}: only {hits} of {total_reads} reads were hits; the checker needs a real share of hits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_never_see_acknowledged_writes_undone_in_process_store() {
    let (pg, proxy) = caching(&[&counters()], RULES, |c| c.pool.size = 8).await;
    check_no_stale_reads(&pg, &proxy, "in-process store").await;
}

async fn check_redis(mode: pgstash::CacheMode, store: &str) {
    let redis = RedisPrefix::new();
    let (pg, proxy) = caching(&[&counters()], RULES, |c| {
        c.pool.size = 8;
        redis.configure(c);
        c.cache.mode = mode;
    })
    .await;
    check_no_stale_reads(&pg, &proxy, store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_never_see_acknowledged_writes_undone_redis() {
    check_redis(pgstash::CacheMode::Strict, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_never_see_acknowledged_writes_undone_redis_fast_mode() {
    check_redis(pgstash::CacheMode::Fast, "redis, fast mode").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_one_instance_is_seen_by_another_sharing_redis() {
    let pg = database(&[&counters()]).await;
    let redis = RedisPrefix::new();
    let a = CachingProxy::start(&pg, RULES, |c| redis.configure(c)).await;
    let b = CachingProxy::start(&pg, RULES, |c| redis.configure(c)).await;
    let client_a = a.connect().await;
    let client_b = b.connect().await;
    let stmt_a = client_a
        .prepare("SELECT v FROM counters WHERE id = $1")
        .await
        .unwrap();
    let stmt_b = client_b
        .prepare("SELECT v FROM counters WHERE id = $1")
        .await
        .unwrap();

    // Fill through A (both protocols), and see the entries hit.
    for simple in [true, false] {
        assert_eq!(read_row(&client_a, &stmt_a, simple, 1).await, 0);
    }
    a.wait_for_fills("counters", 2).await;
    for simple in [true, false] {
        assert_eq!(read_row(&client_a, &stmt_a, simple, 1).await, 0);
    }
    assert_eq!(a.hits("counters"), 2, "A's entries are filled");
    // B serves the same entries from the shared Redis.
    for simple in [true, false] {
        assert_eq!(read_row(&client_b, &stmt_b, simple, 1).await, 0);
    }
    assert_eq!(b.hits("counters"), 2, "B hits the entries A filled");

    // A write acknowledged by B is seen through A at once.
    let n = client_b
        .execute("UPDATE counters SET v = 41 WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(n, 1);
    for simple in [true, false] {
        assert_eq!(
            read_row(&client_a, &stmt_a, simple, 1).await,
            41,
            "A served its entry from before B's acknowledged write ({} protocol)",
            if simple { "simple" } else { "extended" }
        );
    }
    assert_eq!(
        a.hits("counters"),
        2,
        "the reads after the write were misses"
    );

    // And the other way round, in a transaction through A.
    client_a
        .batch_execute("BEGIN; UPDATE counters SET v = 42 WHERE id = 1; COMMIT")
        .await
        .unwrap();
    for simple in [true, false] {
        assert_eq!(read_row(&client_b, &stmt_b, simple, 1).await, 42);
    }
}
