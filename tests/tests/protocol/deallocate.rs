//! Dropping one of the client's protocol-level statements by name — a
//! Close message, or SQL `DEALLOCATE name` sent as a simple Query or
//! through the extended protocol (psycopg evicts its statements so) —
//! acts as on the client's own server, in both pool modes:
//! - transaction mode: the client's name is mapped onto a shared
//!   server-side statement, so pgstash answers the `DEALLOCATE` itself,
//!   message for message as Postgres does;
//! - session mode: the statement goes to the server, and pgstash forgets
//!   the name once the server confirms it, so a cached answer is never
//!   given for a statement the server no longer has, and a name prepared
//!   again in the same pipeline keeps its new text (and the writes it
//!   invalidates).

use pgstash::config::PoolMode;
use pgstash_tests::fixture;
use pgstash_tests::wire::{first_error, text_rows};
use pgstash_tests::{BackendMessage, Frontend, RawClient, TestPostgres, TestProxy};

/// Sends `messages` and a Sync (not after a simple Query, which is a
/// request of its own); the answer's message kinds (with command tags,
/// error codes and the transaction status), and its rows.
async fn request(
    c: &mut RawClient,
    messages: &[Frontend],
) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    c.push_all(messages);
    if !matches!(messages.last(), Some(Frontend::Query(_))) {
        c.push(&Frontend::Sync);
    }
    c.send().await.unwrap();
    let msgs = c.read_until_ready(1).await.unwrap();
    (msgs.iter().map(summary).collect(), text_rows(&msgs))
}

fn summary(m: &BackendMessage) -> String {
    match m.tag {
        b'C' => format!("C {}", m.command_tag().unwrap_or_default()),
        b'E' => format!("E {}", m.sqlstate().unwrap_or_default()),
        b'Z' => format!("Z {}", m.ready_status().unwrap_or(b'?') as char),
        _ => m.kind().to_owned(),
    }
}

fn parse(name: &str, sql: &str) -> Frontend {
    Frontend::parse(name, sql, &[])
}

fn run(name: &str) -> [Frontend; 2] {
    [Frontend::bind("", name, &[], 0), Frontend::execute("", 0)]
}

/// psycopg's eviction: Parse, Bind, Describe, Execute of `DEALLOCATE name`.
fn deallocate_extended(name: &str) -> Vec<Frontend> {
    vec![
        parse("", &format!("DEALLOCATE {name}")),
        Frontend::bind("", "", &[], 0),
        Frontend::describe_portal(""),
        Frontend::execute("", 0),
    ]
}

/// Prepares, runs and drops statements by each of the three ways, inside
/// and outside a transaction block; the transcript of every answer.
async fn drops(c: &mut RawClient) -> Vec<(Vec<String>, Vec<Vec<Option<String>>>)> {
    let mut out = Vec::new();
    for (i, drop) in [
        vec![Frontend::close_statement("s1")],
        vec![Frontend::query("DEALLOCATE s1")],
        deallocate_extended("s1"),
    ]
    .into_iter()
    .enumerate()
    {
        out.push(request(c, &[parse("s1", &format!("SELECT {i}"))]).await);
        out.push(request(c, &run("s1")).await);
        out.push(request(c, &drop).await);
        out.push(request(c, &run("s1")).await);
        // The name is free again, for another text.
        out.push(request(c, &[parse("s1", "SELECT 'again'")]).await);
        out.push(request(c, &run("s1")).await);
        out.push(request(c, &[Frontend::close_statement("s1")]).await);
    }
    // In a transaction block, with the block's status.
    out.push(request(c, &[Frontend::query("BEGIN")]).await);
    out.push(request(c, &[parse("s2", "SELECT 2")]).await);
    out.push(request(c, &deallocate_extended("s2")).await);
    out.push(request(c, &run("s2")).await);
    out.push(request(c, &[Frontend::query("ROLLBACK")]).await);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_dropped_by_name_is_gone_as_on_the_clients_own_server() {
    let pg = TestPostgres::new().await;
    let direct = drops(&mut pg.raw().await.unwrap()).await;
    // The extended DEALLOCATE, directly: every message answered.
    assert_eq!(
        direct[16].0,
        [
            "ParseComplete",
            "BindComplete",
            "NoData",
            "C DEALLOCATE",
            "Z I"
        ]
    );
    assert_eq!(direct[17].0, ["E 26000", "Z I"]);
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = TestProxy::with_pool(&pg, mode, 1).await;
        let through = drops(&mut proxy.raw().await.unwrap()).await;
        for (i, (want, got)) in direct.iter().zip(&through).enumerate() {
            assert_eq!(got, want, "{mode:?}, answer {i}");
        }
    }
}

