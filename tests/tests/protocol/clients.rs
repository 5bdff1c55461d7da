//! Real clients through pgstash: psql, pgbench, and tokio-postgres with
//! prepared statements and session settings over a small transaction pool.

use std::process::Output;
use std::time::Duration;

use pgstash::config::PoolMode;
use pgstash_tests::fixture::pooled;
use pgstash_tests::postgres::describe;
use pgstash_tests::wire::{first_error, text_rows, Frontend, RawClient};
use pgstash_tests::{TestPostgres, TestProxy};
use tokio::process::Command;
use tokio_postgres::{Client, SimpleQueryMessage};

/// A client-side command with a clean environment (no PG* variables).
fn client_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGCLIENTENCODING", "UTF8")
        .env("LC_ALL", "C.UTF-8")
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("client program did not finish within 180s")
        .expect("cannot run client program")
}

async fn psql(url: &str, args: &[&str]) -> Output {
    let mut cmd = client_command("psql");
    cmd.args(["-X", "-w", "-d", url]).args(args);
    run(cmd).await
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const PSQL_SCRIPT: &str = r#"
CREATE TABLE psql_items (id int PRIMARY KEY, name text, price numeric(10,2), tags text[], seen timestamptz);
INSERT INTO psql_items VALUES (1, 'apple', 1.25, '{red,fruit}', '2024-01-01 10:00+00'),
                              (2, 'bread', 2.50, NULL, NULL),
                              (3, 'cheese', 7.99, '{}', '2024-03-01 00:00+00');
SELECT * FROM psql_items ORDER BY id;
\x on
SELECT * FROM psql_items WHERE id = 2;
\x off
\d psql_items
BEGIN;
UPDATE psql_items SET price = price * 2 WHERE id = 1;
SELECT price FROM psql_items WHERE id = 1;
ROLLBACK;
SELECT price FROM psql_items WHERE id = 1;
SELECT 1/0;
INSERT INTO psql_items VALUES (1, 'duplicate', 0, NULL, NULL);
COPY psql_items TO STDOUT WITH (FORMAT csv, HEADER);
\copy psql_items (id, name) FROM STDIN
4	dates
5	eggs
\.
SELECT count(*), max(id) FROM psql_items;
DO $$ BEGIN RAISE NOTICE 'hello from %', 'plpgsql'; END $$;
SELECT 42 AS answer \gset
\echo answer is :answer
PREPARE by_id(int) AS SELECT name FROM psql_items WHERE id = $1 \; EXECUTE by_id(3) \; DEALLOCATE by_id;
SET TimeZone = 'Asia/Tokyo';
SELECT seen FROM psql_items WHERE id = 1;
RESET TimeZone;
SELECT '' AS empty, NULL AS nothing, 'ünïcødé' AS text;
DROP TABLE psql_items;
"#;

async fn psql_matches_direct(mode: PoolMode) {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, mode, 2).await;
    let script =
        std::env::temp_dir().join(format!("{}.sql", pgstash_tests::unique_name("psql_script")));
    std::fs::write(&script, PSQL_SCRIPT).expect("write psql script");
    let script_arg = script.to_str().expect("utf-8 temp path");

    let commands = [
        "-c",
        "SELECT 1 AS one, 'two' AS two",
        "-c",
        "SELECT current_user = session_user AS same, current_database() IS NOT NULL AS has_db",
        "-c",
        "\\dt",
        "-c",
        "SELECT * FROM no_such_table",
        "-c",
        "SHOW server_encoding",
    ];
    let want = psql(&pg.url(), &commands).await;
    let got = psql(&proxy.db_url(), &commands).await;
    assert_eq!(
        show(&got),
        show(&want),
        "psql -c through pgstash differs from direct"
    );

    let want = psql(&pg.url(), &["-f", script_arg]).await;
    let got = psql(&proxy.db_url(), &["-f", script_arg]).await;
    let _ = std::fs::remove_file(&script);
    assert!(
        String::from_utf8_lossy(&want.stdout).contains("answer is 42"),
        "the psql script did not run directly: {}",
        show(&want)
    );
    assert_eq!(
        show(&got),
        show(&want),
        "psql -f through pgstash differs from direct"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_output_through_proxy_equals_direct_in_transaction_mode() {
    psql_matches_direct(PoolMode::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_output_through_proxy_equals_direct_in_session_mode() {
    psql_matches_direct(PoolMode::Session).await;
}

async fn pgbench(proxy: &TestProxy, args: &[&str]) -> Output {
    let mut cmd = client_command("pgbench");
    cmd.args([
        "-h",
        &proxy.addr.ip().to_string(),
        "-p",
        &proxy.addr.port().to_string(),
    ])
    .args(["-U", &proxy.user])
    .args(args)
    .arg(&proxy.database);
    run(cmd).await
}

/// The number after `prefix` on the line that starts with it.
fn line_value<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
}

/// pgbench -i, then 16 clients × 200 TPC-B-like transactions over a pool of
/// 4 server connections in transaction mode: nothing fails, and the money
/// adds up (checked directly against Postgres).
async fn pgbench_through_proxy(protocol: &str) {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, PoolMode::Transaction, 4).await;
    let init = pgbench(&proxy, &["-i", "-s", "1", "-q"]).await;
    assert!(
        init.status.success(),
        "pgbench -i through pgstash failed:\n{}",
        show(&init)
    );

    let out = pgbench(
        &proxy,
        &["-M", protocol, "-c", "16", "-j", "2", "-t", "200"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench -M {protocol} through pgstash failed:\n{}",
        show(&out)
    );
    assert_eq!(
        line_value(&stdout, "number of transactions actually processed:"),
        Some("3200/3200"),
        "pgbench -M {protocol} output:\n{}",
        show(&out)
    );
    assert_eq!(
        line_value(&stdout, "number of failed transactions:"),
        Some("0"),
        "pgbench -M {protocol} output:\n{}",
        show(&out)
    );

    let direct = pg.connect().await;
    let row = direct
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::int8, \
                    (SELECT sum(tbalance) FROM pgbench_tellers)::int8, \
                    (SELECT sum(bbalance) FROM pgbench_branches)::int8, \
                    (SELECT sum(delta) FROM pgbench_history)::int8, \
                    (SELECT count(*) FROM pgbench_history)",
            &[],
        )
        .await
        .expect("balance check");
    let (accounts, tellers, branches, history, count): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(count, 3200, "pgbench_history rows");
    assert_eq!(accounts, history, "sum(abalance) != sum(delta)");
    assert_eq!(tellers, history, "sum(tbalance) != sum(delta)");
    assert_eq!(branches, history, "sum(bbalance) != sum(delta)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_protocol_through_small_transaction_pool_loses_nothing() {
    pgbench_through_proxy("simple").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_extended_protocol_through_small_transaction_pool_loses_nothing() {
    pgbench_through_proxy("extended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_statements_through_small_transaction_pool_loses_nothing() {
    pgbench_through_proxy("prepared").await;
}

const CLIENTS: i32 = 16;
const EXECUTIONS: i32 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_of_many_clients_over_a_small_pool_give_right_answers() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, PoolMode::Transaction, 2).await;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..CLIENTS {
        let url = proxy.db_url();
        tasks.spawn(async move {
            let client = pgstash_tests::postgres::connect(&url).await;
            let constant = 1000 * (k + 1);
            let stmt = client
                .prepare(&format!("SELECT $1::int + {constant}"))
                .await
                .map_err(|e| format!("client {k}: prepare: {}", describe(&e)))?;
            for i in 0..EXECUTIONS {
                let row = client
                    .query_one(&stmt, &[&i])
                    .await
                    .map_err(|e| format!("client {k}: execution {i}: {}", describe(&e)))?;
                let got: i32 = row.get(0);
                if got != i + constant {
                    return Err(format!(
                        "client {k}: execution {i}: got {got}, want {}",
                        i + constant
                    ));
                }
            }
            Ok::<(), String>(())
        });
    }
    let failures: Vec<String> = tasks
        .join_all()
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );
}

/// tokio-postgres names statements from a process-wide counter, so its
/// clients never share a name. This one makes every client Parse the *same*
/// statement name with a different text, as separate processes using one
/// driver would, and then execute it in separate transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_statement_name_in_many_clients_over_a_small_pool_does_not_clash() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, PoolMode::Transaction, 2).await;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..CLIENTS {
        let (addr, startup) = (proxy.addr, proxy.startup());
        tasks.spawn(async move {
            let fail = |what: String| format!("client {k}: {what}");
            let mut c = RawClient::connect_with(addr, startup)
                .await
                .map_err(|e| fail(format!("connect: {e}")))?;
            let constant = 1000 * (k + 1);
            c.push(&Frontend::parse(
                "shared_name",
                format!("SELECT $1::int + {constant}"),
                &[],
            ))
            .push(&Frontend::Sync);
            c.send().await.map_err(|e| fail(format!("send: {e}")))?;
            let msgs = c
                .read_until_ready(1)
                .await
                .map_err(|e| fail(format!("parse: {e}")))?;
            if let Some(e) = first_error(&msgs) {
                return Err(fail(format!("parse: {e:?}")));
            }
            for i in 0..EXECUTIONS {
                let param = i.to_string();
                c.push(&Frontend::bind(
                    "",
                    "shared_name",
                    &[Some(param.as_str())],
                    0,
                ))
                .push(&Frontend::execute("", 0))
                .push(&Frontend::Sync);
                c.send().await.map_err(|e| fail(format!("send: {e}")))?;
                let msgs = c
                    .read_until_ready(1)
                    .await
                    .map_err(|e| fail(format!("execution {i}: {e}")))?;
                if let Some(e) = first_error(&msgs) {
                    return Err(fail(format!("execution {i}: {e:?}")));
                }
                let want = vec![vec![Some((i + constant).to_string())]];
                if text_rows(&msgs) != want {
                    return Err(fail(format!(
                        "execution {i}: got {:?}, want {want:?}",
                        text_rows(&msgs)
                    )));
                }
            }
            c.terminate().await;
            Ok::<(), String>(())
        });
    }
    let failures: Vec<String> = tasks
        .join_all()
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        failures.is_empty(),
        "statement name clashes:\n{}",
        failures.join("\n")
    );
}

