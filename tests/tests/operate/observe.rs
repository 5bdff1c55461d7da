//! What an operator watches: the slow-query log (one JSON line per slow
//! query, with the contract fields and no literal values unless asked),
//! `/metrics` (valid Prometheus text whose counters move with the traffic)
//! and `/readyz` (follows the upstream's reachability, `/healthz` does not).

use std::time::Duration;

use pgstash::config::Upstream;
use pgstash_tests::fixture::operated;
use pgstash_tests::operate::{column, Json, OpsProxy, Scrape};
use pgstash_tests::TestPostgres;
use tokio::net::TcpSocket;

fn is_slow_sleep(line: &Json) -> bool {
    line.get("query")
        .and_then(Json::as_str)
        .is_some_and(|q| q.contains("pg_sleep"))
}

#[tokio::test]
async fn slow_query_is_logged_once_with_the_contract_fields_and_no_literals() {
    let pg = TestPostgres::new().await;
    let role = pg.create_role("ops_reader", None).await;
    let proxy = OpsProxy::start(&pg, |c| c.slow_query_ms = 100).await;
    let client =
        pgstash_tests::postgres::connect(&proxy.app_url(&role, Some("ops_slowlog_app"))).await;

    // A warm-up (it opens the upstream connection), then a fast query and a slow one.
    column(&client, "SELECT 'warm' AS warmup").await;
    column(&client, "SELECT 42 AS fast_one").await;
    let before = proxy
        .scrape()
        .await
        .value("pgstash_slow_queries_total", &[]);
    column(&client, "SELECT pg_sleep(0.2)").await;

    // The recorder handles events in order: once the slow line is there,
    // the fast query has been judged too.
    let lines = proxy
        .wait_for_slow_line("for pg_sleep", is_slow_sleep)
        .await;
    let slow: Vec<&Json> = lines.iter().filter(|l| is_slow_sleep(l)).collect();
    assert_eq!(
        slow.len(),
        1,
        "exactly one line for the slow query: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l
            .get("query")
            .and_then(Json::as_str)
            .is_some_and(|q| q.contains("fast_one"))),
        "a fast query must not be logged: {lines:#?}"
    );
    let line = slow[0];
    for field in [
        "ts",
        "duration_ms",
        "upstream_ms",
        "pool_wait_ms",
        "fingerprint",
        "query",
        "rows",
        "cache",
        "rule",
        "pinned",
        "user",
        "database",
        "application_name",
        "client",
    ] {
        assert!(line.get(field).is_some(), "field {field} missing: {line:?}");
    }
    assert_eq!(line.str_field("query"), "SELECT pg_sleep($1)");
    assert_eq!(line.str_field("cache"), "bypass");
    assert_eq!(line.get("rule"), Some(&Json::Null));
    assert_eq!(line.str_field("user"), role);
    assert_eq!(line.str_field("database"), pg.database);
    assert_eq!(line.str_field("application_name"), "ops_slowlog_app");
    assert!(
        line.str_field("client").starts_with("127.0.0.1:"),
        "client is the peer address: {line:?}"
    );
    assert_eq!(line.num_field("rows"), 1.0);
    let duration = line.num_field("duration_ms");
    let upstream = line.num_field("upstream_ms");
    assert!(duration >= 200.0, "duration_ms {duration} < 200: {line:?}");
    assert!(
        (200.0..=duration).contains(&upstream),
        "upstream_ms {upstream} should be in [200, duration_ms {duration}]"
    );
    assert!(line.num_field("pool_wait_ms") >= 0.0);
    let fingerprint = line.str_field("fingerprint");
    assert!(
        fingerprint.len() == 64 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()),
        "fingerprint is sha256 hex: {fingerprint:?}"
    );
    let ts = line.str_field("ts");
    assert!(
        ts.len() >= 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
        "ts is RFC 3339 UTC: {ts:?}"
    );
    assert!(
        !line.str_field("query").contains("0.2"),
        "no literal: {line:?}"
    );

    // The log, the digest and the dashboards name the shape the same way.
    let shapes = proxy.wait_for_shape("SELECT pg_sleep($1)", 1).await;
    let shape = shapes
        .iter()
        .find(|s| s.query == "SELECT pg_sleep($1)")
        .expect("shape in /queries");
    assert_eq!(shape.fingerprint, fingerprint);
    assert_eq!(
        proxy
            .scrape()
            .await
            .value("pgstash_slow_queries_total", &[]),
        before + 1.0,
        "pgstash_slow_queries_total counts the slow query once"
    );
}

