//! G8: writes made directly on Postgres — not through pgstash — are
//! invalidated from the logical replication stream within `max_lag`, and
//! nothing cached is served while pgstash cannot prove it. Each test runs
//! its own Postgres with `wal_level = logical` (the shared one has
//! `replica`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgstash_tests::cache::CachingProxy;
use pgstash_tests::operate::http::request;
use pgstash_tests::operate::throwaway::ThrowawayPostgres;
use pgstash_tests::postgres::{connect, describe, try_value, value};
use pgstash_tests::TestPostgres;
use tokio_postgres::Client;

mod visibility;

const MAX_LAG: Duration = Duration::from_millis(500);

const SCHEMA: &str = r#"
CREATE TABLE items (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO items SELECT g, '0' FROM generate_series(1, 5) g;
CREATE TABLE counters (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO counters VALUES (1, 0);
CREATE TABLE events (id serial PRIMARY KEY, amount int NOT NULL);
CREATE FUNCTION count_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE counters SET v = v + NEW.amount WHERE id = 1;
  RETURN NEW;
END $$;
CREATE TRIGGER count_event AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION count_event();
CREATE TABLE parents (id int PRIMARY KEY);
CREATE TABLE children (id int PRIMARY KEY, parent int NOT NULL REFERENCES parents ON DELETE CASCADE);
INSERT INTO parents VALUES (1), (2);
INSERT INTO children VALUES (1, 1), (2, 1), (3, 2);
CREATE TABLE measurements (id int NOT NULL, v int NOT NULL) PARTITION BY RANGE (id);
CREATE TABLE measurements_low PARTITION OF measurements FOR VALUES FROM (0) TO (100);
CREATE TABLE measurements_high PARTITION OF measurements FOR VALUES FROM (100) TO (200);
INSERT INTO measurements VALUES (1, 1), (101, 2);
CREATE TABLE scratch (id int);
INSERT INTO scratch VALUES (1), (2);
CREATE PUBLICATION pgstash FOR ALL TABLES;
"#;

const RULES: &str = r#"
[defaults]
ttl = "600s"

[[rule]]
name = "items"
query = "SELECT v FROM items WHERE id = $1"

[[rule]]
name = "counters"
query = "SELECT v FROM counters WHERE id = 1"

[[rule]]
name = "children"
query = "SELECT count(*) FROM children WHERE parent = 1"

[[rule]]
name = "measurements"
query = "SELECT sum(v) FROM measurements"

[[rule]]
name = "scratch"
query = "SELECT count(*) FROM scratch"
"#;

/// A Postgres of the test's own that decodes its WAL, with the schema and
/// the publication; `None` where the server binaries are missing.
async fn logical_postgres() -> Option<ThrowawayPostgres> {
    let server = ThrowawayPostgres::start_with(
        "-c wal_level=logical -c max_replication_slots=8 -c max_wal_senders=8",
    )?;
    let client = connect(&server.url()).await;
    client.batch_execute(SCHEMA).await.expect("schema");
    Some(server)
}

/// pgstash caching `server` by `RULES`, following its stream.
async fn following(
    server: &ThrowawayPostgres,
    configure: impl FnOnce(&mut pgstash::Config),
) -> (TestPostgres, CachingProxy) {
    let pg = TestPostgres::new().await;
    let url = server.url();
    let proxy = CachingProxy::start(&pg, RULES, |c| {
        c.upstream = pgstash::config::Upstream::parse(&url).expect("upstream URL");
        c.replication.enabled = true;
        c.replication.max_lag = MAX_LAG;
        c.replication.databases = vec!["postgres".into()];
        configure(c);
    })
    .await;
    wait_caught_up(&proxy, Duration::from_secs(20)).await;
    (pg, proxy)
}

fn caught_up(proxy: &CachingProxy) -> bool {
    let context = proxy.handle().context();
    let cache = context.cache.as_ref().expect("caching is on");
    cache.invalidator().freshness().is_current("postgres")
}

async fn wait_caught_up(proxy: &CachingProxy, within: Duration) {
    let deadline = Instant::now() + within;
    while !caught_up(proxy) {
        assert!(Instant::now() < deadline, "replication never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn through(proxy: &CachingProxy) -> String {
    format!("postgres://postgres@{}/postgres", proxy.addr)
}

/// Reads `sql` until a read is a hit of `rule` (the value is cached).
async fn cache(proxy: &CachingProxy, client: &Client, rule: &str, sql: &str) -> String {
    let before = proxy.hits(rule);
    for _ in 0..50 {
        let v = value(client, sql, false).await;
        if proxy.hits(rule) > before {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reasons: Vec<(&str, u64)> = [
        "no_rule",
        "unknown_function",
        "non_immutable_function",
        "unknown_relation",
        "not_plain_read",
        "replication_lag",
    ]
    .into_iter()
    .map(|r| (r, proxy.bypassed(r)))
    .collect();
    panic!("{rule}: never served from the cache; bypasses: {reasons:?}");
}

/// How long after `written` a read through pgstash first returned `want`
/// (polling), failing past `max_lag` + a margin for the poll itself.
async fn seen_within(client: &Client, sql: &str, want: &str, written: Instant) -> Duration {
    loop {
        let v = value(client, sql, false).await;
        if v == want {
            return written.elapsed();
        }
        assert!(
            written.elapsed() < MAX_LAG + Duration::from_millis(200),
            "{sql}: still {v:?} (want {want:?}) {:?} after a direct write",
            written.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn direct_writes_of_every_kind_are_invalidated_within_max_lag() {
    let Some(server) = logical_postgres().await else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let (_pg, proxy) = following(&server, |_| {}).await;
    let reader = connect(&through(&proxy)).await;
    let direct = connect(&server.url()).await;
    // (rule, read, direct write, the read's answer after it)
    let cases = [
        ("items", "SELECT v FROM items WHERE id = 1", "UPDATE items SET v = '7' WHERE id = 1", "7"),
        (
            "items",
            "SELECT v FROM items WHERE id = 2",
            "BEGIN; UPDATE items SET v = '8' WHERE id = 2; UPDATE items SET v = '9' WHERE id = 3; COMMIT",
            "8",
        ),
        ("counters", "SELECT v FROM counters WHERE id = 1", "INSERT INTO events (amount) VALUES (5)", "5"),
        ("children", "SELECT count(*) FROM children WHERE parent = 1", "DELETE FROM parents WHERE id = 1", "0"),
        ("measurements", "SELECT sum(v) FROM measurements", "INSERT INTO measurements VALUES (150, 10)", "13"),
        ("scratch", "SELECT count(*) FROM scratch", "TRUNCATE scratch", "0"),
    ];
    let mut lags = Vec::new();
    for (rule, read, write, want) in cases {
        let before = cache(&proxy, &reader, rule, read).await;
        assert_ne!(before, want, "{rule}: the write must change the answer");
        direct
            .batch_execute(write)
            .await
            .unwrap_or_else(|e| panic!("{write}: {}", describe(&e)));
        let lag = seen_within(&reader, read, want, Instant::now()).await;
        lags.push((rule, lag));
    }
    // A rolled-back write changes nothing and invalidates nothing needed.
    let kept = cache(&proxy, &reader, "items", "SELECT v FROM items WHERE id = 4").await;
    direct
        .batch_execute("BEGIN; UPDATE items SET v = '-1' WHERE id = 4; ROLLBACK")
        .await
        .expect("rollback");
    tokio::time::sleep(MAX_LAG).await;
    assert_eq!(
        value(&reader, "SELECT v FROM items WHERE id = 4", false).await,
        kept
    );
    eprintln!("first seen after a direct write: {lags:?}");
    let counted = proxy
        .handle()
        .context()
        .metrics
        .invalidations
        .with_label_values(&["postgres.items"])
        .get();
    assert!(
        counted > 0,
        "the stream's invalidations are counted by table"
    );
}

/// What every acknowledged direct write and every read through pgstash
/// saw, for the staleness check.
#[derive(Default)]
struct Ledger {
    /// Per row: (acknowledged at, value), in order.
    writes: HashMap<i32, Vec<(Instant, i64)>>,
    reads: u64,
    stale: Vec<String>,
    /// For each write, how long after its acknowledgement a read first
    /// returned it (or a later value).
    first_seen: Vec<Duration>,
    seen: std::collections::HashSet<(i32, i64)>,
}

impl Ledger {
    /// A read of `row` that started at `started` and returned `seen`.
    fn read(&mut self, row: i32, started: Instant, finished: Instant, seen: i64) {
        self.reads += 1;
        let Some(writes) = self.writes.get(&row) else {
            return;
        };
        // Every write acknowledged before `started - max_lag` must show.
        let must = writes
            .iter()
            .filter(|(acked, _)| *acked + MAX_LAG < started)
            .map(|(_, v)| *v)
            .max();
        if let Some(must) = must {
            if seen < must {
                self.stale.push(format!("row {row}: read {seen}, but {must} was acknowledged more than {MAX_LAG:?} before the read began"));
            }
        }
        let fresh: Vec<(Instant, i64)> = writes
            .iter()
            .filter(|(acked, v)| *v <= seen && *acked < finished && !self.seen.contains(&(row, *v)))
            .copied()
            .collect();
        for (acked, v) in fresh {
            self.seen.insert((row, v));
            self.first_seen
                .push(finished.saturating_duration_since(acked));
        }
    }

    /// p50, p99 and max of `first_seen`.
    fn lag_percentiles(&self) -> (Duration, Duration, Duration) {
        let mut all = self.first_seen.clone();
        all.sort();
        let at = |q: f64| {
            all.get(((all.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        (at(0.5), at(0.99), all.last().copied().unwrap_or_default())
    }
}

/// Direct writers and readers through pgstash for `duration`, while
/// `fault` runs; returns the ledger.
async fn check(
    server: &ThrowawayPostgres,
    proxy: &CachingProxy,
    duration: Duration,
    fault: impl std::future::Future<Output = ()>,
) -> Ledger {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(1000));
    let mut tasks = Vec::new();
    {
        let (url, ledger, stop, seq) = (server.url(), ledger.clone(), stop.clone(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&url).await;
            while !stop.load(Ordering::SeqCst) {
                let v = seq.fetch_add(1, Ordering::SeqCst) as i64;
                let row = (v % 5) as i32 + 1;
                match client
                    .execute(
                        "UPDATE items SET v = $1::bigint::int WHERE id = $2",
                        &[&v, &row],
                    )
                    .await
                {
                    Ok(_) => ledger
                        .lock()
                        .unwrap()
                        .writes
                        .entry(row)
                        .or_default()
                        .push((Instant::now(), v)),
                    // Postgres restarting: the write may or may not have
                    // committed; a later one supersedes it.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if let Ok(c) = pgstash_tests::postgres::try_connect(&url).await {
                            client = c;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
    }
    for reader in 0..3 {
        let (url, ledger, stop) = (through(proxy), ledger.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&url).await;
            let mut n = 0i32;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let row = (n + reader) % 5 + 1;
                let sql = format!("SELECT v FROM items WHERE id = {row}");
                let started = Instant::now();
                match try_value(&client, &sql, n % 2 == 0).await {
                    Ok(v) => {
                        let finished = Instant::now();
                        let v: i64 = v.parse().expect("an int");
                        ledger.lock().unwrap().read(row, started, finished, v);
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if let Ok(c) = pgstash_tests::postgres::try_connect(&url).await {
                            client = c;
                        }
                    }
                }
            }
        }));
    }
    let deadline = tokio::time::sleep(duration);
    fault.await;
    deadline.await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("checker task");
    }
    Arc::try_unwrap(ledger)
        .ok()
        .expect("tasks are done")
        .into_inner()
        .unwrap()
}

#[tokio::test]
async fn no_read_is_older_than_max_lag_under_direct_writes() {
    let Some(server) = logical_postgres().await else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let (_pg, proxy) = following(&server, |_| {}).await;
    let ledger = check(&server, &proxy, Duration::from_secs(4), async {}).await;
    let writes: usize = ledger.writes.values().map(Vec::len).sum();
    let (p50, p99, max) = ledger.lag_percentiles();
    eprintln!(
        "{} reads, {} direct writes, {} hits; a direct write first seen after p50 {p50:?}, p99 {p99:?}, max {max:?}",
        ledger.reads,
        writes,
        proxy.hits("items")
    );
    assert!(ledger.stale.is_empty(), "stale reads: {:#?}", ledger.stale);
    assert!(writes > 50 && ledger.reads > 100, "the checker ran");
    assert!(proxy.hits("items") > 0, "reads were served from the cache");
    // What an operator sees: ready, caught up, and the lag on /metrics.
    let ready = request(proxy.metrics_addr, "GET", "/readyz", &[])
        .await
        .expect("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert!(
        ready.body.contains("replication postgres: caught up"),
        "{}",
        ready.body
    );
    let metrics = request(proxy.metrics_addr, "GET", "/metrics", &[])
        .await
        .expect("/metrics");
    assert!(
        metrics
            .body
            .contains(r#"pgstash_replication_caught_up{database="postgres"} 1"#),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn faults_in_the_stream_never_serve_stale_data_and_service_returns() {
    let Some(server) = logical_postgres().await else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let (_pg, proxy) = following(&server, |_| {}).await;
    let admin = connect(&server.url()).await;
    let fault = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        // The walsender killed.
        admin
            .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
            .await
            .expect("terminate walsender");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Postgres restarted.
        server.stop();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.start_again();
    };
    let ledger = check(&server, &proxy, Duration::from_secs(7), fault).await;
    assert!(ledger.stale.is_empty(), "stale reads: {:#?}", ledger.stale);
    // Service returns by itself: proven current again, and hits again.
    wait_caught_up(&proxy, Duration::from_secs(20)).await;
    let reader = connect(&through(&proxy)).await;
    cache(&proxy, &reader, "items", "SELECT v FROM items WHERE id = 1").await;
    assert!(
        proxy.bypassed("replication_lag") > 0,
        "reads went upstream while the stream was down"
    );
}

#[tokio::test]
async fn a_persistent_slot_dropped_under_pgstash_is_made_again_and_the_cache_emptied() {
    let Some(server) = logical_postgres().await else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let (_pg, proxy) = following(&server, |c| c.replication.temporary = false).await;
    let reader = connect(&through(&proxy)).await;
    let admin = connect(&server.url()).await;
    let slots = admin
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgstash' AND NOT temporary", &[])
        .await
        .expect("slots");
    assert_eq!(slots.get::<_, i64>(0), 1, "the persistent slot exists");
    cache(&proxy, &reader, "items", "SELECT v FROM items WHERE id = 5").await;
    // Drop it while pgstash is away, and write in between: that write was
    // never streamed to pgstash.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dropped = admin
            .batch_execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'pgstash' AND active; \
                 SELECT pg_drop_replication_slot('pgstash'); \
                 UPDATE items SET v = '555' WHERE id = 5",
            )
            .await;
        if dropped.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "could not drop the slot: {dropped:?}"
        );
    }
    wait_caught_up(&proxy, Duration::from_secs(20)).await;
    assert_eq!(
        value(&reader, "SELECT v FROM items WHERE id = 5", false).await,
        "555",
        "a write the stream never carried is not hidden by the cache"
    );
}

#[tokio::test]
async fn replication_setup_creates_the_publication_and_reports_what_is_missing() {
    let Some(server) = ThrowawayPostgres::start_with("-c wal_level=replica") else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let upstream = pgstash::config::Upstream::parse(&server.url()).expect("URL");
    let target = pgstash::backend::connect::ConnectTarget {
        user: "postgres".into(),
        password: None,
        database: "postgres".into(),
        upstream,
        pass_through: None,
    };
    let (report, ready) = pgstash::replication::setup::run(&target, "pgstash").await;
    assert!(!ready, "{report}");
    assert!(report.contains("MISSING wal_level = replica"), "{report}");
    assert!(
        report.contains("ALTER SYSTEM SET wal_level = logical"),
        "{report}"
    );
    let admin = connect(&server.url()).await;
    let made = admin
        .query_one(
            "SELECT count(*) FROM pg_publication WHERE pubname = 'pgstash' AND puballtables",
            &[],
        )
        .await
        .expect("publications");
    assert_eq!(
        made.get::<_, i64>(0),
        1,
        "the publication was created: {report}"
    );
    let (again, _) = pgstash::replication::setup::run(&target, "pgstash").await;
    assert!(again.contains("exists, for all tables"), "{again}");
}

fn leading(proxy: &CachingProxy) -> bool {
    proxy
        .handle()
        .context()
        .metrics
        .replication_leading
        .with_label_values(&["postgres"])
        .get()
        == 1
}

async fn walsenders(server: &ThrowawayPostgres) -> i64 {
    connect(&server.url())
        .await
        .query_one("SELECT count(*) FROM pg_stat_replication", &[])
        .await
        .expect("pg_stat_replication")
        .get(0)
}

#[tokio::test]
async fn instances_sharing_redis_follow_the_stream_once_and_a_standby_takes_over() {
    let Some(server) = logical_postgres().await else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let redis = pgstash_tests::cache::RedisPrefix::new();
    let (_pa, a) = following(&server, |c| redis.configure(c)).await;
    let (_pb, b) = following(&server, |c| redis.configure(c)).await;
    // One of them follows the stream; the other proves freshness from it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        walsenders(&server).await,
        1,
        "one stream for both instances"
    );
    assert!(leading(&a) != leading(&b), "exactly one instance leads");
    let (leader, standby) = if leading(&a) { (a, b) } else { (b, a) };
    assert!(
        caught_up(&standby),
        "the standby is current through the leader"
    );
    // A direct write is seen through both.
    let direct = connect(&server.url()).await;
    let (rl, rs) = (
        connect(&through(&leader)).await,
        connect(&through(&standby)).await,
    );
    let read = "SELECT v FROM items WHERE id = 1";
    cache(&leader, &rl, "items", read).await;
    cache(&standby, &rs, "items", read).await;
    direct
        .batch_execute("UPDATE items SET v = '42' WHERE id = 1")
        .await
        .expect("direct write");
    let written = Instant::now();
    seen_within(&rl, read, "42", written).await;
    seen_within(&rs, read, "42", written).await;
    // The leader goes away mid-run; the standby takes over, and no read
    // through it is ever older than max_lag.
    let handle = leader.handle().clone();
    let fault = async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        handle.shutdown();
    };
    let ledger = check(&server, &standby, Duration::from_secs(6), fault).await;
    assert!(ledger.stale.is_empty(), "stale reads: {:#?}", ledger.stale);
    wait_caught_up(&standby, Duration::from_secs(20)).await;
    assert!(leading(&standby), "the standby took the stream over");
    assert_eq!(walsenders(&server).await, 1);
    cache(&standby, &rs, "items", "SELECT v FROM items WHERE id = 2").await;
}

#[tokio::test]
async fn a_persistent_slot_lost_past_max_slot_wal_keep_size_is_made_again_and_the_cache_emptied() {
    let Some(server) = ThrowawayPostgres::start_with(
        "-c wal_level=logical -c max_replication_slots=8 -c max_wal_senders=8 \
         -c max_slot_wal_keep_size=1MB -c wal_keep_size=0 -c max_wal_size=32MB -c min_wal_size=32MB",
    ) else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let admin = connect(&server.url()).await;
    admin.batch_execute(SCHEMA).await.expect("schema");
    let redis = pgstash_tests::cache::RedisPrefix::new();
    let persistent = |c: &mut pgstash::Config| {
        redis.configure(c);
        c.replication.temporary = false;
    };
    let read = "SELECT v FROM items WHERE id = 3";
    let (_pa, first) = following(&server, persistent).await;
    let reader = connect(&through(&first)).await;
    assert_eq!(cache(&first, &reader, "items", read).await, "0");
    first.handle().shutdown();
    drop(reader);
    // While no pgstash follows: a direct write, then enough WAL that
    // Postgres gives the slot up.
    admin
        .batch_execute("UPDATE items SET v = 'written while away' WHERE id = 3")
        .await
        .expect("direct write");
    let written = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        admin
            .batch_execute(
                "INSERT INTO scratch SELECT generate_series(1, 50000); SELECT pg_switch_wal(); CHECKPOINT",
            )
            .await
            .expect("WAL");
        let lost = admin
            .query_one(
                "SELECT coalesce(bool_or(wal_status = 'lost'), false) FROM pg_replication_slots WHERE slot_name = 'pgstash'",
                &[],
            )
            .await
            .expect("slot state");
        if lost.get::<_, bool>(0) {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never lost");
    }
    // The next instance finds the slot lost: it makes a new one and empties
    // the shared cache, which still holds the old row.
    let (_pb, second) = following(&server, persistent).await;
    // G8 allows a write to be unseen for max_lag; past it, it must show.
    if let Some(left) = (written + MAX_LAG).checked_duration_since(Instant::now()) {
        tokio::time::sleep(left).await;
    }
    wait_caught_up(&second, Duration::from_secs(20)).await;
    let reader = connect(&through(&second)).await;
    assert_eq!(
        value(&reader, read, false).await,
        "written while away",
        "a write the lost slot never carried is not hidden by the cache"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leading(&second) {
        assert!(
            Instant::now() < deadline,
            "the new instance never took the stream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
