//! N+1 detection: one client session running one query shape over and
//! over in a burst — typically once per row of a query just before it
//! (list the conversations, then fetch each one's messages) — where one
//! query (a JOIN, `= ANY($1)`) would do.
//!
//! A *run* of a shape in a session is its executions where each one starts
//! at most `window` after the end of the one before, or inside the same
//! transaction block as it; other shapes may come in between (a loop body
//! of two queries is two runs). A run of at least `min` executions is a
//! [`Burst`], reported once, when the run can no longer grow: the session
//! ran the shape again after a longer pause, or was quiet longer than
//! `window` outside the run's transaction (the recorder sweeps every
//! [`SWEEP_EVERY`]). The *preceding* shape is the one the session ran
//! just before the run's first execution.
//!
//! # Performance
//! Nothing here runs on a session's path: the recorder task feeds the
//! detector the events it already drains and analyzes (see `record.rs`),
//! so a session's only cost is the transaction flag it puts in its
//! [`QueryEvent`]. Parameter values are not in the events: two executions
//! of one shape count whether their values differ or not (a repeated
//! identical query is as much a round trip saved).
//!
//! # Memory
//! At most [`MAX_SESSIONS`] sessions with [`MAX_RUNS`] open runs each; a
//! session quiet for [`FORGET_AFTER`] is forgotten (its runs reported).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgstash_rules::{Analysis, FingerprintHashing, StatementKind, TransactionKind};

use super::event::{QueryEvent, SessionInfo};

/// Sessions followed at once; later ones are not followed until some are
/// forgotten.
const MAX_SESSIONS: usize = 65_536;
/// Open runs per session; beyond it the one idle longest is closed.
const MAX_RUNS: usize = 32;
/// A session quiet this long is forgotten, even inside a transaction.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How often the recorder closes the runs that can no longer grow.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// What makes a burst.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Executions in a run for it to be a burst; 0 turns detection off.
    pub min: u32,
    /// The longest pause between two executions of a run.
    pub window: Duration,
}

/// One detected N+1 burst.
#[derive(Debug)]
pub struct Burst {
    /// The session, as of the run's last execution.
    pub session: Arc<SessionInfo>,
    pub shape: Arc<Analysis>,
    pub count: u64,
    /// The executions' durations, added up.
    pub total: Duration,
    /// From the first execution's start to the last one's end.
    pub span: Duration,
    pub started: SystemTime,
    /// The shape the session ran just before the run began.
    pub preceded_by: Option<Arc<Analysis>>,
    /// The run was inside one transaction block.
    pub in_transaction: bool,
}

/// A shape's executions so far in one session.
struct Run {
    session: Arc<SessionInfo>,
    shape: Arc<Analysis>,
    count: u64,
    total: Duration,
    started: SystemTime,
    last_end: SystemTime,
    /// The transaction block of its last execution.
    tx: Option<u64>,
    in_transaction: bool,
    preceded_by: Option<Arc<Analysis>>,
}

impl Run {
    /// The run can still grow by an execution starting at `at` with the
    /// session in transaction `tx`.
    fn open_at(&self, at: SystemTime, tx: Option<u64>, window: Duration) -> bool {
        (self.tx.is_some() && self.tx == tx) || pause(self.last_end, at) <= window
    }

    fn into_burst(self, min: u32) -> Option<Burst> {
        (self.count >= u64::from(min.max(2))).then(|| Burst {
            span: pause(self.started, self.last_end),
            session: self.session,
            shape: self.shape,
            count: self.count,
            total: self.total,
            started: self.started,
            preceded_by: self.preceded_by,
            in_transaction: self.in_transaction,
        })
    }
}

/// Time from `from` to `to`; zero if `to` is earlier.
fn pause(from: SystemTime, to: SystemTime) -> Duration {
    to.duration_since(from).unwrap_or_default()
}

/// One session's open runs and what it ran last.
#[derive(Default)]
struct Session {
    runs: Vec<Run>,
    last: Option<Arc<Analysis>>,
    last_end: Option<SystemTime>,
    /// The transaction block the session is in after its last event.
    open_tx: Option<u64>,
    transactions: u64,
}

impl Session {
    /// Closes the runs for which `closed` holds, reporting the bursts.
    fn close(&mut self, min: u32, out: &mut Vec<Burst>, closed: impl Fn(&Run) -> bool) {
        let mut i = 0;
        while i < self.runs.len() {
            if closed(&self.runs[i]) {
                out.extend(self.runs.swap_remove(i).into_burst(min));
            } else {
                i += 1;
            }
        }
    }
}

/// The recorder's N+1 detector, by session.
#[derive(Default)]
pub struct Detector {
    /// By session id: the keyed multiply, not SipHash (this runs once per
    /// query).
    sessions: HashMap<u64, Session, FingerprintHashing>,
}

