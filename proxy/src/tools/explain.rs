//! `pgstash explain FINGERPRINT`: the plan pgstash fetched for a slow
//! shape, and the indexes it suggests, read from `/queries`.

use std::fmt::Write;
use std::io::Write as _;

use serde_json::Value;

use super::{fetch_queries, ToolError};
use crate::observe::digest::ShapeReport;

/// The shape whose fingerprint starts with `prefix` (at least 8 digits),
/// rendered (its plan as a tree, or as Postgres' JSON when `full`);
/// `None` when no shape or several match.
pub fn render(shapes: &[ShapeReport], prefix: &str, full: bool) -> Option<String> {
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
                (Some(json), _) if full => {
                    out.push_str(&serde_json::to_string_pretty(json).unwrap_or_default());
                    out.push('\n');
                }
                (Some(json), _) => {
                    for top in json.as_array().into_iter().flatten() {
                        if let Some(node) = top.get("Plan") {
                            tree(&mut out, node, 0);
                        }
                    }
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

/// One plan node per line, children indented: `-> Node Type on table
/// (rows=…, cost=…)`, then its filter.
fn tree(out: &mut String, node: &Value, depth: usize) {
    let text = |key: &str| node.get(key).and_then(Value::as_str);
    let number = |key: &str| node.get(key).and_then(Value::as_f64).unwrap_or(0.0);
    let pad = "   ".repeat(depth);
    let parallel = node.get("Parallel Aware").and_then(Value::as_bool) == Some(true);
    let _ = write!(
        out,
        "{pad}-> {}{}",
        if parallel { "Parallel " } else { "" },
        text("Node Type").unwrap_or("?")
    );
    if let Some(table) = text("Relation Name") {
        match text("Schema") {
            Some(schema) => {
                let _ = write!(out, " on {schema}.{table}");
            }
            None => {
                let _ = write!(out, " on {table}");
            }
        }
    }
    if let Some(index) = text("Index Name") {
        let _ = write!(out, " using {index}");
    }
    let _ = writeln!(
        out,
        "  (rows={:.0}, cost={:.2})",
        number("Plan Rows"),
        number("Total Cost")
    );
    for key in ["Index Cond", "Filter", "Sort Key"] {
        match node.get(key) {
            Some(Value::String(v)) => {
                let _ = writeln!(out, "{pad}      {key}: {v}");
            }
            Some(Value::Array(items)) => {
                let items: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                let _ = writeln!(out, "{pad}      {key}: {}", items.join(", "));
            }
            _ => {}
        }
    }
    for child in node
        .get("Plans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        tree(out, child, depth + 1);
    }
}

/// Prints the plan of the shape `fingerprint` of the pgstash at `metrics`.
pub fn run(metrics: &str, fingerprint: &str, full: bool) -> Result<(), ToolError> {
    let shapes = fetch_queries(metrics)?;
    let text = render(&shapes, fingerprint, full).ok_or_else(|| ToolError::NoShape {
        fingerprint: fingerprint.to_owned(),
        url: metrics.to_owned(),
    })?;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}
