//! Fetching the plans of slow shapes (asked for by the recorder, see
//! `observe/plans.rs`) and the index hints read from them.
//!
//! # Which plan
//! The shape's normalized text is explained, never a text with values:
//! values are not in the query events (unless `log_parameters`), and a plan
//! shown on `/queries` must not carry them either. Postgres 16+ explains
//! such a text directly (`EXPLAIN (GENERIC_PLAN)`). Before 16, the text is
//! prepared and `EXPLAIN EXECUTE`d with `plan_cache_mode =
//! force_generic_plan`: the generic plan is built without looking at the
//! arguments, so NULLs stand in for them. (Without that setting the first
//! executions get custom plans, and a custom plan for `col = NULL` is a
//! one-time `false` filter, not the plan the application gets.) The
//! generic plan is what a prepared statement runs after its fifth
//! execution; for a skewed column a custom plan may differ.
//!
//! `ANALYZE` is never used: nothing of the query runs. The connection is
//! the query's own user in its database (so `search_path` and privileges
//! are the application's), opened for the one plan and closed.

mod hint;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::backend::error::BackendError;
use crate::context::Context;
use crate::observe::plans::{Plan, PlanWanted};

/// How long Postgres may take to plan.
const STATEMENT_TIMEOUT: &str = "5s";
/// Plans fetched at most this often (the task is one connection at a time).
const PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    Connect(#[from] BackendError),
    #[error("{}", .0.as_db_error().map_or_else(|| .0.to_string(), |db| format!("{}: {}", db.code().code(), db.message())))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("EXPLAIN gave no JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0} returned no row")]
    NoAnswer(&'static str),
}

/// Starts the task that fetches the plans the recorder asks for; it ends
/// when the context is dropped.
pub fn start(context: &Arc<Context>) {
    let plans = context.plans.clone();
    let shutdown = context.shutdown.clone();
    let context = Arc::downgrade(context);
    tokio::spawn(async move {
        loop {
            let wanted = tokio::select! {
                wanted = plans.next() => wanted,
                () = shutdown.cancelled() => return,
            };
            let Some(context) = context.upgrade() else {
                return;
            };
            let plan = explain(&context, &wanted).await;
            context.digest.set_plan(&wanted.fingerprint, plan);
            let hinted = context.digest.hinted();
            context.metrics.index_hints.set(hinted as i64);
            drop(context);
            tokio::time::sleep(PAUSE).await;
        }
    });
}

/// The plan of `wanted`, or why there is none.
async fn explain(context: &Context, wanted: &PlanWanted) -> Plan {
    let explained_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let min_rows = context.config.load().observe.index_hint_min_rows;
    let target = context.connect_target(&wanted.database, &wanted.user);
    let result = async {
        let client = crate::backend::control::connect(&target, "pgstash-explain").await?;
        let (method, plan) = fetch(&client, wanted).await?;
        let mut hints = Vec::new();
        for scan in hint::filtered_scans(&plan) {
            let rows = table_rows(&client, &scan.schema, &scan.table).await?;
            hints.extend(hint::hint(&scan, rows, min_rows));
        }
        Ok::<_, ExplainError>((method, plan, hints))
    }
    .await;
    match result {
        Ok((method, plan, hints)) => Plan {
            explained_at,
            method: method.to_owned(),
            plan: Some(plan),
            hints,
            error: None,
        },
        Err(e) => {
            tracing::debug!(fingerprint = %wanted.fingerprint, error = %e, "no plan");
            Plan {
                explained_at,
                method: String::new(),
                plan: None,
                hints: Vec::new(),
                error: Some(e.to_string()),
            }
        }
    }
}

/// `EXPLAIN (FORMAT JSON, VERBOSE)` of the generic plan, and how it was had.
async fn fetch(
    client: &tokio_postgres::Client,
    wanted: &PlanWanted,
) -> Result<(&'static str, Value), ExplainError> {
    let version: i64 = scalar(client, "SHOW server_version_num")
        .await?
        .trim()
        .parse()
        .unwrap_or(0);
    client
        .batch_execute(&format!("SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
        .await?;
    let (method, explained) = if version >= 160_000 {
        let sql = format!(
            "EXPLAIN (FORMAT JSON, VERBOSE, GENERIC_PLAN) {}",
            wanted.query
        );
        ("generic_plan", scalar(client, &sql).await?)
    } else {
        client
            .batch_execute("SET plan_cache_mode = force_generic_plan")
            .await?;
        client
            .batch_execute(&format!("PREPARE pgstash_explain AS {}", wanted.query))
            .await?;
        let execute = match wanted.params {
            0 => "EXECUTE pgstash_explain".to_owned(),
            n => format!("EXECUTE pgstash_explain({})", vec!["NULL"; n].join(", ")),
        };
        let sql = format!("EXPLAIN (FORMAT JSON, VERBOSE) {execute}");
        ("force_generic_plan", scalar(client, &sql).await?)
    };
    Ok((method, serde_json::from_str(&explained)?))
}

/// The first column of the first row of `sql`'s answer, as text.
async fn scalar(client: &tokio_postgres::Client, sql: &str) -> Result<String, ExplainError> {
    let mut text = None;
    for message in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            // EXPLAIN's JSON may come as several rows of one column.
            let part = row.get(0).unwrap_or_default();
            text.get_or_insert_with(String::new).push_str(part);
        }
    }
    text.ok_or(ExplainError::NoAnswer("the query"))
}

/// The table's estimated rows: the planner's (`reltuples`) once it was
/// analyzed, the statistics' live rows before.
async fn table_rows(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Result<f64, ExplainError> {
    let row = client
        .query_opt(
            "SELECT c.reltuples::float8, coalesce(s.n_live_tup, 0)::float8 \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = c.oid \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await?;
    Ok(row.map_or(0.0, |row| {
        let reltuples: f64 = row.get(0);
        if reltuples >= 0.0 {
            reltuples
        } else {
            row.get(1)
        }
    }))
}