impl Detector {
    /// Takes `event` (of shape `shape`) into account; bursts that ended
    /// before it go to `out`.
    pub fn observe(
        &mut self,
        event: &QueryEvent,
        shape: &Arc<Analysis>,
        limits: Thresholds,
        out: &mut Vec<Burst>,
    ) {
        if limits.min == 0 {
            return;
        }
        if self.sessions.len() >= MAX_SESSIONS && !self.sessions.contains_key(&event.session.id) {
            return;
        }
        let session = self.sessions.entry(event.session.id).or_default();
        let start = event.at;
        let end = start + event.duration;
        // BEGIN, COMMIT…: only the transaction state changes. The statement
        // says it better than the event's flag, which a pipelining client
        // can shift by one request.
        match transaction_control(shape) {
            Some(TransactionKind::Begin) => {
                session.transactions += 1;
                session.open_tx = Some(session.transactions);
                return;
            }
            Some(TransactionKind::Commit | TransactionKind::Rollback) => {
                session.open_tx = None;
                return;
            }
            Some(_) => return,
            None => {}
        }
        let tx = match session.open_tx {
            Some(open) => Some(open),
            None if event.in_transaction => {
                session.transactions += 1;
                Some(session.transactions)
            }
            None => None,
        };
        let fingerprint = shape.fingerprint;
        session.close(limits.min, out, |run| {
            run.shape.fingerprint != fingerprint && !run.open_at(start, tx, limits.window)
        });
        match session
            .runs
            .iter()
            .position(|run| run.shape.fingerprint == fingerprint)
        {
            Some(i) if session.runs[i].open_at(start, tx, limits.window) => {
                let run = &mut session.runs[i];
                run.count += 1;
                run.total += event.duration;
                run.last_end = end;
                run.in_transaction &= tx.is_some() && run.tx == tx;
                run.tx = tx;
                if !Arc::ptr_eq(&run.session, &event.session) {
                    run.session = event.session.clone();
                }
            }
            found => {
                if let Some(i) = found {
                    out.extend(session.runs.swap_remove(i).into_burst(limits.min));
                }
                if session.runs.len() >= MAX_RUNS {
                    let oldest = session
                        .runs
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, run)| run.last_end)
                        .map(|(i, _)| i);
                    if let Some(i) = oldest {
                        out.extend(session.runs.swap_remove(i).into_burst(limits.min));
                    }
                }
                let preceded_by = session
                    .last
                    .clone()
                    .filter(|last| last.fingerprint != fingerprint);
                session.runs.push(Run {
                    session: event.session.clone(),
                    shape: shape.clone(),
                    count: 1,
                    total: event.duration,
                    started: start,
                    last_end: end,
                    tx,
                    in_transaction: tx.is_some(),
                    preceded_by,
                });
            }
        }
        if !session
            .last
            .as_ref()
            .is_some_and(|last| Arc::ptr_eq(last, shape))
        {
            session.last = Some(shape.clone());
        }
        session.last_end = Some(end);
        session.open_tx = if event.in_transaction { tx } else { None };
    }

    /// Reports the runs that can no longer grow at `now`, and forgets the
    /// sessions quiet for long.
    pub fn sweep(&mut self, now: SystemTime, limits: Thresholds, out: &mut Vec<Burst>) {
        self.sessions.retain(|_, session| {
            let quiet = session
                .last_end
                .map_or(Duration::MAX, |end| pause(end, now));
            if quiet > FORGET_AFTER {
                session.close(limits.min, out, |_| true);
                return false;
            }
            let open_tx = session.open_tx;
            session.close(limits.min, out, |run| {
                !(run.tx.is_some() && run.tx == open_tx) && pause(run.last_end, now) > limits.window
            });
            !session.runs.is_empty() || session.open_tx.is_some() || quiet <= limits.window
        });
    }
}

