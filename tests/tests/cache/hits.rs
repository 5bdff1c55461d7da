//! Hits and misses: a ruled query's second run is answered from the cache
//! (simple and extended protocol) without Postgres executing it again, the
//! bytes of a hit are exactly what Postgres sends (text and binary results),
//! and concurrent identical misses run upstream once.
//!
//! "Executed upstream" is measured by Postgres itself: the queries call
//! `counted(…)`, an IMMUTABLE function that advances a sequence.

use std::sync::Arc;
use std::time::Duration;

use pgstash_tests::cache::{executions, COUNTER_FUNCTIONS};
use pgstash_tests::fixture::caching;
use pgstash_tests::postgres::{describe, simple_rows as rows};
use pgstash_tests::wire::{BackendMessage, Frontend, RawClient};

const RULES: &str = r#"
[[rule]]
name = "items"
tables = ["items"]
ttl = "60s"
"#;

const FIXTURE: &str = r#"
CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[],
                    seen timestamptz, blob bytea, ratio float8);
INSERT INTO items VALUES
  (1, 'apple', 1.25, '{red,fruit}', '2024-01-01 10:00+00', '\x00ff', 0.1),
  (2, 'bread', 2.50, NULL, NULL, NULL, -1e300),
  (3, 'ünïcødé', 7.99, '{}', '2024-03-01 00:00+00', '', 'NaN');
"#;

#[tokio::test]
async fn second_simple_query_is_a_hit_and_does_not_run_upstream() {
    let (pg, proxy) = caching(&[FIXTURE, COUNTER_FUNCTIONS], RULES, |_| {}).await;
    let client = proxy.connect().await;
    let sql = "SELECT id, name, price, counted(id) AS c FROM items WHERE id = 2";

    let before = executions(&pg).await;
    let first = rows(client.simple_query(sql).await.unwrap());
    assert_eq!(
        executions(&pg).await,
        before + 1,
        "the first run (a miss) executes upstream once"
    );
    assert_eq!((proxy.misses("items"), proxy.hits("items")), (1, 0));
    proxy.wait_for_fills("items", 1).await;

    let second = rows(client.simple_query(sql).await.unwrap());
    assert_eq!(proxy.hits("items"), 1, "the second run is a hit");
    assert_eq!(
        executions(&pg).await,
        before + 1,
        "a hit must not execute the query upstream"
    );
    assert_eq!(second, first);
    assert_eq!(
        first,
        vec![vec![
            Some("2".into()),
            Some("bread".into()),
            Some("2.50".into()),
            Some("2".into())
        ]]
    );
}

#[tokio::test]
async fn second_extended_query_is_a_hit_and_does_not_run_upstream() {
    let (pg, proxy) = caching(&[FIXTURE, COUNTER_FUNCTIONS], RULES, |_| {}).await;
    let client = proxy.connect().await;
    let sql = "SELECT name, counted(id) AS c FROM items WHERE id = $1";
    let run = |id: i32| {
        let client = &client;
        async move {
            client
                .query(sql, &[&id])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)))
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1)))
                .collect::<Vec<_>>()
        }
    };

    let before = executions(&pg).await;
    assert_eq!(run(2).await, vec![("bread".to_owned(), 2)]);
    assert_eq!(executions(&pg).await, before + 1);
    proxy.wait_for_fills("items", 1).await;

    assert_eq!(run(2).await, vec![("bread".to_owned(), 2)]);
    assert_eq!(proxy.hits("items"), 1, "the second run is a hit");
    assert_eq!(
        executions(&pg).await,
        before + 1,
        "a hit must not execute the query upstream"
    );

    // Another parameter value is another entry.
    assert_eq!(run(1).await, vec![("apple".to_owned(), 1)]);
    assert_eq!(proxy.hits("items"), 1, "a different parameter must not hit");
    assert_eq!(executions(&pg).await, before + 2);

    // A statement prepared once and executed repeatedly hits too.
    let stmt = client.prepare(sql).await.unwrap();
    let hits = proxy.hits("items");
    let again = client.query(&stmt, &[&2i32]).await.unwrap();
    assert_eq!(again[0].get::<_, String>(0), "bread");
    assert_eq!(proxy.hits("items"), hits + 1);
    assert_eq!(executions(&pg).await, before + 2);
}

/// Runs `messages` on a raw connection and returns everything up to the
/// ReadyForQuery.
async fn exchange(client: &mut RawClient, messages: &[Frontend]) -> Vec<BackendMessage> {
    client.push_all(messages).send().await.expect("send");
    client.read_until_ready(1).await.expect("answer")
}

