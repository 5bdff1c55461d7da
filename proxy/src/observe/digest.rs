//! The query digest: per query shape (fingerprint), what pgstash saw —
//! calls, time (total, mean, percentiles), rows, cache hits and misses, the
//! rule that matched, the tables read, and whether the shape could be
//! cached and why not. Like pg_stat_statements, but measured at the proxy.
//!
//! # Memory
//! Bounded to `digest_size` shapes; when full, the shape with the least
//! total time is evicted. Percentiles come from a reservoir of at most
//! [`RESERVOIR`] samples per shape.

use std::sync::{Arc, Mutex};

use pgstash_rules::{Analysis, Fingerprint, FingerprintMap};
use serde::Serialize;

use super::event::QueryEvent;
use super::nplusone::Burst;
use super::plans::Plan;

/// Duration samples kept per shape for percentiles.
const RESERVOIR: usize = 256;

#[derive(Debug, Default)]
struct Shape {
    query: Arc<str>,
    calls: u64,
    total_ms: f64,
    max_ms: f64,
    rows: u64,
    hits: u64,
    misses: u64,
    bypasses: u64,
    writes: u64,
    rule: Option<Arc<str>>,
    tables: Vec<String>,
    written: Vec<String>,
    plain_read: bool,
    database: String,
    user: String,
    samples: Vec<f32>,
    n_plus_one: Option<NPlusOne>,
    plan: Option<Plan>,
}

/// One shape as served on `/queries`.
#[derive(Debug, Serialize, serde::Deserialize, Clone)]
pub struct ShapeReport {
    pub fingerprint: String,
    pub query: String,
    pub calls: u64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub rows: u64,
    pub hits: u64,
    pub misses: u64,
    pub bypasses: u64,
    pub writes: u64,
    pub rule: Option<String>,
    /// Tables read.
    pub tables: Vec<String>,
    /// Tables written.
    pub written: Vec<String>,
    /// A single plain read (SELECT/VALUES/TABLE without locking, writes,
    /// system catalogs or temp tables): a candidate for a rule.
    pub plain_read: bool,
    /// Whether a rule for this shape would be served from the cache
    /// (default-deny checks with the catalog), and if not, why.
    pub eligible: bool,
    pub not_eligible_because: Option<String>,
    pub database: String,
    #[serde(skip)]
    pub user: String,
    /// N+1 bursts of this shape (`observe/nplusone.rs`), if any was seen.
    #[serde(default)]
    pub n_plus_one: Option<NPlusOne>,
    /// Its plan, fetched when it ran slow (`observe/plans.rs`).
    #[serde(default)]
    pub plan: Option<Plan>,
}

/// A shape's N+1 bursts.
#[derive(Debug, Default, Serialize, serde::Deserialize, Clone, PartialEq)]
pub struct NPlusOne {
    pub bursts: u64,
    /// Executions in those bursts.
    pub executions: u64,
    /// Executions in the largest burst.
    pub largest: u64,
    /// Time the bursts took (their executions' durations added up).
    pub total_ms: f64,
    /// The shape run just before the last burst began, and its text.
    pub preceded_by: Option<String>,
    pub preceded_by_query: Option<String>,
}

pub struct Digest {
    shapes: Mutex<FingerprintMap<Shape>>,
    capacity: usize,
}

impl Digest {
    pub fn new(capacity: usize) -> Digest {
        Digest {
            shapes: Mutex::new(FingerprintMap::default()),
            capacity: capacity.max(1),
        }
    }

    pub fn record(&self, event: &QueryEvent, analysis: Option<&Analysis>) {
        let Some(analysis) = analysis else { return };
        let key = analysis.fingerprint;
        let ms = event.duration.as_secs_f64() * 1000.0;
        let mut shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
        if !shapes.contains_key(&key) && shapes.len() >= self.capacity {
            let smallest = shapes
                .iter()
                .min_by(|a, b| a.1.total_ms.total_cmp(&b.1.total_ms))
                .map(|(k, _)| *k);
            if let Some(smallest) = smallest {
                shapes.remove(&smallest);
            }
        }
        let shape = shapes.entry(key).or_insert_with(|| Shape {
            query: analysis.normalized.clone(),
            tables: analysis
                .tables_read()
                .iter()
                .map(|t| t.to_string())
                .collect(),
            written: analysis
                .tables_written()
                .iter()
                .map(|t| t.to_string())
                .collect(),
            plain_read: analysis.is_single_plain_read(),
            database: event.session.database().to_owned(),
            user: event.session.user().to_owned(),
            ..Shape::default()
        });
        shape.calls += 1;
        shape.total_ms += ms;
        shape.max_ms = shape.max_ms.max(ms);
        shape.rows += event.rows;
        match event.path {
            "hit" => shape.hits += 1,
            "miss" => shape.misses += 1,
            "write" => shape.writes += 1,
            _ => shape.bypasses += 1,
        }
        if event.rule.is_some() {
            shape.rule = event.rule.clone();
        }
        if shape.samples.len() < RESERVOIR {
            shape.samples.push(ms as f32);
        } else {
            let slot = rand::random_range(0..shape.calls) as usize;
            if slot < RESERVOIR {
                shape.samples[slot] = ms as f32;
            }
        }
    }

