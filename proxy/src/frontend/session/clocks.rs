//! The session's clocks: `[client]` idle_timeout, idle_transaction_timeout
//! and query_timeout. The session asks for the next deadline each time it
//! waits; what it waits in decides which clock runs:
//! - a request in flight (answers still due): the query clock, started when
//!   the request went upstream and restarted by each ReadyForQuery. When it
//!   runs out the query is cancelled upstream, and if the server has still
//!   not answered [`CANCEL_GRACE`] later the connection is given up;
//! - nothing due but a transaction open (or a request not yet synced,
//!   which holds a server connection as a transaction does): the idle
//!   transaction clock, from the last thing the client sent;
//! - nothing due and nothing open: the idle clock.
//!
//! With every timeout off (the default) no clock is read at all.

use std::time::{Duration, Instant};

use crate::config::SessionTimeouts;

/// How long a cancelled query may take to stop before its server
/// connection is closed instead.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Idle,
    IdleInTransaction,
    Query,
    /// The query was cancelled and still did not end.
    CancelIgnored,
}

impl Expired {
    /// The `limit` label it counts under in `pgstash_client_limit_total`.
    pub fn limit(self) -> &'static str {
        match self {
            Expired::Idle => "idle_timeout",
            Expired::IdleInTransaction => "idle_transaction_timeout",
            Expired::Query | Expired::CancelIgnored => "query_timeout",
        }
    }
}

/// What the session is waiting in, for choosing the clock.
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    /// Answers are due from the server.
    pub in_flight: bool,
    /// Nothing open: no transaction, no unsynced request.
    pub idle: bool,
}

#[derive(Debug)]
pub struct Clocks {
    /// `None` with every timeout off; boxed, so that a session without
    /// timeouts carries a pointer (memory per idle client, issue #20).
    limits: Option<Box<SessionTimeouts>>,
    /// When the request in flight runs out of time.
    query_deadline: Option<Instant>,
    cancelled: bool,
}

impl Clocks {
    pub fn new(limits: SessionTimeouts) -> Clocks {
        Clocks {
            limits: limits.any().then(|| Box::new(limits)),
            query_deadline: None,
            cancelled: false,
        }
    }

    /// The deadline of the clock that runs while the session waits in
    /// `waiting`, if that clock is on; `now` is the session's clock (read
    /// when it last woke).
    #[inline]
    pub fn deadline(&mut self, waiting: Waiting, now: Instant) -> Option<(Instant, Expired)> {
        let limits = self.limits.as_deref()?;
        if waiting.in_flight {
            let limit = limits.query?;
            let at = *self.query_deadline.get_or_insert(now + limit);
            let kind = if self.cancelled {
                Expired::CancelIgnored
            } else {
                Expired::Query
            };
            return Some((at, kind));
        }
        self.query_deadline = None;
        self.cancelled = false;
        if waiting.idle {
            limits.idle.map(|t| (now + t, Expired::Idle))
        } else {
            limits
                .idle_transaction
                .map(|t| (now + t, Expired::IdleInTransaction))
        }
    }

    /// A request's ReadyForQuery arrived: the next one gets a fresh clock.
    #[inline]
    pub fn request_ended(&mut self) {
        self.query_deadline = None;
        self.cancelled = false;
    }

    /// The query was cancelled upstream: it has [`CANCEL_GRACE`] to end.
    pub fn cancelled(&mut self) {
        self.cancelled = true;
        self.query_deadline = Some(Instant::now() + CANCEL_GRACE);
    }

    /// The query timeout in force, for messages.
    pub fn query_limit(&self) -> Duration {
        self.limits
            .as_ref()
            .and_then(|limits| limits.query)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SessionTimeouts {
        SessionTimeouts {
            idle: Some(Duration::from_secs(60)),
            idle_transaction: Some(Duration::from_secs(10)),
            query: Some(Duration::from_secs(1)),
        }
    }

    #[test]
    fn the_state_chooses_the_clock() {
        let mut clocks = Clocks::new(limits());
        let idle = Waiting {
            in_flight: false,
            idle: true,
        };
        let in_tx = Waiting {
            in_flight: false,
            idle: false,
        };
        let busy = Waiting {
            in_flight: true,
            idle: false,
        };
        assert_eq!(
            clocks.deadline(idle, Instant::now()).map(|d| d.1),
            Some(Expired::Idle)
        );
        assert_eq!(
            clocks.deadline(in_tx, Instant::now()).map(|d| d.1),
            Some(Expired::IdleInTransaction)
        );
        let (first, kind) = clocks.deadline(busy, Instant::now()).unwrap();
        assert_eq!(kind, Expired::Query);
        // The query clock keeps running across waits of the same request.
        assert_eq!(clocks.deadline(busy, Instant::now()).unwrap().0, first);
        clocks.cancelled();
        assert_eq!(
            clocks.deadline(busy, Instant::now()).unwrap().1,
            Expired::CancelIgnored
        );
        clocks.request_ended();
        assert_eq!(
            clocks.deadline(busy, Instant::now()).unwrap().1,
            Expired::Query
        );
    }

    #[test]
    fn clocks_that_are_off_never_run_out() {
        let mut clocks = Clocks::new(SessionTimeouts::default());
        for (in_flight, idle) in [(true, false), (false, true), (false, false)] {
            assert!(clocks
                .deadline(Waiting { in_flight, idle }, Instant::now())
                .is_none());
        }
        let mut query_only = Clocks::new(SessionTimeouts {
            query: Some(Duration::from_secs(1)),
            ..SessionTimeouts::default()
        });
        let idle = Waiting {
            in_flight: false,
            idle: true,
        };
        assert!(query_only.deadline(idle, Instant::now()).is_none());
    }
}
