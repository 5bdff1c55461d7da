//! A logged-in client: relays its requests to a pooled server connection and
//! the answers back, holding the connection only as long as the pool mode
//! requires.
//!
//! State machine of a session in transaction mode:
//! `idle` (no server) → `active` (server held; requests and answers in
//! flight) → `idle` once every answer has arrived, no Sync is outstanding,
//! no COPY runs and the server reported transaction status `I`. Session
//! mode stays `active` until the client leaves. Any state → `closed` when
//! either side goes away or the client breaks the protocol.

mod caching;
mod request;

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::error::FrontendError;
use super::expect::{Effects, Expect, ExpectQueue, Verdict};
use super::statements::{self, ParseMessage, Statements};
use crate::backend::cancel::{CancelSlot, CancelTarget};
use crate::backend::params::capture_sql;
use crate::backend::pool::{PoolEntry, Pooled};
use crate::backend::{BackendError, ServerConn, SessionParams};
use crate::cache::{entry, Cache};
use crate::config::PoolMode;
use crate::context::Context;
use crate::net::message::{self, ftag, tag, Severity};
use crate::net::{Frame, FrameReader, NetError, Stream};
use crate::observe::record::SessionInfo;
use crate::Boxed;

/// Answers to frontend messages kept beyond this size are written out and
/// the buffer is given back, so an idle client does not pin a large buffer.
const SHRINK_ABOVE: usize = 64 * 1024;

enum Event {
    Client(Result<(), NetError>),
    Server(Result<(), NetError>),
    Shutdown,
}

/// The client's last unnamed statement.
struct Unnamed {
    /// Its Parse message, re-sent when a later batch binds the statement on
    /// another server connection.
    parse: Bytes,
    text: Arc<str>,
    /// Its parameter types as the Parse gave them.
    types: Bytes,
    /// What its text does to the session, once that was looked at.
    effects: Option<StatementEffects>,
}

/// What a statement text does beyond its transaction.
#[derive(Debug, Clone, Copy)]
struct StatementEffects {
    session: pgstash_rules::SessionEffects,
    /// DEALLOCATE or DISCARD (transaction mode): server-side statements go.
    resets_statements: bool,
}