#[tokio::test]
async fn extended_protocol_slow_query_is_logged_with_its_statement_text() {
    let pg = TestPostgres::new().await;
    let proxy = OpsProxy::start(&pg, |c| c.slow_query_ms = 100).await;
    let client = proxy.connect().await;
    client
        .query("SELECT pg_sleep($1::float8) AS ext", &[&0.2f64])
        .await
        .expect("extended query through pgstash");
    let lines = proxy
        .wait_for_slow_line("for the extended query", is_slow_sleep)
        .await;
    let line = lines.iter().find(|l| is_slow_sleep(l)).expect("line");
    assert_eq!(
        line.str_field("query"),
        "SELECT pg_sleep($1::float8) AS ext"
    );
    assert_eq!(line.str_field("cache"), "bypass");
    assert!(line.num_field("duration_ms") >= 200.0, "{line:?}");
}

#[tokio::test]
async fn log_parameters_puts_the_literal_values_in_the_slow_log() {
    let pg = TestPostgres::new().await;
    let proxy = OpsProxy::start(&pg, |c| {
        c.slow_query_ms = 100;
        c.log_parameters = true;
    })
    .await;
    let client = proxy.connect().await;
    column(&client, "SELECT pg_sleep(0.2) AS with_values").await;
    let lines = proxy
        .wait_for_slow_line("for pg_sleep", is_slow_sleep)
        .await;
    let line = lines.iter().find(|l| is_slow_sleep(l)).expect("line");
    assert_eq!(
        line.str_field("query"),
        "SELECT pg_sleep(0.2) AS with_values",
        "with log_parameters = true the raw text is logged"
    );
}

const ITEMS: &str = "CREATE TABLE items (id int PRIMARY KEY, name text);
                     INSERT INTO items VALUES (1, 'one'), (2, 'two');";

const ITEMS_RULE: &str = r#"
[[rule]]
name = "item_by_id"
query = "SELECT name FROM items WHERE id = $1"
ttl = "60s"
"#;

fn rule(name: &str) -> [(&str, &str); 1] {
    [("rule", name)]
}

fn path(p: &str) -> [(&str, &str); 1] {
    [("path", p)]
}

