//! G5 isolation: an entry is never served to another database, role,
//! `search_path` or set of output-affecting settings than the one that
//! filled it (unless the rule is `shared`); tables with row-level security
//! are not cached unless a rule allows it; `SET ROLE` / `SET SESSION
//! AUTHORIZATION` turn caching off for the session. These are the cases of
//! pgpool-II's CVE-2024-45624 and their relatives.

use pgstash_tests::cache::{executions, CachingProxy, COUNTER_FUNCTIONS};
use pgstash_tests::fixture::caching;
use pgstash_tests::postgres::{column, connect, describe, simple_rows as text_of, sqlstate};
use pgstash_tests::wire::{text_rows, RawClient, Startup};
use pgstash_tests::TestPostgres;
use tokio_postgres::Client;

/// A table whose policy shows each role its own rows; `owner` holds role names.
async fn rls_fixture(pg: &TestPostgres) -> (String, String) {
    let alice = pg.create_role("alice", None).await;
    let bob = pg.create_role("bob", None).await;
    pg.execute(COUNTER_FUNCTIONS).await;
    pg.execute(&format!(
        "CREATE TABLE docs (owner text, body text, n int);
         INSERT INTO docs VALUES ('{alice}', 'a1', 1), ('{alice}', 'a2', 2), ('{bob}', 'b1', 3);
         ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own_rows ON docs USING (owner = current_user);
         GRANT SELECT ON docs TO {alice}, {bob};"
    ))
    .await;
    (alice, bob)
}

/// `counted` runs once per row returned (on a column, so no plan caches it).
const DOCS_SQL: &str = "SELECT body, counted(n) AS c FROM docs ORDER BY body";

