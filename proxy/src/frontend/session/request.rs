//! Timing and accounting of the request in flight, finished into a metric
//! sample and a query event (slow-query log, digest) at its ReadyForQuery
//! or when the cache answers it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Session;
use crate::observe::record::QueryEvent;

/// The request a session is serving.
#[derive(Debug)]
pub struct Request {
    started: Instant,
    at: SystemTime,
    /// hit, miss, bypass or write.
    pub path: &'static str,
    pub text: Option<Arc<str>>,
    pub rule: Option<Arc<str>>,
    pub pool_wait: Duration,
    /// When the request was first sent upstream.
    pub upstream_from: Option<Instant>,
    pub upstream: Duration,
    pub rows: u64,
}

impl Request {
    fn new(path: &'static str) -> Request {
        Request {
            started: Instant::now(),
            at: SystemTime::now(),
            path,
            text: None,
            rule: None,
            pool_wait: Duration::ZERO,
            upstream_from: None,
            upstream: Duration::ZERO,
            rows: 0,
        }
    }
}

impl Session {
    /// The request in flight, started now as a bypass if there is none.
    pub(super) fn request(&mut self) -> &mut Request {
        self.request.get_or_insert_with(|| Request::new("bypass"))
    }

    /// Marks the request as taking `path` (a write outranks everything).
    pub(super) fn request_path(&mut self, path: &'static str) {
        let request = self.request();
        if request.path != "write" {
            request.path = path;
        }
    }

    pub(super) fn request_text(&mut self, text: Arc<str>) {
        let request = self.request();
        if request.text.is_none() {
            request.text = Some(text);
        }
    }

    /// Notes that the request's first bytes went upstream now.
    pub(super) fn request_sent(&mut self) {
        if let Some(request) = self.request.as_mut() {
            request.upstream_from.get_or_insert_with(Instant::now);
        }
    }

    /// Ends the request: metrics, slow-query log and digest.
    pub(super) fn finish_request(&mut self) {
        let Some(mut request) = self.request.take() else {
            return;
        };
        // One clock read for both spans: this runs once per query.
        let now = Instant::now();
        if let Some(from) = request.upstream_from {
            request.upstream = now.saturating_duration_since(from);
        }
        let duration = now.saturating_duration_since(request.started);
        self.context
            .metrics
            .duration(request.path)
            .observe(duration.as_secs_f64());
        let (Some(recorder), Some(text)) = (self.context.recorder.get(), request.text) else {
            return;
        };
        recorder.record(QueryEvent {
            session: self.info.clone(),
            text,
            at: request.at,
            duration,
            path: request.path,
            rows: request.rows,
            upstream: request.upstream,
            pool_wait: request.pool_wait,
            rule: request.rule,
        });
    }
}