/// Counter deltas between two scrapes.
fn delta(after: &Scrape, before: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_counters_follow_misses_hits_and_writes() {
    let (pg, proxy) = operated(&[ITEMS], ITEMS_RULE, |_| {}).await;

    let response = proxy.get("/metrics").await;
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain") && t.contains("version=0.0.4")),
        "content type {:?}",
        response.header("content-type")
    );
    let s0 = proxy.scrape().await;
    assert_eq!(s0.value("pgstash_client_connections", &[]), 0.0);

    let client = proxy.connect().await;
    let sql = "SELECT name FROM items WHERE id = 1";

    // A miss: misses +1, a fill follows (written in the background).
    assert_eq!(column(&client, sql).await, vec![Some("one".to_owned())]);
    let s1 = proxy
        .scrape_until("the first fill", |s| {
            s.value("pgstash_cache_fills_total", &rule("item_by_id")) >= 1.0
        })
        .await;
    assert_eq!(
        delta(&s1, &s0, "pgstash_cache_misses_total", &rule("item_by_id")),
        1.0
    );
    assert_eq!(
        delta(&s1, &s0, "pgstash_cache_hits_total", &rule("item_by_id")),
        0.0
    );
    assert_eq!(
        delta(&s1, &s0, "pgstash_cache_fills_total", &rule("item_by_id")),
        1.0
    );
    assert_eq!(
        s1.count("pgstash_query_duration_seconds", &path("miss")),
        1.0
    );
    assert_eq!(s1.value("pgstash_client_connections", &[]), 1.0);
    let upstream = s1.value("pgstash_upstream_connections", &[("state", "idle")])
        + s1.value("pgstash_upstream_connections", &[("state", "active")]);
    assert!(upstream >= 1.0, "the miss used an upstream connection");
    assert!(s1.count("pgstash_pool_acquire_wait_seconds", &[]) >= 1.0);

    // A hit: hits +1, nothing else.
    assert_eq!(column(&client, sql).await, vec![Some("one".to_owned())]);
    let s2 = proxy.scrape().await;
    assert_eq!(
        delta(&s2, &s1, "pgstash_cache_hits_total", &rule("item_by_id")),
        1.0
    );
    assert_eq!(
        delta(&s2, &s1, "pgstash_cache_misses_total", &rule("item_by_id")),
        0.0
    );
    assert_eq!(
        delta(&s2, &s1, "pgstash_cache_fills_total", &rule("item_by_id")),
        0.0
    );
    assert_eq!(
        s2.count("pgstash_query_duration_seconds", &path("hit")),
        1.0
    );
    assert!(s2.value("pgstash_cache_bytes_served_total", &[]) > 0.0);

    // A write: path=write +1 and one invalidation of this database's items.
    let table = format!("{}.items", pg.database);
    client
        .simple_query("UPDATE items SET name = 'uno' WHERE id = 1")
        .await
        .expect("update through pgstash");
    let s3 = proxy.scrape().await;
    assert_eq!(
        s3.count("pgstash_query_duration_seconds", &path("write"))
            - s2.count("pgstash_query_duration_seconds", &path("write")),
        1.0
    );
    assert_eq!(
        delta(
            &s3,
            &s2,
            "pgstash_invalidations_total",
            &[("table", table.as_str())]
        ),
        1.0,
        "invalidations by table: {:?}",
        s3.family("pgstash_invalidations_total").collect::<Vec<_>>()
    );

    // The next read is a miss again and sees the write.
    assert_eq!(column(&client, sql).await, vec![Some("uno".to_owned())]);
    let s4 = proxy.scrape().await;
    assert_eq!(
        delta(&s4, &s3, "pgstash_cache_misses_total", &rule("item_by_id")),
        1.0
    );

    // A read no rule matches goes the bypass path.
    column(&client, "SELECT count(*) FROM items").await;
    let s5 = proxy.scrape().await;
    assert_eq!(
        s5.count("pgstash_query_duration_seconds", &path("bypass"))
            - s4.count("pgstash_query_duration_seconds", &path("bypass")),
        1.0
    );

    // Every family is typed. Labelled families appear with their first
    // series; store errors have none in a healthy run.
    for (family, kind) in [
        ("pgstash_cache_hits_total", "counter"),
        ("pgstash_cache_misses_total", "counter"),
        ("pgstash_cache_fills_total", "counter"),
        ("pgstash_invalidations_total", "counter"),
        ("pgstash_query_duration_seconds", "histogram"),
        ("pgstash_slow_queries_total", "counter"),
        ("pgstash_client_connections", "gauge"),
        ("pgstash_upstream_connections", "gauge"),
        ("pgstash_pool_acquire_wait_seconds", "histogram"),
        ("pgstash_query_events_dropped_total", "counter"),
        ("pgstash_cache_bytes_served_total", "counter"),
        ("pgstash_store_call_seconds", "histogram"),
        ("pgstash_clients_waiting", "gauge"),
        ("pgstash_pool_size", "gauge"),
    ] {
        assert_eq!(
            s5.types.get(family).map(String::as_str),
            Some(kind),
            "# TYPE {family} {kind}"
        );
    }
    if let Some(kind) = s5.types.get("pgstash_cache_errors_total") {
        assert_eq!(kind, "counter");
    }
    assert_eq!(s5.value("pgstash_query_events_dropped_total", &[]), 0.0);
    // Every cache read above made a timed store lookup.
    assert!(
        s5.value("pgstash_store_call_seconds_count", &[("op", "lookup")]) >= 2.0,
        "store lookups are timed"
    );
    assert!(
        s5.value("pgstash_pool_size", &[]) >= 1.0,
        "pool size is reported"
    );

    drop(client);
    proxy
        .scrape_until("client_connections back to 0", |s| {
            s.value("pgstash_client_connections", &[]) == 0.0
        })
        .await;
}

