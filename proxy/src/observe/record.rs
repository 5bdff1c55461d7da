//! The path from a finished request to the slow-query log and the query
//! digest. Sessions hand a [`QueryEvent`] to a bounded channel and move on;
//! one background task normalizes the text (once per shape: texts that
//! differ only in plain literals share one analysis), updates the digest
//! and writes slow-log lines. When the channel is full
//! the event is dropped and counted: logging never blocks a query.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pgstash_rules::{literal_mask, Analysis, AnalysisCache, MAX_CACHED_TEXT};

use super::digest::Digest;
use super::slowlog::SlowLog;
use crate::context::Context;

pub use super::logline::SessionInfo;

/// Events waiting for the recorder before new ones are dropped.
const QUEUE: usize = 16_384;

/// One finished request.
#[derive(Debug)]
pub struct QueryEvent {
    pub session: Arc<SessionInfo>,
    pub text: Arc<str>,
    pub at: SystemTime,
    pub duration: Duration,
    /// hit, miss, bypass or write.
    pub path: &'static str,
    pub rows: u64,
    pub upstream: Duration,
    pub pool_wait: Duration,
    pub rule: Option<Arc<str>>,
}

/// The sessions' handle to the recorder task.
///
/// # Performance
/// Sessions append to a shared batch under a short lock and never wake
/// the recorder; it drains the batch every [`DRAIN_EVERY`]. A wake-up per
/// query would cost a cross-thread futex call on the query path.
#[derive(Clone)]
pub struct Recorder {
    batch: Arc<Mutex<Vec<QueryEvent>>>,
    dropped: prometheus::IntCounter,
}

/// How often the recorder drains the sessions' events.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

impl Recorder {
    /// Starts the recorder task for `context`'s digest and slow log.
    pub fn start(context: &Arc<Context>, slow_log: SlowLog) -> Recorder {
        let batch = Arc::new(Mutex::new(Vec::new()));
        let dropped = context.metrics.events_dropped.clone();
        tokio::spawn(run(Arc::downgrade(context), batch.clone(), slow_log));
        Recorder { batch, dropped }
    }

    pub fn record(&self, event: QueryEvent) {
        let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        if batch.len() >= QUEUE {
            drop(batch);
            self.dropped.inc();
            return;
        }
        batch.push(event);
    }
}

async fn run(
    context: std::sync::Weak<Context>,
    batch: Arc<Mutex<Vec<QueryEvent>>>,
    mut slow_log: SlowLog,
) {
    let analyses = Shapes::new(10_000);
    let mut events = Vec::new();
    loop {
        tokio::time::sleep(DRAIN_EVERY).await;
        let Some(context) = context.upgrade() else {
            return;
        };
        std::mem::swap(
            &mut events,
            &mut *batch.lock().unwrap_or_else(|e| e.into_inner()),
        );
        for event in events.drain(..) {
            record_one(&context, &analyses, &mut slow_log, event).await;
        }
        slow_log.flush().await;
    }
}

/// The recorder's analyses: by text, and by literal mask so that texts of
/// one shape (`... WHERE id = 1`, `... WHERE id = 2`) are analyzed once.
/// Texts without plain literals (`... WHERE id = $1`) come back verbatim
/// and are found by their text alone, in the analysis cache's short-text
/// level, before any scan.
///
/// An analysis found by mask is another text's: its fingerprint, normalized
/// text and statements are this text's too, its literals are not (nothing
/// here reads them).
struct Shapes {
    analyses: AnalysisCache,
    by_mask: quick_cache::sync::Cache<String, Arc<Analysis>>,
}

impl Shapes {
    fn new(capacity: usize) -> Shapes {
        Shapes {
            analyses: AnalysisCache::new(capacity),
            by_mask: quick_cache::sync::Cache::new(capacity),
        }
    }

    fn analyze(&self, text: &str) -> Option<Arc<Analysis>> {
        if let Some(hit) = self.analyses.cached(text) {
            return Some(hit);
        }
        let mask = literal_mask(text);
        if let Some(hit) = mask.as_ref().and_then(|m| self.by_mask.get(m)) {
            return Some(hit);
        }
        let analysis = self.analyses.analyze(text).ok()?;
        // Masks of texts with literals only: a verbatim text is found by the
        // analysis cache, and a text the mask cannot read (decimals, E''
        // strings…) has none. No bulk-sized texts.
        if let Some(mask) = mask.filter(|m| m != text && text.len() <= MAX_CACHED_TEXT) {
            self.by_mask.insert(mask, Arc::clone(&analysis));
        }
        Some(analysis)
    }
}

async fn record_one(context: &Context, shapes: &Shapes, slow_log: &mut SlowLog, event: QueryEvent) {
    let analysis = shapes.analyze(&event.text);
    context.digest.record(&event, analysis.as_deref());
    let config = context.config.load();
    let threshold = Duration::from_millis(config.slow_query_ms);
    if event.duration >= threshold {
        context.metrics.slow_queries.inc();
        slow_log
            .write(&event, analysis.as_ref(), config.log_parameters)
            .await;
    }
}

/// The digest type re-exported for the context.
pub type QueryDigest = Digest;

#[cfg(test)]
mod tests {
    use super::Shapes;

    #[test]
    fn only_masks_of_texts_with_readable_literals_are_kept() {
        let shapes = Shapes::new(16);
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
