//! The path from a finished request to the slow-query log and the query
//! digest. Sessions hand a [`QueryEvent`] to a bounded channel and move on;
//! one background task normalizes the text (once per text, cached),
//! updates the digest and writes slow-log lines. When the channel is full
//! the event is dropped and counted: logging never blocks a query.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgstash_rules::AnalysisCache;
use tokio::sync::mpsc;

use super::digest::Digest;
use super::slowlog::{SlowLine, SlowLog};
use crate::context::Context;

/// Events waiting for the recorder before new ones are dropped.
const QUEUE: usize = 16_384;

/// Who ran a query (shared by all events of a session).
#[derive(Debug)]
pub struct SessionInfo {
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub client: String,
}

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
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<QueryEvent>,
    dropped: prometheus::IntCounter,
}

impl Recorder {
    /// Starts the recorder task for `context`'s digest and slow log.
    pub fn start(context: &Arc<Context>, slow_log: SlowLog) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = context.metrics.events_dropped.clone();
        tokio::spawn(run(Arc::downgrade(context), rx, slow_log));
        Recorder { tx, dropped }
    }

    pub fn record(&self, event: QueryEvent) {
        if self.tx.try_send(event).is_err() {
            self.dropped.inc();
        }
    }
}

async fn run(
    context: std::sync::Weak<Context>,
    mut rx: mpsc::Receiver<QueryEvent>,
    mut slow_log: SlowLog,
) {
    let analyses = AnalysisCache::new(10_000);
    while let Some(event) = rx.recv().await {
        let Some(context) = context.upgrade() else {
            return;
        };
        let analysis = analyses.analyze(&event.text).ok();
        let (fingerprint, normalized) = match &analysis {
            Some(a) => (a.fingerprint.to_string(), a.normalized.clone()),
            None => (String::new(), event.text.clone()),
        };
        context.digest.record(&event, analysis.as_deref());
        let config = context.config.load();
        let threshold = Duration::from_millis(config.slow_query_ms);
        if event.duration >= threshold {
            context.metrics.slow_queries.inc();
            let query = if config.log_parameters {
                event.text.clone()
            } else {
                normalized
            };
            slow_log
                .write(&SlowLine::new(&event, &fingerprint, &query))
                .await;
        }
    }
}

/// The digest type re-exported for the context.
pub type QueryDigest = Digest;