/// The `body` column of DOCS_SQL, through the simple or the extended protocol.
async fn bodies(client: &Client, extended: bool) -> Vec<String> {
    if extended {
        client
            .query(DOCS_SQL, &[])
            .await
            .unwrap_or_else(|e| panic!("{DOCS_SQL}: {}", describe(&e)))
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        column(client, DOCS_SQL)
            .await
            .into_iter()
            .map(|v| v.expect("body is not null"))
            .collect()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn rls_rows_cached_for_one_role_are_never_served_to_another() {
    let pg = TestPostgres::new().await;
    let (alice, bob) = rls_fixture(&pg).await;
    let rules = "[[rule]]\nname = \"docs\"\ntables = [\"docs\"]\nallow_rls = true\n";
    let proxy = CachingProxy::start(&pg, rules, |_| {}).await;
    let as_alice = proxy.connect_as(&alice).await;
    let as_bob = proxy.connect_as(&bob).await;

    for extended in [false, true] {
        let hits = proxy.hits("docs");
        let fills = proxy.fills("docs");
        assert_eq!(bodies(&as_alice, extended).await, strings(&["a1", "a2"]));
        proxy.wait_for_fills("docs", fills + 1).await;
        assert_eq!(bodies(&as_alice, extended).await, strings(&["a1", "a2"]));
        assert_eq!(proxy.hits("docs"), hits + 1, "alice's second read hits");

        let before = executions(&pg).await;
        assert_eq!(
            bodies(&as_bob, extended).await,
            strings(&["b1"]),
            "bob must see his rows, not alice's cached ones"
        );
        assert_eq!(proxy.hits("docs"), hits + 1, "bob's first read is a miss");
        assert_eq!(executions(&pg).await, before + 1, "bob's read ran upstream");
        proxy.wait_for_fills("docs", fills + 2).await;
        assert_eq!(bodies(&as_bob, extended).await, strings(&["b1"]));
        assert_eq!(bodies(&as_alice, extended).await, strings(&["a1", "a2"]));
        assert_eq!(proxy.hits("docs"), hits + 3);
    }
}

#[tokio::test]
async fn rls_tables_are_not_cached_without_allow_rls() {
    let pg = TestPostgres::new().await;
    let (alice, _) = rls_fixture(&pg).await;
    let rules = "[[rule]]\nname = \"docs\"\ntables = [\"docs\"]\n";
    let proxy = CachingProxy::start(&pg, rules, |_| {}).await;
    let as_alice = proxy.connect_as(&alice).await;
    let before = executions(&pg).await;
    for extended in [false, true, false, true] {
        assert_eq!(bodies(&as_alice, extended).await, strings(&["a1", "a2"]));
    }
    assert_eq!(
        executions(&pg).await,
        before + 4 * 2,
        "every read runs upstream (2 rows each)"
    );
    assert_eq!(proxy.hits("docs") + proxy.misses("docs"), 0);
    assert_eq!(proxy.bypassed("row_level_security"), 4);
}

/// A read decision is remembered per statement; DDL through pgstash that
/// enables row-level security must end it at once, not at the next
/// catalog refresh.
#[tokio::test]
async fn enabling_rls_through_pgstash_stops_caching_at_once() {
    let pg = TestPostgres::new().await;
    let alice = pg.create_role("alice", None).await;
    pg.execute(COUNTER_FUNCTIONS).await;
    pg.execute(&format!(
        "CREATE TABLE docs (owner text, body text, n int);
         INSERT INTO docs VALUES ('{alice}', 'a1', 1), ('{alice}', 'a2', 2), ('other', 'b1', 3);
         GRANT SELECT ON docs TO {alice};"
    ))
    .await;
    let rules = "[[rule]]\nname = \"docs\"\ntables = [\"docs\"]\n";
    let proxy = CachingProxy::start(&pg, rules, |_| {}).await;
    let as_alice = proxy.connect_as(&alice).await;
    for extended in [false, true] {
        bodies(&as_alice, extended).await;
    }
    proxy.wait_for_fills("docs", 2).await;
    for extended in [false, true] {
        assert_eq!(
            bodies(&as_alice, extended).await,
            strings(&["a1", "a2", "b1"])
        );
    }
    assert_eq!(proxy.hits("docs"), 2, "the table is cached before RLS");

    let admin = proxy.connect().await;
    admin
        .batch_execute(
            "ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own_rows ON docs USING (owner = current_user);",
        )
        .await
        .unwrap_or_else(|e| panic!("enable RLS: {}", describe(&e)));
    let (hits, misses) = (proxy.hits("docs"), proxy.misses("docs"));
    for extended in [false, true, false, true] {
        assert_eq!(bodies(&as_alice, extended).await, strings(&["a1", "a2"]));
    }
    assert_eq!(
        (proxy.hits("docs"), proxy.misses("docs")),
        (hits, misses),
        "no read of an RLS table goes to the cache after the DDL"
    );
    assert_eq!(proxy.bypassed("row_level_security"), 4);
}

#[tokio::test]
async fn set_role_turns_caching_off_for_the_session() {
    let pg = TestPostgres::new().await;
    let (alice, bob) = rls_fixture(&pg).await;
    let rules = "[[rule]]\nname = \"docs\"\ntables = [\"docs\"]\nallow_rls = true\n";
    let proxy = CachingProxy::start(&pg, rules, |_| {}).await;

    // The superuser (who bypasses RLS) fills entries with every row.
    let admin = proxy.connect().await;
    for extended in [false, true] {
        bodies(&admin, extended).await;
    }
    proxy.wait_for_fills("docs", 2).await;
    for extended in [false, true] {
        assert_eq!(bodies(&admin, extended).await, strings(&["a1", "a2", "b1"]));
    }
    assert_eq!(proxy.hits("docs"), 2);

    // Same login user, then SET ROLE / SET SESSION AUTHORIZATION.
    for (switch, want) in [
        (format!("SET ROLE {alice}"), strings(&["a1", "a2"])),
        (format!("SET SESSION AUTHORIZATION {bob}"), strings(&["b1"])),
    ] {
        let rows = want.len() as i64;
        let client = proxy.connect().await;
        client.batch_execute(&switch).await.unwrap();
        let before = executions(&pg).await;
        for extended in [false, true, false, true] {
            assert_eq!(
                bodies(&client, extended).await,
                want,
                "after {switch:?} the session got another identity's rows"
            );
        }
        assert_eq!(
            executions(&pg).await,
            before + 4 * rows,
            "after {switch:?} nothing is served from the cache"
        );
        assert_eq!(proxy.hits("docs"), 2);
    }
}

#[tokio::test]
async fn a_role_without_privilege_gets_an_error_not_cached_rows() {
    let pg = TestPostgres::new().await;
    let alice = pg.create_role("alice", None).await;
    let bob = pg.create_role("bob", None).await;
    pg.execute(&format!(
        "CREATE TABLE secrets (s text); INSERT INTO secrets VALUES ('x'); \
         GRANT SELECT ON secrets TO {alice}; REVOKE ALL ON secrets FROM {bob}"
    ))
    .await;
    let rules = "[[rule]]\nname = \"secrets\"\ntables = [\"secrets\"]\n";
    let proxy = CachingProxy::start(&pg, rules, |_| {}).await;
    let as_alice = proxy.connect_as(&alice).await;
    let as_bob = proxy.connect_as(&bob).await;
    let sql = "SELECT s FROM secrets";
    column(&as_alice, sql).await;
    as_alice.query(sql, &[]).await.unwrap();
    proxy.wait_for_fills("secrets", 2).await;
    assert_eq!(column(&as_alice, sql).await, vec![Some("x".into())]);

    let e = as_bob
        .simple_query(sql)
        .await
        .expect_err("bob has no SELECT");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{}", describe(&e));
    let e = as_bob.query(sql, &[]).await.expect_err("bob has no SELECT");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{}", describe(&e));
}

#[tokio::test]
async fn shared_rule_serves_one_entry_to_every_role() {
    let pg = TestPostgres::new().await;
    let alice = pg.create_role("alice", None).await;
    let bob = pg.create_role("bob", None).await;
    pg.execute(&format!(
        "CREATE TABLE catalog_items (n int); INSERT INTO catalog_items VALUES (1), (2); \
         GRANT SELECT ON catalog_items TO {alice}, {bob}"
    ))
    .await;
    let rules = "[[rule]]\nname = \"catalog\"\ntables = [\"catalog_items\"]\nshared = true\n";
    let proxy = CachingProxy::start(&pg, rules, |_| {}).await;
    let sql = "SELECT n FROM catalog_items ORDER BY n";
    let as_alice = proxy.connect_as(&alice).await;
    column(&as_alice, sql).await;
    proxy.wait_for_fills("catalog", 1).await;
    let as_bob = proxy.connect_as(&bob).await;
    assert_eq!(
        column(&as_bob, sql).await,
        vec![Some("1".into()), Some("2".into())]
    );
    assert_eq!(proxy.hits("catalog"), 1, "bob hits alice's shared entry");
}

/// Two schemas with a `things` table each; the rule names it unqualified.
const SCHEMAS: &str = "CREATE SCHEMA s1; CREATE SCHEMA s2;
    CREATE TABLE s1.things (name text); CREATE TABLE s2.things (name text);
    INSERT INTO s1.things VALUES ('one'); INSERT INTO s2.things VALUES ('two');";

const THINGS_RULES: &str = "[[rule]]\nname = \"things\"\ntables = [\"things\"]\n";

/// `SELECT name FROM things` on a raw connection, simple protocol.
async fn raw_things(client: &mut RawClient) -> Vec<Vec<Option<String>>> {
    let messages = client
        .simple_query("SELECT name FROM things")
        .await
        .unwrap();
    text_rows(&messages)
}

#[tokio::test]
async fn same_named_tables_in_other_schemas_are_not_cross_served() {
    let (_pg, proxy) = caching(&[SCHEMAS], THINGS_RULES, |_| {}).await;
    let sql = "SELECT name FROM things";
    let one = vec![Some("one".to_owned())];
    let two = vec![Some("two".to_owned())];

    let first = proxy.connect().await;
    first.batch_execute("SET search_path = s1").await.unwrap();
    assert_eq!(column(&first, sql).await, one);
    let r = first.query_one(sql, &[]).await.unwrap();
    assert_eq!(r.get::<_, String>(0), "one");
    proxy.wait_for_fills("things", 2).await;
    assert_eq!(column(&first, sql).await, one);
    assert_eq!(proxy.hits("things"), 1, "s1's entry is cached");

    // SET search_path in another session.
    let second = proxy.connect().await;
    second.batch_execute("SET search_path = s2").await.unwrap();
    assert_eq!(column(&second, sql).await, two, "simple, SET s2");
    let r = second.query_one(sql, &[]).await.unwrap();
    assert_eq!(r.get::<_, String>(0), "two", "extended, SET s2");

    // search_path from the startup packet: `options` and a plain parameter.
    let startups = [
        (proxy.startup().param("options", "-c search_path=s2"), &two),
        (proxy.startup().param("search_path", "s2"), &two),
        (proxy.startup().param("options", "-csearch_path=s1"), &one),
    ];
    for (startup, want) in startups {
        let params = startup.params.clone();
        let mut raw = RawClient::connect_with(proxy.addr, startup).await.unwrap();
        for _ in 0..2 {
            assert_eq!(
                &raw_things(&mut raw).await,
                &vec![want.clone()],
                "startup {params:?}"
            );
        }
    }

    // The same session switching back and forth.
    second.batch_execute("SET search_path = s1").await.unwrap();
    assert_eq!(column(&second, sql).await, one);
    second
        .batch_execute("SET search_path = s2, s1")
        .await
        .unwrap();
    assert_eq!(column(&second, sql).await, two);
    assert_eq!(column(&first, sql).await, one);
}

#[tokio::test]
async fn entries_are_not_shared_between_databases() {
    let pg = TestPostgres::new().await;
    let other = TestPostgres::new().await;
    for (db, value) in [(&pg, "first"), (&other, "second")] {
        db.execute(&format!(
            "CREATE TABLE things (name text); INSERT INTO things VALUES ('{value}')"
        ))
        .await;
    }
    let proxy = CachingProxy::start(&pg, THINGS_RULES, |_| {}).await;
    let sql = "SELECT name FROM things";
    let in_first = proxy.connect().await;
    column(&in_first, sql).await;
    proxy.wait_for_fills("things", 1).await;
    assert_eq!(column(&in_first, sql).await, vec![Some("first".into())]);
    assert_eq!(proxy.hits("things"), 1);
    let in_second = connect(&proxy.url(&other.database, &proxy.user)).await;
    assert_eq!(column(&in_second, sql).await, vec![Some("second".into())]);
    assert_eq!(proxy.hits("things"), 1);
}

#[tokio::test]
async fn each_time_zone_gets_its_own_rendering() {
    let events = "CREATE TABLE events (id int, at timestamptz); \
                  INSERT INTO events VALUES (1, '2024-06-01 12:00:00+00')";
    let rules = "[[rule]]\nname = \"events\"\ntables = [\"events\"]\n";
    let (_pg, proxy) = caching(&[events], rules, |_| {}).await;
    let sql = "SELECT at FROM events WHERE id = 1";
    let zones = [
        ("UTC", "2024-06-01 12:00:00+00"),
        ("Asia/Tokyo", "2024-06-01 21:00:00+09"),
        ("America/New_York", "2024-06-01 08:00:00-04"),
    ];
    // Every zone twice (the second read may hit its own entry), in
    // separate sessions, one after the other.
    for round in 0..2 {
        for (zone, want) in zones {
            let client = proxy.connect().await;
            client
                .batch_execute(&format!("SET TimeZone = '{zone}'"))
                .await
                .unwrap();
            assert_eq!(
                column(&client, sql).await,
                vec![Some(want.to_owned())],
                "SET TimeZone = {zone}, round {round}"
            );
            // Startup parameter instead of SET.
            let mut raw =
                RawClient::connect_with(proxy.addr, proxy.startup().param("TimeZone", zone))
                    .await
                    .unwrap();
            let rows = text_rows(&raw.simple_query(sql).await.unwrap());
            assert_eq!(
                rows,
                vec![vec![Some(want.to_owned())]],
                "startup TimeZone={zone}, round {round}"
            );
        }
    }
    assert!(proxy.hits("events") >= 3, "the zones hit their own entries");
}

#[tokio::test]
async fn output_affecting_settings_are_part_of_the_key() {
    let samples = "CREATE TABLE samples (d date, i interval, f float8, b bytea, t text); \
                   INSERT INTO samples VALUES ('2024-02-03', '1 day 02:03:04', 0.1::float8 + 0.2, '\\x00ff41', 'café')";
    let rules = "[[rule]]\nname = \"samples\"\ntables = [\"samples\"]\n";
    let (pg, proxy) = caching(&[samples], rules, |_| {}).await;
    let sql = "SELECT d, i, f, b FROM samples";

    // Fill with the default settings.
    let plain = proxy.connect().await;
    let default_rows = text_of(plain.simple_query(sql).await.unwrap());
    proxy.wait_for_fills("samples", 1).await;
    assert_eq!(
        text_of(plain.simple_query(sql).await.unwrap()),
        default_rows
    );
    assert_eq!(proxy.hits("samples"), 1);

    for set in [
        "SET DateStyle = 'SQL, DMY'",
        "SET IntervalStyle = 'iso_8601'",
        "SET extra_float_digits = 0",
        "SET bytea_output = 'escape'",
    ] {
        let direct = pg.connect().await;
        direct.batch_execute(set).await.unwrap();
        let want = text_of(direct.simple_query(sql).await.unwrap());
        assert_ne!(want, default_rows, "{set} changes the rendering");
        let client = proxy.connect().await;
        client.batch_execute(set).await.unwrap();
        for _ in 0..2 {
            assert_eq!(
                text_of(client.simple_query(sql).await.unwrap()),
                want,
                "after {set:?} the session got another rendering"
            );
        }
    }

    // client_encoding changes the bytes of text (raw client: tokio-postgres
    // insists on UTF8).
    let text_sql = "SELECT t FROM samples";
    let mut utf8 = proxy.raw().await.unwrap();
    let utf8_rows = utf8.simple_query(text_sql).await.unwrap();
    proxy.wait_for_fills("samples", 6).await;
    let latin1 = Startup::new(&proxy.user, &proxy.database).param("client_encoding", "LATIN1");
    let mut direct = RawClient::connect_with(pg.addr(), {
        let mut s = pg.startup();
        s.params = latin1.params.clone();
        s
    })
    .await
    .unwrap();
    let want = direct.simple_query(text_sql).await.unwrap();
    let mut via = RawClient::connect_with(proxy.addr, latin1).await.unwrap();
    let got = via.simple_query(text_sql).await.unwrap();
    let rows = |m: &[pgstash_tests::BackendMessage]| {
        m.iter()
            .filter(|m| m.tag == b'D')
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_ne!(rows(&want), rows(&utf8_rows), "LATIN1 differs from UTF8");
    assert_eq!(rows(&got), rows(&want), "LATIN1 client got UTF-8 bytes");
}
