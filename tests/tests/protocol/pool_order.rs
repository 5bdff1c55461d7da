//! Which pooled server connection a transaction-mode client gets: the one
//! used most recently, as PgBouncer does (its default, `server_round_robin
//! = 0`). Handing out the connection idle the longest instead spreads
//! sequential transactions over every backend in the pool, each one cold
//! in its CPU's caches: with `pgbench -S -M extended -c 1` over eight idle
//! connections on a loaded machine that cost the Postgres backends up to
//! twice the CPU per transaction (bench/README.md, issue #20), for the
//! same bytes sent.

use pgstash::config::PoolMode;
use pgstash_tests::fixture;

const PID: &str = "SELECT pg_backend_pid()";

/// Three server connections in the pool, then one client's transactions
/// one after another: each runs on the connection the one before it gave
/// back, not on each of the three in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_transactions_reuse_the_most_recently_used_connection() {
    let (_pg, proxy) = fixture::pooled(&[], PoolMode::Transaction, 3).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(proxy.connect().await);
    }
    // Three transactions open at once: the pool holds three connections.
    let mut pids = Vec::new();
    for c in &clients {
        c.batch_execute("BEGIN").await.unwrap();
        pids.push(c.query_one(PID, &[]).await.unwrap().get::<_, i32>(0));
    }
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(
        pids.len(),
        3,
        "three transactions, three server connections"
    );
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }

    let client = &clients[0];
    let first: i32 = client.query_one(PID, &[]).await.unwrap().get(0);
    for turn in 1..6 {
        let pid: i32 = client.query_one(PID, &[]).await.unwrap().get(0);
        assert_eq!(
            pid, first,
            "transaction {turn} ran on another server connection than the one just released"
        );
    }
}
