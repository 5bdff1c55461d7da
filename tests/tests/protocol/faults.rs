//! Faults: upstream backends killed under a client, malformed client frames,
//! and clients that vanish mid-transaction or mid-COPY. Each time the client
//! concerned gets an error or a close, and everyone else keeps being served
//! by clean server connections.

use std::time::{Duration, Instant};

use pgstash::config::PoolMode;
use pgstash_tests::fixture::pooled;
use pgstash_tests::postgres::{describe, sqlstate};
use pgstash_tests::wire::{
    text_rows, BackendMessage, Ending, Frontend, RawClient, SSL_REQUEST_CODE,
};
use pgstash_tests::{TestPostgres, TestProxy};
use tokio_postgres::Client;

const TIMEOUT: Duration = Duration::from_secs(10);

async fn backend_pid(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pg_backend_pid()")
        .get(0)
}

/// `pg_terminate_backend(pid)` directly, then waits until it is gone.
async fn kill_backend(pg: &TestPostgres, pid: i32) {
    let admin = pg.connect().await;
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("pg_terminate_backend")
        .get(0);
    assert!(killed, "backend {pid} was not there to kill");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "backend {pid} did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The error a client sees when its server connection died: the server's
/// 57P01 relayed, a connection-exception class 08 error, or a closed connection.
fn assert_connection_failure(err: &tokio_postgres::Error) {
    if let Some(code) = sqlstate(err) {
        assert!(
            code == "57P01" || code.starts_with("08"),
            "expected 57P01 or an 08xxx error, got {}",
            describe(err)
        );
    } else {
        assert!(
            err.is_closed(),
            "expected a server error or a closed connection, got {err:?}"
        );
    }
}

async fn assert_served(proxy: &TestProxy) {
    let fresh = tokio::time::timeout(TIMEOUT, proxy.try_connect())
        .await
        .expect("connecting a new client timed out")
        .unwrap_or_else(|e| panic!("a new client was refused: {}", describe(&e)));
    let v: i32 = tokio::time::timeout(TIMEOUT, fresh.query_one("SELECT 41 + 1", &[]))
        .await
        .expect("a new client's query timed out")
        .unwrap_or_else(|e| panic!("a new client's query failed: {}", describe(&e)))
        .get(0);
    assert_eq!(v, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_fails_its_session_client_and_the_next_client_is_served() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, PoolMode::Session, 1).await;
    let client = proxy.connect().await;
    let pid = backend_pid(&client).await;
    kill_backend(&pg, pid).await;
    let err = tokio::time::timeout(TIMEOUT, client.simple_query("SELECT 1"))
        .await
        .expect("the query on a killed backend hung")
        .expect_err("a query on a killed backend succeeded");
    assert_connection_failure(&err);
    drop(client);
    assert_served(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_fails_the_open_transaction_and_the_next_client_is_served() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, PoolMode::Transaction, 1).await;
    let client = proxy.connect().await;
    client.batch_execute("BEGIN").await.expect("BEGIN");
    let pid = backend_pid(&client).await;
    kill_backend(&pg, pid).await;
    let err = tokio::time::timeout(TIMEOUT, client.simple_query("SELECT 1"))
        .await
        .expect("the query on a killed backend hung")
        .expect_err("a query in a transaction whose backend was killed succeeded");
    assert_connection_failure(&err);
    drop(client);
    assert_served(&proxy).await;
}

/// In transaction mode the killed connection sits idle in the pool: the next
/// client must not be handed the dead connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_idle_pooled_backend_is_not_handed_to_the_next_client() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::with_pool(&pg, PoolMode::Transaction, 1).await;
    let client = proxy.connect().await;
    let pid = backend_pid(&client).await;
    drop(client);
    kill_backend(&pg, pid).await;
    assert_served(&proxy).await;
}

