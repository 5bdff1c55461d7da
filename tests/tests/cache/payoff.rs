//! The cache spends store calls only where they count: a rule whose reads
//! never hit is looked up for a sample of its keys only (unless the rule
//! says `adaptive = false`), a fill that a write overtook is not written to
//! Redis, where no lookup could ever reach it, and writers waiting for an
//! invalidation share the next script call.
//!
//! Against the shared Redis under a prefix of the test's own, except where
//! Redis is frozen (a redis-server of the test's own).

use std::time::{Duration, Instant};

use pgstash_tests::cache::RedisPrefix;
use pgstash_tests::fixture::caching;
use pgstash_tests::postgres::describe;
use pgstash_tests::redis_process::RedisProcess;
use tokio_postgres::Client;

/// The shared Redis under a prefix, with a store timeout long enough that a
/// machine busy with the rest of the suite does not trip the store's
/// circuit breaker (these tests count every lookup).
fn patient(redis: &RedisPrefix, config: &mut pgstash::Config) {
    redis.configure(config);
    config.cache.store_timeout = Duration::from_secs(2);
}

/// Requests of a rule in which its sample makes one window, on average.
const WINDOW: i32 = (pgstash::cache::payoff::WINDOW * pgstash::cache::payoff::SAMPLE as u64) as i32;

const FIXTURE: &str = r#"
CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO t SELECT i, i * 10 FROM generate_series(1, 30000) i;
CREATE TABLE u (id serial PRIMARY KEY, note text);
"#;

fn rules(adaptive: bool) -> String {
    format!(
        r#"
[[rule]]
name = "r"
query = "SELECT v FROM t WHERE id = $1"
invalidate_on = ["u"]
ttl = "60s"
adaptive = {adaptive}
"#
    )
}

async fn read(client: &Client, id: i32) -> i32 {
    client
        .query_one("SELECT v FROM t WHERE id = $1", &[&id])
        .await
        .unwrap_or_else(|e| panic!("id {id}: {}", describe(&e)))
        .get(0)
}

/// Reads `ids` once each, checking every answer.
async fn read_each(client: &Client, ids: std::ops::RangeInclusive<i32>) {
    for id in ids {
        assert_eq!(read(client, id).await, id * 10, "the answer for id {id}");
    }
}

#[tokio::test]
async fn reads_that_never_hit_are_looked_up_only_for_a_sample_of_keys() {
    let redis = RedisPrefix::new();
    let (_pg, proxy) = caching(&[FIXTURE], &rules(true), |c| patient(&redis, c)).await;
    let client = proxy.connect().await;

    // Reads of distinct keys: every one misses, until the sample's window
    // is complete (8,192 reads on average).
    let mut id = 0;
    while proxy.rule_bypassing("r") == 0 {
        id += 1;
        assert!(
            id <= 3 * WINDOW,
            "no hits in {id} reads, and still looked up"
        );
        assert_eq!(read(&client, id).await, id * 10);
    }
    assert!(id >= WINDOW / 2, "judged after only {id} reads");
    assert_eq!(proxy.misses("r"), id as u64);
    assert_eq!(proxy.hits("r"), 0);

    // From now on most reads go straight upstream, still answered right.
    let (misses, lookups_before) = (proxy.misses("r"), proxy.store_lookups());
    let (first, more) = (id + 1, 3200);
    read_each(&client, first..=first + more - 1).await;
    let looked_up = proxy.misses("r") - misses + proxy.hits("r");
    let skipped = proxy.bypassed("not_paying");
    assert_eq!(looked_up + skipped, more as u64);
    assert_eq!(proxy.store_lookups() - lookups_before, looked_up);
    // One key in 64 is sampled: 50 expected of 3200.
    let sample = pgstash::cache::payoff::SAMPLE;
    assert!(
        (20..=100).contains(&looked_up),
        "{looked_up} of {more} reads were looked up, expected about 1 in {sample}"
    );

    // The sample is by key: the same keys are looked up again, and the
    // entries they filled are hits.
    read_each(&client, first..=first + more - 1).await;
    let hits = proxy.hits("r");
    assert!(
        hits + 2 >= looked_up && hits <= looked_up,
        "{hits} hits on the second pass over {looked_up} sampled keys"
    );
}

