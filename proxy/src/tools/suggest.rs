//! `pgstash rules suggest`: `[[rule]]` entries for the eligible read
//! queries that would save the most upstream time, ready to paste into
//! rules.toml, each with a comment giving calls, mean time, the read/write
//! ratio of its tables and the reason for its TTL.

use std::collections::HashMap;
use std::fmt::Write;

use crate::observe::digest::{toml_string, ShapeReport};

/// Calls reading and writing each table, over the whole digest.
fn table_traffic(shapes: &[ShapeReport]) -> HashMap<&str, (u64, u64)> {
    let mut traffic: HashMap<&str, (u64, u64)> = HashMap::new();
    for s in shapes {
        if s.plain_read {
            for t in &s.tables {
                traffic.entry(t.as_str()).or_default().0 += s.calls;
            }
        }
        for t in &s.written {
            traffic.entry(t.as_str()).or_default().1 += s.calls;
        }
    }
    traffic
}

/// A TTL from the read/write ratio: writes through pgstash invalidate
/// anyway, so the TTL only bounds staleness from writes made elsewhere.
fn ttl_for(reads: u64, writes: u64) -> (&'static str, &'static str) {
    match (reads, writes) {
        (_, 0) => ("5m", "no writes seen"),
        (r, w) if r >= 100 * w => ("5m", "read-mostly"),
        (r, w) if r >= 10 * w => ("60s", "mostly read"),
        _ => ("10s", "often written"),
    }
}

fn rule_name(shape: &ShapeReport) -> String {
    let base: String = shape
        .tables
        .first()
        .map(|t| t.rsplit('.').next().unwrap_or(t))
        .unwrap_or("query")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{base}_{}",
        &shape.fingerprint[..8.min(shape.fingerprint.len())]
    )
}

/// The suggestions as rules.toml text (empty of rules when nothing qualifies).
pub fn suggest(shapes: &[ShapeReport], limit: usize) -> String {
    let traffic = table_traffic(shapes);
    let mut candidates: Vec<&ShapeReport> = shapes
        .iter()
        .filter(|s| s.eligible && s.rule.is_none() && !s.tables.is_empty())
        .collect();
    // Upstream time a rule would save: the calls not already served from cache.
    let saved = |s: &ShapeReport| (s.calls - s.hits) as f64 * s.mean_ms;
    candidates.sort_by(|a, b| saved(b).total_cmp(&saved(a)));
    let mut out = String::from(
        "# Suggested by `pgstash rules suggest` from the query digest.\n\
         # Paste into rules.toml, then check it with `pgstash rules check`.\n",
    );
    if candidates.is_empty() {
        out.push_str("# No eligible read query without a rule was seen.\n");
    }
    for s in candidates.into_iter().take(limit) {
        let (reads, writes) = s
            .tables
            .iter()
            .map(|t| traffic.get(t.as_str()).copied().unwrap_or_default())
            .fold((0, 0), |acc, (r, w)| (acc.0 + r, acc.1 + w));
        let (ttl, why) = ttl_for(reads, writes);
        let _ = write!(
            out,
            "\n# {} calls, mean {:.3} ms, {:.1} ms upstream in total; tables {} read {} / written {} times ({why})\n\
             [[rule]]\nname = \"{}\"\nquery = {}\nttl = \"{ttl}\"\n",
            s.calls,
            s.mean_ms,
            saved(s),
            s.tables.join(", "),
            reads,
            writes,
            rule_name(s),
            toml_string(&s.query),
        );
        // An index may make the query cheap enough not to need a rule.
        for hint in s.plan.iter().flat_map(|p| &p.hints) {
            let _ = writeln!(
                out,
                "# also an index hint (pgstash explain {}): {};",
                &s.fingerprint[..12.min(s.fingerprint.len())],
                hint.create
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(
        query: &str,
        calls: u64,
        mean_ms: f64,
        tables: &[&str],
        written: &[&str],
        eligible: bool,
    ) -> ShapeReport {
        ShapeReport {
            fingerprint: format!("{:064x}", calls),
            query: query.into(),
            calls,
            total_ms: calls as f64 * mean_ms,
            mean_ms,
            p50_ms: mean_ms,
            p95_ms: mean_ms,
            p99_ms: mean_ms,
            max_ms: mean_ms,
            rows: calls,
            hits: 0,
            misses: 0,
            bypasses: calls,
            writes: if written.is_empty() { 0 } else { calls },
            rule: None,
            tables: tables.iter().map(|t| t.to_string()).collect(),
            written: written.iter().map(|t| t.to_string()).collect(),
            plain_read: written.is_empty(),
            eligible,
            not_eligible_because: None,
            database: "db".into(),
            user: "u".into(),
            n_plus_one: None,
            plan: None,
        }
    }

    #[test]
    fn suggestions_parse_as_rules_and_rank_by_time_saved() {
        let shapes = vec![
            shape(
                "select * from small where id = $1",
                10,
                0.5,
                &["small"],
                &[],
                true,
            ),
            shape(
                "select * from users where id = $1",
                1000,
                2.0,
                &["users"],
                &[],
                true,
            ),
            shape(
                "update users set name = $1 where id = $2",
                5,
                1.0,
                &[],
                &["users"],
                false,
            ),
            shape("select now()", 5000, 1.0, &[], &[], false),
        ];
        let text = suggest(&shapes, 10);
        let rules = pgstash_rules::parse_rules(&text, "suggested").unwrap();
        assert_eq!(rules.rules().len(), 2);
        assert!(rules.rules()[0].name.starts_with("users_"));
        assert!(text.contains("read 1000 / written 5 times (read-mostly)"));
        assert!(!text.contains("now()"));
    }
}
