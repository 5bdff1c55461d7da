//! Query cancellation through pgstash: a CancelRequest sent to the proxy's
//! address with the key the proxy handed out stops the client's running query.

use std::time::{Duration, Instant};

use pgstash::config::PoolMode;
use pgstash_tests::postgres::{describe, sqlstate};
use pgstash_tests::{TestPostgres, TestProxy};
use tokio::io::AsyncWriteExt;
use tokio_postgres::NoTls;

/// Waits until Postgres shows `query` running in the test database.
async fn wait_until_running(pg: &TestPostgres, query: &str) {
    let admin = pg.connect().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query = $2 AND state = 'active'",
                &[&pg.database, &query],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{query:?} never started running upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cancel_stops_pg_sleep(mode: PoolMode) {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, mode, 2).await;
    let client = proxy.connect().await;
    let token = client.cancel_token();
    const SLEEP: &str = "SELECT pg_sleep(10)";
    let running = tokio::spawn(async move {
        let result = client.simple_query(SLEEP).await.map(|_| ());
        (result, Instant::now())
    });
    wait_until_running(&pg, SLEEP).await;

    let cancelled_at = Instant::now();
    token
        .cancel_query(NoTls)
        .await
        .expect("sending the cancel request to pgstash");
    let (result, ended_at) = tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the query still runs 5s after the cancel request")
        .expect("query task panicked");
    let err = result.expect_err("pg_sleep(10) finished despite the cancel request");
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("57014"),
        "error: {}",
        describe(&err)
    );
    let took = ended_at.duration_since(cancelled_at);
    assert!(took < Duration::from_secs(2), "cancel took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_proxy_stops_pg_sleep_within_a_second_in_transaction_mode() {
    cancel_stops_pg_sleep(PoolMode::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_proxy_stops_pg_sleep_within_a_second_in_session_mode() {
    cancel_stops_pg_sleep(PoolMode::Session).await;
}

/// A CancelRequest whose secret does not match must not stop anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_with_a_wrong_key_does_not_cancel() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, PoolMode::Transaction, 2).await;
    let mut raw = proxy.raw().await.expect("raw connect through pgstash");
    let (pid, secret) = raw.backend_key().expect("pgstash sent no BackendKeyData");
    const SLEEP: &str = "SELECT pg_sleep(1)";
    raw.push(&pgstash_tests::Frontend::query(SLEEP))
        .send()
        .await
        .unwrap();
    wait_until_running(&pg, SLEEP).await;

    let mut bogus = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut req = 16i32.to_be_bytes().to_vec();
    req.extend_from_slice(&80_877_102i32.to_be_bytes());
    req.extend_from_slice(&pid.to_be_bytes());
    req.extend_from_slice(&secret.wrapping_add(1).to_be_bytes());
    bogus.write_all(&req).await.unwrap();
    drop(bogus);

    let msgs = raw.read_until_ready(1).await.expect("pg_sleep(1) answer");
    assert!(
        msgs.iter().all(|m| !m.is_error()),
        "a cancel request with the wrong key cancelled the query: {msgs:?}"
    );
}
