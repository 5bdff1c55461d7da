//! Graceful shutdown: `ServerHandle::shutdown` makes `run()` return, the
//! listener goes away, and idle clients are disconnected.

use std::time::Duration;

use pgstash_tests::{TestPostgres, TestProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_from_run_closes_idle_clients_and_refuses_new_ones() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::start(&pg, |_| {}).await;
    let addr = proxy.addr;
    let idle = proxy.connect().await;
    idle.simple_query("SELECT 1")
        .await
        .expect("query before shutdown");

    proxy
        .shutdown()
        .await
        .expect("run() returned an error on shutdown");

    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "pgstash still accepts connections after shutdown"
    );
    let after = tokio::time::timeout(Duration::from_secs(5), idle.simple_query("SELECT 1"))
        .await
        .expect("an idle client's query hung after shutdown");
    assert!(
        after.is_err(),
        "an idle client was still served after shutdown"
    );
}
