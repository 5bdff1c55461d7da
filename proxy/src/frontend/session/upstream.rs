//! The server's side of a session: the pooled connection it holds (if
//! any), the bytes waiting to go to it, and the answers expected back in
//! order (`expect.rs`). Acquiring and releasing the connection, and reading
//! its answers one by one for the relay (`relay.rs`), happen here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::phase::Tx;
use crate::backend::cancel::{CancelSlot, CancelTarget};
use crate::backend::pool::{PoolEntry, Pooled};
use crate::backend::{BackendError, ServerConn, SessionParams};
use crate::frontend::expect::{Effects, Expect, ExpectQueue, Forget, Verdict};
use crate::net::frame::FrameRef;
use crate::net::message::{self, tag};
use crate::observe::Metrics;
use crate::Boxed;

/// Bytes kept for the server beyond this size are given back after they
/// are written, so an idle session does not pin a large buffer.
const SHRINK_ABOVE: usize = 64 * 1024;

/// Bytes kept for the server beyond this size are given back when the
/// session parks without a server connection (`park.rs`).
const KEEP_PARKED: usize = 1024;

/// The CommandComplete tags of statements that drop every prepared
/// statement of the session.
const STATEMENT_RESETS: [&[u8]; 2] = [b"DEALLOCATE ALL", b"DISCARD ALL"];

/// The CommandComplete tags of statements that change the schema: the
/// statements prepared before may now describe other results.
const SCHEMA_CHANGES: [&[u8]; 3] = [b"CREATE ", b"ALTER ", b"DROP "];

pub struct Upstream {
    pool: Arc<PoolEntry>,
    conn: Option<Pooled>,
    out: BytesMut,
    expect: ExpectQueue,
    /// Where a cancel request for this client goes (the held connection).
    cancel: CancelSlot,
}

/// One server message, read for the relay.
pub struct Answer<'a> {
    pub frame: FrameRef<'a>,
    /// Whether it goes on to the client: not when it answers a message
    /// pgstash injected (a re-sent Parse).
    pub forward: bool,
    /// An error with the client's statement name in place of the
    /// server-side one, to send instead of `frame`.
    pub renamed: Option<Bytes>,
    /// A CopyInResponse to an Execute: Syncs are ignored until CopyDone.
    pub copy_in_extended: bool,
    /// A FATAL or PANIC error: the server ends the session.
    pub fatal: bool,
}

impl Upstream {
    #[inline]
    pub fn new(pool: Arc<PoolEntry>, cancel: CancelSlot) -> Upstream {
        Upstream {
            pool,
            conn: None,
            out: BytesMut::new(),
            expect: ExpectQueue::default(),
            cancel,
        }
    }

    /// The session parks without a server connection (`park.rs`): bytes
    /// kept for the server beyond a small buffer are given back.
    pub fn park(&mut self) {
        if self.out.is_empty() && self.out.capacity() > KEEP_PARKED {
            self.out = BytesMut::new();
        }
    }

    #[inline]
    pub fn pool(&self) -> &PoolEntry {
        &self.pool
    }

    #[inline]
    pub fn is_held(&self) -> bool {
        self.conn.is_some()
    }

    #[inline]
    pub fn conn(&mut self) -> Option<&mut ServerConn> {
        self.conn.as_deref_mut().map(|c| &mut **c)
    }

    /// Every expected answer arrived and no Sync is outstanding.
    #[inline]
    pub fn settled(&self) -> bool {
        self.expect.settled()
    }

    /// The server ignores messages after an error until the next Sync.
    #[inline]
    pub fn skipping(&self) -> bool {
        self.expect.skipping()
    }

    /// Queues `bytes` for the server with the answer they call for (while
    /// the server skips after an error, only a Sync goes).
    #[inline]
    pub fn send(&mut self, bytes: &[u8], expect: Expect) {
        if !self.expect.skipping() || matches!(expect, Expect::Sync) {
            self.out.extend_from_slice(bytes);
        }
        self.expect.push(expect);
    }

