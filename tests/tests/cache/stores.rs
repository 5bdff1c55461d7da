//! The store contract (`proxy/src/cache/store/contract.rs`), checked the same
//! way against every store: the in-process store, Redis in strict mode and
//! Redis in fast mode, on one Redis and on a Redis Cluster. Each property is one function generic over
//! `CacheStore`; each store runs all of them. A new store joins by adding a
//! test that builds it and calls [`conforms`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgstash::cache::store::{CacheStore, Filler, MemoryStore, RedisStore, StoreError};
use pgstash::cache::{KeyBase, TableKey};
use pgstash::config::{CacheConfig, CacheMode};
use pgstash::observe::Metrics;
use pgstash_tests::cache::RedisPrefix;
use pgstash_tests::redis_cluster::RedisCluster;

const TTL: Duration = Duration::from_secs(60);

fn base(n: u8) -> KeyBase {
    KeyBase([n; 32])
}

fn table(name: &str) -> TableKey {
    TableKey::new("conformance", name)
}

fn value(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Looks `base` up and fills it with `text` the way the engine does: kept
/// locally, and put when keeping locally was not for good.
async fn fill<S: CacheStore>(store: &S, base: &KeyBase, tables: &[TableKey], text: &str) {
    let lookup = store.lookup(base, tables).await.expect("lookup");
    assert!(lookup.value.is_none(), "filled an entry that was there");
    put(store, &lookup.key, tables, &lookup.versions, text).await;
}

async fn put<S: CacheStore>(
    store: &S,
    key: &str,
    tables: &[TableKey],
    versions: &[u64],
    text: &str,
) {
    if !store.keep_local(key, &value(text), TTL) {
        store
            .put(key, value(text), TTL, tables, versions)
            .await
            .expect("put");
    }
}

async fn read<S: CacheStore>(store: &S, base: &KeyBase, tables: &[TableKey]) -> Option<Bytes> {
    store.lookup(base, tables).await.expect("lookup").value
}

/// Every property of the contract a single store instance can show.
async fn conforms<S: CacheStore>(store: &S) {
    assert!(store.ready().await, "{}: not ready", store.kind());
    a_fill_is_found_under_the_key_its_lookup_gave(store).await;
    entries_of_other_bases_are_never_found(store).await;
    invalidating_a_table_hides_exactly_the_entries_that_read_it(store).await;
    a_fill_from_before_an_invalidation_is_never_found_after_it(store).await;
    invalidating_everything_hides_every_entry(store).await;
    entries_expire_with_their_ttl(store).await;
}

async fn a_fill_is_found_under_the_key_its_lookup_gave<S: CacheStore>(store: &S) {
    let tables = [table("a1")];
    fill(store, &base(1), &tables, "rows of 1").await;
    let lookup = store.lookup(&base(1), &tables).await.expect("lookup");
    assert_eq!(lookup.value, Some(value("rows of 1")), "{}", store.kind());
    assert_eq!(
        read(store, &base(1), &tables).await,
        Some(value("rows of 1"))
    );
}

async fn entries_of_other_bases_are_never_found<S: CacheStore>(store: &S) {
    let tables = [table("b1")];
    fill(store, &base(2), &tables, "rows of 2").await;
    assert_eq!(
        read(store, &base(3), &tables).await,
        None,
        "{}",
        store.kind()
    );
}

async fn invalidating_a_table_hides_exactly_the_entries_that_read_it<S: CacheStore>(store: &S) {
    let (users, orders) = (table("c_users"), table("c_orders"));
    fill(store, &base(4), std::slice::from_ref(&users), "users").await;
    fill(store, &base(5), std::slice::from_ref(&orders), "orders").await;
    let both = [orders.clone(), users.clone()];
    fill(store, &base(6), &both, "join").await;
    store
        .invalidate(std::slice::from_ref(&users))
        .await
        .expect("invalidate");
    let kind = store.kind();
    assert_eq!(
        read(store, &base(4), std::slice::from_ref(&users)).await,
        None,
        "{kind}"
    );
    assert_eq!(read(store, &base(6), &both).await, None, "{kind}");
    assert_eq!(
        read(store, &base(5), std::slice::from_ref(&orders)).await,
        Some(value("orders")),
        "{kind}: an invalidation of another table hid this entry"
    );
}

/// G1: the classic race — a reader misses and reads old rows, a writer
/// commits and invalidates, and only then does the reader store its rows.
async fn a_fill_from_before_an_invalidation_is_never_found_after_it<S: CacheStore>(store: &S) {
    let tables = [table("d1")];
    let before = store.lookup(&base(7), &tables).await.expect("lookup");
    store.invalidate(&tables).await.expect("invalidate");
    put(store, &before.key, &tables, &before.versions, "old rows").await;
    assert_eq!(
        read(store, &base(7), &tables).await,
        None,
        "{}",
        store.kind()
    );
    // Versions keep moving: every invalidation gives a new key.
    let mut keys = vec![store.lookup(&base(7), &tables).await.expect("lookup").key];
    for _ in 0..3 {
        store.invalidate(&tables).await.expect("invalidate");
        let key = store.lookup(&base(7), &tables).await.expect("lookup").key;
        assert!(
            !keys.contains(&key),
            "{}: key {key} came back",
            store.kind()
        );
        keys.push(key);
    }
}

async fn invalidating_everything_hides_every_entry<S: CacheStore>(store: &S) {
    let (t1, t2) = ([table("e1")], [table("e2")]);
    fill(store, &base(8), &t1, "one").await;
    fill(store, &base(9), &t2, "two").await;
    fill(store, &base(10), &[], "no tables").await;
    store.invalidate_all().await.expect("invalidate_all");
    let kind = store.kind();
    assert_eq!(read(store, &base(8), &t1).await, None, "{kind}");
    assert_eq!(read(store, &base(9), &t2).await, None, "{kind}");
    assert_eq!(read(store, &base(10), &[]).await, None, "{kind}");
}

async fn entries_expire_with_their_ttl<S: CacheStore>(store: &S) {
    let tables = [table("f1")];
    let lookup = store.lookup(&base(11), &tables).await.expect("lookup");
    let ttl = Duration::from_millis(50);
    if !store.keep_local(&lookup.key, &value("brief"), ttl) {
        store
            .put(&lookup.key, value("brief"), ttl, &tables, &lookup.versions)
            .await
            .expect("put");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        read(store, &base(11), &tables).await,
        None,
        "{}",
        store.kind()
    );
}

/// G2/G3 across two instances sharing a store: once `writer`'s invalidation
/// returned, `reader` finds no entry that read the table — at once in
/// strict mode, within `bound` in fast mode.
async fn instances_agree<S: CacheStore>(writer: &S, reader: &S, bound: Duration) {
    let tables = [table("g1")];
    fill(reader, &base(12), &tables, "before").await;
    assert_eq!(
        read(writer, &base(12), &tables).await,
        Some(value("before"))
    );
    assert_eq!(
        read(reader, &base(12), &tables).await,
        Some(value("before"))
    );
    writer.invalidate(&tables).await.expect("invalidate");
    assert_eq!(
        read(writer, &base(12), &tables).await,
        None,
        "the writer's own read"
    );
    let deadline = Instant::now() + bound;
    while read(reader, &base(12), &tables).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "{}: another instance still served the entry {bound:?} after the invalidation",
            reader.kind()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn redis(prefix: &RedisPrefix, mode: CacheMode) -> Arc<RedisStore> {
    redis_at(&prefix.url(), &prefix.prefix(), mode).await
}

async fn redis_at(url: &str, key_prefix: &str, mode: CacheMode) -> Arc<RedisStore> {
    let config = CacheConfig {
        mode,
        key_prefix: key_prefix.to_owned(),
        store_timeout: Duration::from_millis(500),
        ..CacheConfig::default()
    };
    let store = RedisStore::connect(url, &config, &Metrics::new())
        .await
        .expect("connect");
    if mode == CacheMode::Fast {
        // Local hits only once invalidations from other instances arrive.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.local_live() != Some(true) {
            assert!(Instant::now() < deadline, "fast mode never went live");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    store
}

#[tokio::test]
async fn the_in_process_store_keeps_the_contract() {
    conforms(&MemoryStore::new(1 << 20)).await;
}

#[tokio::test]
async fn redis_in_strict_mode_keeps_the_contract() {
    let prefix = RedisPrefix::new();
    let (a, b) = (
        redis(&prefix, CacheMode::Strict).await,
        redis(&prefix, CacheMode::Strict).await,
    );
    conforms(&*a).await;
    instances_agree(&*a, &*b, Duration::ZERO).await;
}

#[tokio::test]
async fn redis_in_fast_mode_keeps_the_contract() {
    let prefix = RedisPrefix::new();
    let (a, b) = (
        redis(&prefix, CacheMode::Fast).await,
        redis(&prefix, CacheMode::Fast).await,
    );
    conforms(&*a).await;
    instances_agree(&*a, &*b, Duration::from_secs(1)).await;
}

/// Fill leases (property 8): of two instances missing the same entry, one
/// fills and the other is told to wait; the holder's put gives the lease
/// up (the entry is then a hit everywhere), and so does an abandon.
async fn one_instance_fills_a_missed_entry<S: CacheStore>(a: &S, b: &S) {
    let tables = [table("lease")];
    let first = a.lookup(&base(40), &tables).await.expect("lookup");
    assert_eq!(
        first.filler,
        Filler::Us,
        "{}: the first miss fills",
        a.kind()
    );
    let again = a.lookup(&base(40), &tables).await.expect("lookup");
    assert_eq!(again.filler, Filler::Us, "the holder's own later misses");
    let other = b.lookup(&base(40), &tables).await.expect("lookup");
    assert_eq!(other.filler, Filler::Other, "another instance waits");
    put(a, &first.key, &tables, &first.versions, "leased").await;
    assert_eq!(read(b, &base(40), &tables).await, Some(value("leased")));

    let missed = a.lookup(&base(41), &tables).await.expect("lookup");
    assert_eq!(missed.filler, Filler::Us);
    a.abandon(&missed.key);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let other = b.lookup(&base(41), &tables).await.expect("lookup");
        if other.filler == Filler::Us {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an abandoned lease was not given up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn cluster_store(cluster: &RedisCluster, mode: CacheMode) -> Arc<RedisStore> {
    redis_at(&cluster.url(), &format!("conformance-{mode:?}:"), mode).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_keeps_the_contract() {
    let cluster = RedisCluster::start();
    for mode in [CacheMode::Strict, CacheMode::Fast] {
        let (a, b) = (
            cluster_store(&cluster, mode).await,
            cluster_store(&cluster, mode).await,
        );
        conforms(&*a).await;
        let bound = match mode {
            CacheMode::Strict => Duration::ZERO,
            CacheMode::Fast => Duration::from_secs(1),
        };
        instances_agree(&*a, &*b, bound).await;
        one_instance_fills_a_missed_entry(&*a, &*b).await;
    }
}

/// Issue #18: a lookup on Cluster goes to its group's master over a plain
/// connection of the store's own for that master, not through the cluster
/// clients (which route each call by slot and spread a master's calls over
/// one connection per pooled client). With the default pool of 4 over 3
/// masters, one connection per master carries every lookup (`CLIENT LIST`:
/// the connections whose last command was `EVALSHA`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_lookups_reach_each_master_over_one_connection() {
    let cluster = RedisCluster::start();
    let store = redis_at(&cluster.url(), "direct:", CacheMode::Strict).await;
    let masters = cluster.masters();
    // Bases 0..48 name each of the 16 groups three times, in turn.
    for n in 0..48 {
        store
            .lookup(&base(n), &[table("direct")])
            .await
            .expect("lookup");
    }
    let lookups = cluster.calls_per_master("evalsha");
    for master in &masters {
        let calls = lookups
            .iter()
            .find(|(p, _)| *p == master.port)
            .map(|(_, c)| *c);
        assert!(
            calls.unwrap_or(0) > 0,
            "master {} served no lookup",
            master.port
        );
        let list = pgstash_tests::redis_cluster::cli(master.port, &["CLIENT", "LIST"]);
        let carrying = list.lines().filter(|l| l.contains(" cmd=evalsha ")).count();
        assert_eq!(carrying, 1, "master {}: {list}", master.port);
    }
}

#[tokio::test]
async fn instances_sharing_redis_take_turns_filling() {
    let prefix = RedisPrefix::new();
    let (a, b) = (
        redis(&prefix, CacheMode::Strict).await,
        redis(&prefix, CacheMode::Strict).await,
    );
    one_instance_fills_a_missed_entry(&*a, &*b).await;
    let memory = MemoryStore::new(1 << 20);
    let lookup = memory.lookup(&base(40), &[table("lease")]);
    assert_eq!(lookup.filler, Filler::Unclaimed, "one process: no lease");
}

/// G4 and the bound on every call: a Redis that does not answer is an
/// error within the store's timeout, never an entry and never a hang.
#[tokio::test]
async fn an_unreachable_redis_fails_every_call_within_its_timeout() {
    // A port nothing listens on: bind one, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    for mode in [CacheMode::Strict, CacheMode::Fast] {
        let config = CacheConfig {
            mode,
            key_prefix: "pgstash_unreachable:".into(),
            store_timeout: Duration::from_millis(100),
            ..CacheConfig::default()
        };
        let url = format!("redis://127.0.0.1:{port}");
        let store = RedisStore::connect(&url, &config, &Metrics::new())
            .await
            .expect("connect");
        let tables = [table("h1")];
        let started = Instant::now();
        let lookup: Result<_, StoreError> = store.lookup(&base(13), &tables).await;
        assert!(lookup.is_err(), "{mode:?}: a lookup answered without Redis");
        assert!(
            store.invalidate(&tables).await.is_err(),
            "{mode:?}: invalidation 'recorded'"
        );
        assert!(!store.ready().await);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{mode:?}: calls took {:?}",
            started.elapsed()
        );
    }
}
