//! The upstream pool hands out the server connection returned last (LIFO,
//! as PgBouncer does by default): a steady trickle of transactions keeps
//! reusing one warm backend, and the connections a burst opened stay idle
//! until `pool.idle_timeout` closes them.

use pgstash_tests::fixture::database;
use pgstash_tests::TestProxy;

const PID: &str = "SELECT pg_backend_pid()";

async fn pid(client: &tokio_postgres::Client) -> i32 {
    client.query_one(PID, &[]).await.expect("pid").get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_after_a_burst_reuse_the_connection_returned_last() {
    let pg = database(&[]).await;
    let proxy = TestProxy::start(&pg, |c| c.pool.size = 4).await;
    // A burst: three transactions at once hold three server connections.
    let burst = [
        proxy.connect().await,
        proxy.connect().await,
        proxy.connect().await,
    ];
    let mut pids = Vec::new();
    for client in &burst {
        client.batch_execute("BEGIN").await.expect("BEGIN");
        pids.push(pid(client).await);
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "the burst shared a server connection");
    let mut last = 0;
    for client in &burst {
        last = pid(client).await;
        client.batch_execute("COMMIT").await.expect("COMMIT");
    }

    // Then one client's transactions, one after another.
    let trickle = proxy.connect().await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(pid(&trickle).await);
    }
    assert!(
        seen.iter().all(|&p| p == last),
        "expected every transaction on {last} (returned last), got {seen:?}"
    );
}