    /// Queues bytes that call for no answer (Flush, COPY data, a Sync
    /// during COPY FROM STDIN), if a connection is held.
    #[inline]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if self.conn.is_some() {
            self.out.extend_from_slice(bytes);
        }
    }

    /// An answer pgstash gives itself, in its place among the server's.
    #[inline]
    pub fn answer_locally(&mut self, bytes: Bytes, client: &mut BytesMut) {
        if self.conn.is_some() {
            self.expect.push(Expect::Synthetic(bytes));
        } else {
            client.extend_from_slice(&bytes);
        }
    }

    /// Moves answers pgstash made itself that are now due into `client`.
    #[inline]
    pub fn drain_synthetic(&mut self, client: &mut BytesMut) {
        self.expect.write_synthetic(client);
    }

    /// Whether bytes wait for the server.
    #[inline]
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes what waits for the server. An error means the connection is
    /// lost (it is marked broken).
    pub async fn flush(&mut self) -> Result<(), BackendError> {
        let result = match self.conn.as_mut() {
            Some(server) => server.send(&self.out).await,
            None => Ok(()),
        };
        self.out.clear();
        if self.out.capacity() > SHRINK_ABOVE {
            self.out = BytesMut::new();
        }
        result
    }

    /// Takes a connection from the pool and brings it to `settings`.
    /// Returns how long the pool made the client wait, and the result.
    ///
    /// # Performance
    /// `now` is the session's clock (read when it woke): a pool that hands
    /// a connection over at once (its first poll) made the client wait
    /// for nothing, and the clock is not read again.
    pub async fn acquire(
        &mut self,
        settings: &SessionParams,
        metrics: &Metrics,
        now: Instant,
    ) -> (Duration, Result<Tx, BackendError>) {
        metrics.clients_waiting.inc();
        let mut pending = false;
        let acquired = {
            let mut acquiring = std::pin::pin!(self.pool.acquire());
            std::future::poll_fn(|cx| {
                let poll = std::future::Future::poll(acquiring.as_mut(), cx);
                pending |= poll.is_pending();
                poll
            })
            .await
        };
        metrics.clients_waiting.dec();
        let waited = match pending {
            true => now.elapsed(),
            false => Duration::ZERO,
        };
        metrics.pool_acquire_wait.observe(waited.as_secs_f64());
        let mut server = match acquired {
            Ok(server) => server,
            Err(e) => return (waited, Err(e)),
        };
        if let Some(sql) = settings.transition_sql(&server.applied) {
            if let Err(e) = apply_settings(&mut server, sql).await {
                return (waited, Err(e));
            }
            server.applied = settings.clone();
        }
        (waited, Ok(self.attach(server)))
    }

    /// Holds `server`; returns its transaction status.
    #[inline]
    pub fn attach(&mut self, server: Pooled) -> Tx {
        *self.cancel.lock().unwrap_or_else(|e| e.into_inner()) = Some(CancelTarget {
            pid: server.pid,
            secret: server.secret,
        });
        let tx = Tx::from_status(server.status);
        self.conn = Some(server);
        tx
    }

    /// Deallocates the least recently used statements beyond `cap` on the
    /// held connection, before it goes back to the pool.
    pub async fn trim_statements(&mut self, cap: usize) {
        let Some(server) = self.conn.as_deref_mut() else {
            return;
        };
        let over = server.prepared.take_over(cap);
        if over.is_empty() {
            return;
        }
        let sql: String = over
            .iter()
            .map(|name| format!("DEALLOCATE \"{name}\";"))
            .collect();
        if let Err(e) = server.run_internal(&sql).await {
            tracing::debug!(error = %e, "could not deallocate statements; closing the connection");
            server.broken = true;
        }
    }

    /// Drops every prepared statement on the held connection, after the
    /// client ran something that dropped some in a way pgstash cannot map
    /// (a `DO` block running `DEALLOCATE`…): the connection's set of
    /// statements is then in step with the server again.
    pub async fn reset_statements(&mut self) {
        let Some(server) = self.conn.as_deref_mut() else {
            return;
        };
        match server.run_internal("DEALLOCATE ALL").await {
            Ok(_) => server.prepared.clear(),
            Err(e) => {
                tracing::debug!(error = %e, "could not deallocate statements; closing the connection");
                server.broken = true;
            }
        }
    }

    /// Gives the connection back to the pool, last used `now` (the
    /// session's clock).
    #[inline]
    pub fn release(&mut self, now: Instant) {
        let Some(mut server) = self.conn.take() else {
            return;
        };
        *self.cancel.lock().unwrap_or_else(|e| e.into_inner()) = None;
        server.last_used = now;
    }

    /// The connection must not be reused.
    #[inline]
    pub fn mark_broken(&mut self) {
        if let Some(server) = self.conn.as_mut() {
            server.broken = true;
        }
    }

    /// Waits until the server sent something (or failed). A whole message
    /// already buffered counts as sent: pgstash's own queries (the pin
    /// check, the settings read-back) stop reading at their ReadyForQuery,
    /// and a notification the same read brought behind it would otherwise
    /// wait for the server's next bytes.
    ///
    /// # Cancellation safety
    /// Bytes are appended to the buffer only on completion.
    pub async fn read(&mut self) -> Result<(), crate::net::NetError> {
        match self.conn.as_deref_mut() {
            Some(server) => {
                let conn: &mut ServerConn = server;
                if !matches!(conn.reader.peek(), Ok(None)) {
                    // A whole message, or a broken one the relay reports.
                    return Ok(());
                }
                conn.reader.fill(&mut conn.stream).await
            }
            None => std::future::pending().await,
        }
    }

    /// The next whole server message already read, with what it means for
    /// the connection (accounted here: transaction status, FATAL errors,
    /// COPY, the expected answers; what the session must apply after the
    /// relay goes into `effects`). Synthetic answers due before it are
    /// moved into `client` first. The caller forwards it if
    /// [`Answer::forward`], then calls [`Upstream::consume`].
    #[inline]
    pub fn next_answer<'a>(
        &'a mut self,
        client: &mut BytesMut,
        effects: &mut Effects,
    ) -> Result<Option<Answer<'a>>, BackendError> {
        let Some(server) = self.conn.as_deref_mut() else {
            return Ok(None);
        };
        let conn: &mut ServerConn = server;
        let frame = match conn.reader.peek() {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(e) => {
                conn.broken = true;
                return Err(e.into());
            }
        };
        let tag = frame.tag();
        let verdict = self.expect.on_server_message(tag, effects);
        flush_due(&mut effects.due, client);
        let mut answer = Answer {
            frame,
            forward: verdict == Verdict::Forward,
            renamed: None,
            copy_in_extended: false,
            fatal: false,
        };
        match tag {
            tag::READY_FOR_QUERY => {
                conn.status = frame.body().first().copied().unwrap_or(b'I');
            }
            tag::COPY_IN_RESPONSE => answer.copy_in_extended = self.expect.copy_in_started(),
            tag::COMMAND_COMPLETE => {
                let body = frame.body();
                let command = body.strip_suffix(&[0]).unwrap_or(body);
                effects.statements_dropped |= STATEMENT_RESETS.contains(&command);
                effects.schema_changed |= SCHEMA_CHANGES.iter().any(|c| command.starts_with(c));
            }
            tag::ERROR_RESPONSE => {
                let (severity, code, _) = message::error_fields(frame.body());
                // Postgres' "cached plan must not change result type".
                if let Some(name) = effects.failed_bind.take() {
                    if code == "0A000" {
                        effects.stale.push(name);
                    }
                }
                if severity == "FATAL" || severity == "PANIC" {
                    conn.broken = true;
                    answer.fatal = true;
                }
                if let Some((server_name, client_name)) = effects.rename.take() {
                    answer.renamed = Some(message::rename_in_error(
                        frame.as_bytes(),
                        &server_name,
                        &client_name,
                    ));
                }
            }
            _ => {}
        }
        Ok(Some(answer))
    }

    /// Done with the message [`Upstream::next_answer`] returned, `len`
    /// bytes long (a ParameterStatus is noted now: the connection's
    /// reported settings change).
    #[inline]
    pub fn consume(&mut self, len: usize, tag: u8) {
        let Some(server) = self.conn.as_deref_mut() else {
            return;
        };
        let conn: &mut ServerConn = server;
        let status = match tag {
            tag::PARAMETER_STATUS => match conn.reader.peek() {
                Ok(Some(frame)) => Some(frame.body().to_vec()),
                _ => None,
            },
            _ => None,
        };
        conn.reader.consume(len);
        if let Some(body) = status {
            conn.note_parameter_status(&body);
        }
    }

    /// After a relay: statements whose Parse failed are not prepared on
    /// this connection after all; those that parsed are known to the pool;
    /// those that went stale move to a new generation. Returns whether the
    /// client dropped its prepared statements (`DEALLOCATE ALL`, `DISCARD
    /// ALL`, confirmed by the server: the connection then has none), and
    /// the statements the server confirmed it dropped one by one.
    #[inline]
    pub fn end_relay(&mut self, effects: Effects) -> (bool, Vec<Forget>) {
        if let Some(conn) = self.conn() {
            if effects.statements_dropped {
                conn.prepared.clear();
            }
            for name in effects.unprepared {
                conn.prepared.remove(&name);
            }
        }
        for name in effects.prepared {
            self.pool.statements.parsed(name);
        }
        for name in effects.stale {
            self.pool.statements.went_stale(&name);
        }
        if effects.schema_changed {
            self.pool.statements.schema_changed();
        }
        (effects.statements_dropped, effects.forgotten)
    }

    /// At the end of the session: the connection goes back to the pool
    /// only if `clean`; a session-mode connection is reset first.
    #[inline]
    pub fn finish(&mut self, clean: bool, session_mode: bool) -> Boxed<'_, ()> {
        Box::pin(async move {
            let Some(mut server) = self.conn.take() else {
                return;
            };
            if !clean {
                server.broken = true;
            } else if session_mode && !server.broken {
                match server.run_internal("DISCARD ALL").await {
                    Ok(_) => {
                        server.applied = SessionParams::default();
                        server.prepared.clear();
                    }
                    Err(_) => server.broken = true,
                }
            }
            server.last_used = Instant::now();
        })
    }
}

/// Moves answers due to the client into its buffer.
fn flush_due(due: &mut Vec<Bytes>, client: &mut BytesMut) {
    if due.is_empty() {
        return;
    }
    for bytes in due.drain(..) {
        client.extend_from_slice(&bytes);
    }
}

/// Brings a server connection's settings to the client's (off the
/// session's state machine: most acquisitions need no round trip).
fn apply_settings(server: &mut Pooled, sql: String) -> Boxed<'_, Result<(), BackendError>> {
    Box::pin(async move {
        let result = server.run_internal(&sql).await.map(|_| ());
        if result.is_err() {
            server.broken = true;
        }
        result
    })
}
