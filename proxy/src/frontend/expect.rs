//! What pgstash expects back from the server, in order, for the messages it
//! forwarded, so that it can drop answers to messages it injected and insert
//! answers to messages it answered itself, each at the right place.
//!
//! Postgres answers frontend messages strictly in order; after an error in
//! the extended protocol it skips everything up to the next Sync. The queue
//! mirrors that: an ErrorResponse removes the entries up to the next Sync.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::net::message::tag;

/// The answer to one frontend message.
#[derive(Debug)]
pub enum Expect {
    /// ParseComplete. `forward` is false for a Parse pgstash injected.
    /// `prepared` names the server-side statement it creates. `rename`
    /// maps a server-side name back to the client's in an error message.
    Parse {
        forward: bool,
        prepared: Option<Arc<str>>,
        rename: Option<(Arc<str>, Arc<str>)>,
    },
    /// BindComplete. `statement` names the server-side statement pgstash
    /// bound in the client's place (transaction mode).
    Bind { statement: Option<Arc<str>> },
    /// ParameterDescription, then RowDescription or NoData.
    DescribeStatement,
    /// RowDescription or NoData.
    DescribePortal,
    /// DataRows (or a COPY exchange), then CommandComplete,
    /// EmptyQueryResponse or PortalSuspended. `forget` is a statement the
    /// executed `DEALLOCATE` drops, once its CommandComplete confirms it.
    Execute { forget: Option<Box<Forget>> },
    /// CloseComplete; `forget` is the statement closed (session mode).
    Close { forget: Option<Box<Forget>> },
    /// ReadyForQuery.
    Sync,
    /// The ReadyForQuery of a Sync pgstash sent itself after a Parse it
    /// injected before a simple Query (so that a failed Parse does not
    /// make the server skip the Query): not the client's, dropped. When
    /// the Parse failed, its error is the client's answer, and the error
    /// the Query then gets (its statement does not exist) is dropped.
    SyncInjected { parse_failed: bool },
    /// A simple Query or FunctionCall: everything up to ReadyForQuery.
    /// `forget` as for `Execute` (the whole text is one `DEALLOCATE`).
    Query { forget: Option<Box<Forget>> },
    /// A message pgstash answers itself, sent when its turn comes.
    Synthetic(Bytes),
}

/// A client's statement the server drops (Close, `DEALLOCATE name` in
/// session mode): the session forgets it once the server confirms, and
/// only if the name still stands for the same statement (a Parse sent
/// after the Close may have reused it).
#[derive(Debug, Clone)]
pub struct Forget {
    /// The client's name (empty: the unnamed statement).
    pub name: Box<[u8]>,
    /// Its text as the session knows it, compared by identity.
    pub text: Arc<str>,
}

/// Side effects of server messages the session must apply.
#[derive(Debug, Default)]
pub struct Effects {
    /// Answers pgstash made itself that are now due, in order.
    pub due: Vec<Bytes>,
    /// Server-side statements whose Parse failed: not prepared after all.
    pub unprepared: Vec<Arc<str>>,
    /// Server-side statements whose Parse succeeded.
    pub prepared: Vec<Arc<str>>,
    /// An error to be shown with the client's statement name (server-side
    /// name, client name).
    pub rename: Option<(Arc<str>, Arc<str>)>,
    /// The server-side statement of a Bind that failed: the session looks
    /// at the error (a `0A000` means the statement went stale).
    pub failed_bind: Option<Arc<str>>,
    /// Server-side statements whose copy on this connection went stale.
    pub stale: Vec<Arc<str>>,
    /// The server confirmed `DEALLOCATE ALL` or `DISCARD ALL`.
    pub statements_dropped: bool,
    /// Statements the server confirmed it dropped.
    pub forgotten: Vec<Forget>,
    /// A statement that changes the schema completed (`CREATE …`, `ALTER
    /// …`, `DROP …`).
    pub schema_changed: bool,
}

/// What to do with one server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
}

/// The ordered expectations of one server connection.
#[derive(Debug, Default)]
pub struct ExpectQueue {
    queue: VecDeque<Expect>,
    /// The server is skipping messages until the next Sync after an error.
    skipping: bool,
    /// A Parse pgstash injected before the simple Query now running
    /// failed: the Query's error is not the client's (see
    /// [`Expect::SyncInjected`]).
    drop_query_error: bool,
}

impl ExpectQueue {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    #[inline]
    pub fn clear(&mut self) {
        self.queue.clear();
        self.skipping = false;
        self.drop_query_error = false;
    }

    /// True while the server ignores messages after an error.
    #[inline]
    pub fn skipping(&self) -> bool {
        self.skipping
    }

    /// Adds the expectation for a message just sent (or answered locally).
    /// While the server skips after an error, nothing but Sync is answered.
    #[inline]
    pub fn push(&mut self, expect: Expect) {
        if self.skipping {
            if !matches!(expect, Expect::Sync | Expect::SyncInjected { .. }) {
                return;
            }
            self.skipping = false;
        }
        self.queue.push_back(expect);
    }

