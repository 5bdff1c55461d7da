//! The query digest: per query shape (fingerprint), what pgstash saw —
//! calls, time (total, mean, percentiles), rows, cache hits and misses, the
//! rule that matched, the tables read, and whether the shape could be
//! cached and why not. Like pg_stat_statements, but measured at the proxy.
//!
//! # Memory
//! Bounded to `digest_size` shapes; when full, the shape with the least
//! total time is evicted. Percentiles come from a reservoir of at most
//! [`RESERVOIR`] samples per shape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pgstash_rules::Analysis;
use serde::Serialize;

use super::record::QueryEvent;

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
    plain_read: bool,
    samples: Vec<f32>,
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
    pub tables: Vec<String>,
    /// A single plain read (SELECT/VALUES/TABLE without locking, writes,
    /// system catalogs or temp tables): a candidate for a rule.
    pub plain_read: bool,
}

pub struct Digest {
    shapes: Mutex<HashMap<String, Shape>>,
    capacity: usize,
}

impl Digest {
    pub fn new(capacity: usize) -> Digest {
        Digest {
            shapes: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn record(&self, event: &QueryEvent, analysis: Option<&Analysis>) {
        let Some(analysis) = analysis else { return };
        let key = analysis.fingerprint.to_string();
        let ms = event.duration.as_secs_f64() * 1000.0;
        let mut shapes = self.shapes.lock().unwrap_or_else(|e| e.into_inner());
        if !shapes.contains_key(&key) && shapes.len() >= self.capacity {
            let smallest = shapes
                .iter()
                .min_by(|a, b| a.1.total_ms.total_cmp(&b.1.total_ms))
                .map(|(k, _)| k.clone());
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
            plain_read: analysis.is_single_plain_read(),
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
                    fingerprint: fingerprint.clone(),
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
                    plain_read: s.plain_read,
                }
            })
            .collect();
        out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        out
    }

    pub fn clear(&self) {
        self.shapes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
