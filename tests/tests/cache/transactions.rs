//! G7 transactions: inside an explicit transaction reads go upstream (so
//! REPEATABLE READ keeps its snapshot), writes in a transaction are
//! invalidated when COMMIT is acknowledged and not before, and a ROLLBACK
//! invalidates nothing.

use pgstash_tests::cache::CachingProxy;
use pgstash_tests::fixture::caching;
use pgstash_tests::postgres::{describe, value};
use pgstash_tests::TestPostgres;
use tokio_postgres::Client;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, v text); \
                     INSERT INTO t VALUES (1, 'old'), (2, 'other')";
const RULES: &str = "[[rule]]\nname = \"t\"\ntables = [\"t\"]\nttl = \"60s\"\n";
const READ: &str = "SELECT v FROM t WHERE id = 1";

/// Row 1's value through the simple or the extended protocol.
async fn read(client: &Client, extended: bool) -> String {
    value(client, READ, extended).await
}

/// Reads row 1 in both protocols until both entries are filled and hit.
async fn fill(proxy: &CachingProxy, client: &Client, want: &str) {
    let (fills, misses) = (proxy.fills("t"), proxy.misses("t"));
    for extended in [false, true] {
        assert_eq!(read(client, extended).await, want);
    }
    proxy
        .wait_for_fills("t", fills + proxy.misses("t") - misses)
        .await;
    let hits = proxy.hits("t");
    for extended in [false, true] {
        assert_eq!(read(client, extended).await, want);
    }
    assert_eq!(proxy.hits("t"), hits + 2, "the entries are cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatable_read_keeps_its_snapshot_while_others_write_and_cache() {
    let (_pg, proxy) = caching(&[TABLE], RULES, |_| {}).await;
    let reader = proxy.connect().await;
    let writer = proxy.connect().await;
    let tx = proxy.connect().await;
    fill(&proxy, &reader, "old").await;

    tx.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    for extended in [false, true] {
        assert_eq!(read(&tx, extended).await, "old");
    }
    writer
        .execute("UPDATE t SET v = 'new' WHERE id = 1", &[])
        .await
        .unwrap();
    // Others read the new value, and cache it.
    fill(&proxy, &reader, "new").await;

    let hits = proxy.hits("t");
    for extended in [false, true] {
        assert_eq!(
            read(&tx, extended).await,
            "old",
            "a REPEATABLE READ transaction must keep its snapshot ({} protocol)",
            if extended { "extended" } else { "simple" }
        );
    }
    assert_eq!(proxy.hits("t"), hits, "reads in a transaction are not hits");
    tx.batch_execute("COMMIT").await.unwrap();
    for extended in [false, true] {
        assert_eq!(read(&tx, extended).await, "new");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_in_transaction_invalidates_only_after_commit() {
    let (_pg, proxy) = caching(&[TABLE], RULES, |_| {}).await;
    let reader = proxy.connect().await;
    let writer = proxy.connect().await;
    fill(&proxy, &reader, "old").await;

    for (round, extended_write) in [(1, false), (2, true)] {
        let value = format!("new{round}");
        let before = if round == 1 {
            "old".to_owned()
        } else {
            "new1".to_owned()
        };
        let invalidations = proxy.invalidations("t");
        let update = format!("UPDATE t SET v = '{value}' WHERE id = 1");
        writer.batch_execute("BEGIN").await.unwrap();
        if extended_write {
            // Parse/Bind/Execute/Sync inside the transaction.
            assert_eq!(writer.execute(&update, &[]).await.unwrap(), 1);
        } else {
            writer.batch_execute(&update).await.unwrap();
        }

        // Between the write and the COMMIT: nothing is invalidated yet.
        let hits = proxy.hits("t");
        for extended in [false, true] {
            assert_eq!(read(&reader, extended).await, before);
        }
        assert_eq!(
            proxy.invalidations("t"),
            invalidations,
            "invalidated before COMMIT"
        );
        assert_eq!(
            proxy.hits("t"),
            hits + 2,
            "the entries stay valid until COMMIT"
        );

        if extended_write {
            writer.execute("COMMIT", &[]).await.unwrap();
        } else {
            writer.batch_execute("COMMIT").await.unwrap();
        }
        assert!(
            proxy.invalidations("t") > invalidations,
            "COMMIT's acknowledgement comes after the invalidation"
        );
        for extended in [false, true] {
            assert_eq!(
                read(&reader, extended).await,
                value,
                "right after COMMIT's acknowledgement the write is visible (round {round})"
            );
        }
        fill(&proxy, &reader, &value).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_invalidates_nothing() {
    let (_pg, proxy) = caching(&[TABLE], RULES, |_| {}).await;
    let reader = proxy.connect().await;
    let mut writer = proxy.connect().await;
    fill(&proxy, &reader, "old").await;
    let invalidations = proxy.invalidations("t");
    let hits = proxy.hits("t");

    writer
        .batch_execute("BEGIN; UPDATE t SET v = 'gone' WHERE id = 1; ROLLBACK")
        .await
        .unwrap();
    writer.batch_execute("BEGIN").await.unwrap();
    writer
        .execute("UPDATE t SET v = 'gone' WHERE id = 1", &[])
        .await
        .unwrap();
    writer.batch_execute("ROLLBACK").await.unwrap();
    {
        let tx = writer.transaction().await.unwrap();
        tx.execute("DELETE FROM t WHERE id = 1", &[]).await.unwrap();
        tx.rollback().await.unwrap();
    }

    assert_eq!(
        proxy.invalidations("t"),
        invalidations,
        "a rolled-back write must not invalidate"
    );
    for extended in [false, true] {
        assert_eq!(read(&reader, extended).await, "old");
    }
    assert_eq!(proxy.hits("t"), hits + 2, "the entries still hit");
}

/// Two-phase commit: a prepared transaction's writes become visible at
/// `COMMIT PREPARED`, which names no table and may run on any connection.
/// What was cached while the transaction was pending must not outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_prepared_invalidates_what_was_cached_while_it_was_pending() {
    // 2PC needs max_prepared_transactions > 0: a Postgres of this test's own.
    let Some(server) = pgstash_tests::operate::throwaway::ThrowawayPostgres::start_with(
        "-c max_prepared_transactions=4",
    ) else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let url = server.url();
    pgstash_tests::postgres::connect(&url)
        .await
        .batch_execute(TABLE)
        .await
        .expect("schema on the throwaway server");
    let pg = TestPostgres::new().await;
    let proxy = CachingProxy::start(&pg, RULES, |c| {
        c.upstream = pgstash::config::Upstream::parse(&url).expect("upstream URL");
    })
    .await;
    let through = format!("postgres://postgres@{}/postgres", proxy.addr);
    let reader = pgstash_tests::postgres::connect(&through).await;
    let writer = pgstash_tests::postgres::connect(&through).await;

    writer
        .batch_execute(
            "BEGIN; UPDATE t SET v = 'new' WHERE id = 1; PREPARE TRANSACTION 'pgstash_2pc'",
        )
        .await
        .unwrap_or_else(|e| panic!("PREPARE TRANSACTION: {}", describe(&e)));
    // Pending: readers still see the old value, and it is cached.
    fill(&proxy, &reader, "old").await;

    writer
        .batch_execute("COMMIT PREPARED 'pgstash_2pc'")
        .await
        .unwrap_or_else(|e| panic!("COMMIT PREPARED: {}", describe(&e)));
    for extended in [false, true] {
        assert_eq!(
            read(&reader, extended).await,
            "new",
            "a read after COMMIT PREPARED is acknowledged sees its writes"
        );
    }
}
