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

pub(crate) const RULES: &str = r#"
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
pub(crate) fn counters() -> String {
    format!(
        "CREATE TABLE counters (id int PRIMARY KEY, v bigint NOT NULL); \
         INSERT INTO counters SELECT g, 0 FROM generate_series(1, {ROWS}) g"
    )
}

/// The checker's read, prepared on `client`.
pub(crate) async fn prepare_read(client: &tokio_postgres::Client) -> tokio_postgres::Statement {
    client
        .prepare("SELECT v FROM counters WHERE id = $1")
        .await
        .expect("prepare the read")
}

/// Reads row `id` through the proxy, alternating protocols by reader.
pub(crate) async fn read_row(
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
    let read = prepare_read(&client).await;
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
    let stmt = prepare_read(&client).await;
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

async fn check_no_stale_reads(pg: &TestPostgres, proxy: &CachingProxy, store: &str) {
    check_across(pg, &[proxy], store, None).await;
}

/// Something done to the store while the checker runs (on a blocking
/// thread: killing a server and waiting for its failover take seconds).
pub type Disruption = Box<dyn FnOnce() + Send + 'static>;

/// Runs writers and readers spread over `proxies` (a writer's reads and
/// another instance's), with `disruption` started a quarter into the run,
/// then checks the outcome.
pub async fn check_across(
    pg: &TestPostgres,
    proxies: &[&CachingProxy],
    store: &str,
    disruption: Option<Disruption>,
) {
    let shared = Arc::new(Shared {
        acked: (0..=ROWS).map(|_| AtomicI64::new(0)).collect(),
        ..Shared::default()
    });
    let urls: Vec<String> = proxies.iter().map(|p| p.db_url()).collect();
    let url = |i: usize| urls[i % urls.len()].clone();
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        tasks.push(tokio::spawn(writer(url(i), shared.clone())));
    }
    for i in 0..READERS {
        tasks.push(tokio::spawn(reader(url(i + 1), shared.clone(), i % 2 == 0)));
    }
    let disrupted = disruption.is_some();
    let disruption = disruption.map(|act| {
        tokio::spawn(async move {
            tokio::time::sleep(MAX_TIME / 4).await;
            tokio::task::spawn_blocking(act).await
        })
    });
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
    if let Some(disruption) = disruption {
        disruption
            .await
            .expect("disruption task")
            .expect("the disruption failed");
    }

    let reads = shared.reads.load(Ordering::SeqCst).min(MAX_READS);
    let writes = shared.writes.load(Ordering::SeqCst).min(MAX_WRITES);
    let hits: u64 = proxies.iter().map(|p| p.hits("counters")).sum();
    let misses: u64 = proxies.iter().map(|p| p.misses("counters")).sum();
    let violations = shared.violations.lock().unwrap().clone();
    let lookup_errors: u64 = proxies.iter().map(|p| p.errors("lookup")).sum();
    let skipped: u64 = proxies.iter().map(|p| p.bypassed("store_down")).sum();
    eprintln!(
        "{store}: {writes} writes, {reads} reads (+{writes} own reads) in {:?}: \
         {hits} hits, {misses} misses, {lookup_errors} lookup errors, \
         {skipped} lookups skipped (store down), {} violations",
        started.elapsed(),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{store}: stale reads:\n{}",
        violations.join("\n")
    );

    // The final state agrees with Postgres, through every instance.
    let direct = pg.connect().await;
    for (proxy, id) in proxies
        .iter()
        .flat_map(|p| (1..=ROWS).map(move |id| (p, id)))
    {
        let via = proxy.connect().await;
        let want: i64 = direct
            .query_one("SELECT v FROM counters WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        let stmt = prepare_read(&via).await;
        assert_eq!(read_row(&via, &stmt, false, id).await, want, "row {id}");
        assert_eq!(read_row(&via, &stmt, true, id).await, want, "row {id}");
    }

    // Without hits the run proves nothing about the cache.
    assert!(
        writes >= 100 && reads >= 2_000,
        "{store}: too few operations to mean anything ({writes} writes, {reads} reads)"
    );
    let total_reads = reads + writes;
    // A disrupted store serves nothing until it has recovered.
    let share = if disrupted { 10 } else { 4 };
    assert!(
        hits * share >= total_reads,
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
    let stmt_a = prepare_read(&client_a).await;
    let stmt_b = prepare_read(&client_b).await;

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
