//! The client → server path of a session: each client message is held
//! (extended-protocol messages, until their Sync) or routed through the
//! cache, then dispatched — answered by pgstash, or rewritten and queued
//! for the server (`upstream.rs`), with its effects on the session's
//! settings and prepared statements applied. The server → client path is
//! `relay.rs`; the session's lifecycle is `mod.rs`.

use std::sync::Arc;

use pgstash_rules::{statement_reset, StatementReset, Writes};

use super::cached::{Intake, UnitRequest, BIND_COMPLETE};
use super::phase::{Flow, Tx};
use super::pinning::Pinned;
use super::settings::StatementEffects;
use super::Session;
use crate::cache::{entry, Form, Gate, Identity, Route, Routing};
use crate::config::PoolMode;
use crate::frontend::error::FrontendError;
use crate::frontend::expect::Expect;
use crate::frontend::statements;
use crate::net::message::{self, ftag, Severity};
use crate::net::Frame;
use crate::Boxed;

/// What the cache did with a statement (see [`Session::route`]).
enum Routed {
    Answered,
    Write(Writes),
    Forward,
}

impl Session {
    /// Handles one client message. Returns false when the client said goodbye.
    pub(super) async fn on_client_message(&mut self, frame: Frame) -> Result<bool, FrontendError> {
        let skipping = self.phase.flow == Flow::Skipping;
        let Some(cache) = self.cache.as_mut() else {
            return self.dispatch(frame).await;
        };
        match cache.intake(frame, skipping) {
            Intake::Held => Ok(true),
            intake => self.release(intake).await,
        }
    }