    /// Writes answers pgstash made itself that are now due to `out`.
    #[inline]
    pub fn write_synthetic(&mut self, out: &mut bytes::BytesMut) {
        while let Some(Expect::Synthetic(_)) = self.queue.front() {
            if let Some(Expect::Synthetic(bytes)) = self.queue.pop_front() {
                out.extend_from_slice(&bytes);
            }
        }
    }

    /// Moves answers pgstash made itself that are now due into `out`.
    #[inline]
    pub fn drain_synthetic(&mut self, out: &mut Vec<Bytes>) {
        while let Some(Expect::Synthetic(_)) = self.queue.front() {
            if let Some(Expect::Synthetic(bytes)) = self.queue.pop_front() {
                out.push(bytes);
            }
        }
    }

    /// Accounts for one server message; see [`Effects`].
    #[inline]
    pub fn on_server_message(&mut self, tag: u8, effects: &mut Effects) -> Verdict {
        match tag {
            tag::NOTICE_RESPONSE | tag::NOTIFICATION_RESPONSE | tag::PARAMETER_STATUS => {
                return Verdict::Forward
            }
            _ => {}
        }
        self.drain_synthetic(&mut effects.due);
        if tag == tag::ERROR_RESPONSE {
            return self.on_error(effects);
        }
        let Some(front) = self.queue.front_mut() else {
            return Verdict::Forward;
        };
        if let (
            Expect::Close { forget } | Expect::Execute { forget } | Expect::Query { forget },
            tag::CLOSE_COMPLETE | tag::COMMAND_COMPLETE,
        ) = (&mut *front, tag)
        {
            if let Some(forget) = forget.take() {
                effects.forgotten.push(*forget);
            }
        }
        let (done, verdict) = match (&mut *front, tag) {
            (
                Expect::Parse {
                    forward, prepared, ..
                },
                tag::PARSE_COMPLETE,
            ) => {
                if let Some(name) = prepared {
                    effects.prepared.push(name.clone());
                }
                (true, verdict(*forward))
            }
            (Expect::Bind { .. }, tag::BIND_COMPLETE) => (true, Verdict::Forward),
            (Expect::DescribeStatement, tag::PARAMETER_DESCRIPTION) => (false, Verdict::Forward),
            (
                Expect::DescribeStatement | Expect::DescribePortal,
                tag::ROW_DESCRIPTION | tag::NO_DATA,
            ) => (true, Verdict::Forward),
            (
                Expect::Execute { .. },
                tag::COMMAND_COMPLETE | tag::EMPTY_QUERY_RESPONSE | tag::PORTAL_SUSPENDED,
            ) => (true, Verdict::Forward),
            (Expect::Execute { .. }, _) => (false, Verdict::Forward),
            (Expect::Close { .. }, tag::CLOSE_COMPLETE) => (true, Verdict::Forward),
            (Expect::Sync, tag::READY_FOR_QUERY) => (true, Verdict::Forward),
            (Expect::Query { .. }, tag::READY_FOR_QUERY) => {
                self.drop_query_error = false;
                (true, Verdict::Forward)
            }
            (Expect::SyncInjected { parse_failed }, tag::READY_FOR_QUERY) => {
                self.drop_query_error = *parse_failed;
                (true, Verdict::Drop)
            }
            (Expect::Query { .. }, _) => (false, Verdict::Forward),
            _ => {
                tracing::warn!(tag = %(tag as char), expected = ?front, "unexpected server message");
                (false, Verdict::Forward)
            }
        };
        if done {
            self.queue.pop_front();
        }
        // Synthetic answers now at the front follow this message: the
        // caller drains them after forwarding it.
        verdict
    }

    fn on_error(&mut self, effects: &mut Effects) -> Verdict {
        match self.queue.front() {
            None => Verdict::Forward,
            Some(Expect::Query { .. }) if std::mem::take(&mut self.drop_query_error) => {
                Verdict::Drop
            }
            Some(Expect::Query { .. }) => Verdict::Forward,
            Some(_) => {
                match self.queue.front() {
                    Some(Expect::Parse {
                        rename: Some(rename),
                        ..
                    }) => effects.rename = Some(rename.clone()),
                    Some(Expect::Bind {
                        statement: Some(name),
                    }) => effects.failed_bind = Some(name.clone()),
                    _ => {}
                }
                while let Some(front) = self.queue.front_mut() {
                    if let Expect::SyncInjected { parse_failed } = front {
                        *parse_failed = true;
                        return Verdict::Forward;
                    }
                    if matches!(front, Expect::Sync) {
                        return Verdict::Forward;
                    }
                    if let Some(Expect::Parse {
                        prepared: Some(name),
                        ..
                    }) = self.queue.pop_front()
                    {
                        effects.unprepared.push(name);
                    }
                }
                self.skipping = true;
                Verdict::Forward
            }
        }
    }