    /// Every shape, most total time first.
    pub fn report(&self) -> Vec<ShapeReport> {
        let shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<ShapeReport> = shapes
            .iter()
            .map(|(fingerprint, s)| {
                let mut sorted = s.samples.clone();
                sorted.sort_by(|a, b| a.total_cmp(b));
                let pct = |p: f64| -> f64 {
                    if sorted.is_empty() {
                        return 0.0;
                    }
                    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
                    f64::from(sorted[i])
                };
                ShapeReport {
                    fingerprint: fingerprint.to_string(),
                    query: s.query.to_string(),
                    calls: s.calls,
                    total_ms: s.total_ms,
                    mean_ms: s.total_ms / s.calls.max(1) as f64,
                    p50_ms: pct(0.50),
                    p95_ms: pct(0.95),
                    p99_ms: pct(0.99),
                    max_ms: s.max_ms,
                    rows: s.rows,
                    hits: s.hits,
                    misses: s.misses,
                    bypasses: s.bypasses,
                    writes: s.writes,
                    rule: s.rule.as_deref().map(str::to_owned),
                    tables: s.tables.clone(),
                    written: s.written.clone(),
                    plain_read: s.plain_read,
                    eligible: false,
                    not_eligible_because: None,
                    database: s.database.clone(),
                    user: s.user.clone(),
                    n_plus_one: s.n_plus_one.clone(),
                    plan: s.plan.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        out
    }

    /// Counts an N+1 burst of its shape (a shape no longer kept is not).
    pub fn note_burst(&self, burst: &Burst) {
        let mut shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(shape) = shapes.get_mut(&burst.shape.fingerprint) else {
            return;
        };
        let seen = shape.n_plus_one.get_or_insert_with(NPlusOne::default);
        seen.bursts += 1;
        seen.executions += burst.count;
        seen.largest = seen.largest.max(burst.count);
        seen.total_ms += burst.total.as_secs_f64() * 1000.0;
        seen.preceded_by = burst
            .preceded_by
            .as_ref()
            .map(|a| a.fingerprint.to_string());
        seen.preceded_by_query = burst.preceded_by.as_ref().map(|a| a.normalized.to_string());
    }

    /// Keeps `plan` with its shape (a shape no longer kept is not).
    pub fn set_plan(&self, fingerprint: &Fingerprint, plan: Plan) {
        let mut shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shape) = shapes.get_mut(fingerprint) {
            shape.plan = Some(plan);
        }
    }

    /// Shapes whose plan has an index hint.
    pub fn hinted(&self) -> usize {
        let shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
        shapes
            .values()
            .filter(|s| s.plan.as_ref().is_some_and(|p| !p.hints.is_empty()))
            .count()
    }

    /// Whether the shape has a plan (kept up to date while it runs).
    pub fn has_plan(&self, fingerprint: &Fingerprint) -> bool {
        let shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
        shapes.get(fingerprint).is_some_and(|s| s.plan.is_some())
    }

    pub fn clear(&self) {
        self.shapes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Fills in `eligible` / `not_eligible_because`: the default-deny checks a
/// rule for the shape would meet, with the database's catalog.
pub fn judge(report: &mut ShapeReport, catalog: &dyn pgstash_rules::Catalog) {
    use pgstash_rules::{Decision, SessionFacts};
    if !report.plain_read {
        report.not_eligible_because = Some(if report.writes > 0 {
            "writes".to_owned()
        } else {
            "not a single plain read".to_owned()
        });
        return;
    }
    let Ok(analysis) = pgstash_rules::analyze(&report.query) else {
        report.not_eligible_because = Some("does not parse".to_owned());
        return;
    };
    let probe = format!(
        "[[rule]]\nname = \"probe\"\nquery = {}\n",
        toml_string(&report.query)
    );
    let Ok(rules) = pgstash_rules::parse_rules(&probe, "probe") else {
        report.not_eligible_because = Some("cannot be written as a rule".to_owned());
        return;
    };
    match pgstash_rules::decide(&analysis, &rules, &SessionFacts::default(), catalog) {
        Decision::CacheRead { .. } => report.eligible = true,
        Decision::Bypass { reason } => report.not_eligible_because = Some(reason.to_string()),
        Decision::Write { .. } => report.not_eligible_because = Some("writes".to_owned()),
    }
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