#[tokio::test]
async fn readyz_follows_the_upstream_and_healthz_does_not() {
    let pg = TestPostgres::new().await;

    // Against the real Postgres (and with the in-process store): ready.
    let healthy = OpsProxy::with_rules(&pg, ITEMS_RULE, |_| {}).await;
    assert_eq!(healthy.get("/healthz").await.status, 200);
    let ready = healthy.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    // Against a port whose listener the test controls: first a listener that
    // accepts but does not speak the protocol (not ready), then one that
    // answers an SSLRequest as Postgres does (ready), then none (not ready),
    // then the Postgres-like one again (ready).
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let silent = socket.listen(16).unwrap();
    let proxy = OpsProxy::start(&pg, |c| {
        c.upstream = Upstream::parse(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
            .expect("upstream URL");
    })
    .await;
    let not_postgres = proxy.get("/readyz").await;
    assert_eq!(
        not_postgres.status, 503,
        "a listener that is not Postgres: {}",
        not_postgres.body
    );
    drop(silent);

    let postgres_like = answer_ssl_requests(port);
    let up = proxy.get("/readyz").await;
    assert_eq!(up.status, 200, "upstream answering: {}", up.body);

    postgres_like.abort();
    let _ = postgres_like.await;
    let down = proxy.get("/readyz").await;
    assert_eq!(down.status, 503, "upstream gone: {}", down.body);
    assert_eq!(
        proxy.get("/healthz").await.status,
        200,
        "/healthz says the process is up, whatever the upstream"
    );

    // And back.
    let _again_up = answer_ssl_requests(port);
    let again = proxy.get("/readyz").await;
    assert_eq!(again.status, 200, "upstream back: {}", again.body);
}

/// Listens on `port` and answers every SSLRequest with `N`, as a Postgres
/// without TLS does.
fn answer_ssl_requests(port: u16) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket
        .bind(format!("127.0.0.1:{port}").parse().unwrap())
        .unwrap();
    let listener = socket.listen(16).unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if stream.read_exact(&mut request).await.is_ok()
                && request[4..] == [0x04, 0xd2, 0x16, 0x2f]
            {
                let _ = stream.write_all(b"N").await;
            }
        }
    })
}

#[tokio::test]
async fn readyz_is_unavailable_when_the_upstream_postgres_stops() {
    // A throwaway Postgres of this test's own, stopped mid-test.
    let Some(server) = pgstash_tests::operate::throwaway::ThrowawayPostgres::start() else {
        eprintln!("skipped: no initdb/pg_ctl to start a throwaway Postgres");
        return;
    };
    let pg = TestPostgres::new().await;
    let url = server.url();
    let proxy = OpsProxy::start(&pg, |c| {
        c.upstream = Upstream::parse(&url).expect("upstream URL");
    })
    .await;
    let client =
        pgstash_tests::postgres::connect(&format!("postgres://postgres@{}/postgres", proxy.addr))
            .await;
    assert_eq!(column(&client, "SELECT 1").await, vec![Some("1".into())]);
    assert_eq!(proxy.get("/readyz").await.status, 200);

    server.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = proxy.get("/readyz").await;
        if r.status == 503 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz still {} after the upstream stopped: {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn slow_log_shows_the_application_name_set_during_the_session() {
    // Postgres' own logs (%a) show the current application_name; so must ours.
    let pg = TestPostgres::new().await;
    let proxy = OpsProxy::start(&pg, |c| c.slow_query_ms = 100).await;
    let client =
        pgstash_tests::postgres::connect(&proxy.app_url(&proxy.user, Some("at_startup"))).await;
    client
        .simple_query("SET application_name = 'set_later'")
        .await
        .expect("SET through pgstash");
    column(&client, "SELECT pg_sleep(0.15) AS after_set").await;
    let lines = proxy
        .wait_for_slow_line("for pg_sleep", is_slow_sleep)
        .await;
    let line = lines.iter().find(|l| is_slow_sleep(l)).expect("line");
    assert_eq!(line.str_field("application_name"), "set_later", "{line:?}");
}
