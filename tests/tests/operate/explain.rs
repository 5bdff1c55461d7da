//! Plans of slow shapes and the index hints read from them: a slow read
//! filtering an unindexed column of a big table gets its plan on
//! `/queries` and a `CREATE INDEX CONCURRENTLY` hint naming that column
//! (in `pgstash top`, `pgstash explain` and `pgstash_index_hints`); once
//! the index exists, the plan fetched again has no hint.

use std::time::{Duration, Instant};

use pgstash::observe::digest::ShapeReport;
use pgstash_tests::fixture::database;
use pgstash_tests::operate::{pgstash_binary, run_pgstash, OpsProxy};

const SCHEMA: &str =
    "CREATE TABLE tickets (id serial PRIMARY KEY, owner int, state text, body text);
     INSERT INTO tickets (owner, state, body)
         SELECT g % 5000, CASE WHEN g % 3 = 0 THEN 'open' ELSE 'closed' END, repeat('x', 50)
         FROM generate_series(1, 60000) g;
     ANALYZE tickets;";

const SLOW: &str = "SELECT id, body FROM tickets WHERE owner = $1 AND state = $2";

/// Polls `/queries` until the shape `SLOW` has a plan fetched after `after`
/// (RFC 3339 text, compared as text) that satisfies `done`.
async fn wait_for_plan(
    proxy: &OpsProxy,
    client: &tokio_postgres::Client,
    after: &str,
    done: impl Fn(&ShapeReport) -> bool,
) -> ShapeReport {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The shape keeps running: a plan is refreshed while it does.
        client
            .query(SLOW, &[&7i32, &"open"])
            .await
            .expect("the slow read");
        let shapes = proxy.queries().await;
        if let Some(shape) = shapes.iter().find(|s| s.query == SLOW) {
            if shape
                .plan
                .as_ref()
                .is_some_and(|p| p.explained_at.as_str() > after)
                && done(shape)
            {
                return shape.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no such plan for {SLOW}: {:#?}",
                shape.plan
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_slow_scan_of_an_unindexed_column_gets_a_hint_that_goes_once_the_index_exists() {
    let pg = database(&[SCHEMA]).await;
    let proxy = OpsProxy::start(&pg, |c| {
        // Every query is slow; plans are fetched again after a second.
        c.slow_query_ms = 0;
        c.observe.explain_every = Duration::from_secs(1);
    })
    .await;
    let client = proxy.connect().await;

    let shape = wait_for_plan(&proxy, &client, "", |s| {
        s.plan.as_ref().is_some_and(|p| !p.hints.is_empty())
    })
    .await;
    let plan = shape.plan.clone().expect("a plan");
    assert_eq!(plan.error, None);
    assert_eq!(plan.method, "force_generic_plan", "Postgres 15 here");
    let text = format!("{:?}", plan.plan);
    assert!(
        text.contains("Seq Scan") && text.contains("tickets"),
        "{text}"
    );
    assert!(
        !text.contains("\"open\"") && !text.contains("'open'"),
        "no value: {text}"
    );
    assert_eq!(plan.hints.len(), 1, "{:#?}", plan.hints);
    let hint = &plan.hints[0];
    assert_eq!(hint.table, "public.tickets");
    assert_eq!(hint.columns, ["owner", "state"]);
    assert_eq!(
        hint.create,
        "CREATE INDEX CONCURRENTLY ON public.tickets (owner, state)"
    );
    assert!(hint.rows_scanned > 50_000.0, "{hint:?}");
    assert!(hint.rows_returned < 100.0, "{hint:?}");

    proxy
        .scrape_until("pgstash_index_hints", |s| {
            s.value("pgstash_index_hints", &[]) >= 1.0
        })
        .await;
    let table = pgstash::tools::top::render(&proxy.queries().await, 50);
    let row = table
        .lines()
        .find(|l| l.ends_with(SLOW))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" IDX "), "{table}");
    let explained = pgstash::tools::explain::render(
        std::slice::from_ref(&shape),
        &shape.fingerprint[..12],
        false,
    )
    .expect("pgstash explain finds the shape");
    assert!(explained.contains(&hint.create), "{explained}");
    if let Some(bin) = pgstash_binary() {
        let (ok, out, err) = run_pgstash(
            &bin,
            &[
                "explain",
                &shape.fingerprint[..12],
                "--metrics",
                &proxy.metrics_url(),
            ],
        )
        .await;
        assert!(ok, "pgstash explain: {err}");
        assert!(
            out.contains(&hint.create) && out.contains("Seq Scan"),
            "{out}"
        );
    }

    // The same read with its values in the text (simple protocol): the
    // normalized text is explained, its literals now `$n`.
    let literal_shape = "SELECT id FROM tickets WHERE owner = $1 AND state = $2";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        client
            .simple_query("SELECT id FROM tickets WHERE owner = 7 AND state = 'open'")
            .await
            .expect("the slow read, simple protocol");
        let shapes = proxy.queries().await;
        let plan = shapes
            .iter()
            .find(|s| s.query == literal_shape)
            .and_then(|s| s.plan.clone());
        if let Some(plan) = plan {
            assert_eq!(plan.error, None);
            assert_eq!(plan.hints.len(), 1, "{plan:#?}");
            assert_eq!(plan.hints[0].create, hint.create);
            break;
        }
        assert!(Instant::now() < deadline, "no plan for {literal_shape}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The hint followed (as an operator would, outside pgstash).
    pg.execute(&hint.create).await;
    let before = plan.explained_at.clone();
    let shape = wait_for_plan(&proxy, &client, &before, |s| {
        s.plan
            .as_ref()
            .is_some_and(|p| p.plan.is_some() && p.hints.is_empty())
    })
    .await;
    let plan = shape.plan.expect("a new plan");
    let text = format!("{:?}", plan.plan);
    assert!(text.contains("tickets_owner_state_idx"), "{text}");
}
