//! N+1 detection as an operator meets it: an application that lists rows
//! and then runs one query per row is reported — one line in the
//! slow-query log per burst (with the count, the time and the query run
//! before the loop), the shape flagged on `/queries` and in `pgstash top`,
//! and `pgstash_n_plus_one_total{database}` — while the same rows read by
//! one JOIN are not; and no value the application sent shows anywhere.

use std::time::Duration;

use pgstash_tests::fixture::database;
use pgstash_tests::operate::{Json, OpsProxy};
use tokio_postgres::Client;

const SCHEMA: &str = "CREATE TABLE conversations (id int PRIMARY KEY, title text);
     INSERT INTO conversations SELECT g, 'conversation ' || g FROM generate_series(1, 12) g;
     CREATE TABLE messages (id serial PRIMARY KEY, conversation_id int, body text);
     INSERT INTO messages (conversation_id, body)
         SELECT 1 + g % 12, 'message ' || g FROM generate_series(1, 60) g;";

const PARENT: &str = "SELECT id FROM conversations ORDER BY id";
const CHILD: &str = "SELECT body FROM messages WHERE conversation_id = $1 ORDER BY id";
const JOINED: &str = "SELECT c.id, m.body FROM conversations c JOIN messages m ON m.conversation_id = c.id ORDER BY c.id, m.id";

fn is_burst(line: &Json) -> bool {
    line.get("event").and_then(Json::as_str) == Some("n_plus_one")
}

/// What an ORM does for "conversations with their messages": the list,
/// then one query per conversation (extended protocol, as drivers do).
async fn list_then_one_query_per_row(client: &Client) -> usize {
    let conversations = client.query(PARENT, &[]).await.expect("the list");
    for row in &conversations {
        let id: i32 = row.get(0);
        client.query(CHILD, &[&id]).await.expect("one conversation");
    }
    conversations.len()
}

#[tokio::test]
async fn a_query_per_row_is_one_burst_with_its_count_and_the_list_before_it_and_a_join_is_not() {
    let pg = database(&[SCHEMA]).await;
    let proxy = OpsProxy::start(&pg, |_| {}).await;
    let user = proxy.user.clone();
    let looping = pgstash_tests::postgres::connect(&proxy.app_url(&user, Some("inbox_loop"))).await;
    let joining = pgstash_tests::postgres::connect(&proxy.app_url(&user, Some("inbox_join"))).await;

    let rows = joining.query(JOINED, &[]).await.expect("the join");
    assert_eq!(rows.len(), 60);
    let per_row = list_then_one_query_per_row(&looping).await;
    assert_eq!(per_row, 12);

    let lines = proxy
        .wait_for_slow_line("for the N+1 burst", is_burst)
        .await;
    let bursts: Vec<&Json> = lines.iter().filter(|l| is_burst(l)).collect();
    assert_eq!(bursts.len(), 1, "one burst, the loop's: {bursts:#?}");
    let burst = bursts[0];
    assert_eq!(burst.str_field("query"), CHILD);
    assert_eq!(burst.num_field("count"), 12.0);
    assert!(burst.num_field("total_ms") > 0.0, "{burst:?}");
    assert!(
        burst.num_field("span_ms") >= burst.num_field("total_ms") - 0.01,
        "{burst:?}"
    );
    assert_eq!(burst.str_field("preceded_by_query"), PARENT);
    assert_eq!(burst.get("in_transaction"), Some(&Json::Bool(false)));
    assert_eq!(burst.str_field("application_name"), "inbox_loop");
    assert_eq!(burst.str_field("database"), pg.database);
    assert!(burst.str_field("client").starts_with("127.0.0.1:"));

    let shapes = proxy.wait_for_shape(CHILD, 12).await;
    let shape = |query: &str| {
        shapes
            .iter()
            .find(|s| s.query == query)
            .unwrap_or_else(|| panic!("no shape {query}: {shapes:#?}"))
    };
    let child = shape(CHILD)
        .n_plus_one
        .clone()
        .expect("the child shape is flagged");
    assert_eq!((child.bursts, child.executions, child.largest), (1, 12, 12));
    assert_eq!(
        child.preceded_by.as_deref(),
        Some(shape(PARENT).fingerprint.as_str())
    );
    assert_eq!(child.preceded_by_query.as_deref(), Some(PARENT));
    assert_eq!(burst.str_field("preceded_by"), shape(PARENT).fingerprint);
    assert_eq!(burst.str_field("fingerprint"), shape(CHILD).fingerprint);
    assert!(
        shape(JOINED).n_plus_one.is_none(),
        "the join is not flagged"
    );
    assert!(shape(PARENT).n_plus_one.is_none(), "nor the list");

    let table = pgstash::tools::top::render(&shapes, 20);
    let flagged: Vec<&str> = table.lines().filter(|l| l.contains(" N+1 ")).collect();
    assert_eq!(flagged.len(), 1, "{table}");
    assert!(flagged[0].ends_with(CHILD), "{table}");

    let scrape = proxy
        .scrape_until("the N+1 metric", |s| {
            s.value("pgstash_n_plus_one_total", &[("database", &pg.database)]) >= 1.0
        })
        .await;
    assert_eq!(
        scrape.value("pgstash_n_plus_one_total", &[("database", &pg.database)]),
        1.0
    );
}

