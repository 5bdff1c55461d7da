//! `[client]` limits: each stops the client concerned with a SQLSTATE, is
//! counted in `pgstash_client_limit_total`, and leaves everyone else
//! served — too many clients (53300), silent clients at the login timeout,
//! oversized pre-authentication messages (08P01), idle clients (57P05),
//! idle transactions (25P03, the server connection closed), long queries
//! (cancelled upstream: 57014, the connection stays clean), per-pool sizes,
//! and the cap on server-side prepared statements.

use std::time::{Duration, Instant};

use pgstash::config::{PoolMode, PoolOverride};
use pgstash_tests::fixture::database;
use pgstash_tests::postgres::{describe, sqlstate, try_connect};
use pgstash_tests::wire::{startup_message, Ending, RawClient};
use pgstash_tests::{TestPostgres, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn limit_count(proxy: &TestProxy, limit: &str) -> u64 {
    proxy
        .metrics()
        .client_limits
        .with_label_values(&[limit])
        .get()
}

/// Waits (briefly) until `limit` has counted `n` clients: a client sees
/// its connection close a moment before the count is taken.
async fn assert_counted(proxy: &TestProxy, limit: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while limit_count(proxy, limit) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(limit_count(proxy, limit), n, "{limit}");
}

async fn start(pg: &TestPostgres, configure: impl FnOnce(&mut pgstash::Config)) -> TestProxy {
    TestProxy::start(pg, configure).await
}

async fn assert_served(proxy: &TestProxy) {
    let client = proxy.connect().await;
    let row = client
        .query_one("SELECT 41 + 1", &[])
        .await
        .expect("served");
    assert_eq!(row.get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_over_max_client_conn_gets_53300_and_the_others_keep_working() {
    let pg = database(&[]).await;
    let proxy = start(&pg, |c| c.client.max_client_conn = 3).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(proxy.connect().await);
    }
    let err = proxy
        .try_connect()
        .await
        .expect_err("a fourth client must be refused");
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("53300"),
        "{}",
        describe(&err)
    );
    assert!(
        describe(&err).contains("too many clients"),
        "{}",
        describe(&err)
    );
    for client in &clients {
        let n: i32 = client.query_one("SELECT 7", &[]).await.unwrap().get(0);
        assert_eq!(n, 7);
    }
    assert_counted(&proxy, "max_client_conn", 1).await;
    // A place freed is a place taken.
    drop(clients.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match proxy.try_connect().await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(sqlstate(&e).as_deref(), Some("53300"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the freed place was not given: {}", describe(&e)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_at_the_login_timeout_while_clients_are_served() {
    let pg = database(&[]).await;
    let proxy = start(&pg, |c| c.client.login_timeout = Duration::from_millis(800)).await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    // A half-sent startup packet is as silent as nothing.
    let mut partial = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    partial.write_all(&[0, 0, 0, 40, 0, 3]).await.unwrap();
    silent.push(partial);
    let started = Instant::now();
    assert_served(&proxy).await;
    for mut socket in silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent socket was still open {:?} after it connected",
            started.elapsed()
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600),
        "closed too early: {elapsed:?}"
    );
    assert_counted(&proxy, "login_timeout", 51).await;
    assert_served(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_password_message_gets_08p01_before_its_body_is_read() {
    let pg = database(&[]).await;
    let proxy = start(&pg, |c| {
        c.auth.method = pgstash::config::AuthMethod::ScramSha256;
        c.auth.users = vec![pgstash::config::UserConfig {
            name: "app".into(),
            password: Some("secret".into()),
            ..Default::default()
        }];
    })
    .await;
    let mut raw = RawClient::connect_tcp(proxy.addr).await.unwrap();
    let params = [
        ("user".to_owned(), "app".to_owned()),
        ("database".to_owned(), proxy.database.clone()),
    ];
    raw.send_bytes(&startup_message(&params)).await.unwrap();
    let sasl = raw.read_message().await.unwrap();
    assert_eq!(
        sasl.tag,
        b'R',
        "expected AuthenticationSASL, got {}",
        sasl.kind()
    );
    // A password message declaring 60 MiB, and the first 8 KiB of it.
    let mut message = vec![b'p'];
    message.extend_from_slice(&(60i32 << 20).to_be_bytes());
    message.extend_from_slice(&[b'x'; 8192]);
    raw.send_bytes(&message).await.unwrap();
    let (messages, ending) = raw.read_to_end(Duration::from_secs(5)).await;
    let error = messages
        .iter()
        .find(|m| m.is_error())
        .expect("an ErrorResponse");
    assert_eq!(error.sqlstate().as_deref(), Some("08P01"));
    assert_eq!(ending, Ending::Closed);
    assert_counted(&proxy, "pre_auth_message", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_is_let_go_with_57p05() {
    let pg = database(&[]).await;
    let proxy = start(&pg, |c| c.client.idle_timeout = Duration::from_millis(500)).await;
    let mut raw = RawClient::connect(proxy.addr, &proxy.user, &proxy.database)
        .await
        .unwrap();
    raw.simple_query("SELECT 1").await.unwrap();
    let (messages, ending) = raw.read_to_end(Duration::from_secs(5)).await;
    let error = messages
        .iter()
        .find(|m| m.is_error())
        .expect("an ErrorResponse");
    assert_eq!(error.sqlstate().as_deref(), Some("57P05"));
    assert_eq!(ending, Ending::Closed);
    assert_counted(&proxy, "idle_timeout", 1).await;
    // Busy clients are not idle: one that keeps querying stays.
    let client = proxy.connect().await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        client
            .query_one("SELECT 1", &[])
            .await
            .expect("a busy client stays");
    }
}

/// Server connections of `database` that are idle in a transaction.
async fn idle_in_transaction(pg: &TestPostgres) -> i64 {
    let admin = pg.connect().await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
            &[&pg.database],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transaction_loses_its_server_connection_at_the_timeout() {
    let pg = database(&["CREATE TABLE t (id int)"]).await;
    let proxy = start(&pg, |c| {
        c.client.idle_transaction_timeout = Duration::from_millis(600);
        c.pool.size = 1;
    })
    .await;
    let mut raw = RawClient::connect(proxy.addr, &proxy.user, &proxy.database)
        .await
        .unwrap();
    raw.simple_query("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    assert_eq!(idle_in_transaction(&pg).await, 1);
    let (messages, ending) = raw.read_to_end(Duration::from_secs(5)).await;
    let error = messages
        .iter()
        .find(|m| m.is_error())
        .expect("an ErrorResponse");
    assert_eq!(error.sqlstate().as_deref(), Some("25P03"));
    assert_eq!(ending, Ending::Closed);
    assert_counted(&proxy, "idle_transaction_timeout", 1).await;
    // The only server connection was freed (and its transaction rolled back).
    let deadline = Instant::now() + Duration::from_secs(5);
    while idle_in_transaction(&pg).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the stalled transaction is still open upstream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = proxy.connect().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_query_timeout_is_cancelled_and_the_connection_stays_clean() {
    let pg = database(&[]).await;
    let proxy = start(&pg, |c| {
        c.client.query_timeout = Duration::from_millis(500);
        c.pool.size = 1;
    })
    .await;
    let client = proxy.connect().await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let started = Instant::now();
    let err = client
        .simple_query("SELECT pg_sleep(30)")
        .await
        .expect_err("the query must be cancelled");
    let took = started.elapsed();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("57014"),
        "{}",
        describe(&err)
    );
    assert!(
        took < Duration::from_secs(10),
        "cancelled only after {took:?}"
    );
    assert_counted(&proxy, "query_timeout", 1).await;
    // Same client, same (only) server connection, nothing left pending:
    // a query shorter than the timeout runs to its end.
    let again: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, pid, "the server connection was replaced, not kept");
    client
        .simple_query("SELECT pg_sleep(0.3)")
        .await
        .expect("a short query runs");
    let other = proxy.connect().await;
    let n: i32 = other.query_one("SELECT 5", &[]).await.unwrap().get(0);
    assert_eq!(n, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_override_sizes_one_users_pool_only() {
    let pg = database(&[]).await;
    let batch = pg.create_role("batch", None).await;
    let proxy = start(&pg, |c| {
        c.pool.size = 4;
        c.pool.acquire_timeout = Duration::from_millis(400);
        c.pool.overrides = vec![PoolOverride {
            database: None,
            user: Some(batch.clone()),
            size: 1,
        }];
    })
    .await;
    let first = proxy.connect_as(&batch).await;
    first.simple_query("BEGIN").await.unwrap();
    // Even logging in needs a server connection (for its greeting).
    let err = try_connect(&proxy.url(&proxy.database, &batch))
        .await
        .expect_err("batch's one connection is taken");
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("53300"),
        "{}",
        describe(&err)
    );
    // Others still get the default size.
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    a.simple_query("BEGIN").await.unwrap();
    b.simple_query("BEGIN; SELECT 1")
        .await
        .expect("default pool size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_prepared_statements_are_capped_per_connection() {
    let pg = database(&[]).await;
    let proxy = start(&pg, |c| {
        c.client.max_prepared_statements = 5;
        c.pool.size = 1;
        c.pool.mode = PoolMode::Transaction;
    })
    .await;
    let client = proxy.connect().await;
    let mut statements = Vec::new();
    for i in 0..12 {
        let statement = client
            .prepare(&format!("SELECT {i}::int + $1"))
            .await
            .unwrap();
        let row = client.query_one(&statement, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
        statements.push(statement);
    }
    let held: i64 = client
        .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .await
        .unwrap()
        .get(0);
    // The count's own statement is among them.
    assert!(
        held <= 6,
        "{held} statements held on the one server connection"
    );
    // The evicted ones are prepared again when used.
    for (i, statement) in statements.iter().enumerate() {
        let row = client.query_one(statement, &[&2i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i as i32 + 2);
    }
}
