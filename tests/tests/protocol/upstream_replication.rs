//! The replication stream, its control connections and its heartbeats
//! over upstream TLS: against a throwaway Postgres that logs `app` in over
//! TLS only, with `sslmode=verify-full`, pgstash follows the stream and a
//! write made directly on Postgres is invalidated.

use std::time::{Duration, Instant};

use pgstash::config::Upstream;
use pgstash_tests::cache::CachingProxy;
use pgstash_tests::postgres::{describe, try_connect, value};
use pgstash_tests::TestPostgres;

use super::upstream_tls::TlsPostgres;

const RULES: &str = "[[rule]]\nname = \"t\"\ntables = [\"t\"]\nttl = \"5m\"\n";
const READ: &str = "SELECT v FROM t WHERE id = 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_stream_follows_postgres_over_tls() {
    let Some(tls) = TlsPostgres::start_with(
        "-c wal_level=logical -c max_replication_slots=4 -c max_wal_senders=4",
    ) else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    tls.server.psql(
        "ALTER ROLE app REPLICATION; \
         CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'old'); \
         GRANT SELECT, UPDATE ON t TO app; \
         CREATE PUBLICATION pgstash FOR ALL TABLES",
    );
    let pg = TestPostgres::new().await;
    let ca = tls.ca.cert_path.display().to_string();
    let url = tls.url(
        "app",
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let upstream = Upstream::parse(&url).expect("upstream URL");
    let proxy = CachingProxy::start(&pg, RULES, |c| {
        c.upstream = upstream;
        c.replication.enabled = true;
        c.replication.databases = vec!["postgres".into()];
    })
    .await;
    let current = || {
        let context = proxy.handle().context();
        let cache = context.cache.as_ref().expect("caching is on");
        cache.invalidator().freshness().is_current("postgres")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !current() {
        assert!(
            Instant::now() < deadline,
            "the stream never caught up over TLS:\n{}",
            tls.server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let client = try_connect(&format!("postgres://app@{}/postgres", proxy.addr))
        .await
        .unwrap_or_else(|e| panic!("{}", describe(&e)));
    assert_eq!(value(&client, READ, false).await, "old");
    proxy.wait_for_fills("t", 1).await;
    assert_eq!(value(&client, READ, false).await, "old");
    assert_eq!(proxy.hits("t"), 1, "cached");

    // Behind pgstash's back: only the stream can tell it.
    tls.server.psql("UPDATE t SET v = 'new' WHERE id = 1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while value(&client, READ, false).await != "new" {
        assert!(Instant::now() < deadline, "the direct write was never seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
