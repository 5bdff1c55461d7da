//! Timing and accounting of the request in flight, finished into a metric
//! sample and a query event (slow-query log, digest) at its ReadyForQuery
//! or when the cache answers it.
//!
//! # Performance
//! The clock is read once per wake-up of the session ([`Requests::woke`],
//! when it is created and when its wait ends, and again after a wait inside
//! its work: the pool, a store lookup, a write's recording):
//! a request starts, goes upstream and ends at the time its session woke
//! (or its pool wait ended), not at a clock read of its own, and its
//! wall-clock time is worked out by the recorder (`observe/record.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::observe::event::{QueryEvent, SessionInfo};
use crate::observe::record::Recorder;
use crate::observe::Metrics;

/// The request a session is serving.
#[derive(Debug)]
pub struct Request {
    started: Instant,
    /// hit, miss, bypass or write.
    path: &'static str,
    text: Option<Arc<str>>,
    rule: Option<Arc<str>>,
    pool_wait: Duration,
    /// When the request was first sent upstream.
    upstream_from: Option<Instant>,
    rows: u64,
    /// Its ReadyForQuery left the session in a transaction block.
    in_transaction: bool,
}

impl Request {
    /// Its ReadyForQuery arrived with this transaction state.
    #[inline]
    pub fn ended(&mut self, in_transaction: bool) {
        self.in_transaction = in_transaction;
    }

    fn new(now: Instant) -> Request {
        Request {
            started: now,
            path: "bypass",
            text: None,
            rule: None,
            pool_wait: Duration::ZERO,
            upstream_from: None,
            rows: 0,
            in_transaction: false,
        }
    }
}

/// A session's requests, and who they are reported as coming from.
pub struct Requests {
    /// Boxed: a parked session carries a pointer, not the request's
    /// hundred-odd bytes (issue #20).
    current: Option<Box<Request>>,
    /// When the session last woke up (or its pool wait ended).
    now: Instant,
    metrics: Arc<Metrics>,
    recorder: Option<Recorder>,
    session: Arc<SessionInfo>,
    /// Transaction mode: the client is pinned to its server connection.
    pinned: bool,
}

impl Requests {
    #[inline]
    pub fn new(
        metrics: Arc<Metrics>,
        recorder: Option<Recorder>,
        session: SessionInfo,
    ) -> Requests {
        Requests {
            current: None,
            now: Instant::now(),
            metrics,
            recorder,
            session: Arc::new(session),
            pinned: false,
        }
    }

    /// The session woke up at `now` (its one clock read until it waits
    /// again), or a wait inside its work (the pool) ended then.
    #[inline]
    pub fn woke(&mut self, now: Instant) {
        self.now = now;
    }

    /// The time of the session's last wake-up (see [`Requests::woke`]).
    #[inline]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The request in flight, started now as a bypass if there is none.
    fn current(&mut self) -> &mut Request {
        let now = self.now;
        self.current
            .get_or_insert_with(|| Box::new(Request::new(now)))
    }

    /// Starts a request if none is in flight.
    #[inline]
    pub fn begin(&mut self) {
        self.current();
    }

    /// Marks the request as taking `path` (a write outranks everything).
    #[inline]
    pub fn path(&mut self, path: &'static str) {
        let request = self.current();
        if request.path != "write" {
            request.path = path;
        }
    }

    /// The request's text, if none was noted yet.
    #[inline]
    pub fn text(&mut self, text: Arc<str>) {
        let request = self.current();
        if request.text.is_none() {
            request.text = Some(text);
        }
    }

    #[inline]
    pub fn rule(&mut self, rule: Arc<str>) {
        self.current().rule = Some(rule);
    }

    #[inline]
    pub fn waited_for_pool(&mut self, waited: Duration) {
        self.current().pool_wait += waited;
    }

    /// The request's first bytes went upstream now.
    #[inline]
    pub fn sent(&mut self) {
        if let Some(request) = self.current.as_mut() {
            request.upstream_from.get_or_insert(self.now);
        }
    }

    /// Rows the request's answer carried.
    #[inline]
    pub fn add_rows(&mut self, rows: u64) {
        if let Some(request) = self.current.as_mut() {
            request.rows += rows;
        }
    }

    /// The request in flight ends (its ReadyForQuery arrived): taken now,
    /// reported by [`Requests::finish`].
    #[inline]
    pub fn take(&mut self) -> Option<Request> {
        self.current.take().map(|request| *request)
    }

    /// Ends the request in flight as answered from the cache.
    #[inline]
    pub fn answered(&mut self, rows: u64) {
        self.path("hit");
        self.current().rows = rows;
        let request = self.take();
        self.finish(request);
    }

    /// The client was pinned to its server connection (or let go): the
    /// requests it sends from now on are logged as pinned.
    #[inline]
    pub fn set_pinned(&mut self, pinned: bool) {
        self.pinned = pinned;
    }

    /// Reports a request: metrics, slow-query log and digest.
    #[inline]
    pub fn finish(&self, request: Option<Request>) {
        let Some(request) = request else { return };
        let now = self.now;
        let upstream = request
            .upstream_from
            .map(|from| now.saturating_duration_since(from))
            .unwrap_or_default();
        let duration = now.saturating_duration_since(request.started);
        self.metrics
            .duration(request.path)
            .observe(duration.as_secs_f64());
        let (Some(recorder), Some(text)) = (&self.recorder, request.text) else {
            return;
        };
        recorder.record(QueryEvent {
            session: self.session.clone(),
            text,
            started: request.started,
            // Dated by the recorder, from `started`.
            at: SystemTime::UNIX_EPOCH,
            duration,
            path: request.path,
            rows: request.rows,
            upstream,
            pool_wait: request.pool_wait,
            rule: request.rule,
            in_transaction: request.in_transaction,
            pinned: self.pinned,
        });
    }

    /// Who the session is: its user, database, client address.
    #[inline]
    pub fn info(&self) -> &SessionInfo {
        &self.session
    }

    /// The client's application_name changed (SET).
    #[inline]
    pub fn set_application_name(&mut self, application_name: &str) {
        if application_name != self.session.application_name() {
            self.session = Arc::new(self.session.with_application_name(application_name));
        }
    }
}
