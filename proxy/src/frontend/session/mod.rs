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
//! - [`ClientStatements`] (`prepared.rs`): the client's prepared statements;
//! - [`ClientSettings`] (`settings.rs`): its settings, and whether caching
//!   is off for it;
//! - [`CachePath`] (`cached.rs`) and [`WritePath`]: the cache's side;
//! - [`Requests`] (`request.rs`): accounting of the request in flight.
//!
//! A client message goes: [`Session::on_client_message`] → (the cache path
//! holds extended messages to their Sync and routes statements) →
//! [`Session::dispatch`] → the upstream's buffer. The server's answers go
//! through the relay (`relay.rs`). In transaction mode the server
//! connection is released whenever the session is idle (see
//! [`Phase::is_idle`]); session mode keeps it until the client leaves.

mod cached;
mod client;
mod phase;
mod prepared;
mod relay;
mod request;
mod settings;
mod upstream;

use std::sync::Arc;

use pgstash_rules::Writes;

use self::cached::{CachePath, Intake, BIND_COMPLETE};
use self::client::ClientConn;
use self::phase::{Flow, Phase};
use self::prepared::ClientStatements;
use self::relay::Relay;
use self::request::Requests;
use self::settings::ClientSettings;
use self::upstream::Upstream;
use super::error::FrontendError;
use super::expect::Expect;
use super::statements::{self, ParseMessage};
use crate::backend::cancel::CancelSlot;
use crate::backend::pool::{PoolEntry, Pooled};
use crate::backend::{BackendError, SessionParams};
use crate::cache::{entry, Form, Gate, Route, Routing, WritePath};
use crate::config::PoolMode;
use crate::context::Context;
use crate::net::message::{self, ftag, Severity};
use crate::net::{Frame, FrameReader, NetError, Stream};
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

/// What the cache did with a statement (see [`Session::route`]).
enum Routed {
    Answered,
    Write(Writes),
    Forward,
}

/// Why an extended message could not be handled.
enum Invalid {
    /// It is malformed: the client is told (08P01) and the session ends.
    Message(NetError),
    /// The session ended meanwhile.
    Session(FrontendError),
}

impl From<NetError> for Invalid {
    fn from(e: NetError) -> Invalid {
        Invalid::Message(e)
    }
}

impl From<FrontendError> for Invalid {
    fn from(e: FrontendError) -> Invalid {
        Invalid::Session(e)
    }
}

enum Event {
    Client(Result<(), NetError>),
    Server(Result<(), NetError>),
    Shutdown,
}

pub struct Session {
    context: Arc<Context>,
    mode: PoolMode,
    database: String,
    user: String,
    key: (i32, i32),
    client: ClientConn,
    upstream: Upstream,
    phase: Phase,
    statements: ClientStatements,
    settings: ClientSettings,
    cache: Option<CachePath>,
    writes: Option<WritePath>,
    requests: Requests,
}

impl Session {
    pub fn new(context: Arc<Context>, login: Login) -> Session {
        let mode = login.mode;
        let settings = ClientSettings::new(login.settings, mode);
        let info = SessionInfo::new(
            login.user.clone(),
            login.database.clone(),
            settings.application_name(),
            login.client_address,
        );
        let cache = context.cache.clone();
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
                .map(|c| WritePath::new(c.invalidator().clone(), &login.database)),
            cache: cache.map(|c| CachePath::new(c, &login.database, &login.user)),
            requests: Requests::new(
                context.metrics.clone(),
                Some(context.recorder.clone()),
                info,
            ),
            database: login.database,
            user: login.user,
            context,
        };
        if let Some(server) = login.server {
            session.phase.tx = session.upstream.attach(server);
        }
        session
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Serves the client until it leaves, then cleans up.
    pub async fn run(mut self) -> Result<(), FrontendError> {
        let result = self.serve().await;
        self.finish().await;
        match result {
            Err(FrontendError::ClientGone) => Ok(()),
            other => other,
        }
    }

