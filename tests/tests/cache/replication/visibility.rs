//! When pgstash may act on a streamed commit: not before its transaction
//! is visible to other sessions (else a read in between refills the cache
//! with the old rows), and never as a synchronous standby (whose commits
//! would wait for pgstash while pgstash waits for them).

use std::time::{Duration, Instant};

use pgstash_tests::cache::CachingProxy;
use pgstash_tests::operate::http::request;
use pgstash_tests::operate::throwaway::ThrowawayPostgres;
use pgstash_tests::postgres::{connect, value};

use super::{cache, following, logical_postgres, seen_within, through, MAX_LAG, RULES, SCHEMA};

/// Postgres streams a commit once its WAL is flushed, a moment before the
/// transaction is visible to other sessions. A synchronous standby that
/// never answers (`synchronous_standby_names` naming nobody) holds a commit
/// in exactly that state — streamed, not visible — for as long as the test
/// likes. Reads through pgstash meanwhile rightly see the old row (the
/// write has not completed); once it completes, the new row must show
/// within `max_lag`, not the old one refilled under the invalidation.
#[tokio::test]
async fn a_commit_streamed_before_it_is_visible_does_not_leave_the_old_row_cached() {
    let Some(server) = logical_postgres().await else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let (_pg, proxy) = following(&server, |_| {}).await;
    let reader = connect(&through(&proxy)).await;
    let read = "SELECT v FROM items WHERE id = 4";
    assert_eq!(cache(&proxy, &reader, "items", read).await, "0");
    let admin = connect(&server.url()).await;
    for sql in [
        "ALTER SYSTEM SET synchronous_standby_names = 'nobody'",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.expect("hold commits");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writer = connect(&server.url()).await;
    let write = tokio::spawn(async move {
        writer
            .batch_execute("UPDATE items SET v = 'new' WHERE id = 4")
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting = value(
            &admin,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
            false,
        )
        .await;
        if waiting == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "the commit was never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The commit is in the WAL and streamed; it is not visible yet.
    let held = Instant::now();
    while held.elapsed() < Duration::from_millis(400) {
        assert_eq!(
            value(&reader, read, false).await,
            "0",
            "read ahead of the commit"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!write.is_finished(), "the commit was not held");
    for sql in [
        "ALTER SYSTEM RESET synchronous_standby_names",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.expect("release commits");
    }
    write
        .await
        .expect("writer task")
        .expect("the held write commits");
    let written = Instant::now();
    let lag = seen_within(&reader, read, "new", written).await;
    eprintln!("the released commit was seen through pgstash after {lag:?}");
}

/// The restarts of the stream of database `postgres`, from `/metrics`.
async fn restarts(proxy: &CachingProxy) -> u64 {
    let metrics = request(proxy.metrics_addr, "GET", "/metrics", &[])
        .await
        .expect("/metrics");
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix(r#"pgstash_replication_restarts_total{database="postgres"} "#))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `synchronous_standby_names = '*'` makes every walsender a candidate
/// synchronous standby, pgstash's too. Its commits would then wait for
/// pgstash's confirmation while pgstash waits for them to become visible:
/// pgstash refuses such a stream (the cache fails closed for the database)
/// and `replication setup` says why. The test's sessions commit with
/// `synchronous_commit = local`, so nothing waits here either way.
#[tokio::test]
async fn pgstash_refuses_to_follow_as_a_synchronous_standby() {
    let Some(server) = ThrowawayPostgres::start_with(
        "-c wal_level=logical -c max_replication_slots=8 -c max_wal_senders=8 \
         -c synchronous_commit=local",
    ) else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let admin = connect(&server.url()).await;
    admin.batch_execute(SCHEMA).await.expect("schema");
    for sql in [
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
        "SELECT pg_reload_conf()",
    ] {
        admin
            .batch_execute(sql)
            .await
            .expect("synchronous standbys");
    }
    let pg = pgstash_tests::TestPostgres::new().await;
    let url = server.url();
    let proxy = CachingProxy::start(&pg, RULES, |c| {
        c.upstream = pgstash::config::Upstream::parse(&url).expect("upstream URL");
        c.replication.enabled = true;
        c.replication.max_lag = MAX_LAG;
        c.replication.databases = vec!["postgres".into()];
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while restarts(&proxy).await == 0 {
        assert!(
            Instant::now() < deadline,
            "pgstash kept following as a synchronous standby"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let upstream = pgstash::config::Upstream::parse(&url).expect("URL");
    let target = pgstash::backend::connect::ConnectTarget {
        user: "postgres".into(),
        password: None,
        database: "postgres".into(),
        upstream,
        pass_through: None,
    };
    let (report, ready) = pgstash::replication::setup::run(&target, "pgstash").await;
    assert!(!ready, "{report}");
    assert!(
        report.contains("MISSING synchronous_standby_names = \"*\""),
        "{report}"
    );
}
