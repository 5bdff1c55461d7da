//! The client's unnamed prepared statement lives exactly as long through
//! pgstash as on its own server: queries pgstash runs itself on the
//! client's server connection (reading settings back after `set_config`,
//! checking a pinned connection for session-bound state) do not drop it,
//! and, in session mode, the client's own simple Query does (a Bind of it
//! is then 26000; in transaction mode the connection is shared, and the
//! client's statement is parsed again rather than another's bound).
//! asyncpg prepares an uncached statement unnamed, introspects its types
//! with named statements that call `set_config`, then binds it.

use pgstash::config::PoolMode;
use pgstash_tests::wire::{first_error, text_rows};
use pgstash_tests::{Frontend, RawClient, TestPostgres, TestProxy};

type Outcome = Result<Vec<Vec<Option<String>>>, String>;

/// Sends `messages` and a Sync; the rows they returned, or the SQLSTATE.
async fn request(c: &mut RawClient, messages: &[Frontend]) -> Outcome {
    c.push_all(messages)
        .push(&Frontend::Sync)
        .send()
        .await
        .unwrap();
    let msgs = c.read_until_ready(1).await.unwrap();
    match first_error(&msgs) {
        Some(e) => Err(e.sqlstate().unwrap_or_default()),
        None => Ok(text_rows(&msgs)),
    }
}

fn bind_execute(statement: &str) -> [Frontend; 2] {
    [
        Frontend::bind("", statement, &[], 0),
        Frontend::execute("", 0),
    ]
}

/// asyncpg's steps: prepare unnamed, run named statements that change a
/// setting (pgstash reads settings back after each), then bind the unnamed
/// statement; then a simple Query, after which it is gone.
async fn introspection_steps(c: &mut RawClient) -> Vec<Outcome> {
    let mut outcomes = vec![
        request(
            c,
            &[
                Frontend::parse("", "SELECT 41 + 1", &[]),
                Frontend::describe_statement(""),
            ],
        )
        .await,
    ];
    for (name, sql) in [
        ("cur", "SELECT set_config('jit', 'off', false)"),
        ("intro", "SELECT typname FROM pg_type WHERE oid = 23"),
        ("back", "SELECT set_config('jit', 'on', false)"),
    ] {
        let mut messages = vec![Frontend::parse(name, sql, &[])];
        messages.extend(bind_execute(name));
        outcomes.push(request(c, &messages).await);
    }
    outcomes.push(request(c, &bind_execute("")).await);
    outcomes.push(request(c, &bind_execute("")).await);
    outcomes.push(
        c.simple_query("SELECT 1")
            .await
            .map(|m| text_rows(&m))
            .map_err(|e| e.to_string()),
    );
    outcomes.push(request(c, &bind_execute("")).await);
    outcomes
}

fn rows(value: &str) -> Outcome {
    Ok(vec![vec![Some(value.to_owned())]])
}

fn expected() -> Vec<Outcome> {
    vec![
        Ok(vec![]),
        rows("off"),
        rows("int4"),
        rows("on"),
        rows("42"),
        rows("42"),
        rows("1"),
        Err("26000".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_unnamed_statement_survives_settings_read_back_and_not_a_simple_query() {
    let pg = TestPostgres::new().await;
    let mut direct = pg.raw().await.unwrap();
    assert_eq!(
        introspection_steps(&mut direct).await,
        expected(),
        "directly"
    );

    let proxy = TestProxy::with_pool(&pg, PoolMode::Session, 2).await;
    let mut c = proxy.raw().await.unwrap();
    assert_eq!(
        introspection_steps(&mut c).await,
        expected(),
        "through pgstash"
    );
}

/// A pinned transaction-mode client keeps its server connection, which
/// pgstash checks for session-bound state after every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_transaction_mode_unnamed_statement_survives_the_pin_check() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, PoolMode::Transaction, 2).await;
    let mut c = proxy.raw().await.unwrap();
    assert!(first_error(&c.simple_query("LISTEN unnamed_pin").await.unwrap()).is_none());
    let mut want = expected();
    *want.last_mut().unwrap() = rows("42");
    assert_eq!(introspection_steps(&mut c).await, want);
}