    async fn serve(&mut self) -> Result<(), FrontendError> {
        loop {
            loop {
                let frame = match self.client.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => return self.fatal(e.sqlstate(), &e.to_string(), e.into()).await,
                };
                if !self.on_client_message(frame).await? {
                    return Ok(());
                }
            }
            self.upstream.drain_synthetic(&mut self.client.out);
            self.flush().await?;
            self.maybe_release().await?;
            tracing::trace!(held = self.upstream.is_held(), settled = self.upstream.settled(), phase = ?self.phase, "session waits");
            match self.wait().await {
                Event::Client(Ok(())) => {}
                Event::Client(Err(NetError::Closed)) => return Err(FrontendError::ClientGone),
                Event::Client(Err(e)) => return Err(e.into()),
                Event::Server(Ok(())) => self.relay().await?,
                Event::Server(Err(e)) => return self.on_server_lost(e).await,
                Event::Shutdown => {
                    let e = FrontendError::Protocol("shutdown".into());
                    let text = "terminating connection because pgstash is shutting down";
                    return self.fatal("57P01", text, e).await;
                }
            }
        }
    }

    /// Waits for the next input from either side.
    ///
    /// # Cancellation safety
    /// Both reads append to their buffers only on completion, so the branch
    /// that loses the race loses nothing.
    async fn wait(&mut self) -> Event {
        let idle = self.is_idle();
        // Borrowed, not cloned: a token clone locks the token's tree.
        let shutdown = &self.context.shutdown;
        if !self.upstream.is_held() {
            return tokio::select! {
                biased;
                _ = shutdown.cancelled() => Event::Shutdown,
                r = self.client.read() => Event::Client(r),
            };
        }
        tokio::select! {
            // In order, not at random (the draw showed in profiles). The
            // server first: reading its answers never blocks anyone, while a
            // client that keeps sending (a pipeline, COPY IN) must not keep
            // them unread until the server stops reading in turn. A server
            // sends only what the client asked for, so it cannot starve the
            // client.
            biased;
            _ = shutdown.cancelled(), if idle => Event::Shutdown,
            r = self.upstream.read() => Event::Server(r),
            r = self.client.read() => Event::Client(r),
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
            && !self.cache.as_ref().is_some_and(CachePath::is_filling)
            && !self.writes.as_ref().is_some_and(WritePath::is_pending);
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

    // ----- client → server -------------------------------------------------

    /// Handles one client message. Returns false when the client said goodbye.
    async fn on_client_message(&mut self, frame: Frame) -> Result<bool, FrontendError> {
        let skipping = self.phase.flow == Flow::Skipping;
        let Some(cache) = self.cache.as_mut() else {
            return self.dispatch(frame).await;
        };
        let (held, then) = match cache.intake(frame, skipping) {
            Intake::Held => return Ok(true),
            Intake::Release { held, then } => (held, then),
            Intake::Request { held, sync } => {
                if self.route_request(&held).await? {
                    // Answered from the cache: the Sync is answered here too.
                    message::ready_for_query(&mut self.client.out, b'I');
                    return Ok(true);
                }
                (held, Some(sync))
            }
        };
        for frame in held {
            if !self.dispatch(frame).await? {
                return Ok(false);
            }
        }
        match then {
            Some(frame) if frame.tag() == ftag::QUERY => self.query(frame).await,
            Some(frame) => self.dispatch(frame).await,
            None => Ok(true),
        }
    }

    /// Handles one client message on its way to the server.
    async fn dispatch(&mut self, frame: Frame) -> Result<bool, FrontendError> {
        let tag = frame.tag();
        match tag {
            ftag::TERMINATE => return Ok(false),
            ftag::SYNC if self.phase.flow.syncs_ignored() && self.upstream.is_held() => {
                self.upstream.send_raw(frame.as_bytes());
            }
            ftag::SYNC => {
                if self.upstream.is_held() {
                    self.requests.begin();
                    self.upstream.send(frame.as_bytes(), Expect::Sync);
                } else {
                    message::ready_for_query(&mut self.client.out, b'I');
                }
                self.phase.flow.sent_sync();
            }
            _ if matches!(self.phase.flow, Flow::Skipping | Flow::Closing) => {}
            ftag::FLUSH => self.upstream.send_raw(frame.as_bytes()),
            ftag::COPY_DATA | ftag::COPY_DONE | ftag::COPY_FAIL => {
                if tag != ftag::COPY_DATA {
                    self.phase.flow.client_copy_ended();
                }
                // Outside COPY Postgres ignores these; so does pgstash.
                self.upstream.send_raw(frame.as_bytes());
            }
            ftag::QUERY | ftag::FUNCTION_CALL => return self.forward_query(frame).await,
            ftag::PARSE | ftag::BIND | ftag::DESCRIBE | ftag::EXECUTE | ftag::CLOSE => {
                return self.extended(frame).await
            }
            other => {
                let text = format!("invalid frontend message type {}", other);
                let e = FrontendError::Protocol(text.clone());
                return self.fatal("08P01", &text, e).await.map(|_| false);
            }
        }
        Ok(true)
    }

    /// A simple Query with caching configured: answered from the cache, or
    /// sent on.
    async fn query(&mut self, frame: Frame) -> Result<bool, FrontendError> {
        if matches!(self.phase.flow, Flow::Skipping | Flow::Closing) {
            return self.dispatch(frame).await;
        }
        let body = frame.body();
        let sql: Arc<str> = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).into();
        self.requests.text(sql.clone());
        match self.route(&sql, Form::Simple, self.gate(), &[]).await {
            Routed::Answered => {
                message::ready_for_query(&mut self.client.out, b'I');
                return Ok(true);
            }
            Routed::Write(writes) => self.note_writes(writes),
            Routed::Forward => {}
        }
        self.dispatch(frame).await
    }

    /// A simple Query or FunctionCall on its way to the server.
    async fn forward_query(&mut self, frame: Frame) -> Result<bool, FrontendError> {
        let query = frame.tag() == ftag::QUERY;
        let sql = query.then(|| {
            let body = frame.body();
            String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).into_owned()
        });
        if let Some(sql) = &sql {
            self.requests.text(sql.as_str().into());
        }
        if !self.ensure_server().await? {
            if let Some(cache) = self.cache.as_mut() {
                cache.drop_fill();
            }
            message::ready_for_query(&mut self.client.out, b'I');
            self.phase.flow.sent_sync();
            return Ok(true);
        }
        if let Some(sql) = &sql {
            self.note_effects(sql);
            self.statements.on_simple_query();
        }
        self.upstream.send(frame.as_bytes(), Expect::Query);
        Ok(true)
    }

    /// Parse, Bind, Describe, Execute and Close on their way to the server.
    async fn extended(&mut self, frame: Frame) -> Result<bool, FrontendError> {
        let rewrite = self.mode == PoolMode::Transaction;
        match self.extended_inline(&frame, rewrite).await {
            Ok(going) => Ok(going),
            Err(Invalid::Message(e)) => self.invalid(e).await,
            Err(Invalid::Session(e)) => Err(e),
        }
    }

    async fn extended_inline(&mut self, frame: &Frame, rewrite: bool) -> Result<bool, Invalid> {
        let (known, out) = (&self.context.front.session_effects, &mut self.client.out);
        let settings = &self.settings;
        if rewrite
            && frame.tag() == ftag::CLOSE
            && self
                .statements
                .close_locally(frame, &mut self.upstream, out)?
        {
            return Ok(true);
        }
        if rewrite && frame.tag() == ftag::PARSE && !self.upstream.is_held() {
            let answered =
                self.statements
                    .parse_without_server(frame, &mut self.upstream, out, |sql| {
                        settings.effects_of(sql, known)
                    })?;
            if let Some(effects) = answered {
                self.apply_effects(effects);
                return Ok(true);
            }
        }
        if !self.ensure_server().await? {
            if let Some(cache) = self.cache.as_mut() {
                cache.drop_fill();
            }
            return Ok(true);
        }
        if frame.tag() == ftag::BIND {
            let name = statements::bind_statement(frame.body())?;
            if let Some(text) = self.statements.text_of(name) {
                self.requests.text(text.clone());
                let closed = Gate::Closed { counted: None };
                if let Routed::Write(writes) = self.route(&text, Form::Simple, closed, &[]).await {
                    self.note_writes(writes);
                }
            }
        }
        let (known, out) = (&self.context.front.session_effects, &mut self.client.out);
        let settings = &self.settings;
        let effects = self
            .statements
            .forward(frame, &mut self.upstream, out, rewrite, |sql| {
                settings.effects_of(sql, known)
            })?;
        if let Some(effects) = effects {
            self.apply_effects(effects);
        }
        self.phase.flow.sent_extended();
        Ok(true)
    }

    fn note_effects(&mut self, sql: &str) {
        let effects = self
            .settings
            .effects_of(sql, &self.context.front.session_effects);
        self.apply_effects(effects);
    }

    fn apply_effects(&mut self, effects: settings::StatementEffects) {
        if effects.resets_statements {
            self.statements.forget_on_release();
        }
        self.settings.apply(effects);
    }

    // ----- the cache --------------------------------------------------------

    /// Asks the cache about a statement on its way upstream. Answers it
    /// when the cache can (`prefix` — ParseComplete, BindComplete — goes
    /// before the entry), or prepares to fill the entry and accounts for
    /// the path taken; a write is the caller's to note.
    async fn route(&mut self, sql: &str, form: Form<'_>, gate: Gate, prefix: &[&[u8]]) -> Routed {
        let Some(cache) = self.cache.as_mut() else {
            return Routed::Forward;
        };
        let facts = self.settings.facts(!self.phase.tx.is_idle());
        let (context, database, user) = (&self.context, &self.database, &self.user);
        let target = || context.connect_target(database, user);
        let settings = &self.settings.params;
        let route = match cache.route(sql, form, gate, facts, database, settings, &target) {
            Routing::Done(route) => route,
            Routing::Lookup(lookup) => lookup.await,
        };
        match route {
            Route::Write(writes) => return Routed::Write(writes),
            Route::Forward => {}
            Route::Hit { rule, bytes } => {
                for part in prefix {
                    self.client.out.extend_from_slice(part);
                }
                self.client.out.extend_from_slice(&bytes);
                self.context
                    .metrics
                    .cache_bytes_served
                    .inc_by(bytes.len() as u64);
                self.requests.rule(rule);
                self.requests.answered(entry::rows(&bytes));
                return Routed::Answered;
            }
            Route::Fill(fill) => {
                self.requests.rule(fill.read.rule_name.clone());
                self.requests.path("miss");
                cache.start_fill(fill);
            }
            Route::Miss { rule } => {
                self.requests.rule(rule);
                self.requests.path("miss");
            }
            Route::NotPaying { rule } => {
                self.requests.rule(rule);
                self.requests.path("bypass");
            }
        }
        Routed::Forward
    }

    /// Notes a statement's writes, to invalidate once they commit.
    fn note_writes(&mut self, writes: Writes) {
        self.requests.path("write");
        if let Some(path) = self.writes.as_mut() {
            path.note(writes, !self.phase.tx.is_idle());
        }
    }

    /// At its Sync, a held request: answered from the cache (true) when it
    /// is one statement that hits; otherwise sent on by the caller.
    async fn route_request(&mut self, held: &[Frame]) -> Result<bool, FrontendError> {
        let Some(unit) = cached::single_unit(held) else {
            return Ok(false);
        };
        let parse = match unit.parse {
            Some(i) => Some(
                ParseMessage::decode(held[i].body())
                    .map_err(|e| FrontendError::Protocol(e.to_string()))?,
            ),
            None => None,
        };
        let Ok(bind) = statements::bind_parts(held[unit.bind].body()) else {
            return Ok(false);
        };
        let parsed = unit.parse.zip(parse.as_ref()).map(|(i, p)| (&held[i], p));
        let Some(bound) = self.statements.bound(parsed, bind.statement) else {
            return Ok(false);
        };
        // Session mode keeps the client's named statements on its server;
        // a Parse answered here would leave it missing there.
        let named_parse = parse.as_ref().is_some_and(|p| !p.name.is_empty());
        if self.mode == PoolMode::Session && named_parse {
            return Ok(false);
        }
        // The literal values of bound text parameters may be 'now' & co.
        if cached::binds_time_sensitive_values(bind.rest) != Some(false) {
            return Ok(false);
        }
        self.requests.text(bound.text.clone());
        let form = Form::Extended {
            types: &bound.types,
            bind: bind.rest,
            describe: unit.describe,
        };
        let parse_complete = message::parse_complete();
        let prefix: &[&[u8]] = match parse {
            Some(_) => &[&parse_complete, BIND_COMPLETE],
            None => &[BIND_COMPLETE],
        };
        let text = bound.text.clone();
        let gate = self.gate();
        // A write is noted when its Bind goes to the server.
        if !matches!(
            self.route(&text, form, gate, prefix).await,
            Routed::Answered
        ) {
            return Ok(false);
        }
        // Served: remember the statement the client just prepared.
        if let (Some(i), Some(parse)) = (unit.parse, parse) {
            self.statements.served_parse(&held[i], &parse, bound);
        }
        Ok(true)
    }

    // ----- the server connection -------------------------------------------

    /// Gets a server connection if none is held. Returns false (after
    /// telling the client) when none could be had; the client's messages up
    /// to its next Sync are then skipped.
    async fn ensure_server(&mut self) -> Result<bool, FrontendError> {
        if self.upstream.is_held() {
            return Ok(true);
        }
        self.client.flush(self.holding()).await?;
        let (waited, acquired) = self
            .upstream
            .acquire(&self.settings.params, &self.context.metrics)
            .await;
        self.requests.waited_for_pool(waited);
        match acquired {
            Ok(tx) => {
                self.phase.tx = tx;
                self.statements.on_attach();
                Ok(true)
            }
            Err(e) => {
                if matches!(e, BackendError::Server { .. }) || e.is_network() {
                    tracing::warn!(database = %self.database, error = %e, "no server connection for client");
                }
                self.client
                    .out
                    .extend_from_slice(&e.to_client(Severity::Error));
                self.phase.flow.skip();
                Ok(false)
            }
        }
    }

    /// Client output is held back until a write is recorded.
    fn holding(&self) -> bool {
        self.writes.as_ref().is_some_and(WritePath::is_holding)
    }

    /// Relays what the server sent, pausing at each ReadyForQuery that
    /// ends a write until its invalidation is recorded (G2).
    async fn relay(&mut self) -> Result<(), FrontendError> {
        loop {
            let relayed = Relay {
                upstream: &mut self.upstream,
                phase: &mut self.phase,
                out: &mut self.client.out,
                cache: self.cache.as_mut(),
                writes: self.writes.as_mut(),
                requests: &mut self.requests,
            }
            .run()?;
            self.requests.finish(relayed.finished);
            if !relayed.commit {
                return Ok(());
            }
            if let Some(writes) = self.writes.as_mut() {
                writes.record(&mut self.client.out).await;
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
        let holding = self.cache.as_ref().is_some_and(CachePath::is_holding);
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
        let forget = self.statements.take_forget();
        self.upstream.release(forget);
        Ok(())
    }

    /// Reads the server's settings back into the client's: they travel
    /// with the client and go into its cache keys.
    async fn read_back_settings(&mut self) {
        let Some(server) = self.upstream.conn() else {
            return;
        };
        if self.settings.read_back(server).await {
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
                writes.on_disconnect().await;
            }
            let clean = self.is_idle();
            self.upstream
                .finish(clean, self.mode == PoolMode::Session)
                .await;
            self.client.shutdown().await;
        })
    }
}
