//! Session-bound state in transaction mode pins the client to its server
//! connection until the state is gone: a session advisory lock is never
//! inherited by another client, a temporary table stays visible across the
//! client's transactions, a LISTEN gets its notifications, and the pin ends
//! when the state does (`pgstash_pinned_clients` back to 0).

use std::time::Duration;

use pgstash::config::PoolMode;
use pgstash_tests::fixture::database;
use pgstash_tests::wire::RawClient;
use pgstash_tests::TestProxy;
use tokio_postgres::Client;

async fn pid(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits (briefly) for the pin to end: it ends once the answer that
/// released the state has gone out, a moment after the client has it.
async fn assert_unpinned(proxy: &TestProxy) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while proxy.metrics().pinned_clients.get() != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.metrics().pinned_clients.get(), 0, "still pinned");
}

async fn proxy_of(pg: &pgstash_tests::TestPostgres) -> TestProxy {
    TestProxy::start(pg, |c| {
        c.pool.mode = PoolMode::Transaction;
        c.pool.size = 2;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_advisory_lock_is_never_inherited_by_another_client() {
    let pg = database(&[]).await;
    let proxy = proxy_of(&pg).await;
    let holder = proxy.connect().await;
    let other = proxy.connect().await;
    holder
        .simple_query("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();
    assert_eq!(proxy.metrics().pinned_clients.get(), 1);
    let holder_pid = pid(&holder).await;
    for _ in 0..10 {
        // Were the holder's connection back in the pool, the lock would be
        // the other client's own (advisory locks are re-entrant).
        let got: bool = other
            .query_one("SELECT pg_try_advisory_lock(4242)", &[])
            .await
            .unwrap()
            .get(0);
        assert!(
            !got,
            "another client got the holder's server connection and its lock"
        );
        assert_eq!(
            pid(&holder).await,
            holder_pid,
            "the holder changed connection"
        );
    }
    holder
        .simple_query("SELECT pg_advisory_unlock(4242)")
        .await
        .unwrap();
    // Released: the pin ends at the next release point.
    holder.simple_query("SELECT 1").await.unwrap();
    assert_unpinned(&proxy).await;
    let got: bool = other
        .query_one("SELECT pg_try_advisory_lock(4242)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(got, "the lock was not released");
    other
        .simple_query("SELECT pg_advisory_unlock_all()")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_table_lives_across_the_clients_transactions() {
    let pg = database(&[]).await;
    let proxy = proxy_of(&pg).await;
    let owner = proxy.connect().await;
    let other = proxy.connect().await;
    owner
        .simple_query("CREATE TEMP TABLE scratch (x int)")
        .await
        .unwrap();
    for i in 0..6 {
        // Another client busy in a transaction takes whatever connection
        // the pool hands out.
        other.simple_query("BEGIN; SELECT 1").await.unwrap();
        owner
            .simple_query(&format!("INSERT INTO scratch VALUES ({i})"))
            .await
            .expect("the temporary table is still there");
        other.simple_query("COMMIT").await.unwrap();
    }
    let n: i64 = owner
        .query_one("SELECT count(*) FROM scratch", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 6);
    owner.simple_query("DROP TABLE scratch").await.unwrap();
    owner.simple_query("SELECT 1").await.unwrap();
    assert_unpinned(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_in_transaction_mode_gets_its_notifications() {
    let pg = database(&[]).await;
    let proxy = proxy_of(&pg).await;
    let mut listener = RawClient::connect(proxy.addr, &proxy.user, &proxy.database)
        .await
        .unwrap();
    listener.simple_query("LISTEN jobs").await.unwrap();
    let notifier = proxy.connect().await;
    for i in 0..3 {
        notifier
            .simple_query(&format!("NOTIFY jobs, 'job {i}'"))
            .await
            .unwrap();
        listener.timeout = Duration::from_secs(5);
        let message = listener.read_message().await.expect("a notification");
        assert_eq!(message.tag, b'A', "got {} instead", message.kind());
        assert!(
            String::from_utf8_lossy(&message.body).contains(&format!("job {i}")),
            "{:?}",
            message.body
        );
    }
    listener.simple_query("UNLISTEN *").await.unwrap();
    listener.simple_query("SELECT 1").await.unwrap();
    assert_unpinned(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_client_that_leaves_does_not_hand_its_state_to_the_pool() {
    let pg = database(&[]).await;
    let proxy = TestProxy::start(&pg, |c| {
        c.pool.mode = PoolMode::Transaction;
        c.pool.size = 1;
    })
    .await;
    let holder = proxy.connect().await;
    holder
        .simple_query("SELECT pg_advisory_lock(77)")
        .await
        .unwrap();
    drop(holder);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let next = proxy.connect().await;
    let held: i64 = next
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held, 0, "the next client inherited the advisory lock");
    assert_unpinned(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slow_query_log_marks_a_pinned_clients_queries() {
    use pgstash_tests::operate::{Json, OpsProxy};
    let pg = database(&[]).await;
    let proxy = OpsProxy::start(&pg, |c| {
        c.pool.mode = PoolMode::Transaction;
        c.pool.size = 2;
        c.slow_query_ms = 0;
    })
    .await;
    let client = proxy.connect().await;
    client
        .simple_query("SELECT 1 AS before_mark")
        .await
        .unwrap();
    client
        .simple_query("SELECT pg_advisory_lock(42)")
        .await
        .unwrap();
    client.simple_query("SELECT 1 AS held_mark").await.unwrap();
    client
        .simple_query("SELECT pg_advisory_unlock(42)")
        .await
        .unwrap();
    client.simple_query("SELECT 1 AS after_mark").await.unwrap();
    let query_is = |text: &'static str| {
        move |line: &Json| {
            line.get("query")
                .and_then(Json::as_str)
                .is_some_and(|q| q.contains(text))
        }
    };
    let lines = proxy
        .wait_for_slow_line("the last query", query_is("after_mark"))
        .await;
    let pinned = |text: &'static str| {
        let line = lines
            .iter()
            .find(|l| query_is(text)(l))
            .unwrap_or_else(|| panic!("no line for {text}: {lines:#?}"));
        line.get("pinned").cloned()
    };
    assert_eq!(pinned("before_mark"), Some(Json::Bool(false)));
    assert_eq!(pinned("pg_advisory_lock"), Some(Json::Bool(true)));
    assert_eq!(pinned("held_mark"), Some(Json::Bool(true)));
    assert_eq!(
        pinned("after_mark"),
        Some(Json::Bool(false)),
        "unpinned again"
    );
}
