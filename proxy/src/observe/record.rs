//! The path from a finished request to the slow-query log and the query
//! digest. Sessions hand a [`QueryEvent`] to a bounded channel and move on;
//! one background task normalizes the text (once per shape: texts that
//! differ only in plain literals share one analysis), updates the digest
//! and writes slow-log lines, and looks for N+1 bursts in the events
//! (`nplusone.rs`). When the channel is full
//! the event is dropped and counted: logging never blocks a query.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use pgstash_rules::{literal_mask_into, Analysis, AnalysisCache, MAX_CACHED_TEXT};

use super::digest::Digest;
use super::event::QueryEvent;
use super::nplusone::{Burst, Detector, Thresholds, SWEEP_EVERY};
use super::plans::{PlanQueue, PlanWanted};
use super::slowlog::SlowLog;
use super::Metrics;

/// Events waiting for the recorder before new ones are dropped.
const QUEUE: usize = 16_384;

/// The sessions' handle to the recorder task.
///
/// # Performance
/// Sessions append to a shared batch under a short lock and never wake
/// the recorder; it drains the batch every [`DRAIN_EVERY`]. A wake-up per
/// query would cost a cross-thread futex call on the query path.
#[derive(Clone)]
pub struct Recorder(Arc<Shared>);

/// What the sessions' handles share (one pointer per session).
struct Shared {
    batch: Arc<Batches>,
    dropped: prometheus::IntCounter,
    settings: Arc<ArcSwap<LogSettings>>,
    /// Set to make the slow-query log reopen its file (SIGHUP, logrotate).
    reopen: Arc<AtomicBool>,
}

/// What makes a query slow, and what its log line shows.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Queries taking at least this long are logged.
    pub threshold: Duration,
    /// Log texts as sent (with their values) instead of normalized.
    pub log_parameters: bool,
    /// What makes an N+1 burst.
    pub n_plus_one: Thresholds,
    /// How often a slow shape's plan is fetched; never when `None`.
    pub explain_every: Option<Duration>,
}

/// What the recorder task works with.
struct Sinks {
    digest: Arc<Digest>,
    metrics: Arc<Metrics>,
    slow_log: SlowLog,
    settings: Arc<ArcSwap<LogSettings>>,
    n_plus_one: Detector,
    bursts: Vec<Burst>,
    plans: Arc<PlanQueue>,
}

/// The sessions' events waiting for the recorder: one batch per worker of
/// per-worker runtimes (`workers.rs`), each on a cache line of its own, so
/// that workers appending never contend for one lock; the shared runtime's
/// sessions all use the first.
struct Batches([Batch; BATCHES]);

/// Batches (and so lock-disjoint workers) before they share again.
const BATCHES: usize = 8;

/// One worker's batch, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Batch(Mutex<Vec<QueryEvent>>);

impl Batches {
    fn new() -> Batches {
        Batches(std::array::from_fn(|_| Batch::default()))
    }

    /// The calling session's batch.
    fn own(&self) -> &Mutex<Vec<QueryEvent>> {
        let index = crate::workers::current().map_or(0, |i| i + 1) % BATCHES;
        &self.0[index].0
    }
}

/// How often the recorder drains the sessions' events.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

impl Recorder {
    /// Starts the recorder task, writing the slow-query log to `path`
    /// (stderr when `None`). It runs while any handle is left.
    pub fn start(
        digest: Arc<Digest>,
        metrics: Arc<Metrics>,
        path: Option<std::path::PathBuf>,
        settings: LogSettings,
        plans: Arc<PlanQueue>,
    ) -> Recorder {
        let batch = Arc::new(Batches::new());
        let reopen = Arc::new(AtomicBool::new(false));
        let settings = Arc::new(ArcSwap::from_pointee(settings));
        let sinks = Sinks {
            digest,
            slow_log: SlowLog::new(path, reopen.clone()),
            settings: settings.clone(),
            metrics: metrics.clone(),
            n_plus_one: Detector::default(),
            bursts: Vec::new(),
            plans,
        };
        tokio::spawn(run(Arc::downgrade(&batch), sinks));
        Recorder(Arc::new(Shared {
            batch,
            dropped: metrics.events_dropped.clone(),
            settings,
            reopen,
        }))
    }

    /// New settings (a reload); the log file is reopened.
    pub fn reconfigure(&self, settings: LogSettings) {
        self.0.settings.store(Arc::new(settings));
        self.0.reopen.store(true, Ordering::SeqCst);
    }

    pub fn record(&self, event: QueryEvent) {
        let mut batch = self.0.batch.own().lock().unwrap_or_else(|e| e.into_inner());
        if batch.len() >= QUEUE {
            drop(batch);
            self.0.dropped.inc();
            return;
        }
        batch.push(event);
    }
}

