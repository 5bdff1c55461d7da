//! `pgstash top`: the query digest as a table, refreshed in place.

use std::io::Write;
use std::time::Duration;

use super::{fetch_queries, ToolError};
use crate::observe::digest::ShapeReport;

/// Renders the busiest `limit` shapes.
pub fn render(shapes: &[ShapeReport], limit: usize) -> String {
    let mut out = format!(
        "{:>9} {:>11} {:>9} {:>9} {:>6}  {:<18} {:<7} {}\n",
        "CALLS", "TOTAL_MS", "MEAN_MS", "P95_MS", "HIT%", "RULE", "FLAGS", "QUERY"
    );
    for s in shapes.iter().take(limit) {
        let cached = s.hits + s.misses;
        let hit = if cached == 0 {
            "-".to_owned()
        } else {
            format!("{:.0}", 100.0 * s.hits as f64 / cached as f64)
        };
        let mut query: String = s.query.split_whitespace().collect::<Vec<_>>().join(" ");
        if query.chars().count() > 80 {
            query = query.chars().take(77).collect::<String>() + "...";
        }
        out.push_str(&format!(
            "{:>9} {:>11.1} {:>9.3} {:>9.3} {:>6}  {:<18} {:<7} {}\n",
            s.calls,
            s.total_ms,
            s.mean_ms,
            s.p95_ms,
            hit,
            s.rule.as_deref().unwrap_or("-"),
            flags(s),
            query
        ));
    }
    out
}

/// What to look at in a shape: `N+1` when it ran in N+1 bursts, `IDX`
/// when its plan has an index hint (`pgstash explain FINGERPRINT`).
fn flags(shape: &ShapeReport) -> String {
    let mut flags = Vec::new();
    if shape.n_plus_one.is_some() {
        flags.push("N+1");
    }
    if shape.plan.as_ref().is_some_and(|p| !p.hints.is_empty()) {
        flags.push("IDX");
    }
    if flags.is_empty() {
        return "-".to_owned();
    }
    flags.join(",")
}

/// Prints the table once, or every `interval` until interrupted.
pub fn run(metrics: &str, once: bool, interval: Duration, limit: usize) -> Result<(), ToolError> {
    loop {
        let shapes = fetch_queries(metrics)?;
        let table = render(&shapes, limit);
        let mut stdout = std::io::stdout().lock();
        if once {
            let _ = stdout.write_all(table.as_bytes());
            return Ok(());
        }
        // Clear the screen and home the cursor, then draw.
        let _ = write!(
            stdout,
            "\x1b[2J\x1b[H pgstash top — {metrics} — every {interval:?}\n\n{table}"
        );
        let _ = stdout.flush();
        drop(stdout);
        std::thread::sleep(interval);
    }
}