const RULES: &str = r#"
[[rule]]
name = "items"
tables = ["items"]
ttl = "60s"
"#;

/// Session mode with caching: a statement's answer is cached, then the
/// statement is dropped; a Bind of it must be Postgres' 26000, not the
/// cached answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_a_dropped_statement_is_not_answered_from_the_cache() {
    let (_pg, proxy) = fixture::caching(
        &[
            "CREATE TABLE items (id int PRIMARY KEY, name text)",
            "INSERT INTO items VALUES (1, 'apple')",
        ],
        RULES,
        |c| c.pool.mode = PoolMode::Session,
    )
    .await;
    let mut c = proxy.raw().await.unwrap();
    const SELECT: &str = "SELECT name FROM items WHERE id = 1";
    let apple = vec![vec![Some("apple".to_owned())]];
    let mut fills = 0;
    for drop in [
        vec![Frontend::close_statement("s1")],
        vec![Frontend::query("DEALLOCATE s1")],
        deallocate_extended("s1"),
    ] {
        assert!(first_error(&c.simple_query("SELECT 1").await.unwrap()).is_none());
        request(&mut c, &[parse("s1", SELECT)]).await;
        assert_eq!(request(&mut c, &run("s1")).await.1, apple);
        fills += 1;
        proxy.wait_for_fills("items", fills).await;
        let hits = proxy.hits("items");
        assert_eq!(request(&mut c, &run("s1")).await.1, apple);
        assert_eq!(
            proxy.hits("items"),
            hits + 1,
            "the statement's answer is cached"
        );

        let (answer, _) = request(&mut c, &drop).await;
        assert!(!answer.iter().any(|m| m.starts_with('E')), "{answer:?}");
        let (answer, rows) = request(&mut c, &run("s1")).await;
        assert_eq!(answer, ["E 26000", "Z I"], "after {drop:?}: {rows:?}");
        // The next round fills anew (the cache is keyed by text, not name).
        c.simple_query("UPDATE items SET name = 'apple' WHERE id = 1")
            .await
            .unwrap();
    }
}

/// Session mode with caching: a Close and a Parse of the same name in one
/// pipeline leave the name standing for the new text — here a write,
/// whose execution must invalidate the cached read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_a_name_prepared_again_after_its_close_keeps_its_new_statement() {
    let (_pg, proxy) = fixture::caching(
        &[
            "CREATE TABLE items (id int PRIMARY KEY, name text)",
            "INSERT INTO items VALUES (1, 'apple')",
        ],
        RULES,
        |c| c.pool.mode = PoolMode::Session,
    )
    .await;
    let mut c = proxy.raw().await.unwrap();
    const SELECT: &str = "SELECT name FROM items WHERE id = 1";
    request(&mut c, &[parse("read", SELECT)]).await;
    request(&mut c, &[parse("s1", SELECT)]).await;
    assert_eq!(
        request(&mut c, &run("read")).await.1,
        [[Some("apple".to_owned())]]
    );
    proxy.wait_for_fills("items", 1).await;

    let (answer, _) = request(
        &mut c,
        &[
            Frontend::close_statement("s1"),
            parse("s1", "UPDATE items SET name = 'pear' WHERE id = 1"),
        ],
    )
    .await;
    assert_eq!(answer, ["CloseComplete", "ParseComplete", "Z I"]);
    let (answer, _) = request(&mut c, &run("s1")).await;
    assert_eq!(answer, ["BindComplete", "C UPDATE 1", "Z I"]);
    assert_eq!(
        request(&mut c, &run("read")).await.1,
        [[Some("pear".to_owned())]],
        "the UPDATE bound by its reused name invalidated the cached read"
    );
}