    /// What the cache path stopped holding: a request it may answer whole,
    /// or messages (and the one that ended the hold) to send on. Boxed (see
    /// [`Session::route_query`]).
    fn release(&mut self, intake: Intake) -> Boxed<'_, Result<bool, FrontendError>> {
        Box::pin(self.release_inline(intake))
    }

    async fn release_inline(&mut self, intake: Intake) -> Result<bool, FrontendError> {
        let (held, then) = match intake {
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
        let Some(frame) = then else {
            return Ok(true);
        };
        let routable = !matches!(self.phase.flow, Flow::Skipping | Flow::Closing);
        if frame.tag() == ftag::QUERY && routable && self.route_query(&frame).await {
            // Answered from the cache, as Postgres would: the client's
            // unnamed statement is gone all the same.
            self.statements
                .on_simple_query(self.mode == PoolMode::Session);
            message::ready_for_query(&mut self.client.out, b'I');
            return Ok(true);
        }
        self.dispatch(frame).await
    }

    /// Handles one client message on its way to the server.
    pub(super) async fn dispatch(&mut self, frame: Frame) -> Result<bool, FrontendError> {
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
                return match self.extended(&frame).await {
                    // A malformed message: 08P01, and the session ends.
                    Err(FrontendError::Net(e)) => self.invalid(e).await,
                    other => other,
                };
            }
            other => {
                let text = format!("invalid frontend message type {}", other);
                let e = FrontendError::Protocol(text.clone());
                return self.fatal("08P01", &text, e).await.map(|_| false);
            }
        }
        Ok(true)
    }

    /// A simple Query with caching configured: answered from the cache
    /// (true), or to be sent on with its writes noted.
    ///
    /// Boxed, like every path that may wait for the store: inline, its
    /// state would size every session.
    fn route_query<'a>(&'a mut self, frame: &'a Frame) -> Boxed<'a, bool> {
        Box::pin(async move {
            let body = frame.body();
            let sql: Arc<str> =
                String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).into();
            self.requests.text(sql.clone());
            match self.route(&sql, Form::Simple, self.gate(), &[]).await {
                Routed::Answered => return true,
                Routed::Write(writes) => self.note_writes(writes),
                Routed::Forward => {}
            }
            false
        })
    }

    /// A simple Query or FunctionCall on its way to the server.
    ///
    /// # Performance
    /// Its text is read once by [`pgstash_rules::screen`]: a text none of
    /// the statement scans can find anything in (almost every one) skips
    /// them, and is decoded once (the request's copy) instead of per scan.
    async fn forward_query(&mut self, frame: Frame) -> Result<bool, FrontendError> {
        let query = frame.tag() == ftag::QUERY;
        let body = frame.body();
        let body = body.strip_suffix(&[0]).unwrap_or(body);
        // Valid UTF-8 (almost always) is checked by the fast test alone.
        let text = match std::str::from_utf8(body) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(body),
        };
        let scanned = query && !pgstash_rules::screen(body).plain();
        if query {
            self.requests.text(Arc::from(&*text));
        }
        if scanned && self.mode == PoolMode::Transaction && self.deallocate_locally(&text) {
            return Ok(true);
        }
        if !self.ensure_server().await? {
            if let Some(cache) = self.cache.as_mut() {
                cache.drop_fill();
            }
            message::ready_for_query(&mut self.client.out, b'I');
            self.phase.flow.sent_sync();
            return Ok(true);
        }
        let (mut forget, mut renamed) = (None, None);
        if scanned {
            self.note_effects(&text);
            self.free_databases(&text);
        }
        if query {
            self.statements
                .on_simple_query(self.mode == PoolMode::Session);
        }
        if scanned && self.mode == PoolMode::Session {
            forget = self.statements.deallocated_by(&text);
        } else if scanned && self.phase.tx != Tx::Failed {
            renamed = self.statements.execute_by_name(&text, &mut self.upstream);
        }
        let bytes = renamed.as_deref().unwrap_or(frame.as_bytes());
        self.upstream.send(bytes, Expect::Query { forget });
        Ok(true)
    }

    /// `DEALLOCATE [PREPARE] name` of one of the client's protocol-level
    /// statements (transaction mode), answered here as Postgres would: the
    /// client's statement is forgotten, its server-side copies (named by
    /// content, shared by clients) stay. Only between requests, where the
    /// transaction status to report is known; in a failed transaction, and
    /// for a name the client did not prepare with Parse (SQL `PREPARE`),
    /// the statement goes to the server as it is.
    fn deallocate_locally(&mut self, sql: &str) -> bool {
        let Some(StatementReset::Deallocate(name)) = statement_reset(sql) else {
            return false;
        };
        let status = match self.phase.tx {
            Tx::Idle => b'I',
            Tx::Block => b'T',
            Tx::Failed => return false,
        };
        let between_requests = self.phase.flow == Flow::Synced
            && (!self.upstream.is_held() || self.upstream.settled());
        if !between_requests || !self.statements.forget(name.as_bytes()) {
            return false;
        }
        self.statements
            .on_simple_query(self.mode == PoolMode::Session);
        message::command_complete(&mut self.client.out, "DEALLOCATE");
        message::ready_for_query(&mut self.client.out, status);
        let request = self.requests.take();
        self.requests.finish(request);
        true
    }

    /// Parse, Bind, Describe, Execute and Close on their way to the server.
    /// A malformed one is a [`FrontendError::Net`] (see [`Session::dispatch`]).
    async fn extended(&mut self, frame: &Frame) -> Result<bool, FrontendError> {
        let rewrite = self.mode == PoolMode::Transaction;
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
        if matches!(frame.tag(), ftag::BIND | ftag::DESCRIBE | ftag::EXECUTE) {
            let answer = rewrite && self.phase.tx != Tx::Failed;
            if self
                .statements
                .deallocation(frame, &mut self.upstream, out, answer)?
            {
                return Ok(true);
            }
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
                self.free_databases(&text);
                self.requests.text(text.clone());
                if let Some(writes) = self.writes_of(&text) {
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

    /// A statement that needs databases without other sessions (`DROP
    /// DATABASE`, `CREATE DATABASE … TEMPLATE`…) is about to run: pgstash's
    /// pools of them are retired, so that their idle server connections
    /// close (Postgres waits a few seconds for such sessions to end).
    fn free_databases(&self, sql: &str) {
        for database in pgstash_rules::exclusive_databases(sql) {
            self.context.pools.retire(&database);
        }
    }

    fn note_effects(&mut self, sql: &str) {
        let effects = self
            .settings
            .effects_of(sql, &self.context.front.session_effects);
        self.apply_effects(effects);
    }

    fn apply_effects(&mut self, effects: StatementEffects) {
        if effects.resets_statements {
            self.statements.forget_on_release();
        }
        if effects.binds_session() && self.mode == PoolMode::Transaction && self.pinned.is_none() {
            self.pinned = Some(Pinned::new(&self.context.metrics));
            self.requests.set_pinned(true);
        }
        self.settings.apply(effects);
    }

    /// Asks the cache about a statement on its way upstream. Answers it
    /// when the cache can (`prefix` — ParseComplete, BindComplete — goes
    /// before the entry), or prepares to fill the entry and accounts for
    /// the path taken; a write is the caller's to note.
    async fn route(&mut self, sql: &str, form: Form<'_>, gate: Gate, prefix: &[&[u8]]) -> Routed {
        let Some(cache) = self.cache.as_mut() else {
            return Routed::Forward;
        };
        let facts = self.settings.facts(!self.phase.tx.is_idle());
        let (context, info) = (&self.context, self.requests.info());
        let (database, user) = (info.database(), info.user());
        let target = || context.connect_target(database, user);
        let who = Identity {
            database,
            user,
            settings: &self.settings.params,
        };
        let (route, waited) = match cache.route(sql, form, gate, facts, who, &target) {
            Routing::Done(route) => (route, false),
            Routing::Lookup(lookup) => (lookup.await, true),
        };
        if waited {
            // The store made the session wait: the request's clock moves
            // on (see `request.rs`).
            self.requests.woke(std::time::Instant::now());
        }
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

    /// What a statement on its way to the server writes, if caching is
    /// configured: the cache's route with a closed gate (it looks nothing
    /// up, so it is decided at once).
    fn writes_of(&mut self, sql: &str) -> Option<Writes> {
        let cache = self.cache.as_mut()?;
        let facts = self.settings.facts(!self.phase.tx.is_idle());
        let (context, info) = (&self.context, self.requests.info());
        let (database, user) = (info.database(), info.user());
        let target = || context.connect_target(database, user);
        let closed = Gate::Closed { counted: None };
        let who = Identity {
            database,
            user,
            settings: &self.settings.params,
        };
        let writes = match cache.route(sql, Form::Simple, closed, facts, who, &target) {
            Routing::Done(Route::Write(writes)) => Some(writes),
            _ => None,
        };
        writes
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
        let Some(request) = UnitRequest::of(held, &self.statements, self.mode)? else {
            return Ok(false);
        };
        self.requests.text(request.bound.text.clone());
        let parse_complete = message::parse_complete();
        let prefix: &[&[u8]] = match request.parse {
            Some(_) => &[&parse_complete, BIND_COMPLETE],
            None => &[BIND_COMPLETE],
        };
        let (text, gate) = (request.bound.text.clone(), self.gate());
        // A write is noted when its Bind goes to the server.
        if !matches!(
            self.route(&text, request.form(), gate, prefix).await,
            Routed::Answered
        ) {
            return Ok(false);
        }
        // Served: remember the statement the client just prepared.
        if let Some((frame, parse)) = &request.parse {
            let names = &self.upstream.pool().statements;
            self.statements
                .served_parse(frame, parse, request.bound, names);
        }
        Ok(true)
    }

    /// Gets a server connection if none is held. Returns false (after
    /// telling the client) when none could be had; the client's messages up
    /// to its next Sync are then skipped.
    async fn ensure_server(&mut self) -> Result<bool, FrontendError> {
        if self.upstream.is_held() {
            return Ok(true);
        }
        self.client.flush(self.holding()).await?;
        let now = self.requests.now();
        let (waited, acquired) = self
            .upstream
            .acquire(&self.settings.params, &self.context.metrics, now)
            .await;
        if !waited.is_zero() {
            self.requests.woke(now + waited);
        }
        self.requests.waited_for_pool(waited);
        match acquired {
            Ok(tx) => {
                self.phase.tx = tx;
                self.statements.on_attach();
                Ok(true)
            }
            Err(e) => {
                let info = self.requests.info();
                tracing::warn!(user = %info.user(), database = %info.database(), error = %e, "no server connection for client");
                self.client
                    .out
                    .extend_from_slice(&e.to_client(Severity::Error));
                self.phase.flow.skip();
                Ok(false)
            }
        }
    }
}