async fn query_text(client: &Client, sql: &str) -> String {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", describe(&e)));
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// Client A changes a setting; client B shares the only server connection
/// (pool size 1, transaction mode) and must keep seeing its own value, while
/// A keeps seeing A's across transactions.
async fn setting_stays_with_its_client(set: &str, probe: &str, setup: &str) {
    let (_pg, proxy) = pooled(&[setup], PoolMode::Transaction, 1).await;
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    let b_value = query_text(&b, probe).await;
    let a_before = query_text(&a, probe).await;
    assert_eq!(
        a_before, b_value,
        "two fresh clients see different values of {probe:?}"
    );

    a.batch_execute(set)
        .await
        .unwrap_or_else(|e| panic!("{set}: {}", describe(&e)));
    let a_value = query_text(&a, probe).await;
    assert_ne!(a_value, b_value, "{set} had no visible effect on {probe:?}");

    for round in 0..3 {
        assert_eq!(
            query_text(&b, probe).await,
            b_value,
            "round {round}: client B sees client A's `{set}`"
        );
        a.batch_execute("BEGIN; SELECT 1; COMMIT")
            .await
            .expect("transaction on A");
        assert_eq!(
            query_text(&a, probe).await,
            a_value,
            "round {round}: client A lost its own `{set}`"
        );
    }
    let c = proxy.connect().await;
    assert_eq!(
        query_text(&c, probe).await,
        b_value,
        "a new client sees client A's `{set}`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_application_name_is_private_to_its_client_in_transaction_mode() {
    setting_stays_with_its_client(
        "SET application_name = 'client_a_app'",
        "SELECT current_setting('application_name')",
        "",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_timezone_is_private_to_its_client_in_transaction_mode() {
    setting_stays_with_its_client(
        "SET TimeZone = 'Asia/Kathmandu'",
        "SELECT '2024-01-01 00:00:00+00'::timestamptz::text",
        "",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_search_path_is_private_to_its_client_in_transaction_mode() {
    setting_stays_with_its_client(
        "SET search_path = other_schema, public",
        "SELECT v FROM marker",
        "CREATE SCHEMA other_schema; \
         CREATE TABLE public.marker (v text); INSERT INTO public.marker VALUES ('public'); \
         CREATE TABLE other_schema.marker (v text); INSERT INTO other_schema.marker VALUES ('other')",
    )
    .await;
}
