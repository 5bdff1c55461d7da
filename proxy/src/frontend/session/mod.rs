//! A logged-in client: relays its requests to a pooled server connection and
//! the answers back, holding the connection only as long as the pool mode
//! requires, and asking the cache (when rules are configured) about each
//! statement on the way.
//!
//! The session coordinates parts that each own one piece of its state:
//! - [`ClientConn`] (`client.rs`): the client's socket and pending output;
//! - [`Upstream`] (`upstream.rs`): the server connection held, if any, what
//!   goes to it and the answers expected back;
//! - [`Phase`] (`phase.rs`): where the request stands and the transaction
//!   status, with their documented transitions;
//! - [`ClientStatements`] (`prepared/`): the client's prepared statements;
//! - [`ClientSettings`] (`settings.rs`): its settings, and whether caching
//!   is off for it;
//! - [`CachePath`] (`cached.rs`) and [`WritePath`]: the cache's side;
//! - [`Requests`] (`request.rs`): accounting of the request in flight.
//!
//! This file holds them together and runs the session's loop: read what
//! the client sent and hand each message to the client → server path
//! (`inbound.rs`: the cache path holds extended messages to their Sync and
//! routes statements, then the message is dispatched to the upstream's
//! buffer); write out; release the server connection when the pool mode
//! allows; wait for either side. The server's answers go through the relay
//! (`relay.rs`). In transaction mode the server connection is released
//! whenever the session is idle (see [`Phase::is_idle`]); session mode
//! keeps it until the client leaves.

mod cached;
mod client;
mod clocks;
mod inbound;
mod park;
mod phase;
mod pinning;
mod prepared;
mod relay;
mod request;
mod settings;
mod upstream;

use std::sync::Arc;

use self::cached::CachePath;
use self::client::ClientConn;
use self::clocks::{Clocks, Expired};
use self::phase::{Flow, Phase};
use self::pinning::Pinned;
use self::relay::Relay;
use self::request::Requests;
use self::settings::ClientSettings;
use self::upstream::Upstream;

// What the fuzz targets (`crate::fuzzing`) drive: the decoding of a held
// extended-protocol request, with the statements it may bind.
pub(crate) use self::cached::UnitRequest;
pub(crate) use self::prepared::ClientStatements;
use super::error::FrontendError;
use crate::backend::cancel::CancelSlot;
use crate::backend::pool::{PoolEntry, Pooled};
use crate::backend::{BackendError, SessionParams};
use crate::cache::{Gate, WritePath};
use crate::config::PoolMode;
use crate::context::Context;
use crate::net::message::{self, Severity};
use crate::net::{FrameReader, NetError, Stream};
use crate::observe::event::SessionInfo;
use crate::Boxed;

/// Everything the handshake established for a session.
pub struct Login {
    pub client: Stream,
    pub reader: FrameReader,
    pub pool: Arc<PoolEntry>,
    pub user: String,
    pub database: String,
    pub settings: SessionParams,
    /// The cancel key the client was given, and where it points.
    pub key: (i32, i32),
    pub cancel: CancelSlot,
    /// The server connection, in session mode.
    pub server: Option<Pooled>,
    pub mode: PoolMode,
    pub client_address: String,
}

enum Event {
    /// The parked session's client sent something (not read yet).
    Readable,
    Client(Result<(), NetError>),
    Server(Result<(), NetError>),
    Shutdown,
    Expired(Expired),
}

pub struct Session {
    context: Arc<Context>,
    mode: PoolMode,
    key: (i32, i32),
    client: ClientConn,
    upstream: Upstream,
    phase: Phase,
    statements: ClientStatements,
    settings: ClientSettings,
    /// Boxed, like the write path: a session without caching carries a
    /// pointer, not their few hundred bytes.
    cache: Option<Box<CachePath>>,
    writes: Option<Box<WritePath>>,
    requests: Requests,
    clocks: Clocks,
    /// `[client] max_prepared_statements`, per server connection.
    max_statements: usize,
    /// Set while session-bound state keeps the server connection
    /// (transaction mode, see `pinning.rs`).
    pinned: Option<Pinned>,
}

