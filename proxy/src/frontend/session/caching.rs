//! The cache path of a session.
//!
//! Simple queries are decided as they arrive. Extended-protocol messages are
//! held until Sync; a request of one statement (`[Parse] Bind [Describe]
//! Execute Sync`) is answered from the cache when it hits, without touching
//! a server connection; anything else is replayed to the server unchanged.
//! A leader's miss captures the answer (RowDescription, DataRows,
//! CommandComplete) and fills the entry when its ReadyForQuery arrives.
//!
//! Writes are noted as they are forwarded. Their acknowledgement (the
//! CommandComplete of an autocommit write or of COMMIT, and the
//! ReadyForQuery after it) is held back until the invalidation is recorded;
//! a ROLLBACK records nothing (G2, G7).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pgstash_rules::{Analysis, Rule, SessionFacts};

use super::{FrontendError, Session, Unnamed};
use crate::cache::entry;
pub use crate::cache::Writes;
use crate::cache::{Cache, Classified, Fill, KeyBase, KeyBuilder, Plan, Read, ReadDecision};
use crate::config::PoolMode;
use crate::frontend::statements::{self, ParseMessage};
use crate::net::frame::FrameRef;
use crate::net::message::{self, ftag, tag};
use crate::net::Frame;
use crate::Boxed;

/// Extended messages held before a batch is replayed without caching.
pub const MAX_BATCH: usize = 64;

/// A BindComplete message.
const BIND_COMPLETE: &[u8] = b"2\0\0\0\x04";

/// An answer being captured for a cache fill.
pub struct ActiveFill {
    fill: Fill,
    bytes: BytesMut,
    ok: bool,
}

/// Tables written and not yet invalidated.
pub struct PendingWrites {
    pub writes: Writes,
    /// The write ran outside an explicit transaction: its own
    /// CommandComplete is the acknowledgement.
    autocommit: bool,
    /// The last transaction-ending command was a ROLLBACK.
    rolled_back: bool,
}

impl PendingWrites {
    /// Whether the writes may have committed (used when a connection ends
    /// before the acknowledgement).
    pub fn may_have_committed(&self) -> bool {
        self.autocommit && !self.rolled_back
    }
}

/// Adds a server message to the fill being captured, or abandons the fill
/// when the answer is not one that can be replayed (notices, errors, COPY,
/// suspended portals) or grows past the rule's limit.
pub fn capture(fill: &mut Option<ActiveFill>, frame: FrameRef<'_>, cache: Option<&Cache>) {
    let Some(active) = fill.as_mut() else { return };
    match frame.tag() {
        tag::ROW_DESCRIPTION | tag::DATA_ROW | tag::COMMAND_COMPLETE => {
            if active.ok {
                if (active.bytes.len() + frame.len()) as u64 > active.fill.read.rule.max_entry_bytes
                {
                    active.ok = false;
                    active.bytes = BytesMut::new();
                } else {
                    active.bytes.extend_from_slice(frame.as_bytes());
                }
            }
        }
        tag::READY_FOR_QUERY => {
            if let Some(done) = fill.take() {
                let idle = frame.body().first() == Some(&b'I');
                if done.ok && idle && !done.bytes.is_empty() {
                    if let Some(cache) = cache {
                        cache.complete_fill(done.fill, done.bytes.freeze());
                    }
                }
            }
        }
        tag::PARSE_COMPLETE | tag::BIND_COMPLETE | tag::PARAMETER_STATUS => {}
        _ => active.ok = false,
    }
}

/// Notes a CommandComplete while writes are pending: a COMMIT (or an
/// autocommit write) starts holding client output; a ROLLBACK cancels.
pub fn on_command_complete(pending: &mut Option<PendingWrites>, holding: &mut bool, body: &[u8]) {
    let Some(p) = pending.as_mut() else { return };
    let tag = body.split(|b| *b == 0).next().unwrap_or_default();
    if tag == b"ROLLBACK" {
        p.rolled_back = true;
    } else if tag.starts_with(b"COMMIT") || tag.starts_with(b"PREPARE TRANSACTION") {
        p.rolled_back = false;
        *holding = true;
    } else if p.autocommit {
        *holding = true;
    }
}