/// The answer through pgstash on a miss and then on a hit must both be the
/// answer of Postgres, byte for byte.
async fn assert_hit_is_byte_identical(messages: &[Frontend]) {
    let (pg, proxy) = caching(&[FIXTURE, COUNTER_FUNCTIONS], RULES, |_| {}).await;
    let mut direct = pg.raw().await.expect("direct connect");
    let want = exchange(&mut direct, messages).await;
    assert!(
        want.iter().any(|m| m.tag == b'D'),
        "the fixture returns rows: {want:?}"
    );

    let mut client = proxy.raw().await.expect("proxy connect");
    let miss = exchange(&mut client, messages).await;
    assert_eq!(miss, want, "the miss differs from Postgres");
    proxy.wait_for_fills("items", 1).await;

    let mut other = proxy.raw().await.expect("proxy connect");
    let hit = exchange(&mut other, messages).await;
    assert_eq!(proxy.hits("items"), 1, "the second run must be a hit");
    assert_eq!(hit, want, "the hit differs from Postgres");
    // The connection is still in step after a hit.
    let after = exchange(&mut other, messages).await;
    assert_eq!(after, want);
    assert_eq!(proxy.hits("items"), 2);
}

const ALL_COLUMNS: &str =
    "SELECT id, name, price, tags, seen, blob, ratio FROM items WHERE id <= $1 ORDER BY id";

fn extended(result_format: i16) -> Vec<Frontend> {
    vec![
        Frontend::parse("", ALL_COLUMNS, &[]),
        Frontend::bind("", "", &[Some("3")], result_format),
        Frontend::describe_portal(""),
        Frontend::execute("", 0),
        Frontend::Sync,
    ]
}

#[tokio::test]
async fn simple_query_hit_is_byte_identical_to_postgres() {
    assert_hit_is_byte_identical(&[Frontend::query(
        "SELECT id, name, price, tags, seen, blob, ratio FROM items ORDER BY id",
    )])
    .await;
}

#[tokio::test]
async fn extended_text_hit_is_byte_identical_to_postgres() {
    assert_hit_is_byte_identical(&extended(0)).await;
}

#[tokio::test]
async fn extended_binary_hit_is_byte_identical_to_postgres() {
    assert_hit_is_byte_identical(&extended(1)).await;
}

#[tokio::test]
async fn text_and_binary_results_are_separate_entries() {
    let (pg, proxy) = caching(&[FIXTURE, COUNTER_FUNCTIONS], RULES, |_| {}).await;
    let mut direct = pg.raw().await.unwrap();
    let want_text = exchange(&mut direct, &extended(0)).await;
    let want_binary = exchange(&mut direct, &extended(1)).await;
    assert_ne!(want_text, want_binary);

    let mut client = proxy.raw().await.unwrap();
    exchange(&mut client, &extended(0)).await;
    proxy.wait_for_fills("items", 1).await;
    assert_eq!(
        exchange(&mut client, &extended(1)).await,
        want_binary,
        "a binary request must not get the text entry"
    );
    assert_eq!(proxy.hits("items"), 0);
    proxy.wait_for_fills("items", 2).await;
    assert_eq!(exchange(&mut client, &extended(0)).await, want_text);
    assert_eq!(exchange(&mut client, &extended(1)).await, want_binary);
    assert_eq!(proxy.hits("items"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_misses_run_upstream_once() {
    const CLIENTS: usize = 50;
    let (pg, proxy) = caching(&[FIXTURE, COUNTER_FUNCTIONS], RULES, |_| {}).await;
    // 200 ms upstream: every client asks while the first is still running.
    let sql = "SELECT counted_slow(id, 0.2) AS v FROM items WHERE id = 3";
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(proxy.connect().await);
    }
    let before = executions(&pg).await;
    let start = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                rows(client.simple_query(sql).await.unwrap())
            })
        })
        .collect();
    for task in tasks {
        let got = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("a client did not get its answer within 20s")
            .unwrap();
        assert_eq!(got, vec![vec![Some("3".to_owned())]]);
    }
    assert_eq!(
        executions(&pg).await - before,
        1,
        "{CLIENTS} identical concurrent misses must run upstream once \
         (misses {}, hits {}, coalesced {})",
        proxy.misses("items"),
        proxy.hits("items"),
        proxy.coalesced("items")
    );
    assert_eq!(proxy.misses("items"), 1);
    assert_eq!(proxy.hits("items"), CLIENTS as u64 - 1);
    assert!(
        proxy.coalesced("items") >= 1,
        "clients that arrived during the fill wait for it"
    );
}