#[tokio::test]
async fn a_loop_inside_a_transaction_is_one_burst_whatever_its_pauses() {
    let pg = database(&[SCHEMA]).await;
    let proxy = OpsProxy::start(&pg, |c| {
        c.observe.n_plus_one_window = Duration::from_millis(20);
        c.slow_query_ms = 0;
    })
    .await;
    let client = proxy.connect().await;
    client.batch_execute("BEGIN").await.expect("begin");
    let conversations = client.query(PARENT, &[]).await.expect("the list");
    for row in &conversations {
        let id: i32 = row.get(0);
        // Work in the application between queries, longer than the window.
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.query(CHILD, &[&id]).await.expect("one conversation");
    }
    client.batch_execute("COMMIT").await.expect("commit");
    // The same loop outside a transaction, with the same pauses: no burst.
    for row in &conversations {
        let id: i32 = row.get(0);
        tokio::time::sleep(Duration::from_millis(30)).await;
        client.query(CHILD, &[&id]).await.expect("one conversation");
    }

    proxy
        .wait_for_slow_line("for the burst in the transaction", is_burst)
        .await;
    // Time for a wrongly split or second burst to be reported too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines: Vec<Json> = proxy.slow_lines().into_iter().filter(is_burst).collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    // Every query is logged too (slow_query_ms = 0): the failure shows them.
    let all = proxy.slow_lines();
    assert_eq!(lines[0].num_field("count"), 12.0, "{all:#?}");
    assert_eq!(lines[0].get("in_transaction"), Some(&Json::Bool(true)));
    assert_eq!(lines[0].str_field("preceded_by_query"), PARENT);
}

#[tokio::test]
async fn no_value_of_a_burst_is_logged_or_exported() {
    let pg = database(&[SCHEMA]).await;
    let proxy = OpsProxy::start(&pg, |_| {}).await;
    let client = proxy.connect().await;
    // Simple protocol: the values are literals in the texts.
    client
        .simple_query("SELECT id FROM conversations WHERE title <> 'zq-secret-list'")
        .await
        .expect("the list");
    for id in 1..=12 {
        client
            .simple_query(&format!(
                "SELECT body FROM messages WHERE conversation_id = {} AND body <> 'zq-secret-row-{id}'",
                770_001_000 + id
            ))
            .await
            .expect("one conversation");
    }
    let lines = proxy.wait_for_slow_line("for the burst", is_burst).await;
    let burst = lines.iter().find(|l| is_burst(l)).expect("a burst");
    assert_eq!(burst.num_field("count"), 12.0);
    assert_eq!(
        burst.str_field("query"),
        "SELECT body FROM messages WHERE conversation_id = $1 AND body <> $2"
    );

    let log = std::fs::read_to_string(proxy.slow_log_path()).expect("the slow log");
    let metrics = proxy.get("/metrics").await.body;
    let queries = proxy.get("/queries").await.body;
    for (what, text) in [("log", &log), ("metrics", &metrics), ("queries", &queries)] {
        for value in ["zq-secret", "770001001", "770001012"] {
            assert!(!text.contains(value), "{value} in the {what}:\n{text}");
        }
    }
}