impl Session {
    pub fn new(context: Arc<Context>, login: Login) -> Session {
        let mode = login.mode;
        let settings = ClientSettings::new(login.settings, mode);
        // The user and the database live here only (`Session::info`).
        let info = SessionInfo::new(
            &login.user,
            &login.database,
            settings.application_name(),
            &login.client_address,
        );
        let cache = context.cache.clone();
        let config = context.config.load();
        let clocks = Clocks::new(config.client.session_timeouts());
        let max_statements = config.client.max_prepared_statements;
        drop(config);
        let mut session = Session {
            mode,
            key: login.key,
            client: ClientConn::new(login.client, login.reader),
            upstream: Upstream::new(login.pool, login.cancel),
            phase: Phase::new(phase::Tx::Idle),
            statements: ClientStatements::default(),
            settings,
            writes: cache
                .as_ref()
                .map(|c| Box::new(WritePath::new(c.invalidator().clone()))),
            cache: cache.map(|c| Box::new(CachePath::new(c))),
            requests: Requests::new(
                context.metrics.clone(),
                Some(context.recorder.clone()),
                info,
            ),
            clocks,
            max_statements,
            pinned: None,
            context,
        };
        if let Some(server) = login.server {
            session.phase.tx = session.upstream.attach(server);
        }
        session
    }

    /// Serves the client until it leaves, then cleans up.
    ///
    /// Boxed: an `async fn` taking a large value keeps two copies of it in
    /// its state (the argument and the local it is moved to), and this
    /// future is the client's task for its whole life (issue #20).
    pub async fn run(mut self: Box<Self>) {
        // Told before the cleanup, so that the error is not kept across it.
        match self.serve().await {
            Ok(()) | Err(FrontendError::ClientGone) => {}
            Err(e) => {
                let info = self.requests.info();
                tracing::debug!(peer = %info.client(), user = %info.user(), error = %e, "session ended with an error");
            }
        }
        self.finish().await;
    }

    /// The session's loop: busy in a box of its own (what the client sent,
    /// the relay, the cache…), parked in the task's own small state while
    /// it holds no server connection (see `park.rs`).
    async fn serve(&mut self) -> Result<(), FrontendError> {
        // First whatever the client pipelined behind its startup packet.
        let mut woken = None;
        loop {
            if !Box::pin(self.busy(woken.take())).await? {
                return Ok(());
            }
            woken = Some(self.park().await);
        }
    }