/// At ReadyForQuery: the writes to invalidate now (transaction over and not
/// rolled back), if any. Inside a transaction output flows again and the
/// COMMIT becomes the acknowledgement to wait for.
pub fn on_ready(
    pending: &mut Option<PendingWrites>,
    holding: &mut bool,
    status: u8,
) -> Option<Writes> {
    let p = pending.as_mut()?;
    if status != b'I' {
        *holding = false;
        p.autocommit = false;
        p.rolled_back = false;
        return None;
    }
    let p = pending.take()?;
    if p.rolled_back {
        *holding = false;
        return None;
    }
    Some(p.writes)
}

/// The parts of a one-statement extended request.
struct Unit {
    parse: Option<usize>,
    bind: usize,
    describe: bool,
}

impl Session {
    /// Nothing in flight, no transaction: the only state in which a request
    /// may be answered from (or fill) the cache.
    fn quiescent(&self) -> bool {
        self.expect.settled()
            && !self.unsynced
            && !self.in_copy
            && self.status == b'I'
            && self.fill.is_none()
            && !self.local_skip
            && self.pending.is_none()
            && !self.role_changed
            && !self.session_objects
    }

    /// Counts a read that skipped the cache because of the session's state
    /// (open transaction, changed role); other reasons are not counted.
    fn count_unquiet_bypass(&self) {
        let reason = if self.role_changed {
            "role_changed"
        } else if self.status != b'I' {
            "in_transaction"
        } else {
            return;
        };
        self.context
            .metrics
            .cache_bypass
            .with_label_values(&[reason])
            .inc();
    }

    fn facts(&self) -> SessionFacts {
        SessionFacts {
            in_transaction: self.status != b'I',
            role_changed: self.role_changed,
        }
    }

    pub(super) fn note_writes(&mut self, writes: Writes) {
        match self.pending.as_mut() {
            Some(p) => {
                p.writes.tables.extend(writes.tables);
                p.writes.all |= writes.all;
                p.writes.ddl |= writes.ddl;
            }
            None => {
                self.pending = Some(PendingWrites {
                    writes,
                    autocommit: self.status == b'I',
                    rolled_back: false,
                })
            }
        }
    }

    /// Notes the text and the writes of the statement a Bind runs.
    pub(super) fn note_bound_statement(&mut self, name: &[u8]) {
        let sql = if name.is_empty() {
            self.unnamed.as_ref().map(|u| u.text.clone())
        } else {
            self.statements.get(name).map(|s| s.query.clone())
        };
        let Some(sql) = sql else { return };
        self.request_text(sql.clone());
        let Some(cache) = self.cache.clone() else {
            return;
        };
        if let Some(writes) = cache.writes(&sql) {
            self.request_path("write");
            self.note_writes(writes);
        }
    }

