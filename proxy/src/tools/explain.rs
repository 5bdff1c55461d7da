//! `pgstash explain FINGERPRINT`: the plan pgstash fetched for a slow
//! shape, and the indexes it suggests, read from `/queries`.

use std::fmt::Write;
use std::io::Write as _;

use super::{fetch_queries, ToolError};
use crate::observe::digest::ShapeReport;

/// The shape whose fingerprint starts with `prefix` (at least 8 digits),
/// rendered; `None` when no shape or several match.
pub fn render(shapes: &[ShapeReport], prefix: &str) -> Option<String> {
    let prefix = prefix.to_ascii_lowercase();
    let mut found = shapes
        .iter()
        .filter(|s| prefix.len() >= 8 && s.fingerprint.starts_with(&prefix));
    let shape = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let mut out = format!("-- {}\n{}\n", shape.fingerprint, shape.query);
    let _ = writeln!(
        out,
        "-- {} calls, mean {:.3} ms, max {:.3} ms",
        shape.calls, shape.mean_ms, shape.max_ms
    );
    if shape.eligible && shape.rule.is_none() {
        out.push_str("-- also cacheable: see `pgstash rules suggest`\n");
    }
    match &shape.plan {
        None => out.push_str(
            "\n-- no plan yet: plans are fetched when a shape runs at or over slow_query_ms\n",
        ),
        Some(plan) => {
            let _ = writeln!(out, "\n-- plan ({}, {})", plan.method, plan.explained_at);
            match (&plan.plan, &plan.error) {
                (Some(json), _) => {
                    out.push_str(&serde_json::to_string_pretty(json).unwrap_or_default());
                    out.push('\n');
                }
                (None, Some(error)) => {
                    let _ = writeln!(out, "-- no plan: {error}");
                }
                (None, None) => {}
            }
            if plan.hints.is_empty() {
                out.push_str("\n-- no index hint\n");
            }
            for hint in &plan.hints {
                let _ = writeln!(
                    out,
                    "\n-- index hint: a sequential scan of {} reads ~{:.0} rows to return ~{:.0}\n{};",
                    hint.table, hint.rows_scanned, hint.rows_returned, hint.create
                );
            }
        }
    }
    Some(out)
}

/// Prints the plan of the shape `fingerprint` of the pgstash at `metrics`.
pub fn run(metrics: &str, fingerprint: &str) -> Result<(), ToolError> {
    let shapes = fetch_queries(metrics)?;
    let text = render(&shapes, fingerprint).ok_or_else(|| ToolError::NoShape {
        fingerprint: fingerprint.to_owned(),
        url: metrics.to_owned(),
    })?;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}