    /// Serves the client from `woken` (what woke the parked session) until
    /// it holds no server connection again (`true`: park) or ends.
    async fn busy(&mut self, woken: Option<Event>) -> Result<bool, FrontendError> {
        let mut event = woken;
        loop {
            if let Some(woke) = event.take() {
                self.requests.woke(std::time::Instant::now()); // see `request.rs`
                match woke {
                    Event::Readable => match self.client.read_ready().await {
                        Some(Ok(())) => {}
                        // The readiness was stale: parked again.
                        None => return Ok(true),
                        Some(Err(NetError::Closed)) => return Err(FrontendError::ClientGone),
                        Some(Err(e)) => return Err(e.into()),
                    },
                    Event::Client(Ok(())) => {}
                    Event::Client(Err(NetError::Closed)) => return Err(FrontendError::ClientGone),
                    Event::Client(Err(e)) => return Err(e.into()),
                    Event::Server(Ok(())) => self.relay().await?,
                    Event::Server(Err(e)) => return self.on_server_lost(e).await.map(|()| false),
                    Event::Shutdown => {
                        let e = FrontendError::Protocol("shutdown".into());
                        let text = "terminating connection because pgstash is shutting down";
                        return self.fatal("57P01", text, e).await.map(|()| false);
                    }
                    Event::Expired(kind) => self.on_expired(kind).await?,
                }
            }
            loop {
                let frame = match self.client.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        let sqlstate = e.sqlstate();
                        return self
                            .fatal(sqlstate, &e.to_string(), e.into())
                            .await
                            .map(|()| false);
                    }
                };
                // Without a cache nothing is held: straight to dispatch.
                let going = match self.cache {
                    None => self.dispatch(frame).await?,
                    Some(_) => self.on_client_message(frame).await?,
                };
                if !going {
                    return Ok(false);
                }
            }
            self.upstream.drain_synthetic(&mut self.client.out);
            self.flush().await?;
            self.maybe_release().await?;
            if !self.upstream.is_held() {
                return Ok(true);
            }
            tracing::trace!(settled = self.upstream.settled(), phase = ?self.phase, "session waits");
            event = Some(self.wait().await);
        }
    }

    /// A `[client]` timeout ran out: a query is cancelled (the client gets
    /// Postgres' 57014 and keeps its session); an idle client is let go.
    async fn on_expired(&mut self, kind: Expired) -> Result<(), FrontendError> {
        self.context
            .metrics
            .client_limits
            .with_label_values(&[kind.limit()])
            .inc();
        let (code, text) = match kind {
            Expired::Query => {
                self.cancel_query().await;
                return Ok(());
            }
            Expired::CancelIgnored => {
                self.upstream.mark_broken();
                (
                    "57014",
                    "canceling statement due to query_timeout: the server did not stop it, its connection is closed",
                )
            }
            Expired::IdleInTransaction => {
                self.upstream.mark_broken();
                (
                    "25P03",
                    "terminating connection due to idle-in-transaction timeout (pgstash idle_transaction_timeout)",
                )
            }
            Expired::Idle => (
                "57P05",
                "terminating connection due to idle-session timeout (pgstash idle_timeout)",
            ),
        };
        self.fatal(code, text, FrontendError::Protocol(text.to_owned()))
            .await
    }

    /// Cancels the query running upstream for this client, and waits until
    /// Postgres has taken the request (so the cancel cannot reach a later
    /// query on the same connection).
    async fn cancel_query(&mut self) {
        self.clocks.cancelled();
        let Some(target) = self.context.front.cancels.target(self.key) else {
            return;
        };
        let text = format!(
            "pgstash: query_timeout ({:?}) reached, cancelling the query",
            self.clocks.query_limit()
        );
        message::warning(&mut self.client.out, "01000", &text);
        let upstream = self.context.config.load().upstream.clone();
        if let Err(e) = crate::backend::cancel::send_cancel(&upstream, target).await {
            tracing::warn!(error = %e, "query_timeout: could not send the cancel request");
        }
    }

    /// Nothing in flight and no transaction open.
    fn is_idle(&self) -> bool {
        self.phase.is_idle(self.upstream.settled())
    }

    /// Idle, and nothing the cache path or the write path is in the middle
    /// of: the only state in which the cache may answer the session.
    fn gate(&self) -> Gate {
        let quiet = self.is_idle()
            && self.settings.caching_on()
            && !self.cache.as_ref().is_some_and(|c| c.is_filling())
            && !self.writes.as_ref().is_some_and(|w| w.is_pending());
        if quiet {
            return Gate::Open;
        }
        // Only the reasons a user can act on are counted.
        let counted = if self.settings.role_changed() {
            Some("role_changed")
        } else if !self.phase.tx.is_idle() {
            Some("in_transaction")
        } else {
            None
        };
        Gate::Closed { counted }
    }

    // ----- the server connection -------------------------------------------

    /// Client output is held back until a write is recorded.
    fn holding(&self) -> bool {
        self.writes.as_ref().is_some_and(|w| w.is_holding())
    }

    /// Relays what the server sent, pausing at each ReadyForQuery that
    /// ends a write until its invalidation is recorded (G2).
    async fn relay(&mut self) -> Result<(), FrontendError> {
        loop {
            let relayed = Relay {
                upstream: &mut self.upstream,
                phase: &mut self.phase,
                out: &mut self.client.out,
                cache: self.cache.as_deref_mut(),
                writes: self.writes.as_deref_mut(),
                requests: &mut self.requests,
            }
            .run()?;
            if relayed.statements_dropped {
                self.statements.forget_all();
            }
            for forget in relayed.forgotten {
                self.statements.forget_confirmed(forget);
            }
            if relayed.finished.is_some() {
                self.clocks.request_ended();
            }
            self.requests.finish(relayed.finished);
            if !relayed.commit {
                return Ok(());
            }
            if let Some(writes) = self.writes.as_mut() {
                writes
                    .record(self.requests.info().database(), &mut self.client.out)
                    .await;
                self.requests.woke(std::time::Instant::now()); // it may have waited
            }
        }
    }

    /// The server connection failed while held: tell the client and end.
    fn on_server_lost(&mut self, e: NetError) -> Boxed<'_, Result<(), FrontendError>> {
        Box::pin(async move {
            self.upstream.mark_broken();
            let error = FrontendError::Backend(BackendError::from(e));
            if self.phase.flow == Flow::Closing {
                let _ = self.client.flush(false).await;
                return Err(error);
            }
            self.fatal("08006", "server closed the connection unexpectedly", error)
                .await
        })
    }

    async fn flush(&mut self) -> Result<(), FrontendError> {
        if self.upstream.has_output() {
            self.requests.sent();
            if let Err(e) = self.upstream.flush().await {
                tracing::debug!(error = %e, "write to server failed");
                return self.on_server_lost(NetError::Closed).await;
            }
        }
        self.client.flush(self.holding()).await
    }

    /// Reads settings back after the client changed them, and gives the
    /// server connection back when the pool mode allows it.
    async fn maybe_release(&mut self) -> Result<(), FrontendError> {
        let holding = self.cache.as_ref().is_some_and(|c| c.is_holding());
        if !self.upstream.is_held() || !self.is_idle() || holding {
            return Ok(());
        }
        if self.settings.take_read_back() {
            self.read_back_settings().await;
        }
        if self.mode != PoolMode::Transaction || self.client.has_buffered() {
            // Session mode keeps the server; a client in the middle of
            // sending more keeps it too.
            return Ok(());
        }
        if self.pinned.is_some() {
            let Some(server) = self.upstream.conn() else {
                return Ok(());
            };
            let bound = pinning::still_bound(server, &mut self.client.out).await;
            self.statements.on_internal_query();
            // Notifications that came with the answer go out now (unless
            // an acknowledgement is held for its invalidation).
            self.client.flush(self.holding()).await?;
            if bound {
                return Ok(());
            }
            self.pinned = None;
            self.requests.set_pinned(false);
        }
        if self.statements.take_forget() {
            self.upstream.reset_statements().await;
        } else {
            self.upstream.trim_statements(self.max_statements).await;
        }
        self.upstream.release(self.requests.now());
        Ok(())
    }

    /// Reads the server's settings back into the client's: they travel
    /// with the client and go into its cache keys.
    async fn read_back_settings(&mut self) {
        let Some(server) = self.upstream.conn() else {
            return;
        };
        let read = self.settings.read_back(server).await;
        self.statements.on_internal_query();
        if read {
            if let Some(cache) = self.cache.as_mut() {
                cache.settings_changed();
            }
            self.requests
                .set_application_name(self.settings.application_name());
        }
    }

    /// A malformed message: 08P01, and the session ends.
    async fn invalid(&mut self, e: NetError) -> Result<bool, FrontendError> {
        let text = format!("invalid message: {e}");
        self.fatal("08P01", &text, e.into()).await.map(|_| false)
    }

    /// Sends a FATAL error, flushes, and ends the session with `error`.
    fn fatal(
        &mut self,
        code: &str,
        text: &str,
        error: FrontendError,
    ) -> Boxed<'_, Result<(), FrontendError>> {
        message::error_response(&mut self.client.out, Severity::Fatal, code, text);
        Box::pin(async move {
            let _ = self.client.flush(false).await;
            Err(error)
        })
    }

    /// After the session: the server connection goes back to the pool only
    /// if it is clean; a client that left mid-transaction or mid-COPY gets
    /// its connection discarded (Postgres rolls the transaction back).
    fn finish(&mut self) -> Boxed<'_, ()> {
        Box::pin(async move {
            self.context.front.cancels.unregister(self.key);
            if let Some(writes) = self.writes.as_mut() {
                writes.on_disconnect(self.requests.info().database()).await;
            }
            // A pinned connection may still hold a lock, a cursor, a temp
            // table or a LISTEN: closed, so that no other client inherits it.
            let clean = self.is_idle() && self.pinned.is_none();
            self.upstream
                .finish(clean, self.mode == PoolMode::Session)
                .await;
            self.client.shutdown().await;
        })
    }
}