async fn run(batch: Weak<Batches>, mut sinks: Sinks) {
    let mut analyses = Shapes::new(10_000);
    let mut events = Vec::new();
    let mut swept = std::time::Instant::now();
    loop {
        tokio::time::sleep(DRAIN_EVERY).await;
        let Some(batches) = batch.upgrade() else {
            return;
        };
        for batch in &batches.0 {
            let mut batch = batch.0.lock().unwrap_or_else(|e| e.into_inner());
            if events.is_empty() {
                std::mem::swap(&mut events, &mut *batch);
            } else {
                events.append(&mut batch);
            }
        }
        drop(batches);
        // One wall-clock reading dates the whole batch: an event started
        // that long before now.
        let (wall, now) = (std::time::SystemTime::now(), std::time::Instant::now());
        for mut event in events.drain(..) {
            event.at = wall - now.saturating_duration_since(event.started);
            sinks.record(&mut analyses, event).await;
        }
        if swept.elapsed() >= SWEEP_EVERY {
            swept = std::time::Instant::now();
            sinks.sweep().await;
        }
        sinks.slow_log.flush().await;
    }
}

/// The recorder's analyses: by text, and by literal mask so that texts of
/// one shape (`... WHERE id = 1`, `... WHERE id = 2`) are analyzed once.
/// Texts without plain literals (`... WHERE id = $1`) are their own mask
/// and are found by their text alone, in the analysis cache's short-text
/// level.
///
/// An analysis found by mask is another text's: its fingerprint, normalized
/// text and statements are this text's too, its literals are not (nothing
/// here reads them).
///
/// # Performance
/// A text seen before costs one lookup; another is masked into one reused
/// buffer and looked up by its mask: no allocation per event (`pgbench -M
/// simple` never sends the same text twice).
struct Shapes {
    analyses: AnalysisCache,
    by_mask: quick_cache::sync::Cache<String, Arc<Analysis>>,
    mask: String,
}

impl Shapes {
    fn new(capacity: usize) -> Shapes {
        Shapes {
            analyses: AnalysisCache::new(capacity),
            by_mask: quick_cache::sync::Cache::new(capacity),
            mask: String::new(),
        }
    }

    fn analyze(&mut self, text: &str) -> Option<Arc<Analysis>> {
        // A text sent again (a prepared statement's) is found at once.
        if let Some(hit) = self.analyses.cached(text) {
            return Some(hit);
        }
        // Some(false): no literal, the text is its own mask; None: a text
        // the mask cannot read (decimals, E'' strings…), likely a one-off.
        let masked = literal_mask_into(text, &mut self.mask) == Some(true);
        if let Some(hit) = masked
            .then(|| self.by_mask.get(self.mask.as_str()))
            .flatten()
        {
            return Some(hit);
        }
        let analysis = self.analyses.analyze(text).ok()?;
        // No bulk-sized texts.
        if masked && text.len() <= MAX_CACHED_TEXT {
            self.by_mask
                .insert(std::mem::take(&mut self.mask), Arc::clone(&analysis));
        }
        Some(analysis)
    }
}

impl Sinks {
    async fn record(&mut self, shapes: &mut Shapes, event: QueryEvent) {
        let analysis = shapes.analyze(&event.text);
        self.digest.record(&event, analysis.as_deref());
        let settings = self.settings.load();
        if let Some(shape) = &analysis {
            self.n_plus_one
                .observe(&event, shape, settings.n_plus_one, &mut self.bursts);
            self.report_bursts().await;
        }
        let slow = event.duration >= settings.threshold;
        if let (Some(every), Some(shape)) = (settings.explain_every, &analysis) {
            // Slow now, or slow before: its plan is kept up to date.
            if shape.is_single_plain_read() && (slow || self.digest.has_plan(&shape.fingerprint)) {
                let wanted = || PlanWanted {
                    fingerprint: shape.fingerprint,
                    query: shape.normalized.clone(),
                    // Its literals are `$n` after its parameters.
                    params: shape.param_count + shape.literals.len(),
                    database: event.session.database().to_owned(),
                    user: event.session.user().to_owned(),
                };
                self.plans.want(wanted, shape.fingerprint, every);
            }
        }
        if slow {
            self.metrics.slow_queries.inc();
            self.slow_log
                .write(&event, analysis.as_ref(), settings.log_parameters)
                .await;
        }
    }
}

impl Sinks {
    /// Reports the N+1 bursts that can no longer grow.
    async fn sweep(&mut self) {
        let limits = self.settings.load().n_plus_one;
        // Events of the last drain interval may still be on their way.
        let seen_until = std::time::SystemTime::now() - DRAIN_EVERY;
        self.n_plus_one.sweep(seen_until, limits, &mut self.bursts);
        self.report_bursts().await;
    }

    /// Each burst found: the digest, the metric, a line in the slow-query log.
    async fn report_bursts(&mut self) {
        for burst in std::mem::take(&mut self.bursts) {
            self.digest.note_burst(&burst);
            self.metrics
                .n_plus_one
                .with_label_values(&[burst.session.database()])
                .inc();
            self.slow_log.write_burst(&burst).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Shapes;

    #[test]
    fn only_masks_of_texts_with_readable_literals_are_kept() {
        let mut shapes = Shapes::new(16);
        for _ in 0..2 {
            assert!(shapes.analyze("SELECT a FROM t WHERE id = $1").is_some());
            // A decimal: the mask gives up; likely a one-off text.
            assert!(shapes.analyze("SELECT a FROM t WHERE x = 1.5").is_some());
            assert!(shapes.analyze("SELECT a FROM t WHERE id = 7").is_some());
        }
        assert!(shapes
            .analyses
            .cached("SELECT a FROM t WHERE id = $1")
            .is_some());
        assert_eq!(shapes.by_mask.len(), 1);
    }
}
