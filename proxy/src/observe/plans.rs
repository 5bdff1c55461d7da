//! Plans of slow shapes: the recorder asks for them ([`PlanQueue::want`]),
//! the explain task (`explain/`) fetches them and keeps them with the
//! shape in the digest ([`Plan`], with its [`IndexHint`]s).
//!
//! A shape is asked for once per `explain_every` at most, and only while
//! fewer than [`PENDING`] plans wait: the plans are a few control
//! connections' worth of work, never a queue that grows with traffic.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgstash_rules::{Fingerprint, FingerprintMap};
use serde::{Deserialize, Serialize};

/// Plans waiting to be fetched before new ones are not asked for.
const PENDING: usize = 32;
/// Shapes remembered as asked for; beyond it the memory starts over.
const ASKED_MAX: usize = 10_000;

/// A plan to fetch: the shape's normalized text, as its user in its database.
#[derive(Debug, Clone)]
pub struct PlanWanted {
    pub fingerprint: Fingerprint,
    pub query: Arc<str>,
    /// The highest `$n` of the text.
    pub params: usize,
    pub database: String,
    pub user: String,
}

/// A shape's plan, as kept in the digest and shown on `/queries`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    /// When it was fetched (RFC 3339).
    pub explained_at: String,
    /// How: `generic_plan` (Postgres 16+) or `force_generic_plan`.
    pub method: String,
    /// `EXPLAIN (FORMAT JSON)`'s answer, as Postgres gave it.
    pub plan: Option<serde_json::Value>,
    pub hints: Vec<IndexHint>,
    /// Why there is no plan (the shape does not prepare, no connection…).
    pub error: Option<String>,
}

/// An index that would serve a sequential scan's filter. Never created by
/// pgstash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexHint {
    /// `schema.table`.
    pub table: String,
    /// Equality columns first, then range columns.
    pub columns: Vec<String>,
    /// `CREATE INDEX CONCURRENTLY ON schema.table (columns)`.
    pub create: String,
    /// The table's estimated rows (all are scanned).
    pub rows_scanned: f64,
    /// The plan's estimate of the rows the filter keeps.
    pub rows_returned: f64,
}

/// Between the recorder and the explain task.
pub struct PlanQueue {
    pending: Mutex<VecDeque<PlanWanted>>,
    asked: Mutex<FingerprintMap<Instant>>,
    wake: tokio::sync::Notify,
}

impl Default for PlanQueue {
    fn default() -> Self {
        PlanQueue {
            pending: Mutex::new(VecDeque::new()),
            asked: Mutex::new(FingerprintMap::default()),
            wake: tokio::sync::Notify::new(),
        }
    }
}

impl PlanQueue {
    /// Asks for the plan of `wanted` unless it was asked for less than
    /// `every` ago or too many wait.
    pub fn want(
        &self,
        wanted: impl FnOnce() -> PlanWanted,
        fingerprint: Fingerprint,
        every: Duration,
    ) {
        let now = Instant::now();
        {
            let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
            if asked
                .get(&fingerprint)
                .is_some_and(|at| now.saturating_duration_since(*at) < every)
            {
                return;
            }
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.len() >= PENDING {
                return;
            }
            if asked.len() >= ASKED_MAX {
                asked.clear();
            }
            asked.insert(fingerprint, now);
            pending.push_back(wanted());
        }
        self.wake.notify_one();
    }

    /// The next plan to fetch, waiting for one.
    pub async fn next(&self) -> PlanWanted {
        loop {
            let notified = self.wake.notified();
            if let Some(wanted) = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return wanted;
            }
            notified.await;
        }
    }
}