/// BEGIN, COMMIT, SAVEPOINT… (the last of them, when the text has several
/// and nothing else): neither a run nor a preceding shape.
fn transaction_control(shape: &Analysis) -> Option<TransactionKind> {
    let mut last = None;
    for statement in shape.statements.iter() {
        match statement.kind {
            StatementKind::Transaction(kind) => last = Some(kind),
            _ => return None,
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Thresholds = Thresholds {
        min: 3,
        window: Duration::from_millis(100),
    };

    struct Feed {
        detector: Detector,
        session: Arc<SessionInfo>,
        now: SystemTime,
        out: Vec<Burst>,
    }

    impl Feed {
        fn new() -> Feed {
            Feed {
                detector: Detector::default(),
                session: Arc::new(SessionInfo::new("u", "db", "app", "127.0.0.1:1")),
                now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
                out: Vec::new(),
            }
        }

        /// Runs `sql` after a pause of `gap_ms`, taking 1 ms.
        fn run(&mut self, sql: &str, gap_ms: u64, in_transaction: bool) {
            self.now += Duration::from_millis(gap_ms);
            let event = QueryEvent {
                session: self.session.clone(),
                text: sql.into(),
                started: std::time::Instant::now(),
                at: self.now,
                duration: Duration::from_millis(1),
                path: "bypass",
                rows: 1,
                upstream: Duration::ZERO,
                pool_wait: Duration::ZERO,
                rule: None,
                in_transaction,
                pinned: false,
            };
            let shape = Arc::new(pgstash_rules::analyze(sql).unwrap());
            self.detector.observe(&event, &shape, LIMITS, &mut self.out);
            self.now += event.duration;
        }

        fn sweep_after(&mut self, ms: u64) {
            self.now += Duration::from_millis(ms);
            self.detector.sweep(self.now, LIMITS, &mut self.out);
        }
    }

    #[test]
    fn a_loop_after_a_parent_query_is_one_burst_reported_when_it_ends() {
        let mut feed = Feed::new();
        feed.run("SELECT id FROM conversations", 0, false);
        for i in 0..5 {
            feed.run(&format!("SELECT * FROM messages WHERE c = {i}"), 2, false);
            feed.run(&format!("SELECT * FROM users WHERE id = {i}"), 1, false);
        }
        feed.sweep_after(50);
        assert!(feed.out.is_empty(), "the runs may still grow");
        feed.sweep_after(60);
        assert_eq!(feed.out.len(), 2, "{:?}", feed.out);
        let messages = feed
            .out
            .iter()
            .find(|b| b.shape.normalized.contains("messages"))
            .unwrap();
        assert_eq!(messages.count, 5);
        assert_eq!(messages.total, Duration::from_millis(5));
        let before = messages.preceded_by.as_ref().unwrap();
        assert_eq!(&*before.normalized, "SELECT id FROM conversations");
        assert!(!messages.in_transaction);
        assert!(
            feed.detector.sessions.is_empty(),
            "a quiet session is forgotten"
        );
    }

    #[test]
    fn a_pause_longer_than_the_window_splits_runs_and_short_runs_are_not_bursts() {
        let mut feed = Feed::new();
        for gap in [0, 150, 150, 150, 150] {
            feed.run("SELECT * FROM messages WHERE c = 1", gap, false);
        }
        feed.sweep_after(200);
        assert!(feed.out.is_empty(), "{:?}", feed.out);
        feed.run("SELECT 1", 0, false);
        feed.run("SELECT 2", 0, false);
        feed.sweep_after(200);
        assert!(feed.out.is_empty(), "two runs are not a burst at min 3");
    }

    #[test]
    fn inside_one_transaction_pauses_do_not_split_a_run() {
        let mut feed = Feed::new();
        feed.run("BEGIN", 0, true);
        feed.run("SELECT id FROM conversations", 0, true);
        for i in 0..4 {
            feed.run(&format!("SELECT * FROM messages WHERE c = {i}"), 300, true);
        }
        feed.sweep_after(500);
        assert!(feed.out.is_empty(), "the transaction is still open");
        feed.run("COMMIT", 0, false);
        feed.run("SELECT * FROM messages WHERE c = 9", 300, false);
        feed.sweep_after(200);
        assert_eq!(feed.out.len(), 1);
        let burst = &feed.out[0];
        assert_eq!(burst.count, 4);
        assert!(burst.in_transaction);
        assert_eq!(
            &*burst.preceded_by.as_ref().unwrap().normalized,
            "SELECT id FROM conversations",
            "BEGIN is not a preceding shape"
        );
    }

    #[test]
    fn sessions_are_apart_and_a_renamed_session_is_the_same() {
        let mut feed = Feed::new();
        let first = feed.session.clone();
        let renamed = Arc::new(first.with_application_name("other"));
        let stranger = Arc::new(SessionInfo::new("u", "db", "app", "127.0.0.1:2"));
        for session in [&first, &stranger, &renamed, &stranger] {
            feed.session = session.clone();
            feed.run("SELECT * FROM messages WHERE c = 1", 1, false);
        }
        feed.sweep_after(200);
        assert!(feed.out.is_empty(), "two runs each: {:?}", feed.out);
        feed.session = renamed;
        feed.run("SELECT * FROM messages WHERE c = 1", 1, false);
        feed.run("SELECT * FROM messages WHERE c = 2", 1, false);
        feed.run("SELECT * FROM messages WHERE c = 3", 1, false);
        feed.sweep_after(200);
        assert_eq!(feed.out.len(), 1);
        assert_eq!(feed.out[0].session.application_name(), "other");
    }
}
