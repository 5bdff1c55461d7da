//! Checks of the harness itself, against Postgres only: the raw client, the
//! throwaway-database lifecycle, Redis, and that the differential corpus is
//! deterministic (two direct runs agree), so a difference through pgstash is
//! pgstash's.

use pgstash_tests::differential::{self, corpus, Endpoint};
use pgstash_tests::fixture::database;
use pgstash_tests::wire::text_rows;
use pgstash_tests::{TestPostgres, TestRedis};

#[tokio::test]
async fn raw_client_logs_in_and_reads_rows_from_postgres() {
    let pg = TestPostgres::new().await;
    let mut c = pg.raw().await.expect("raw connect");
    assert!(c.backend_key().is_some(), "no BackendKeyData");
    assert_eq!(c.parameter("server_encoding").as_deref(), Some("UTF8"));
    let msgs = c.simple_query("SELECT 1 AS one, NULL AS n").await.unwrap();
    assert_eq!(text_rows(&msgs), vec![vec![Some("1".to_owned()), None]]);
    assert_eq!(msgs.last().and_then(|m| m.ready_status()), Some(b'I'));
}

#[tokio::test]
async fn test_database_is_dropped_with_its_guard() {
    let pg = TestPostgres::new().await;
    let name = pg.database.clone();
    let role = pg.create_role("harness_role", Some("pw")).await;
    let admin = pg.connect().await;
    drop(pg);
    let left: i64 = admin
        .query_one(
            "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1) + \
                    (SELECT count(*) FROM pg_roles WHERE rolname = $2)",
            &[&name, &role],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(left, 0, "database {name} or role {role} still exists");
}

#[tokio::test]
async fn redis_answers_and_prefix_is_unique() {
    let a = TestRedis::new();
    let b = TestRedis::new();
    assert_ne!(a.prefix, b.prefix);
    let key = format!("{}k", a.prefix);
    a.command(&["SET", &key, "v"]).unwrap();
    assert_eq!(a.keys(), vec![key]);
    assert!(b.keys().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_is_deterministic_against_postgres_itself() {
    let pg = database(&[corpus::FIXTURES]).await;
    let one = Endpoint::new("postgres", pg.addr(), pg.startup());
    let two = Endpoint::new("postgres again", pg.addr(), pg.startup());
    differential::compare(&one, &two, &corpus::all())
        .await
        .assert_identical();
    differential::compare_on_one_connection(&one, &two, &corpus::all())
        .await
        .assert_identical();
    let mut concurrent = corpus::types();
    concurrent.extend(corpus::errors());
    concurrent.extend(corpus::extended());
    differential::compare_concurrently(&one, &two, &concurrent, 4)
        .await
        .assert_identical();
}