    /// The cache path of a simple Query. Returns true when the answer was
    /// served from the cache (the caller adds ReadyForQuery).
    pub(super) fn cached_query<'a>(
        &'a mut self,
        frame: &'a Frame,
    ) -> Boxed<'a, Result<bool, FrontendError>> {
        Box::pin(self.cached_query_inline(frame))
    }

    async fn cached_query_inline(&mut self, frame: &Frame) -> Result<bool, FrontendError> {
        let Some(cache) = self.cache.clone() else {
            return Ok(false);
        };
        let body = frame.body();
        let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body)).into_owned();
        self.request_text(sql.as_str().into());
        let analysis = match cache.classify(&sql) {
            Classified::Write(writes) => {
                self.request_path("write");
                self.note_writes(writes);
                return Ok(false);
            }
            Classified::Read(analysis) => analysis,
        };
        if !self.quiescent() {
            self.count_unquiet_bypass();
            return Ok(false);
        }
        let Some(read) = self.decide_read(&cache, &sql, analysis).await else {
            return Ok(false);
        };
        let base = self.key_base("simple/1", &read.rule, |k| {
            k.field(sql.as_bytes());
        });
        self.lookup(&cache, &base, &read, &[]).await
    }

    async fn decide_read(
        &mut self,
        cache: &Arc<Cache>,
        sql: &str,
        analysis: Option<Arc<Analysis>>,
    ) -> Option<Arc<Read>> {
        if let Some(analysis) = &analysis {
            if let Some(read) = cache.remembered(analysis, self.facts(), &self.database) {
                return Some(read);
            }
        }
        let (context, database, user) = (&self.context, &self.database, &self.user);
        let decision = cache
            .decide(sql, analysis, self.facts(), database, || {
                context.connect_target(database, user)
            })
            .await;
        match decision {
            ReadDecision::Serve(read) => Some(read),
            ReadDecision::Bypass(reason) => {
                self.context
                    .metrics
                    .cache_bypass
                    .with_label_values(&[reason.label()])
                    .inc();
                None
            }
            ReadDecision::NotARead => None,
        }
    }

    /// Looks the request up; on a hit writes `prefix` (ParseComplete,
    /// BindComplete…) and the entry to the client.
    async fn lookup(
        &mut self,
        cache: &Arc<Cache>,
        base: &KeyBase,
        read: &Arc<Read>,
        prefix: &[&[u8]],
    ) -> Result<bool, FrontendError> {
        self.request().rule = Some(read.rule_name.clone());
        match cache.lookup(base, read).await {
            Plan::Hit(bytes) => {
                for part in prefix {
                    self.to_client.extend_from_slice(part);
                }
                self.to_client.extend_from_slice(&bytes);
                self.context
                    .metrics
                    .cache_bytes_served
                    .inc_by(bytes.len() as u64);
                self.request_path("hit");
                self.request().rows = entry::rows(&bytes);
                self.finish_request();
                Ok(true)
            }
            Plan::Fill(fill) => {
                self.request_path("miss");
                self.fill = Some(ActiveFill {
                    fill,
                    bytes: BytesMut::new(),
                    ok: true,
                });
                Ok(false)
            }
            Plan::Upstream => {
                self.request_path("miss");
                Ok(false)
            }
            Plan::NotPaying => {
                self.request_path("bypass");
                Ok(false)
            }
        }
    }

    /// The key's base: database, role (unless shared), settings, then the
    /// request's own fields.
    ///
    /// The session's part is hashed once per (domain, shared) and the hash
    /// state reused: it was a third of the SHA-256 work of every lookup.
    fn key_base(
        &mut self,
        domain: &'static str,
        rule: &Rule,
        request: impl FnOnce(&mut KeyBuilder),
    ) -> KeyBase {
        let mut key = match &self.key_prefix {
            Some((d, shared, prefix)) if *d == domain && *shared == rule.shared => prefix.clone(),
            _ => {
                let prefix = self.session_key_prefix(domain, rule.shared);
                self.key_prefix = Some((domain, rule.shared, prefix.clone()));
                prefix
            }
        };
        request(&mut key);
        key.finish()
    }

    fn session_key_prefix(&self, domain: &str, shared: bool) -> KeyBuilder {
        let mut key = KeyBuilder::new(domain);
        key.field(self.database.as_bytes());
        key.field(if shared { b"" } else { self.user.as_bytes() });
        for (name, value) in &self.settings.settings {
            if name != "application_name" {
                key.field(name.as_bytes()).field(value.as_bytes());
            }
        }
        key.field(b"--");
        key
    }

    /// Sends the held extended messages on without caching.
    pub(super) fn replay_batch(&mut self) -> Boxed<'_, Result<(), FrontendError>> {
        Box::pin(async move {
            for frame in std::mem::take(&mut self.batch) {
                self.dispatch(frame).await?;
            }
            Ok(())
        })
    }

    /// At Sync: answers the held request from the cache if it can (true),
    /// otherwise replays it (possibly as the leader of a fill).
    pub(super) fn process_batch(&mut self) -> Boxed<'_, Result<bool, FrontendError>> {
        Box::pin(self.process_batch_inline())
    }

    async fn process_batch_inline(&mut self) -> Result<bool, FrontendError> {
        if !self.quiescent() {
            if single_unit(&self.batch).is_some() {
                self.count_unquiet_bypass();
            }
        } else {
            if let Some(unit) = single_unit(&self.batch) {
                if self.cached_unit(&unit).await? {
                    self.batch.clear();
                    return Ok(true);
                }
            }
        }
        self.replay_batch().await?;
        Ok(false)
    }

    async fn cached_unit(&mut self, unit: &Unit) -> Result<bool, FrontendError> {
        let Some(cache) = self.cache.clone() else {
            return Ok(false);
        };
        let batch = self.batch.clone();
        let parse = match unit.parse {
            Some(i) => Some(
                ParseMessage::decode(batch[i].body())
                    .map_err(|e| FrontendError::Protocol(e.to_string()))?,
            ),
            None => None,
        };
        let bind_body = batch[unit.bind].body();
        let Ok(statements::BindParts {
            statement: statement_name,
            rest: bind_rest,
            ..
        }) = statements::bind_parts(bind_body)
        else {
            return Ok(false);
        };
        // The client's unnamed statement, when the unit binds it: either
        // no Parse and an unnamed Bind, or the same Parse as last time
        // (drivers re-send it before every execution).
        let unnamed = self.unnamed.as_ref().filter(|u| match unit.parse {
            Some(i) => u.parse[..] == *batch[i].as_bytes(),
            None => statement_name.is_empty(),
        });
        let known = unnamed.is_some();
        let (sql, types): (Arc<str>, Bytes) = match (&parse, unnamed) {
            (_, Some(u)) => (u.text.clone(), u.types.clone()),
            (Some(p), None) => (p.query_text().into(), Bytes::copy_from_slice(p.types)),
            (None, None) if statement_name.is_empty() => return Ok(false),
            (None, None) => match self.statements.get(statement_name) {
                Some(s) => (s.query.clone(), s.types.clone()),
                None => return Ok(false),
            },
        };
        let Classified::Read(analysis) = cache.classify(&sql) else {
            return Ok(false);
        };
        // Session mode keeps the client's named statements on its server;
        // a Parse answered here would leave it missing there.
        let named_parse = parse.as_ref().is_some_and(|p| !p.name.is_empty());
        if self.mode == PoolMode::Session && named_parse {
            return Ok(false);
        }
        // The literal values of bound text parameters may be 'now' & co.
        let Ok(values) = statements::bind_values(bind_rest) else {
            return Ok(false);
        };
        let time_sensitive = values.iter().any(|(format, value)| {
            *format == 0
                && value
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .is_some_and(pgstash_rules::is_time_sensitive_input)
        });
        if time_sensitive {
            return Ok(false);
        }
        self.request_text(sql.clone());
        let Some(read) = self.decide_read(&cache, &sql, analysis).await else {
            return Ok(false);
        };
        let describe = unit.describe;
        let base = self.key_base("extended/1", &read.rule, |k| {
            k.field(sql.as_bytes())
                .field(&types)
                .field(bind_rest)
                .field(&[describe as u8]);
        });
        let parse_complete = message::parse_complete();
        let prefix: Vec<&[u8]> = match parse {
            Some(_) => vec![&parse_complete, BIND_COMPLETE],
            None => vec![BIND_COMPLETE],
        };
        if !self.lookup(&cache, &base, &read, &prefix).await? {
            return Ok(false);
        }
        // Served: remember the statement the client just prepared.
        if let (Some(i), Some(parse)) = (unit.parse, parse) {
            if parse.name.is_empty() {
                if !known {
                    self.unnamed = Some(Unnamed {
                        parse: Bytes::copy_from_slice(batch[i].as_bytes()),
                        text: sql,
                        types,
                        effects: None,
                    });
                }
                self.unnamed_on_server = false;
            } else {
                self.statements.insert(&parse);
            }
        }
        Ok(true)
    }
}