pub struct Session {
    context: Arc<Context>,
    client: Stream,
    reader: FrameReader,
    to_client: BytesMut,
    pool: Arc<PoolEntry>,
    user: String,
    database: String,
    /// Settings the client expects its server connection to have.
    settings: SessionParams,
    key: (i32, i32),
    cancel_slot: CancelSlot,
    mode: PoolMode,
    server: Option<Pooled>,
    to_server: BytesMut,
    expect: ExpectQueue,
    /// Extended-protocol messages were sent since the last Sync.
    unsynced: bool,
    /// The client ran something that may have changed its settings; they
    /// are read back before the server connection is released.
    capture: bool,
    /// The client ran DISCARD or DEALLOCATE: server-side statements are gone.
    forget_statements: bool,
    statements: Statements,
    /// The client's last unnamed statement.
    unnamed: Option<Unnamed>,
    unnamed_on_server: bool,
    /// pgstash failed a request itself: skip client messages until Sync.
    local_skip: bool,
    in_copy: bool,
    /// An Execute's COPY FROM STDIN runs: Postgres ignores Syncs until the
    /// client's CopyDone or CopyFail, so they expect no answer.
    copy_in_extended: bool,
    status: u8,
    told_fatal: bool,
    /// Present when caching is configured.
    cache: Option<Arc<Cache>>,
    /// Extended-protocol messages held until Sync, so that the whole
    /// request can be answered from the cache (caching only).
    batch: Vec<Frame>,
    /// The answer being captured to fill a cache entry.
    fill: Option<caching::ActiveFill>,
    /// Tables written since the last commit, to invalidate before the ack.
    pending: Option<caching::PendingWrites>,
    /// Client output is held back until an invalidation is recorded.
    holding: bool,
    /// The ReadyForQuery that ends a write, sent once invalidation is done.
    deferred: Option<Frame>,
    /// The session ran SET ROLE / SESSION AUTHORIZATION (no caching, G5).
    role_changed: bool,
    /// The session made temporary or other session-local objects (no caching).
    session_objects: bool,
    /// The request in flight, for metrics and the query log.
    request: Option<request::Request>,
    /// The session's part of cache keys, hashed, for (domain, shared).
    key_prefix: Option<(&'static str, bool, crate::cache::KeyBuilder)>,
    /// Who this session is, for query events.
    info: Arc<SessionInfo>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        context: Arc<Context>,
        client: Stream,
        reader: FrameReader,
        pool: Arc<PoolEntry>,
        user: String,
        database: String,
        settings: SessionParams,
        key: (i32, i32),
        cancel_slot: CancelSlot,
        server: Option<Pooled>,
        mode: PoolMode,
        client_address: String,
    ) -> Session {
        let mut session = Session {
            context,
            client,
            reader,
            to_client: BytesMut::new(),
            pool,
            user,
            database,
            settings,
            key,
            cancel_slot,
            mode,
            server: None,
            to_server: BytesMut::new(),
            expect: ExpectQueue::default(),
            unsynced: false,
            capture: false,
            forget_statements: false,
            statements: Statements::default(),
            unnamed: None,
            unnamed_on_server: false,
            local_skip: false,
            in_copy: false,
            copy_in_extended: false,
            status: b'I',
            told_fatal: false,
            cache: None,
            batch: Vec::new(),
            fill: None,
            pending: None,
            holding: false,
            deferred: None,
            role_changed: false,
            session_objects: false,
            request: None,
            key_prefix: None,
            info: Arc::new(SessionInfo::new(
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            )),
        };
        session.cache = session.context.cache.clone();
        session.info = Arc::new(SessionInfo::new(
            session.user.clone(),
            session.database.clone(),
            session
                .settings
                .settings
                .get("application_name")
                .cloned()
                .unwrap_or_default(),
            client_address,
        ));
        if let Some(server) = server {
            session.attach(server);
        }
        session
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn database(&self) -> &str {
        &self.database
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
                let frame = match self.reader.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => return self.fatal(e.sqlstate(), &e.to_string(), e.into()).await,
                };
                if !self.on_client_message(frame).await? {
                    return Ok(());
                }
            }
            self.drain_due();
            self.flush().await?;
            self.maybe_release().await?;
            tracing::trace!(held = self.server.is_some(), settled = self.expect.settled(), unsynced = self.unsynced, status = %(self.status as char), in_copy = self.in_copy, "session waits");
            match self.wait().await {
                Event::Client(Ok(())) => {}
                Event::Client(Err(NetError::Closed)) => return Err(FrontendError::ClientGone),
                Event::Client(Err(e)) => return Err(e.into()),
                Event::Server(Ok(())) => self.relay_server().await?,
                Event::Server(Err(e)) => return self.on_server_lost(e).await,
                Event::Shutdown => {
                    let e = FrontendError::Protocol("shutdown".into());
                    return self
                        .fatal(
                            "57P01",
                            "terminating connection because pgstash is shutting down",
                            e,
                        )
                        .await;
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
        match self.server.as_mut() {
            Some(server) => {
                let conn: &mut ServerConn = server;
                tokio::select! {
                    // In order, not at random (the draw showed in profiles).
                    // The server first: reading its answers never blocks
                    // anyone, while a client that keeps sending (a pipeline,
                    // COPY IN) must not keep them unread until the server
                    // stops reading in turn. A server sends only what the
                    // client asked for, so it cannot starve the client.
                    biased;
                    _ = shutdown.cancelled(), if idle => Event::Shutdown,
                    r = conn.reader.fill(&mut conn.stream) => Event::Server(r),
                    r = self.reader.fill(&mut self.client) => Event::Client(r),
                }
            }
            None => tokio::select! {
                biased;
                _ = shutdown.cancelled() => Event::Shutdown,
                r = self.reader.fill(&mut self.client) => Event::Client(r),
            },
        }
    }

    /// Nothing in flight and no transaction open.
    fn is_idle(&self) -> bool {
        self.expect.settled() && !self.unsynced && !self.in_copy && self.status == b'I'
    }

    // ----- client → server -------------------------------------------------

    /// Handles one client message. Returns false when the client said goodbye.
    async fn on_client_message(&mut self, frame: Frame) -> Result<bool, FrontendError> {
        if self.cache.is_some() {
            match frame.tag() {
                ftag::PARSE | ftag::BIND | ftag::DESCRIBE | ftag::EXECUTE | ftag::CLOSE
                    if !self.local_skip =>
                {
                    self.batch.push(frame);
                    if self.batch.len() > caching::MAX_BATCH {
                        self.replay_batch().await?;
                    }
                    return Ok(true);
                }
                ftag::SYNC if !self.batch.is_empty() => {
                    if self.process_batch().await? {
                        // Answered from the cache: the Sync is answered here too.
                        message::ready_for_query(&mut self.to_client, b'I');
                        return Ok(true);
                    }
                }
                ftag::SYNC => {}
                _ => self.replay_batch().await?,
            }
        }
        self.dispatch(frame).await
    }

    /// Handles one client message, batching aside.
    async fn dispatch(&mut self, frame: Frame) -> Result<bool, FrontendError> {
        let rewrite = self.mode == PoolMode::Transaction;
        match frame.tag() {
            ftag::TERMINATE => return Ok(false),
            ftag::SYNC if self.copy_in_extended && self.server.is_some() => {
                self.to_server.extend_from_slice(frame.as_bytes());
            }
            ftag::SYNC => {
                self.local_skip = false;
                if self.server.is_some() {
                    self.request();
                    self.forward(&frame, Expect::Sync);
                    self.unsynced = false;
                } else {
                    message::ready_for_query(&mut self.to_client, b'I');
                }
            }
            _ if self.local_skip => {}
            ftag::FLUSH => {
                if self.server.is_some() {
                    self.to_server.extend_from_slice(frame.as_bytes());
                }
            }
            ftag::COPY_DATA | ftag::COPY_DONE | ftag::COPY_FAIL => {
                if frame.tag() != ftag::COPY_DATA {
                    self.copy_in_extended = false;
                }
                // Outside COPY Postgres ignores these; so does pgstash.
                if self.server.is_some() {
                    self.to_server.extend_from_slice(frame.as_bytes());
                }
            }
            ftag::CLOSE if rewrite => {
                let (kind, name) = match statements::decode_target(frame.body(), "Close") {
                    Ok((kind, name)) => (kind, name.to_vec()),
                    Err(e) => {
                        let text = format!("invalid message: {e}");
                        return self.fatal("08P01", &text, e.into()).await.map(|_| false);
                    }
                };
                if kind == b'S' && !name.is_empty() {
                    self.statements.remove(&name);
                    self.answer_locally(message::close_complete());
                } else {
                    if !self.ensure_server().await? {
                        return Ok(true);
                    }
                    self.forward(&frame, Expect::Close);
                    self.unsynced = true;
                }
            }
            ftag::QUERY if self.cache.is_some() && self.cached_query(&frame).await? => {
                message::ready_for_query(&mut self.to_client, b'I');
            }
            ftag::QUERY | ftag::FUNCTION_CALL => {
                if frame.tag() == ftag::QUERY {
                    let body = frame.body();
                    let text = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body));
                    self.request_text(text.into());
                }
                if !self.ensure_server().await? {
                    self.fill = None;
                    message::ready_for_query(&mut self.to_client, b'I');
                    self.local_skip = false;
                    return Ok(true);
                }
                if frame.tag() == ftag::QUERY {
                    let sql = String::from_utf8_lossy(frame.body());
                    self.note_session_effects(&sql);
                    self.unnamed_on_server = false;
                }
                self.forward(&frame, Expect::Query);
            }
            ftag::PARSE
                if rewrite && self.server.is_none() && self.parse_without_server(&frame)? => {}
            ftag::PARSE | ftag::BIND | ftag::DESCRIBE | ftag::EXECUTE | ftag::CLOSE => {
                if !self.ensure_server().await? {
                    self.fill = None;
                    return Ok(true);
                }
                let result = self.on_extended(frame, rewrite);
                if let Err(e) = result {
                    return self
                        .fatal("08P01", &format!("invalid message: {e}"), e.into())
                        .await
                        .map(|_| false);
                }
                self.unsynced = true;
            }
            other => {
                let text = format!("invalid frontend message type {}", other);
                let e = FrontendError::Protocol(text.clone());
                return self.fatal("08P01", &text, e).await.map(|_| false);
            }
        }
        Ok(true)
    }

    /// Answers a named Parse whose statement is known to parse in this pool
    /// without taking a server connection. Clients such as pgbench prepare
    /// synchronously while other connections of theirs hold transactions
    /// open; needing a server here could deadlock them on a small pool.
    fn parse_without_server(&mut self, frame: &Frame) -> Result<bool, FrontendError> {
        // The unnamed statement (an empty name first in the body) always
        // goes to a server; drivers send one per query, so it is not decoded
        // here only to be decoded again.
        if frame.body().first() == Some(&0) {
            return Ok(false);
        }
        let parse = ParseMessage::decode(frame.body())
            .map_err(|e| FrontendError::Protocol(e.to_string()))?;
        if parse.name.is_empty() || self.statements.contains(parse.name) {
            return Ok(false);
        }
        let server_name = statements::server_name(parse.query, parse.types);
        if !self.pool.statement_known(&server_name) {
            return Ok(false);
        }
        self.note_session_effects(&parse.query_text());
        self.statements.insert(&parse);
        self.to_client.extend_from_slice(&message::parse_complete());
        Ok(true)
    }

    /// Parse, Bind, Describe, Execute and (session-mode) Close, with a
    /// server connection held.
    fn on_extended(&mut self, frame: Frame, rewrite: bool) -> Result<(), NetError> {
        match frame.tag() {
            ftag::PARSE => {
                let parse = ParseMessage::decode(frame.body())?;
                if parse.name.is_empty() {
                    self.parse_unnamed(&frame, &parse);
                } else {
                    self.note_session_effects(&parse.query_text());
                }
                // Session mode forwards every Parse as it is (the names live
                // on the client's own server); transaction mode forwards the
                // unnamed one and manages named ones below.
                if !rewrite || parse.name.is_empty() {
                    if parse.name.is_empty() {
                        self.unnamed_on_server = true;
                    } else {
                        self.statements.insert(&parse);
                    }
                    let expect = Expect::Parse {
                        forward: true,
                        prepared: None,
                        rename: None,
                    };
                    self.forward(&frame, expect);
                } else if self.statements.contains(parse.name) {
                    // Let Postgres raise its own 42P05: re-parse under the
                    // existing server-side name, then show the client's name.
                    let client_name: Arc<str> = String::from_utf8_lossy(parse.name).into();
                    if let Some(server_name) = self.ensure_prepared(parse.name) {
                        let frame = statements::parse_frame(&server_name, parse.query, parse.types);
                        let expect = Expect::Parse {
                            forward: true,
                            prepared: None,
                            rename: Some((server_name, client_name)),
                        };
                        self.send_with(&frame, expect);
                    }
                } else {
                    let statement = self.statements.insert(&parse);
                    let conn = self.conn();
                    if conn.prepared.contains(&statement.server_name) {
                        self.answer_locally(message::parse_complete());
                    } else {
                        conn.prepared.insert(statement.server_name.clone());
                        let expect = Expect::Parse {
                            forward: true,
                            prepared: Some(statement.server_name),
                            rename: None,
                        };
                        self.send_with(&statement.parse, expect);
                    }
                }
            }
            ftag::BIND => {
                let name = statements::bind_statement(frame.body())?;
                self.note_bound_statement(name);
                if !rewrite {
                    if name.is_empty() {
                        self.ensure_unnamed();
                    }
                    self.forward(&frame, Expect::Bind);
                } else if name.is_empty() {
                    self.ensure_unnamed();
                    self.forward(&frame, Expect::Bind);
                } else if let Some(server_name) = self.ensure_prepared(name) {
                    let bind = statements::rewrite_bind(frame.body(), &server_name)?;
                    self.send_with(&bind, Expect::Bind);
                } else {
                    // Unknown name: Postgres reports 26000 with the client's name.
                    self.forward(&frame, Expect::Bind);
                }
            }
            ftag::DESCRIBE => {
                let (kind, name) = statements::decode_target(frame.body(), "Describe")?;
                if kind == b'P' {
                    self.forward(&frame, Expect::DescribePortal);
                } else if !rewrite {
                    self.forward(&frame, Expect::DescribeStatement);
                } else if name.is_empty() {
                    self.ensure_unnamed();
                    self.forward(&frame, Expect::DescribeStatement);
                } else if let Some(server_name) = self.ensure_prepared(name) {
                    let describe = statements::target_frame(ftag::DESCRIBE, b'S', &server_name);
                    self.send_with(&describe, Expect::DescribeStatement);
                } else {
                    self.forward(&frame, Expect::DescribeStatement);
                }
            }
            ftag::EXECUTE => self.forward(&frame, Expect::Execute),
            _ => self.forward(&frame, Expect::Close),
        }
        Ok(())
    }

    /// Makes sure the held server connection has the client's statement
    /// `name`; returns its server-side name (None for an unknown name).
    fn ensure_prepared(&mut self, name: &[u8]) -> Option<Arc<str>> {
        let statement = self.statements.get(name)?.clone();
        if self.expect.skipping() {
            return Some(statement.server_name);
        }
        let conn = self.conn();
        if !conn.prepared.contains(&statement.server_name) {
            conn.prepared.insert(statement.server_name.clone());
            let expect = Expect::Parse {
                forward: false,
                prepared: Some(statement.server_name.clone()),
                rename: None,
            };
            self.send_with(&statement.parse, expect);
        }
        Some(statement.server_name)
    }

    /// Re-sends the client's unnamed statement if this server has not seen it.
    fn ensure_unnamed(&mut self) {
        if self.unnamed_on_server || self.expect.skipping() {
            return;
        }
        if let Some(parse) = self.unnamed.as_ref().map(|u| u.parse.clone()) {
            self.send_with(
                &parse,
                Expect::Parse {
                    forward: false,
                    prepared: None,
                    rename: None,
                },
            );
            self.unnamed_on_server = true;
        }
    }

    /// Notes the client's unnamed Parse. Drivers send the same one before
    /// every execution; what was learned of its text is then reused instead
    /// of being worked out again.
    fn parse_unnamed(&mut self, frame: &Frame, parse: &ParseMessage) {
        let known = self
            .unnamed
            .as_ref()
            .filter(|u| u.parse[..] == *frame.as_bytes())
            .and_then(|u| u.effects);
        let effects = match known {
            Some(effects) => effects,
            None => {
                let text: Arc<str> = parse.query_text().into();
                let effects = self.effects_of(&text);
                self.unnamed = Some(Unnamed {
                    parse: Bytes::copy_from_slice(frame.as_bytes()),
                    text,
                    types: Bytes::copy_from_slice(parse.types),
                    effects: Some(effects),
                });
                effects
            }
        };
        self.apply_effects(effects);
    }

    fn note_session_effects(&mut self, sql: &str) {
        let effects = self.effects_of(sql);
        self.apply_effects(effects);
    }

    fn effects_of(&self, sql: &str) -> StatementEffects {
        StatementEffects {
            session: self.context.session_effects.effects(sql),
            resets_statements: self.mode == PoolMode::Transaction && mentions_statement_reset(sql),
        }
    }

    fn apply_effects(&mut self, effects: StatementEffects) {
        let StatementEffects {
            session: effects,
            resets_statements,
        } = effects;
        if effects.changes_settings || effects.changes_role {
            self.capture = true;
        }
        if effects.changes_role {
            self.role_changed = true;
        }
        if effects.uses_session_objects || effects.listen {
            self.session_objects = true;
        }
        if resets_statements {
            self.forget_statements = true;
        }
    }

    fn forward(&mut self, frame: &Frame, expect: Expect) {
        self.send_with(frame.as_bytes(), expect);
    }

    fn send_with(&mut self, bytes: &[u8], expect: Expect) {
        if !self.expect.skipping() || matches!(expect, Expect::Sync) {
            self.to_server.extend_from_slice(bytes);
        }
        self.expect.push(expect);
    }

    /// An answer pgstash gives itself, in its place among the server's.
    fn answer_locally(&mut self, bytes: Bytes) {
        if self.server.is_some() {
            self.expect.push(Expect::Synthetic(bytes));
        } else {
            self.to_client.extend_from_slice(&bytes);
        }
    }

    fn conn(&mut self) -> &mut ServerConn {
        self.server
            .as_mut()
            .expect("a server connection is held here")
    }

    /// Gets a server connection if none is held. Returns false (after
    /// telling the client) when none could be had; the client's messages up
    /// to its next Sync are then skipped.
    async fn ensure_server(&mut self) -> Result<bool, FrontendError> {
        if self.server.is_some() {
            return Ok(true);
        }
        self.flush_client().await?;
        let waited = Instant::now();
        self.context.metrics.clients_waiting.inc();
        let acquired = self.pool.acquire().await;
        self.context.metrics.clients_waiting.dec();
        let waited = waited.elapsed();
        self.context
            .metrics
            .pool_acquire_wait
            .observe(waited.as_secs_f64());
        self.request().pool_wait += waited;
        let mut server = match acquired {
            Ok(server) => server,
            Err(e) => {
                tracing::warn!(user = %self.user, database = %self.database, error = %e, "no server connection for client");
                self.to_client
                    .extend_from_slice(&e.to_client(Severity::Error));
                self.local_skip = true;
                return Ok(false);
            }
        };
        if let Some(sql) = self.settings.transition_sql(&server.applied) {
            if let Err(e) = apply_settings(&mut server, sql).await {
                self.to_client
                    .extend_from_slice(&e.to_client(Severity::Error));
                self.local_skip = true;
                return Ok(false);
            }
            server.applied = self.settings.clone();
        }
        self.attach(server);
        Ok(true)
    }

    fn attach(&mut self, server: Pooled) {
        *self.cancel_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(CancelTarget {
            pid: server.pid,
            secret: server.secret,
        });
        self.unnamed_on_server = false;
        self.status = server.status;
        self.server = Some(server);
    }

    // ----- server → client -------------------------------------------------

    /// Relays what the server sent, pausing at each ReadyForQuery that
    /// ends a write until its invalidation is recorded (G2).
    async fn relay_server(&mut self) -> Result<(), FrontendError> {
        while let Some(writes) = self.on_server_data()? {
            if let Some(cache) = self.cache.clone() {
                cache.invalidate(&self.database, &writes).await;
            }
            self.holding = false;
            if let Some(frame) = self.deferred.take() {
                self.to_client.extend_from_slice(frame.as_bytes());
            }
        }
        Ok(())
    }

    /// Processes buffered server messages. Stops early, returning the
    /// writes to invalidate, at a ReadyForQuery that commits them.
    fn on_server_data(&mut self) -> Result<Option<caching::Writes>, FrontendError> {
        let Some(server) = self.server.as_mut() else {
            return Ok(None);
        };
        let conn: &mut ServerConn = server;
        let mut effects = Effects::default();
        let mut commit = None;
        // One request at a time is in flight, so at most one finishes here.
        let mut finished = None;
        loop {
            let frame = match conn.reader.peek() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    conn.broken = true;
                    return Err(BackendError::from(e).into());
                }
            };
            let frame_len = frame.len();
            // Applied once the frame is consumed (the frame borrows the reader).
            let mut parameter_status = None;
            let tag = frame.tag();
            let verdict = self.expect.on_server_message(tag, &mut effects);
            flush_due(&mut effects.due, &mut self.to_client);
            if self.fill.is_some() {
                caching::capture(&mut self.fill, frame, self.cache.as_deref());
            }
            match tag {
                tag::READY_FOR_QUERY => {
                    let status = frame.body().first().copied().unwrap_or(b'I');
                    conn.status = status;
                    self.status = status;
                    self.in_copy = false;
                    if let Some(request) = self.request.take() {
                        finished = Some(request);
                    }
                    commit = caching::on_ready(&mut self.pending, &mut self.holding, status);
                    if commit.is_some() {
                        self.deferred = Some(frame.to_frame());
                        conn.reader.consume(frame_len);
                        break;
                    }
                }
                tag::COMMAND_COMPLETE => {
                    self.in_copy = false;
                    if let Some(request) = self.request.as_mut() {
                        request.rows += entry::rows_in_tag(frame.body());
                    }
                    caching::on_command_complete(
                        &mut self.pending,
                        &mut self.holding,
                        frame.body(),
                    );
                }
                tag::PARAMETER_STATUS => parameter_status = Some(frame.body().to_vec()),
                tag::COPY_IN_RESPONSE => {
                    self.in_copy = true;
                    self.copy_in_extended = self.expect.copy_in_started();
                }
                tag::COPY_OUT_RESPONSE | tag::COPY_BOTH_RESPONSE => self.in_copy = true,
                tag::ERROR_RESPONSE => {
                    self.in_copy = false;
                    let (severity, _, _) = message::error_fields(frame.body());
                    if severity == "FATAL" || severity == "PANIC" {
                        conn.broken = true;
                        self.told_fatal = true;
                    }
                }
                _ => {}
            }
            if verdict == Verdict::Forward {
                match effects.rename.take() {
                    Some((server_name, client_name)) if tag == tag::ERROR_RESPONSE => {
                        let renamed =
                            message::rename_in_error(frame.as_bytes(), &server_name, &client_name);
                        self.to_client.extend_from_slice(&renamed);
                    }
                    _ => self.to_client.extend_from_slice(frame.as_bytes()),
                }
            }
            self.expect.drain_synthetic(&mut effects.due);
            flush_due(&mut effects.due, &mut self.to_client);
            conn.reader.consume(frame_len);
            if let Some(body) = parameter_status {
                conn.note_parameter_status(&body);
            }
        }
        for name in effects.unprepared {
            conn.prepared.remove(&name);
        }
        for name in effects.prepared {
            self.pool.statement_parsed(name);
        }
        if let Some(request) = finished {
            self.request = Some(request);
            self.finish_request();
        }
        Ok(commit)
    }

    /// The server connection failed while held: tell the client and end.
    fn on_server_lost(&mut self, e: NetError) -> Boxed<'_, Result<(), FrontendError>> {
        Box::pin(async move {
            if let Some(server) = self.server.as_mut() {
                server.broken = true;
            }
            let error = FrontendError::Backend(BackendError::from(e));
            if self.told_fatal {
                let _ = self.flush_client().await;
                return Err(error);
            }
            self.fatal("08006", "server closed the connection unexpectedly", error)
                .await
        })
    }

    fn drain_due(&mut self) {
        let mut due = Vec::new();
        self.expect.drain_synthetic(&mut due);
        flush_due(&mut due, &mut self.to_client);
    }

    async fn flush(&mut self) -> Result<(), FrontendError> {
        if !self.to_server.is_empty() {
            self.request_sent();
            if let Some(server) = self.server.as_mut() {
                if let Err(e) = server.send(&self.to_server).await {
                    self.to_server.clear();
                    tracing::debug!(error = %e, "write to server failed");
                    return self.on_server_lost(NetError::Closed).await;
                }
            }
            self.to_server.clear();
            if self.to_server.capacity() > SHRINK_ABOVE {
                self.to_server = BytesMut::new();
            }
        }
        self.flush_client().await
    }

    async fn flush_client(&mut self) -> Result<(), FrontendError> {
        if self.to_client.is_empty() || self.holding {
            return Ok(());
        }
        let result = self.client.write_all(&self.to_client).await;
        self.to_client.clear();
        if self.to_client.capacity() > SHRINK_ABOVE {
            self.to_client = BytesMut::new();
        }
        result.map_err(|_| FrontendError::ClientGone)
    }

    /// Reads settings back after the client changed them, and gives the
    /// server connection back when the pool mode allows it.
    async fn maybe_release(&mut self) -> Result<(), FrontendError> {
        if self.server.is_none() || !self.is_idle() || !self.batch.is_empty() {
            return Ok(());
        }
        if self.capture {
            self.capture = false;
            self.capture_settings().await;
        }
        if self.mode != PoolMode::Transaction || self.reader.has_buffered() {
            // Session mode keeps the server; a client in the middle of
            // sending more keeps it too.
            return Ok(());
        }
        let forget = std::mem::take(&mut self.forget_statements);
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        *self.cancel_slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if forget {
            server.prepared.clear();
        }
        server.last_used = Instant::now();
        drop(server);
        Ok(())
    }

    /// Reads the server's session settings into the client's (they travel
    /// with the client to other server connections and into cache keys).
    fn capture_settings(&mut self) -> Boxed<'_, ()> {
        Box::pin(self.capture_settings_inline())
    }

    async fn capture_settings_inline(&mut self) {
        let user = self.user.clone();
        let Some(server) = self.server.as_mut() else {
            return;
        };
        match server.run_internal(&capture_sql(&user)).await {
            Ok(result) => {
                let mut settings = SessionParams::default();
                for row in result.rows {
                    if let [Some(name), Some(value)] = row.as_slice() {
                        settings.settings.insert(name.to_lowercase(), value.clone());
                    }
                }
                server.applied = settings.clone();
                self.settings = settings;
                // Cache keys include the settings.
                self.key_prefix = None;
                let application_name = self
                    .settings
                    .settings
                    .get("application_name")
                    .cloned()
                    .unwrap_or_default();
                if application_name != self.info.application_name {
                    self.info = Arc::new(self.info.with_application_name(application_name));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read session settings back; discarding the server connection");
                server.broken = true;
                if self.mode == PoolMode::Session {
                    // The settings are unknown now: stop caching for this session.
                    self.role_changed = true;
                }
            }
        }
    }

    /// Sends a FATAL error, flushes, and ends the session with `error`.
    fn fatal(
        &mut self,
        code: &str,
        text: &str,
        error: FrontendError,
    ) -> Boxed<'_, Result<(), FrontendError>> {
        message::error_response(&mut self.to_client, Severity::Fatal, code, text);
        Box::pin(async move {
            let _ = self.flush_client().await;
            Err(error)
        })
    }

    /// After the session: the server connection goes back to the pool only
    /// if it is clean; a client that left mid-transaction or mid-COPY gets
    /// its connection discarded (Postgres rolls the transaction back).
    fn finish(&mut self) -> Boxed<'_, ()> {
        Box::pin(self.finish_inline())
    }

    async fn finish_inline(&mut self) {
        self.context.cancels.unregister(self.key);
        if let (Some(cache), Some(pending)) = (self.cache.clone(), self.pending.take()) {
            // The connection ended between a write and its acknowledgement:
            // it may have committed, so invalidate anyway.
            if pending.may_have_committed() {
                cache.invalidate(&self.database, &pending.writes).await;
            }
        }
        let clean = self.is_idle();
        if let Some(mut server) = self.server.take() {
            if !clean {
                server.broken = true;
            } else if self.mode == PoolMode::Session && !server.broken {
                match server.run_internal("DISCARD ALL").await {
                    Ok(_) => {
                        server.applied = SessionParams::default();
                        server.prepared.clear();
                    }
                    Err(_) => server.broken = true,
                }
            }
            server.last_used = Instant::now();
        }
        let _ = self.client.shutdown().await;
    }
}