/// What a connection that sent bad bytes received before it was closed:
/// only ErrorResponses with SQLSTATE 08P01 (none at all is accepted where
/// `silent_close_ok`, as Postgres itself just closes there).
async fn assert_rejected(client: &mut RawClient, what: &str, silent_close_ok: bool) {
    let (msgs, ending): (Vec<BackendMessage>, Ending) =
        client.read_to_end(Duration::from_secs(5)).await;
    assert_eq!(
        ending,
        Ending::Closed,
        "{what}: connection still open; received {msgs:?}"
    );
    for m in &msgs {
        assert_eq!(
            m.sqlstate().as_deref().filter(|_| m.is_error()),
            Some("08P01"),
            "{what}: expected only ErrorResponse 08P01, got {msgs:?}"
        );
    }
    if !silent_close_ok {
        assert!(
            !msgs.is_empty(),
            "{what}: closed without an ErrorResponse 08P01"
        );
    }
}

/// How a bad client misbehaves.
enum Bad {
    /// Bytes sent instead of a StartupMessage.
    BeforeStartup(Vec<u8>),
    /// Bytes sent after a successful login.
    AfterStartup(Vec<u8>),
}

/// A `Q` frame header with the given length and a body that does not match it.
fn query_with_length(len: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![b'Q'];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// A bad client is answered with 08P01 (or, where Postgres itself closes
/// silently and `silent_close_ok`, a bare close) and disconnected, while a
/// client connected before keeps working and new clients are served.
async fn bad_client_is_cut_off(bad: Bad, silent_close_ok: bool, what: &str) {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::start(&pg, |c| c.max_message_bytes = 1 << 20).await;
    let good = proxy.connect().await;
    let mut c = match bad {
        Bad::BeforeStartup(bytes) => {
            let mut c = RawClient::connect_tcp(proxy.addr).await.unwrap();
            let _ = c.send_bytes(&bytes).await;
            c
        }
        Bad::AfterStartup(bytes) => {
            let mut c = proxy.raw().await.expect("login before misbehaving");
            let _ = c.send_bytes(&bytes).await;
            c
        }
    };
    assert_rejected(&mut c, what, silent_close_ok).await;
    let v: i32 = tokio::time::timeout(TIMEOUT, good.query_one("SELECT 7", &[]))
        .await
        .unwrap_or_else(|_| panic!("after {what}: the good client hung"))
        .unwrap_or_else(|e| panic!("after {what}: the good client failed: {}", describe(&e)))
        .get(0);
    assert_eq!(v, 7);
    assert_served(&proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_instead_of_startup_is_closed() {
    let http = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
    bad_client_is_cut_off(
        Bad::BeforeStartup(http),
        true,
        "HTTP request before startup",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_packet_too_short_for_a_version_is_closed() {
    bad_client_is_cut_off(
        Bad::BeforeStartup(vec![0, 0, 0, 3, 0, 3, 0]),
        true,
        "startup length 3",
    )
    .await;
}

/// The body never comes: pgstash must refuse from the header alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_max_message_bytes_gets_08p01_and_a_close() {
    let frame = query_with_length(2 << 20, &[b'x'; 4096]);
    bad_client_is_cut_off(
        Bad::AfterStartup(frame),
        false,
        "message over max_message_bytes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_message_length_is_closed() {
    let frame = query_with_length(-5, b"SELECT 1\0");
    bad_client_is_cut_off(Bad::AfterStartup(frame), true, "negative message length").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_length_below_four_is_closed() {
    let frame = query_with_length(2, b"SELECT 1\0");
    bad_client_is_cut_off(Bad::AfterStartup(frame), true, "message length 2").await;
}

/// Postgres answers FATAL 08P01 "invalid frontend message type 122".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_gets_08p01_and_a_close() {
    bad_client_is_cut_off(
        Bad::AfterStartup(vec![b'z', 0, 0, 0, 4]),
        false,
        "unknown message type 'z'",
    )
    .await;
}

/// Postgres reads the length's first byte as message type 0: FATAL 08P01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_startup_message_gets_08p01_and_a_close() {
    let pg_user = pgstash_tests::servers::postgres().superuser.clone();
    let startup = pgstash_tests::wire::startup_message(&[
        ("user".into(), pg_user),
        ("database".into(), "postgres".into()),
    ]);
    bad_client_is_cut_off(
        Bad::AfterStartup(startup.to_vec()),
        false,
        "second StartupMessage",
    )
    .await;
}

#[tokio::test]
async fn ssl_request_is_declined_and_startup_continues() {
    let pg = TestPostgres::new().await;
    let proxy = TestProxy::start(&pg, |_| {}).await;
    let mut c = RawClient::connect_tcp(proxy.addr).await.unwrap();
    let mut req = 8i32.to_be_bytes().to_vec();
    req.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    c.send_bytes(&req).await.unwrap();
    assert_eq!(c.read_byte().await.expect("answer to SSLRequest"), b'N');
    c.startup(&proxy.startup())
        .await
        .expect("startup after a declined SSLRequest");
    let msgs = c.simple_query("SELECT 'plain' AS t").await.unwrap();
    assert_eq!(text_rows(&msgs), vec![vec![Some("plain".to_owned())]]);
}

/// The next client on the only server connection starts clean: not inside
/// the vanished client's transaction, and without its rows.
async fn assert_clean_connection(proxy: &TestProxy, pg: &TestPostgres, table: &str) {
    let mut next = tokio::time::timeout(TIMEOUT, proxy.raw())
        .await
        .expect("the next client could not connect in time")
        .expect("the next client was refused");
    let ready = next
        .startup_messages()
        .last()
        .and_then(BackendMessage::ready_status);
    assert_eq!(ready, Some(b'I'), "the next client does not start idle");
    let begin = next.simple_query("BEGIN").await.expect("BEGIN");
    assert!(
        begin.iter().all(|m| m.tag != b'N' && !m.is_error()),
        "BEGIN on the next client found a transaction in progress: {begin:?}"
    );
    assert_eq!(
        begin.last().and_then(BackendMessage::ready_status),
        Some(b'T')
    );
    let rows = next
        .simple_query(&format!(
            "SELECT pg_current_xact_id_if_assigned() IS NULL, (SELECT count(*) FROM {table})"
        ))
        .await
        .expect("state query");
    assert_eq!(
        text_rows(&rows),
        vec![vec![Some("t".to_owned()), Some("0".to_owned())]],
        "the next client sees a leftover transaction or leaked rows: {rows:?}"
    );
    next.simple_query("COMMIT").await.expect("COMMIT");
    let direct: i64 = pg
        .connect()
        .await
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(direct, 0, "rows of the vanished client were committed");
}

async fn vanished_mid_transaction(mode: PoolMode) {
    let (pg, proxy) = pooled(&["CREATE TABLE leak (id int)"], mode, 1).await;
    let mut c = proxy.raw().await.unwrap();
    c.simple_query("BEGIN").await.unwrap();
    let inserted = c.simple_query("INSERT INTO leak VALUES (1)").await.unwrap();
    assert_eq!(
        inserted.last().and_then(BackendMessage::ready_status),
        Some(b'T')
    );
    drop(c); // no Terminate, no COMMIT
    assert_clean_connection(&proxy, &pg, "leak").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_transaction_leaves_no_rows_and_a_clean_connection_in_transaction_mode() {
    vanished_mid_transaction(PoolMode::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_transaction_leaves_no_rows_and_a_clean_connection_in_session_mode() {
    vanished_mid_transaction(PoolMode::Session).await;
}

async fn vanished_mid_copy(mode: PoolMode) {
    let (pg, proxy) = pooled(&["CREATE TABLE leak (id int)"], mode, 1).await;
    let mut c = proxy.raw().await.unwrap();
    c.push(&Frontend::query("COPY leak FROM STDIN"))
        .send()
        .await
        .unwrap();
    let started = c
        .read_until(|m| m.tag == b'G' || m.is_ready())
        .await
        .unwrap();
    assert_eq!(
        started.last().map(|m| m.tag),
        Some(b'G'),
        "no CopyInResponse: {started:?}"
    );
    c.push(&Frontend::CopyData(b"1\n2\n3\n".to_vec()))
        .send()
        .await
        .unwrap();
    drop(c); // no CopyDone
    assert_clean_connection(&proxy, &pg, "leak").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_copy_from_stdin_leaves_no_rows_and_a_clean_connection_in_transaction_mode()
{
    vanished_mid_copy(PoolMode::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_copy_from_stdin_leaves_no_rows_and_a_clean_connection_in_session_mode() {
    vanished_mid_copy(PoolMode::Session).await;
}