#[tokio::test]
async fn a_rule_with_adaptive_false_looks_every_read_up() {
    let redis = RedisPrefix::new();
    let (_pg, proxy) = caching(&[FIXTURE], &rules(false), |c| patient(&redis, c)).await;
    let client = proxy.connect().await;

    let reads = WINDOW * 3 / 2;
    read_each(&client, 1..=reads).await;
    assert_eq!(proxy.misses("r"), reads as u64);
    assert_eq!(proxy.store_lookups(), reads as u64);
    assert_eq!(proxy.bypassed("not_paying"), 0);
    assert_eq!(proxy.rule_bypassing("r"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_overtaken_by_a_write_is_not_written_to_redis() {
    let redis = RedisPrefix::new();
    let (pg, proxy) = caching(&[FIXTURE], &rules(true), |c| patient(&redis, c)).await;
    let reader = proxy.connect().await;
    let writer = proxy.connect().await;
    let entries = || {
        redis
            .keys()
            .into_iter()
            .filter(|k| k.contains("}e:"))
            .count()
    };

    // One ordinary fill first (it also settles the read's decision).
    assert_eq!(read(&reader, 1).await, 10);
    proxy.wait_for_fills("r", 1).await;
    assert_eq!(entries(), 1);

    // Hold the reader's query upstream after its lookup, with a lock
    // (prepared before: Postgres would hold a Parse of it too).
    let statement = reader
        .prepare("SELECT v FROM t WHERE id = $1")
        .await
        .unwrap();
    let locker = pg.connect().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let blocked = tokio::spawn(async move {
        let row = reader.query_one(&statement, &[&2]).await;
        row.map(|r| r.get::<_, i32>(0)).map_err(|e| describe(&e))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = locker
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT v FROM t%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the read never reached the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.misses("r"), 2, "the held read looked up and missed");

    // A write the rule is invalidated by commits and is acknowledged
    // while the read is still upstream.
    writer
        .execute("INSERT INTO u (note) VALUES ('x')", &[])
        .await
        .unwrap();
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(blocked.await.unwrap(), Ok(20));

    // Its fill names the version before the write: it is not stored.
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy
        .metrics()
        .fills_skipped
        .with_label_values(&["r"])
        .get()
        < 1
    {
        assert!(
            Instant::now() < deadline,
            "the overtaken fill was not skipped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(proxy.fills("r"), 1, "only the first fill was stored");
    assert_eq!(entries(), 1, "no entry was written for the overtaken fill");

    // The next read fills normally under the new version.
    let reader = proxy.connect().await;
    assert_eq!(read(&reader, 2).await, 20);
    proxy.wait_for_fills("r", 2).await;
    assert_eq!(entries(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_waiting_for_an_invalidation_share_the_next_one() {
    let mut redis = RedisProcess::start();
    let (pg, proxy) = caching(&[FIXTURE], &rules(true), |c| {
        redis.configure(c);
        // Long enough to hold a call across the freeze below.
        c.cache.store_timeout = Duration::from_secs(20);
    })
    .await;
    let reader = proxy.connect().await;
    assert_eq!(read(&reader, 1).await, 10);
    proxy.wait_for_fills("r", 1).await;
    assert_eq!(read(&reader, 1).await, 10);
    assert_eq!(proxy.hits("r"), 1, "the entry is cached");

    // Redis stops answering: the first writer's invalidation is sent and
    // waits; three more writers commit and queue behind it.
    let incr_before = redis.calls("incr");
    redis.freeze();
    let write = |id: i32| {
        let proxy = &proxy;
        async move {
            let client = proxy.connect().await;
            let update = format!("UPDATE t SET v = v + 1 WHERE id = {id}");
            client
                .execute(update.as_str(), &[])
                .await
                .map_err(|e| describe(&e))
        }
    };
    let direct = pg.connect().await;
    let committed = |id: i32| {
        let direct = &direct;
        async move {
            let row = direct
                .query_one("SELECT v FROM t WHERE id = $1", &[&id])
                .await;
            row.unwrap().get::<_, i32>(0) == id * 10 + 1
        }
    };
    let first = tokio::spawn({
        let url = proxy.url(&pg.database, pg.superuser());
        async move {
            let client = pgstash_tests::postgres::connect(&url).await;
            client
                .execute("UPDATE t SET v = v + 1 WHERE id = 1", &[])
                .await
                .map_err(|e| describe(&e))
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !committed(1).await {
        assert!(Instant::now() < deadline, "the first write never committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its acknowledgement now waits for the frozen Redis.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !first.is_finished(),
        "a write was acknowledged before its invalidation"
    );
    let rest = async { tokio::join!(write(2), write(3), write(4)) };
    let thaw = async {
        // All four writers have asked for their invalidation (the counter
        // moves just before a writer joins the queue).
        let deadline = Instant::now() + Duration::from_secs(10);
        while proxy.invalidations("t") < 4 {
            assert!(
                Instant::now() < deadline,
                "the writes never reached invalidation"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        redis.thaw();
    };
    let (results, ()) = tokio::join!(rest, thaw);
    assert_eq!(first.await.unwrap(), Ok(1));
    assert_eq!(results, (Ok(1), Ok(1), Ok(1)));

    // Four writes, two script calls: the first one's, then one for the
    // three that waited (one table, bumped once).
    assert_eq!(redis.calls("incr") - incr_before, 2);
    // Every acknowledged write is seen (G2).
    for id in 1..=4 {
        assert_eq!(read(&reader, id).await, id * 10 + 1);
    }
}