/// Recognizes `[Parse] Bind [Describe portal] Execute` on the unnamed
/// portal with no row limit: the requests the cache answers.
fn single_unit(batch: &[Frame]) -> Option<Unit> {
    let mut i = 0;
    let mut parse = None;
    let mut parse_name: Option<Vec<u8>> = None;
    if batch.get(i)?.tag() == ftag::PARSE {
        let p = ParseMessage::decode(batch[i].body()).ok()?;
        parse_name = Some(p.name.to_vec());
        parse = Some(i);
        i += 1;
    }
    let bind_index = i;
    if batch.get(i)?.tag() != ftag::BIND {
        return None;
    }
    let bind = statements::bind_parts(batch[i].body()).ok()?;
    if !bind.portal.is_empty() || parse_name.as_deref().is_some_and(|n| n != bind.statement) {
        return None;
    }
    i += 1;
    let mut describe = false;
    if batch.get(i)?.tag() == ftag::DESCRIBE {
        let (kind, name) = statements::decode_target(batch[i].body(), "Describe").ok()?;
        if kind != b'P' || !name.is_empty() {
            return None;
        }
        describe = true;
        i += 1;
    }
    if batch.get(i)?.tag() != ftag::EXECUTE {
        return None;
    }
    let (portal, max_rows) = statements::execute_parts(batch[i].body()).ok()?;
    if !portal.is_empty() || max_rows != 0 || i + 1 != batch.len() {
        return None;
    }
    Some(Unit {
        parse,
        bind: bind_index,
        describe,
    })
}
