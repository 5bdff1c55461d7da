//! `runtime = "per_worker"`: the pgstash binary with a single-threaded
//! runtime per worker serves concurrent clients on every worker, keeps the
//! upstream connections within `pool.size` (split between the workers, and
//! not grown when the pool is smaller than the worker count), lends a
//! worker's idle connections to another whose share is in use, runs
//! prepared statements across transactions, serves and invalidates from a
//! Redis store whose connections run on the workers, and stops cleanly on
//! SIGTERM.

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

async fn connect(port: u16) -> tokio_postgres::Client {
    let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn backend(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Clients are dealt to the two workers in turn: the first and third share
/// a worker, the second has the other, each worker with one of the pool's
/// two connections. The third's query, while the first holds their
/// worker's connection in a transaction, runs at once on the other
/// worker's idle one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_its_connections_in_use_takes_another_workers_idle_one() {
    let pgstash = start(2);
    let first = connect(pgstash.port).await;
    let second = connect(pgstash.port).await;
    let third = connect(pgstash.port).await;
    let idle_on_worker_1 = backend(&second).await;
    first.batch_execute("BEGIN").await.unwrap();
    let held_on_worker_0 = backend(&first).await;
    assert_ne!(held_on_worker_0, idle_on_worker_1);
    let took = tokio::time::timeout(Duration::from_secs(3), backend(&third))
        .await
        .expect("the third client waited while a connection was idle");
    assert_eq!(
        took, idle_on_worker_1,
        "it should run on worker 1's idle connection"
    );
    first.batch_execute("COMMIT").await.unwrap();
    // And the connection went back to worker 1's pool.
    assert_eq!(backend(&second).await, idle_on_worker_1);
}

/// A pool of one connection stays one with two workers: a client of the
/// other worker waits for it rather than opening a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_smaller_than_the_worker_count_keeps_its_size() {
    let pgstash = start(1);
    let first = connect(pgstash.port).await;
    let second = connect(pgstash.port).await;
    first.batch_execute("BEGIN").await.unwrap();
    let held = backend(&first).await;
    let waiting = tokio::spawn(async move { backend(&second).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the second client got a connection while the pool's one was held"
    );
    first.batch_execute("COMMIT").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the second client never got the connection")
        .unwrap();
    assert_eq!(got, held);
}

/// A throwaway redis-server, stopped when dropped.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = support::free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With a Redis store, the store's own connections run on the workers
/// (each session calls its own worker's): clients of both workers are
/// served from the cache, and a write through either worker invalidates
/// what the other serves. (Which connection carries a call is
/// `pipe/mod.rs`'s unit test; the speed is bench/README.md's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_worker_runtimes_serve_and_invalidate_from_redis_on_every_worker() {
    let redis = Redis::start();
    let table = format!("pgstash_rt_kv_{}", support::free_port());
    let dir = std::env::temp_dir().join(format!("pgstash-rt-rules-{table}"));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("rules.toml");
    std::fs::write(
        &rules,
        format!("[[rule]]\nname = \"kv\"\nquery = \"SELECT v FROM {table} WHERE k = $1\"\nttl = \"10m\"\n"),
    )
    .unwrap();
    let pgstash = Pgstash::start("runtimes-redis", |port| {
        format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             upstream = \"{SHARED_POSTGRES}?sslmode=disable\"\n\
             workers = 2\nruntime = \"per_worker\"\nslow_query_ms = 100000\n\
             rules = \"{}\"\nredis = \"redis://127.0.0.1:{}\"\n\
             [pool]\nsize = 4\nmode = \"transaction\"\n",
            rules.display(),
            redis.port
        )
    });
    let (direct, connection) = tokio_postgres::connect(SHARED_POSTGRES, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    direct
        .batch_execute(&format!(
            "CREATE TABLE {table} (k int PRIMARY KEY, v text); INSERT INTO {table} VALUES (1, 'one')"
        ))
        .await
        .unwrap();
    let clients = [connect(pgstash.port).await, connect(pgstash.port).await];
    let read = format!("SELECT v FROM {table} WHERE k = $1");
    let get = |i: usize| {
        let read = read.clone();
        let client = &clients[i];
        async move {
            client
                .query_one(&read, &[&1i32])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    // Filled, then served: a change made on Postgres behind pgstash's back
    // is not seen by either worker's client (their reads are hits).
    for i in [0, 1, 0, 1] {
        assert_eq!(get(i).await, "one");
    }
    direct
        .batch_execute(&format!("UPDATE {table} SET v = 'behind' WHERE k = 1"))
        .await
        .unwrap();
    for i in [0, 1] {
        assert_eq!(
            get(i).await,
            "one",
            "client {i} should be served from Redis"
        );
    }
    // A write through worker 0 invalidates for worker 1's client too.
    clients[0]
        .batch_execute(&format!("UPDATE {table} SET v = 'two' WHERE k = 1"))
        .await
        .unwrap();
    assert_eq!(get(1).await, "two");
    assert_eq!(get(0).await, "two");
    direct
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
