//! Fast mode (`cache.mode = "fast"`): hits served from a local tier in front
//! of Redis, other instances' invalidations followed over pub/sub.
//!
//! Each test runs a redis-server of its own, so the Redis command counts it
//! reads and the pub/sub connections it kills are its alone. Instances use
//! a `local_max_age` of a minute: a test that sees another instance's write
//! within seconds proves the invalidation message did it, not the age bound.

use std::time::{Duration, Instant};

use pgstash_tests::cache::{executions, CachingProxy, COUNTER_FUNCTIONS};
use pgstash_tests::fixture::database;
use pgstash_tests::postgres::value;
use pgstash_tests::redis_process::RedisProcess;
use pgstash_tests::TestPostgres;

const RULES: &str = r#"
[[rule]]
name = "counters"
tables = ["counters"]
ttl = "60s"
"#;

/// Counts one execution per row read (see `COUNTER_FUNCTIONS`).
const READ: &str = "SELECT counted(v) FROM counters WHERE id = 1";

/// How long another instance may take to see a write. Pub/sub delivers in
/// well under a millisecond here; the bound leaves room for a loaded CI.
const CONVERGE: Duration = Duration::from_secs(3);

const COUNTERS: &str = "CREATE TABLE counters (id int PRIMARY KEY, v int NOT NULL); \
                        INSERT INTO counters VALUES (1, 0), (2, 0)";

/// A fast-mode instance on `redis`, caching the counters of `pg`.
async fn fast(pg: &TestPostgres, redis: &RedisProcess) -> CachingProxy {
    CachingProxy::start(pg, RULES, |c| {
        redis.configure(c);
        c.cache.mode = pgstash::CacheMode::Fast;
        c.cache.local_max_age = Duration::from_secs(60);
    })
    .await
}

/// Waits until the proxy's invalidation subscription is up.
pub(crate) async fn wait_live(proxy: &CachingProxy) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if proxy.local_live() == Some(true) {
            return;
        }
        assert!(Instant::now() < deadline, "fast mode never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read(client: &tokio_postgres::Client) -> String {
    value(client, READ, false).await
}

