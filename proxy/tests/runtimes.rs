//! `runtime = "per_worker"`: the pgstash binary with a single-threaded
//! runtime per worker serves concurrent clients on every worker, keeps the
//! upstream connections within `pool.size` (split between the workers),
//! runs prepared statements across transactions (each worker's pool names
//! its own), and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, reason = "a test: a failure should say where")]

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::{Pgstash, SHARED_POSTGRES};

fn start(pool_size: u32) -> Pgstash {
    Pgstash::start("runtimes", |port| {
        format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             upstream = \"{SHARED_POSTGRES}?sslmode=disable\"\n\
             workers = 2\nruntime = \"per_worker\"\nslow_query_ms = 100000\n\
             [pool]\nsize = {pool_size}\nmode = \"transaction\"\n"
        )
    })
}

/// CPU nanoseconds each worker thread of `pid` has run (by thread name).
fn worker_cpu(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if name.starts_with("pgstash-worker") {
            let ran = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
            let ns = ran.split_whitespace().next().and_then(|n| n.parse().ok());
            out.push((name.trim().to_owned(), ns.unwrap_or(0)));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_worker_runtimes_serve_every_client_within_the_pool() {
    let pgstash = start(4);
    let url = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable",
        pgstash.port
    );
    let before = worker_cpu(pgstash.child.id());
    assert_eq!(before.len(), 2, "worker threads: {before:?}");
    let mut clients = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            // A named statement, prepared once and run in many transactions
            // on whichever of its worker's connections each one gets.
            let statement = client
                .prepare("SELECT pg_backend_pid(), $1::int + 1")
                .await
                .unwrap();
            let mut backends = HashSet::new();
            for i in 0..40 {
                let row = client.query_one(&statement, &[&i]).await.unwrap();
                assert_eq!(row.get::<_, i32>(1), i + 1);
                backends.insert(row.get::<_, i32>(0));
            }
            backends
        }));
    }
    let mut backends = HashSet::new();
    for client in clients {
        backends.extend(client.await.unwrap());
    }
    assert!(
        !backends.is_empty() && backends.len() <= 4,
        "{} server connections for a pool of 4",
        backends.len()
    );
    let after = worker_cpu(pgstash.child.id());
    for ((name, was), (_, now)) in before.iter().zip(&after) {
        assert!(now > was, "{name} served no client: {before:?} → {after:?}");
    }

    // SIGTERM: the workers stop with the process.
    let pid = pgstash.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut pgstash = pgstash;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = pgstash.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "pgstash did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
