//! Protocol-level prepared statements in transaction mode survive what
//! drivers do to them: SQL `DEALLOCATE name` / `DEALLOCATE ALL` /
//! `DISCARD ALL` act on the client's own statements as on its own server
//! (asyncpg's and psycopg's statement caches evict with them), and a
//! statement prepared again after a column's type changed runs with the
//! new type (drivers re-prepare after Postgres' `0A000` "cached plan must
//! not change result type"), and SQL `EXECUTE name` runs the client's
//! statement by its own name.

use pgstash::config::PoolMode;
use pgstash_tests::fixture;
use pgstash_tests::postgres::{describe, sqlstate};
use pgstash_tests::wire::{first_error, text_rows};
use pgstash_tests::{BackendMessage, Frontend, RawClient};
use tokio_postgres::types::Type;

async fn parse(c: &mut RawClient, name: &str, sql: &str) -> Vec<BackendMessage> {
    c.push(&Frontend::parse(name, sql, &[]))
        .push(&Frontend::Sync)
        .send()
        .await
        .unwrap();
    c.read_until_ready(1).await.unwrap()
}

/// Binds and executes statement `name`: its rows, or the SQLSTATE it failed with.
async fn run(c: &mut RawClient, name: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    c.push(&Frontend::bind("", name, &[], 0))
        .push(&Frontend::execute("", 0))
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

/// A simple query: its CommandComplete tags and the ReadyForQuery status,
/// or the SQLSTATE it failed with.
async fn sql(c: &mut RawClient, text: &str) -> Result<(Vec<String>, char), String> {
    let msgs = c.simple_query(text).await.unwrap();
    if let Some(e) = first_error(&msgs) {
        return Err(e.sqlstate().unwrap_or_default());
    }
    let tags = msgs
        .iter()
        .filter_map(BackendMessage::command_tag)
        .collect();
    let status = msgs
        .last()
        .and_then(BackendMessage::ready_status)
        .unwrap_or(b'?');
    Ok((tags, status as char))
}

fn one(value: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    Ok(vec![vec![Some(value.to_owned())]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_deallocate_of_a_protocol_statement_frees_its_name() {
    let (_pg, proxy) = fixture::pooled(&[], PoolMode::Transaction, 1).await;
    let mut c = proxy.raw().await.unwrap();
    assert!(first_error(&parse(&mut c, "s1", "SELECT 1").await).is_none());
    assert_eq!(run(&mut c, "s1").await, one("1"));

    assert_eq!(
        sql(&mut c, "DEALLOCATE s1").await,
        Ok((vec!["DEALLOCATE".into()], 'I'))
    );
    // Gone, as on the client's own server: 26000.
    assert_eq!(run(&mut c, "s1").await, Err("26000".into()));
    assert_eq!(sql(&mut c, "DEALLOCATE s1").await, Err("26000".into()));

    // The name is free for new text.
    assert!(first_error(&parse(&mut c, "s1", "SELECT 2").await).is_none());
    assert_eq!(run(&mut c, "s1").await, one("2"));

    // Inside a transaction block too, with the block's status.
    assert_eq!(sql(&mut c, "BEGIN").await, Ok((vec!["BEGIN".into()], 'T')));
    assert_eq!(
        sql(&mut c, "deallocate prepare s1").await,
        Ok((vec!["DEALLOCATE".into()], 'T'))
    );
    assert_eq!(
        sql(&mut c, "COMMIT").await,
        Ok((vec!["COMMIT".into()], 'I'))
    );
    assert_eq!(run(&mut c, "s1").await, Err("26000".into()));
    assert!(first_error(&parse(&mut c, "s1", "SELECT 3").await).is_none());
    assert_eq!(run(&mut c, "s1").await, one("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_and_discard_all_drop_the_clients_own_statements_only() {
    // One server connection: both clients' statements live on it, and
    // the same text is one server-side statement.
    let (_pg, proxy) = fixture::pooled(&[], PoolMode::Transaction, 1).await;
    let mut a = proxy.raw().await.unwrap();
    let mut b = proxy.raw().await.unwrap();
    assert!(first_error(&parse(&mut a, "a1", "SELECT 10").await).is_none());
    assert!(first_error(&parse(&mut b, "b1", "SELECT 10").await).is_none());
    assert_eq!(run(&mut a, "a1").await, one("10"));

    assert_eq!(
        sql(&mut a, "DEALLOCATE ALL").await,
        Ok((vec!["DEALLOCATE ALL".into()], 'I'))
    );
    assert_eq!(run(&mut a, "a1").await, Err("26000".into()));
    // The other client's statement still runs.
    assert_eq!(run(&mut b, "b1").await, one("10"));
    assert!(first_error(&parse(&mut a, "a1", "SELECT 10").await).is_none());
    assert_eq!(run(&mut a, "a1").await, one("10"));

    // DISCARD ALL cannot run in a transaction block: nothing is dropped.
    assert_eq!(sql(&mut a, "BEGIN").await, Ok((vec!["BEGIN".into()], 'T')));
    assert_eq!(sql(&mut a, "DISCARD ALL").await, Err("25001".into()));
    assert_eq!(
        sql(&mut a, "ROLLBACK").await,
        Ok((vec!["ROLLBACK".into()], 'I'))
    );
    assert_eq!(run(&mut a, "a1").await, one("10"));

    assert_eq!(
        sql(&mut a, "DISCARD ALL").await,
        Ok((vec!["DISCARD ALL".into()], 'I'))
    );
    assert_eq!(run(&mut a, "a1").await, Err("26000".into()));
    assert_eq!(run(&mut b, "b1").await, one("10"));
}

/// What asyncpg does after "cached plan must not change result type":
/// drop the statement (a Close message, or SQL `DEALLOCATE`) and prepare
/// the same text again under the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_dropped_and_prepared_again_after_a_type_change_runs() {
    let (pg, proxy) = fixture::pooled(
        &[
            "CREATE TABLE typed (id int, v int)",
            "INSERT INTO typed VALUES (1, 7)",
        ],
        PoolMode::Transaction,
        1,
    )
    .await;
    let mut c = proxy.raw().await.unwrap();
    const SELECT: &str = "SELECT v FROM typed WHERE id = 1";
    assert!(first_error(&parse(&mut c, "s1", SELECT).await).is_none());
    assert_eq!(run(&mut c, "s1").await, one("7"));

    pg.execute("ALTER TABLE typed ALTER COLUMN v TYPE text USING 'v' || v")
        .await;
    assert_eq!(run(&mut c, "s1").await, Err("0A000".into()));

    // Dropped with a Close message, prepared again.
    c.push(&Frontend::close_statement("s1"))
        .push(&Frontend::Sync)
        .send()
        .await
        .unwrap();
    assert!(first_error(&c.read_until_ready(1).await.unwrap()).is_none());
    assert!(first_error(&parse(&mut c, "s1", SELECT).await).is_none());
    assert_eq!(run(&mut c, "s1").await, one("v7"));

    pg.execute("ALTER TABLE typed ALTER COLUMN v TYPE varchar(10)")
        .await;
    pg.execute("ALTER TABLE typed ALTER COLUMN v TYPE bytea USING v::bytea")
        .await;
    assert_eq!(run(&mut c, "s1").await, Err("0A000".into()));
    // Dropped with SQL DEALLOCATE, prepared again.
    assert_eq!(
        sql(&mut c, "DEALLOCATE s1").await,
        Ok((vec!["DEALLOCATE".into()], 'I'))
    );
    assert!(first_error(&parse(&mut c, "s1", SELECT).await).is_none());
    assert_eq!(run(&mut c, "s1").await, one("\\x7637"));
}

/// tokio-postgres over two server connections that both hold the old
/// statement: after the type change each client gets Postgres' 0A000 for
/// the statement it prepared before (as it would directly), and a
/// statement prepared afterwards describes and returns the new type on
/// every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_after_a_column_type_change_return_the_new_type() {
    let (pg, proxy) = fixture::pooled(
        &[
            "CREATE TABLE retyped (id int, v int)",
            "INSERT INTO retyped VALUES (1, 7)",
        ],
        PoolMode::Transaction,
        2,
    )
    .await;
    const SELECT: &str = "SELECT v FROM retyped WHERE id = $1";
    let mut a = proxy.connect().await;
    let mut b = proxy.connect().await;
    // Both connections prepare the statement: each client holds one in
    // an open transaction.
    let ta = a.transaction().await.unwrap();
    let tb = b.transaction().await.unwrap();
    let old_a = ta.prepare(SELECT).await.unwrap();
    let old_b = tb.prepare(SELECT).await.unwrap();
    assert_eq!(
        ta.query_one(&old_a, &[&1i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    assert_eq!(
        tb.query_one(&old_b, &[&1i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    ta.commit().await.unwrap();
    tb.commit().await.unwrap();

    pg.execute("ALTER TABLE retyped ALTER COLUMN v TYPE text USING 'v' || v")
        .await;
    let mut fresh = Vec::new();
    for (client, old) in [(&a, &old_a), (&b, &old_b)] {
        let e = client
            .query_one(old, &[&1i32])
            .await
            .expect_err("a statement prepared before the change ran");
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{}", describe(&e));
        let statement = client.prepare(SELECT).await.unwrap();
        assert_eq!(statement.columns()[0].type_(), &Type::TEXT);
        fresh.push(statement);
    }
    // On both connections: each client holds one in an open transaction
    // (the pool hands a lone client the connection it used last).
    let ta = a.transaction().await.unwrap();
    let tb = b.transaction().await.unwrap();
    for (t, statement) in [(&ta, &fresh[0]), (&tb, &fresh[1])] {
        let row = t
            .query_one(statement, &[&1i32])
            .await
            .unwrap_or_else(|e| panic!("after re-prepare: {}", describe(&e)));
        assert_eq!(row.get::<_, String>(0), "v7");
    }
    ta.commit().await.unwrap();
    tb.commit().await.unwrap();
}

/// Texts that only mention the words leave the client's statements
/// runnable; after a `DO` block pgstash cannot see into, which drops every
/// statement, the same text prepares and runs again (the connection's
/// statements are in step with what pgstash believes it has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_stay_in_step_after_texts_that_mention_deallocate_or_discard() {
    let (_pg, proxy) = fixture::pooled(&[], PoolMode::Transaction, 1).await;
    let mut c = proxy.raw().await.unwrap();
    assert!(first_error(&parse(&mut c, "s1", "SELECT 5").await).is_none());
    assert_eq!(run(&mut c, "s1").await, one("5"));
    for text in [
        "SELECT 'discard all' AS deallocate",
        "DO $$ BEGIN RAISE NOTICE 'nothing to discard'; END $$",
    ] {
        assert!(sql(&mut c, text).await.is_ok(), "{text}");
        assert_eq!(run(&mut c, "s1").await, one("5"), "after {text}");
    }
    let text = "DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$";
    assert!(sql(&mut c, text).await.is_ok(), "{text}");
    assert!(first_error(&parse(&mut c, "s2", "SELECT 5").await).is_none());
    assert_eq!(run(&mut c, "s2").await, one("5"));
}

/// asyncpg prepares `foobar` with a Parse message, then runs SQL `EXECUTE
/// foobar`: the name is the client's, so it runs on whichever server
/// connection the client gets, prepared there first if need be; and when
/// preparing it there fails, the client gets the error once, as directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_execute_of_a_protocol_statement_runs_it_by_the_clients_name() {
    let (pg, proxy) = fixture::pooled(
        &["CREATE TABLE soon_gone (v int)"],
        PoolMode::Transaction,
        1,
    )
    .await;
    let mut c = proxy.raw().await.unwrap();
    let mut other = proxy.raw().await.unwrap();
    assert!(first_error(&parse(&mut c, "foobar", "SELECT 1").await).is_none());
    assert!(first_error(&parse(&mut c, "add", "SELECT $1::int + 1").await).is_none());
    let rows = |m: Result<(Vec<String>, char), String>| m.map(|(tags, _)| tags);
    assert_eq!(
        rows(sql(&mut c, "EXECUTE foobar").await),
        Ok(vec!["SELECT 1".into()])
    );
    let msgs = c.simple_query("execute ADD (41)").await.unwrap();
    assert_eq!(text_rows(&msgs), [[Some("42".to_owned())]]);
    // Prepared again on a connection that lost it.
    assert_eq!(
        sql(&mut other, "DEALLOCATE ALL").await,
        Ok((vec!["DEALLOCATE ALL".into()], 'I'))
    );
    let msgs = c.simple_query("EXECUTE foobar").await.unwrap();
    assert_eq!(text_rows(&msgs), [[Some("1".to_owned())]]);
    // Inside a transaction block.
    let msgs = c
        .simple_query("BEGIN; EXECUTE add(1); COMMIT")
        .await
        .unwrap();
    assert!(first_error(&msgs).is_none(), "{msgs:?}");
    let msgs = c.simple_query("EXECUTE add(1)").await.unwrap();
    assert_eq!(text_rows(&msgs), [[Some("2".to_owned())]]);
    // Through the extended protocol, as asyncpg runs it: a statement of
    // the client's whose text is `EXECUTE foobar`, and an unnamed one.
    assert!(first_error(&parse(&mut c, "runs", "EXECUTE foobar").await).is_none());
    assert_eq!(run(&mut c, "runs").await, one("1"));
    c.push(&Frontend::parse("", "EXECUTE add(5)", &[]));
    assert_eq!(run(&mut c, "").await, one("6"));
    // Both prepared again, in order, on a connection that lost them.
    assert_eq!(
        sql(&mut other, "DEALLOCATE ALL").await,
        Ok((vec!["DEALLOCATE ALL".into()], 'I'))
    );
    assert_eq!(run(&mut c, "runs").await, one("1"));
    assert_eq!(run(&mut c, "").await, one("6"));
    // Postgres' own errors: an unknown name, a duplicate Parse.
    assert_eq!(sql(&mut c, "EXECUTE nope").await, Err("26000".into()));
    let msgs = parse(&mut c, "foobar", "SELECT 1").await;
    assert_eq!(
        first_error(&msgs).and_then(|e| e.sqlstate()).as_deref(),
        Some("42P05")
    );

    // A statement whose table is gone: one error, the one Postgres gives.
    assert!(first_error(&parse(&mut c, "gone", "SELECT v FROM soon_gone").await).is_none());
    pg.execute("DROP TABLE soon_gone").await;
    assert_eq!(
        sql(&mut other, "DEALLOCATE ALL").await,
        Ok((vec!["DEALLOCATE ALL".into()], 'I'))
    );
    let msgs = c.simple_query("EXECUTE gone").await.unwrap();
    let errors: Vec<_> = msgs
        .iter()
        .filter(|&m| m.is_error())
        .map(|m| m.sqlstate())
        .collect();
    assert_eq!(errors, [Some("42P01".to_owned())], "{msgs:?}");
    assert_eq!(
        msgs.last().and_then(BackendMessage::ready_status),
        Some(b'I')
    );
    let msgs = c.simple_query("EXECUTE foobar").await.unwrap();
    assert_eq!(text_rows(&msgs), [[Some("1".to_owned())]]);
}

/// asyncpg's suite creates and drops the same table test after test: a
/// statement prepared after the table was dropped and created again,
/// through pgstash, parses against the new table (directly it would),
/// not onto the copy a client prepared on the pooled connection before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_after_its_table_was_made_anew_runs_against_the_new_one() {
    let (_pg, proxy) = fixture::pooled(&[], PoolMode::Transaction, 1).await;
    let mut c = proxy.raw().await.unwrap();
    const SELECT: &str = "SELECT * FROM remade";
    sql(
        &mut c,
        "CREATE TABLE remade (a int, b int); INSERT INTO remade VALUES (1, 2)",
    )
    .await
    .unwrap();
    assert!(first_error(&parse(&mut c, "first", SELECT).await).is_none());
    assert_eq!(
        run(&mut c, "first").await,
        Ok(vec![vec![Some("1".into()), Some("2".into())]])
    );

    sql(&mut c, "DROP TABLE remade").await.unwrap();
    sql(
        &mut c,
        "CREATE TABLE remade (a int, b text, c text); INSERT INTO remade VALUES (1, 'x', 'y')",
    )
    .await
    .unwrap();
    // Another client, then the same one under a new name: a fresh Parse
    // each, as asyncpg's next test and its re-prepare send.
    let mut other = proxy.raw().await.unwrap();
    for (client, name) in [(&mut other, "fresh"), (&mut c, "second")] {
        let msgs = parse(client, name, SELECT).await;
        assert!(first_error(&msgs).is_none(), "{msgs:?}");
        assert_eq!(
            run(client, name).await,
            Ok(vec![vec![
                Some("1".into()),
                Some("x".into()),
                Some("y".into())
            ]])
        );
    }
    // The statement prepared before the change fails as it would directly.
    assert_eq!(run(&mut c, "first").await, Err("0A000".into()));
}