/// Moves answers due to the client into its buffer.
fn flush_due(due: &mut Vec<Bytes>, to_client: &mut BytesMut) {
    if due.is_empty() {
        return;
    }
    for bytes in due.drain(..) {
        to_client.extend_from_slice(&bytes);
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

/// DISCARD ALL / DISCARD PLANS / DEALLOCATE drop server-side statements:
/// whether `sql` contains `deallocate` or `discard` anywhere, in any case.
/// One pass that compares only where a `d` stands: it runs on every
/// statement text a client sends.
fn mentions_statement_reset(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let starts_with = |at: &[u8], word: &[u8]| {
        at.get(..word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
    };
    (0..bytes.len()).any(|i| {
        bytes[i] | 0x20 == b'd' && {
            let at = &bytes[i..];
            starts_with(at, b"deallocate") || starts_with(at, b"discard")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::mentions_statement_reset;

    #[test]
    fn statement_resets_are_found_in_any_case_and_place() {
        for sql in [
            "DEALLOCATE ALL",
            "deallocate p1",
            "SELECT 1; Discard All",
            "DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$",
            "x;discard plans",
        ] {
            assert!(mentions_statement_reset(sql), "{sql}");
        }
        for sql in ["SELECT 1", "SELECT dealloc FROM d", "", "d", "DISCAR"] {
            assert!(!mentions_statement_reset(sql), "{sql}");
        }
    }
}