/// Reads through `client` until it returns `want`, or fails after
/// [`CONVERGE`]; returns how long it took.
async fn converges(client: &tokio_postgres::Client, want: &str, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        let got = read(client).await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < CONVERGE,
            "{what}: still {got} after {CONVERGE:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_hits_are_served_without_calling_redis() {
    let pg = database(&[COUNTER_FUNCTIONS, COUNTERS]).await;
    let redis = RedisProcess::start();
    let proxy = fast(&pg, &redis).await;
    wait_live(&proxy).await;
    let client = proxy.connect().await;

    assert_eq!(read(&client).await, "0");
    proxy.wait_for_fills("counters", 1).await;
    let lookups_before = redis.calls("evalsha");
    let executions_before = executions(&pg).await;
    for _ in 0..50 {
        assert_eq!(read(&client).await, "0");
    }
    assert_eq!(proxy.hits("counters"), 50);
    assert_eq!(proxy.metrics().local_hits.get(), 50, "served locally");
    assert_eq!(
        redis.calls("evalsha"),
        lookups_before,
        "a local hit made a Redis call"
    );
    assert_eq!(executions(&pg).await, executions_before, "nothing upstream");

    // The subscription's heartbeat (a PING every 500 ms) keeps it live.
    let resets = proxy.metrics().local_resets.get();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(read(&client).await, "0");
    assert_eq!(proxy.metrics().local_hits.get(), 51, "still served locally");
    assert_eq!(proxy.metrics().local_resets.get(), resets, "no reset");

    // Its own write is seen at once: the versions move before the ack.
    client
        .execute("UPDATE counters SET v = 7 WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(read(&client).await, "7", "read-your-writes on one instance");
}

/// Two fast-mode instances on `redis`, both subscribed: A has filled the
/// entry of [`READ`], and B, having read it from Redis, serves it locally.
async fn two_instances(
    pg: &TestPostgres,
    redis: &RedisProcess,
) -> (
    CachingProxy,
    CachingProxy,
    tokio_postgres::Client,
    tokio_postgres::Client,
) {
    let a = fast(pg, redis).await;
    let b = fast(pg, redis).await;
    wait_live(&a).await;
    wait_live(&b).await;
    let (client_a, client_b) = (a.connect().await, b.connect().await);
    assert_eq!(read(&client_a).await, "0");
    a.wait_for_fills("counters", 1).await;
    for _ in 0..3 {
        assert_eq!(read(&client_b).await, "0");
    }
    assert!(
        b.metrics().local_hits.get() >= 2,
        "B serves A's entry locally"
    );
    (a, b, client_a, client_b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_write_arrives_over_pubsub() {
    let pg = database(&[COUNTER_FUNCTIONS, COUNTERS]).await;
    let redis = RedisProcess::start();
    let (_a, b, client_a, client_b) = two_instances(&pg, &redis).await;

    // A write through A reaches B long before the minute of local_max_age.
    client_a
        .execute("UPDATE counters SET v = 41 WHERE id = 1", &[])
        .await
        .unwrap();
    let took = converges(&client_b, "41", "B after A's UPDATE").await;
    eprintln!("B saw A's write after {took:?}");

    // And a committed transaction through B reaches A.
    assert_eq!(read(&client_a).await, "41");
    client_b
        .batch_execute("BEGIN; UPDATE counters SET v = 42 WHERE id = 1; COMMIT")
        .await
        .unwrap();
    converges(&client_a, "42", "A after B's COMMIT").await;

    // A write pgstash cannot attribute to tables (a DO block) renews the
    // epoch; B drops its whole local tier.
    assert_eq!(read(&client_b).await, "42");
    let resets = b.metrics().local_resets.get();
    client_a
        .batch_execute("DO $$ BEGIN UPDATE counters SET v = 43 WHERE id = 1; END $$")
        .await
        .unwrap();
    converges(&client_b, "43", "B after A's DO block").await;
    assert!(b.metrics().local_resets.get() > resets, "B reset its tier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_stops_local_hits_until_it_is_back() {
    let pg = database(&[COUNTER_FUNCTIONS, COUNTERS]).await;
    let redis = RedisProcess::start();
    let (_a, b, client_a, client_b) = two_instances(&pg, &redis).await;
    let resets = b.metrics().local_resets.get();

    // Redis drops every subscriber; a write right away may be published
    // while B is not subscribed, and its message is lost to B.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(killed.trim().parse::<u32>().unwrap_or(0) >= 2, "{killed}");
    client_a
        .execute("UPDATE counters SET v = 5 WHERE id = 1", &[])
        .await
        .unwrap();
    converges(&client_b, "5", "B after losing its subscription").await;
    assert!(b.metrics().local_resets.get() > resets, "B reset its tier");

    // Once B has subscribed again, it follows writes as before.
    wait_live(&b).await;
    assert_eq!(read(&client_b).await, "5");
    assert_eq!(read(&client_b).await, "5");
    client_a
        .execute("UPDATE counters SET v = 6 WHERE id = 1", &[])
        .await
        .unwrap();
    converges(&client_b, "6", "B after re-subscribing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresponsive_subscription_is_noticed() {
    let pg = database(&[COUNTER_FUNCTIONS, COUNTERS]).await;
    let mut redis = RedisProcess::start();
    let proxy = fast(&pg, &redis).await;
    wait_live(&proxy).await;

    // A frozen server keeps the connection open and answers nothing: only
    // the heartbeat can tell, and then nothing is served locally.
    redis.freeze();
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.local_live() != Some(false) {
        assert!(
            Instant::now() < deadline,
            "the frozen subscription still counts as live"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.thaw();
    wait_live(&proxy).await;
}
