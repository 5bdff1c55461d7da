//! Redis Cluster and Sentinel: a cluster of the test's own (three masters,
//! a replica each) shared by several pgstash instances. Entries spread over
//! every master while reads after acknowledged writes stay fresh across
//! instances (G1–G3); a master killed mid-run (its replica promoted) or a
//! slot migrated mid-run never serves a stale read, and the cache comes
//! back by itself (G4); fast mode follows invalidations over the cluster's
//! pub/sub; an expiring hot entry shared by several instances is filled by
//! one of them while the others wait for it. Sentinel: pgstash finds the
//! master through it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgstash::CacheMode;
use pgstash_tests::cache::{executions, CachingProxy, COUNTER_FUNCTIONS};
use pgstash_tests::fixture::database;
use pgstash_tests::redis_cluster::{RedisCluster, RedisSentinel};

use super::consistency::{check_across, counters, prepare_read, read_row, Disruption, RULES};
use super::fast::wait_live;

/// The entries of `prefix` are `{<group tag>}e:<base>`, the group tags
/// `{<prefix>}` and `{<prefix>#n}`.
fn entry_pattern(prefix: &str) -> String {
    format!("{{{prefix}*}}e:*")
}

/// Waits until reads of row 1 through `proxy` hit again (the store has
/// recovered: renewed its epoch and answers).
async fn hits_again(proxy: &CachingProxy) {
    let client = proxy.connect().await;
    let stmt = prepare_read(&client).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = proxy.hits("counters");
        read_row(&client, &stmt, false, 1).await;
        read_row(&client, &stmt, false, 1).await;
        if proxy.hits("counters") > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cache did not come back after the disruption: {} lookup errors, \
             {} lookups skipped (store down), store up {}",
            proxy.errors("lookup"),
            proxy.bypassed("store_down"),
            proxy.metrics().store_up.get()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn instances(
    pg: &pgstash_tests::TestPostgres,
    url: &str,
    n: usize,
    mode: CacheMode,
) -> Vec<CachingProxy> {
    let mut proxies = Vec::new();
    for _ in 0..n {
        proxies.push(
            CachingProxy::start(pg, RULES, |c| {
                c.redis = Some(url.to_owned());
                c.cache.mode = mode;
                c.pool.size = 6;
            })
            .await,
        );
    }
    proxies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_spread_over_every_master_and_instances_agree() {
    let cluster = RedisCluster::start();
    let pg = database(&[
        &counters(),
        "CREATE TABLE spread (id int PRIMARY KEY, v int); \
         INSERT INTO spread SELECT g, g FROM generate_series(1, 300) g",
    ])
    .await;
    let rules =
        format!("{RULES}\n[[rule]]\nname = \"spread\"\ntables = [\"spread\"]\nttl = \"60s\"\n");
    let a = CachingProxy::start(&pg, &rules, |c| cluster.configure(c)).await;
    let client = a.connect().await;
    let stmt = client
        .prepare("SELECT v FROM spread WHERE id = $1")
        .await
        .unwrap();
    for id in 1..=300i32 {
        let v: i32 = client.query_one(&stmt, &[&id]).await.unwrap().get(0);
        assert_eq!(v, id);
    }
    a.wait_for_fills("spread", 300).await;
    let prefix = pgstash::Config::default().cache.key_prefix;
    let spread = cluster.keys_per_master(&entry_pattern(&prefix));
    let total: usize = spread.iter().map(|(_, n)| n).sum();
    eprintln!("entries per master: {spread:?}");
    assert!(total >= 300, "{total} entries stored: {spread:?}");
    for (port, n) in &spread {
        assert!(
            n * 5 >= total,
            "master {port} holds {n} of {total} entries (under 20 %): {spread:?}"
        );
    }
    // Served back as hits, from every master: one script on the entry's
    // node per hit, no master read by every hit.
    let calls = || cluster.calls_per_master("evalsha");
    let calls_before = calls();
    let before = a.hits("spread");
    for id in 1..=300i32 {
        let v: i32 = client.query_one(&stmt, &[&id]).await.unwrap().get(0);
        assert_eq!(v, id);
    }
    assert_eq!(a.hits("spread") - before, 300);
    let per_master: Vec<(u16, u64)> = calls()
        .into_iter()
        .zip(calls_before)
        .map(|((port, after), (_, before))| (port, after - before))
        .collect();
    eprintln!("hit scripts per master: {per_master:?}");
    let scripts: u64 = per_master.iter().map(|(_, n)| n).sum();
    assert_eq!(scripts, 300, "one script per hit: {per_master:?}");
    for (port, n) in &per_master {
        assert!(
            n * 5 >= scripts,
            "master {port} ran {n} of {scripts} hit scripts (under 20 %): {per_master:?}"
        );
    }
    let reads = cluster.calls_per_master("mget");
    assert!(
        reads.iter().all(|(_, n)| *n == 0),
        "hits read the meta keys apart: {reads:?}"
    );
    drop(a);

    let proxies = instances(&pg, &cluster.url(), 3, CacheMode::Strict).await;
    let refs: Vec<&CachingProxy> = proxies.iter().collect();
    check_across(&pg, &refs, "redis cluster, 3 instances", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_mode_on_a_cluster_serves_locally_and_follows_other_instances_writes() {
    let cluster = RedisCluster::start();
    let pg = database(&[&counters()]).await;
    let proxies = instances(&pg, &cluster.url(), 2, CacheMode::Fast).await;
    let (a, b) = (&proxies[0], &proxies[1]);
    for proxy in [a, b] {
        wait_live(proxy).await;
    }
    let (client_a, client_b) = (a.connect().await, b.connect().await);
    let stmt_a = prepare_read(&client_a).await;
    let stmt_b = prepare_read(&client_b).await;
    assert_eq!(read_row(&client_a, &stmt_a, false, 1).await, 0);
    a.wait_for_fills("counters", 1).await;
    for _ in 0..3 {
        assert_eq!(read_row(&client_b, &stmt_b, false, 1).await, 0);
    }
    assert!(
        b.metrics().local_hits.get() >= 2,
        "B serves A's entry locally"
    );
    // A write through A reaches B's local tier over the cluster's pub/sub,
    // long before local_max_age.
    let resets = b.metrics().local_resets.get();
    let published = publishes(&cluster);
    client_a
        .execute("UPDATE counters SET v = 41 WHERE id = 1", &[])
        .await
        .unwrap();
    let started = Instant::now();
    while read_row(&client_b, &stmt_b, false, 1).await != 41 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "B still serves the value from before A's write"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!("B saw A's write after {:?}", started.elapsed());
    // The write bumped the table in all 16 groups, and said so in one
    // message per master (each PUBLISH on a Cluster goes to every node),
    // which B understood: it learned the versions rather than resetting.
    let messages = publishes(&cluster) - published;
    let masters = cluster.masters().len() as u64;
    assert!(
        (1..=masters).contains(&messages),
        "{messages} PUBLISH for one write over {masters} masters"
    );
    assert_eq!(b.metrics().local_resets.get(), resets, "B reset its tier");
    drop((client_a, client_b));
    // One instance's own reads stay fresh under concurrency.
    check_across(&pg, &[a], "redis cluster, fast mode", None).await;
}

/// PUBLISH calls so far on all the masters (inside scripts included).
fn publishes(cluster: &RedisCluster) -> u64 {
    cluster
        .calls_per_master("publish")
        .iter()
        .map(|(_, n)| n)
        .sum()
}

/// The master serving group 0's slot (epoch, versions, the channel) of
/// the default prefix: its loss can lose invalidations of its groups.
fn meta_master(cluster: &RedisCluster) -> pgstash_tests::redis_cluster::Master {
    let prefix = pgstash::Config::default().cache.key_prefix;
    cluster.master_of(cluster.slot(&format!("{{{prefix}}}epoch")))
}

/// Kills the master of the meta slot a quarter into the checker's run,
/// with `n` instances in `mode`, and checks the cache comes back.
async fn kill_the_meta_master_mid_run(n: usize, mode: CacheMode, store: &str) {
    let cluster = Arc::new(Mutex::new(RedisCluster::start()));
    let pg = database(&[&counters()]).await;
    let url = cluster.lock().unwrap().url();
    let proxies = instances(&pg, &url, n, mode).await;
    let victim = meta_master(&cluster.lock().unwrap());
    let killer = cluster.clone();
    let disruption: Disruption = Box::new(move || {
        let mut cluster = killer.lock().unwrap();
        let prefix = pgstash::Config::default().cache.key_prefix;
        let slot = cluster.slot(&format!("{{{prefix}}}epoch"));
        cluster.kill(victim.port);
        cluster.wait_moved(slot, victim.port);
    });
    let refs: Vec<&CachingProxy> = proxies.iter().collect();
    check_across(&pg, &refs, store, Some(disruption)).await;
    for proxy in &proxies {
        hits_again(proxy).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_run_never_serves_a_stale_read() {
    kill_the_meta_master_mid_run(2, CacheMode::Strict, "redis cluster, master killed").await;
}

/// Fast mode promises read-your-writes through one instance (others follow
/// within the pub/sub delivery time): one instance, its local tier emptied
/// when its connections to the killed master drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_run_in_fast_mode_never_serves_a_stale_read() {
    kill_the_meta_master_mid_run(1, CacheMode::Fast, "redis cluster, fast, master killed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_migrated_mid_run_never_serve_a_stale_read() {
    let cluster = Arc::new(RedisCluster::start());
    let pg = database(&[&counters()]).await;
    let proxies = instances(&pg, &cluster.url(), 2, CacheMode::Strict).await;
    let mover = cluster.clone();
    let disruption: Disruption = Box::new(move || {
        let prefix = pgstash::Config::default().cache.key_prefix;
        // The meta slot, then the slot of an entry in use.
        let meta = mover.slot(&format!("{{{prefix}}}epoch"));
        let from = mover.master_of(meta);
        let masters = mover.masters();
        let to = masters
            .iter()
            .find(|m| m.port != from.port)
            .expect("another master");
        mover.migrate_slot(meta, &from, to);
        assert_eq!(mover.master_of(meta).port, to.port);
        let entries = mover.keys_per_master(&entry_pattern(&prefix));
        let (port, _) = entries.iter().find(|(_, n)| *n > 0).expect("an entry");
        let key = pgstash_tests::redis_cluster::cli(
            *port,
            &["--scan", "--pattern", &entry_pattern(&prefix)],
        );
        let key = key.lines().next().expect("an entry key");
        let slot = mover.slot(key);
        let from = mover.master_of(slot);
        let to = masters
            .iter()
            .find(|m| m.port != from.port)
            .expect("another master");
        mover.migrate_slot(slot, &from, to);
    });
    let refs: Vec<&CachingProxy> = proxies.iter().collect();
    check_across(
        &pg,
        &refs,
        "redis cluster, slots migrated",
        Some(disruption),
    )
    .await;
    for proxy in &proxies {
        hits_again(proxy).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_hot_entry_is_filled_by_one_instance_while_the_others_wait() {
    const INSTANCES: usize = 3;
    const CLIENTS: usize = 4;
    const RUN: Duration = Duration::from_millis(3500);
    let cluster = RedisCluster::start();
    let pg = database(&[
        COUNTER_FUNCTIONS,
        "CREATE TABLE hot (id int PRIMARY KEY); INSERT INTO hot VALUES (1)",
    ])
    .await;
    let rules = "[[rule]]\nname = \"hot\"\ntables = [\"hot\"]\nttl = \"1s\"\n";
    let mut proxies = Vec::new();
    for _ in 0..INSTANCES {
        proxies.push(CachingProxy::start(&pg, rules, |c| cluster.configure(c)).await);
    }
    // 300 ms upstream: an expensive query every client asks again and again.
    let sql = "SELECT counted_slow(id, 0.3) AS v FROM hot";
    let before = executions(&pg).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for proxy in &proxies {
        for _ in 0..CLIENTS {
            let client = proxy.connect().await;
            tasks.push(tokio::spawn(async move {
                while started.elapsed() < RUN {
                    client.simple_query(sql).await.expect("query");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let elapsed = started.elapsed();
    let ran = executions(&pg).await - before;
    let waits: Vec<String> = proxies
        .iter()
        .map(|p| {
            let m = &p.metrics().lease_waits;
            format!(
                "filled {} took_over {} timed_out {}",
                m.with_label_values(&["filled"]).get(),
                m.with_label_values(&["took_over"]).get(),
                m.with_label_values(&["timed_out"]).get()
            )
        })
        .collect();
    eprintln!("{ran} upstream runs in {elapsed:?}; lease waits: {waits:?}");
    // One run per expiry: the entry lives 1 s after each 300 ms fill.
    let expiries = elapsed.as_millis() as i64 / 1000 + 1;
    assert!(
        ran <= expiries,
        "{ran} upstream runs for at most {expiries} expiries across {INSTANCES} instances \
         (lease waits: {waits:?})"
    );
    let filled: u64 = proxies
        .iter()
        .map(|p| p.metrics().lease_waits.with_label_values(&["filled"]).get())
        .sum();
    assert!(
        filled > 0,
        "no instance waited for another's fill: {waits:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgstash_finds_the_master_through_sentinel_and_follows_a_failover() {
    let mut sentinel = RedisSentinel::start();
    let pg = database(&[&counters()]).await;
    let proxy = CachingProxy::start(&pg, RULES, |c| c.redis = Some(sentinel.url())).await;
    let client = proxy.connect().await;
    let stmt = prepare_read(&client).await;
    assert_eq!(read_row(&client, &stmt, false, 1).await, 0);
    proxy.wait_for_fills("counters", 1).await;
    assert_eq!(read_row(&client, &stmt, false, 1).await, 0);
    assert_eq!(proxy.hits("counters"), 1, "served from the master");
    let keys = sentinel.master_cli(&["DBSIZE"]);
    assert!(keys.trim().parse::<u64>().unwrap_or(0) >= 1, "{keys}");

    // The master dies; the sentinel promotes the replica.
    let old_master = sentinel.master_port;
    sentinel.fail_over();
    assert_ne!(sentinel.current_master(), Some(old_master));
    // A write now is seen at once, and the cache serves again from the
    // new master by itself.
    client
        .execute("UPDATE counters SET v = 7 WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(read_row(&client, &stmt, false, 1).await, 7);
    hits_again(&proxy).await;
    assert_eq!(read_row(&client, &stmt, false, 1).await, 7);
    let keys = sentinel.master_cli(&["DBSIZE"]);
    assert!(
        keys.trim().parse::<u64>().unwrap_or(0) >= 1,
        "entries on the new master: {keys}"
    );
}