    /// Called when an Execute starts COPY FROM STDIN. Postgres ignores Sync
    /// messages during copy-in, so the Syncs queued right behind the
    /// Execute will get no ReadyForQuery. Returns whether the copy belongs
    /// to an Execute (extended protocol).
    #[inline]
    pub fn copy_in_started(&mut self) -> bool {
        if !matches!(self.queue.front(), Some(Expect::Execute { .. })) {
            return false;
        }
        while matches!(self.queue.get(1), Some(Expect::Sync)) {
            self.queue.remove(1);
        }
        true
    }

    /// True when every answer has arrived and no Sync is outstanding.
    #[inline]
    pub fn settled(&self) -> bool {
        self.queue.is_empty() && !self.skipping
    }
}

fn verdict(forward: bool) -> Verdict {
    if forward {
        Verdict::Forward
    } else {
        Verdict::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(q: &mut ExpectQueue, tags: &[u8]) -> (Vec<Verdict>, usize) {
        let mut effects = Effects::default();
        let verdicts = tags
            .iter()
            .map(|t| {
                let v = q.on_server_message(*t, &mut effects);
                q.drain_synthetic(&mut effects.due);
                v
            })
            .collect();
        (verdicts, effects.due.len())
    }

    #[test]
    fn syncs_sent_before_copy_in_expect_no_answer() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Bind { statement: None });
        q.push(Expect::Execute { forget: None });
        q.push(Expect::Sync);
        run(&mut q, b"2");
        assert!(q.copy_in_started());
        q.push(Expect::Sync);
        run(&mut q, b"CZ");
        assert!(q.settled());
    }

    #[test]
    fn synthetic_answer_comes_after_the_message_before_it() {
        let mut q = ExpectQueue::default();
        q.push(Expect::DescribeStatement);
        q.push(Expect::Synthetic(Bytes::from_static(b"3\0\0\0\x04")));
        q.push(Expect::Sync);
        let mut effects = Effects::default();
        q.on_server_message(b't', &mut effects);
        q.on_server_message(b'n', &mut effects);
        assert!(
            effects.due.is_empty(),
            "CloseComplete must not overtake NoData"
        );
        q.drain_synthetic(&mut effects.due);
        assert_eq!(effects.due.len(), 1);
    }

    #[test]
    fn injected_parse_answer_is_dropped_and_synthetic_answer_inserted() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Parse {
            forward: false,
            prepared: None,
            rename: None,
        });
        q.push(Expect::Synthetic(Bytes::from_static(b"1\0\0\0\x04")));
        q.push(Expect::Bind { statement: None });
        q.push(Expect::Execute { forget: None });
        q.push(Expect::Sync);
        let (v, due) = run(&mut q, b"12DCZ");
        assert_eq!(v[0], Verdict::Drop);
        assert!(v[1..].iter().all(|v| *v == Verdict::Forward));
        assert_eq!(due, 1);
        assert!(q.settled());
    }

    #[test]
    fn error_skips_to_sync_and_discards_synthetic_answers_after_it() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Parse {
            forward: true,
            prepared: Some("pgstash_a".into()),
            rename: None,
        });
        q.push(Expect::Synthetic(Bytes::from_static(b"3\0\0\0\x04")));
        q.push(Expect::Sync);
        let mut effects = Effects::default();
        q.on_server_message(b'E', &mut effects);
        assert_eq!(effects.unprepared.len(), 1);
        assert!(effects.due.is_empty());
        q.on_server_message(b'Z', &mut effects);
        assert!(q.settled());
    }

    #[test]
    fn an_injected_sync_ends_the_skipping_and_its_ready_for_query_is_dropped() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Parse {
            forward: false,
            prepared: Some("pgstash_a".into()),
            rename: None,
        });
        q.push(Expect::SyncInjected {
            parse_failed: false,
        });
        q.push(Expect::Query { forget: None });
        // The Parse fails: its error is the answer, the Query's is not.
        let (v, _) = run(&mut q, b"EZEZ");
        use Verdict::{Drop, Forward};
        assert_eq!(v, [Forward, Drop, Drop, Forward]);
        assert!(q.settled());
        q.push(Expect::SyncInjected {
            parse_failed: false,
        });
        q.push(Expect::Query { forget: None });
        let (v, _) = run(&mut q, b"ZEZ");
        assert_eq!(
            v,
            [Drop, Forward, Forward],
            "the next Query's error is its own"
        );
    }

    #[test]
    fn messages_after_an_error_before_sync_expect_nothing() {
        let mut q = ExpectQueue::default();
        q.push(Expect::Parse {
            forward: true,
            prepared: None,
            rename: None,
        });
        let (_, _) = run(&mut q, b"E");
        assert!(q.skipping());
        q.push(Expect::Bind { statement: None });
        q.push(Expect::Execute { forget: None });
        q.push(Expect::Sync);
        run(&mut q, b"Z");
        assert!(q.settled());
    }
}
