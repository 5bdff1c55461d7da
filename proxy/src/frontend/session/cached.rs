//! The session's side of the cache: extended-protocol messages held until
//! their Sync (so that a whole one-statement request can be answered from
//! the cache without a server connection), the answer being captured to
//! fill an entry, and the session's part of its cache keys.
//!
//! Simple queries are routed as they arrive. A held request of one
//! statement (`[Parse] Bind [Describe] Execute Sync`) is routed at its
//! Sync; anything else held is sent on unchanged, each Bind's statement
//! routed only for the writes it makes.

use std::sync::Arc;

use bytes::BytesMut;
use pgstash_rules::SessionFacts;

use super::prepared::{Bound, ClientStatements};
use crate::backend::connect::ConnectTarget;
use crate::cache::{Ask, Cache, Fill, Form, Gate, Identity, KeyScope, Routing};
use crate::config::PoolMode;
use crate::frontend::error::FrontendError;
use crate::frontend::statements::{self, ParseMessage};
use crate::net::frame::FrameRef;
use crate::net::message::{ftag, tag};
use crate::net::Frame;

/// Extended messages held before they are sent on without caching.
pub const MAX_BATCH: usize = 64;

/// A BindComplete message.
pub const BIND_COMPLETE: &[u8] = b"2\0\0\0\x04";

/// What to do with a client message (see [`CachePath::intake`]).
pub enum Intake {
    /// Held until the request's Sync.
    Held,
    /// Send these on, in order: the messages held so far (they are not a
    /// request the cache can answer whole), then `then`.
    Release {
        held: Vec<Frame>,
        then: Option<Frame>,
    },
    /// A whole request up to its Sync: route it, then send it on unless
    /// the cache answered it.
    Request { held: Vec<Frame>, sync: Frame },
}

/// The parts of a one-statement extended request, as indices into it.
struct Unit {
    parse: Option<usize>,
    bind: usize,
    describe: bool,
}

/// An answer being captured for a cache fill.
struct ActiveFill {
    fill: Fill,
    bytes: BytesMut,
    ok: bool,
}

pub struct CachePath {
    cache: Arc<Cache>,
    held: Vec<Frame>,
    /// Boxed: most sessions are not filling, and it is a few hundred bytes.
    fill: Option<Box<ActiveFill>>,
    scope: KeyScope,
}

impl CachePath {
    #[inline]
    pub fn new(cache: Arc<Cache>) -> CachePath {
        CachePath {
            cache,
            held: Vec::new(),
            fill: None,
            scope: KeyScope::default(),
        }
    }

    /// Holds extended messages until their Sync (unless the session skips
    /// them anyway), and says when what is held must go.
    #[inline]
    pub fn intake(&mut self, frame: Frame, skipping: bool) -> Intake {
        match frame.tag() {
            ftag::PARSE | ftag::BIND | ftag::DESCRIBE | ftag::EXECUTE | ftag::CLOSE
                if !skipping =>
            {
                self.held.push(frame);
                if self.held.len() > MAX_BATCH {
                    return Intake::Release {
                        held: std::mem::take(&mut self.held),
                        then: None,
                    };
                }
                Intake::Held
            }
            ftag::SYNC if !self.held.is_empty() => Intake::Request {
                held: std::mem::take(&mut self.held),
                sync: frame,
            },
            _ => Intake::Release {
                held: std::mem::take(&mut self.held),
                then: Some(frame),
            },
        }
    }

    /// Messages are held: the session is not idle.
    #[inline]
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// An answer is being captured.
    #[inline]
    pub fn is_filling(&self) -> bool {
        self.fill.is_some()
    }

    /// Asks the cache about one statement (see [`Cache::route`]).
    #[inline]
    pub fn route<'a>(
        &'a mut self,
        sql: &'a str,
        form: Form<'a>,
        gate: Gate,
        facts: SessionFacts,
        who: Identity<'a>,
        target: &'a (dyn Fn() -> ConnectTarget + Send + Sync),
    ) -> Routing<'a> {
        let ask = Ask {
            sql,
            form,
            gate,
            facts,
            who,
            scope: &mut self.scope,
            target,
        };
        self.cache.route(ask)
    }

    /// The session's settings changed: keys are built anew.
    #[inline]
    pub fn settings_changed(&mut self) {
        self.scope.reset();
    }

    /// Captures the answer of a request that goes upstream for `fill`.
    #[inline]
    pub fn start_fill(&mut self, fill: Fill) {
        self.fill = Some(Box::new(ActiveFill {
            fill,
            bytes: BytesMut::new(),
            ok: true,
        }));
    }

    /// The request will not run: waiters for the fill go upstream.
    #[inline]
    pub fn drop_fill(&mut self) {
        self.fill = None;
    }

    /// Adds a server message to the fill being captured, or abandons the
    /// fill when the answer is not one that can be replayed (notices,
    /// errors, COPY, suspended portals) or grows past the rule's limit. At
    /// ReadyForQuery a whole answer fills the entry.
    #[inline]
    pub fn capture(&mut self, frame: FrameRef<'_>) {
        let Some(active) = self.fill.as_mut() else {
            return;
        };
        match frame.tag() {
            tag::ROW_DESCRIPTION | tag::DATA_ROW | tag::COMMAND_COMPLETE => {
                if !active.ok {
                    return;
                }
                let limit = active.fill.read.rule.max_entry_bytes;
                if (active.bytes.len() + frame.len()) as u64 > limit {
                    active.ok = false;
                    active.bytes = BytesMut::new();
                } else {
                    active.bytes.extend_from_slice(frame.as_bytes());
                }
            }
            tag::READY_FOR_QUERY => {
                if let Some(done) = self.fill.take() {
                    let done = *done;
                    let idle = frame.body().first() == Some(&b'I');
                    if done.ok && idle && !done.bytes.is_empty() {
                        self.cache.complete_fill(done.fill, done.bytes.freeze());
                    }
                }
            }
            tag::PARSE_COMPLETE | tag::BIND_COMPLETE | tag::PARAMETER_STATUS => {}
            _ => active.ok = false,
        }
    }
}

/// A held request the cache may answer whole, decoded.
pub struct UnitRequest<'a> {
    /// The request's Parse, if it has one.
    pub parse: Option<(&'a Frame, ParseMessage<'a>)>,
    /// The statement it binds.
    pub bound: Bound,
    /// The Bind's formats and values.
    bind: &'a [u8],
    describe: bool,
}

impl<'a> UnitRequest<'a> {
    /// `held` as one statement the cache may answer, if it is one: a
    /// single unit, binding a statement the session knows, whose text
    /// parameters hold no time-sensitive values, and (session mode) that
    /// prepares no named statement (it must live on the client's server).
    #[inline]
    pub fn of(
        held: &'a [Frame],
        statements: &ClientStatements,
        mode: PoolMode,
    ) -> Result<Option<UnitRequest<'a>>, FrontendError> {
        let Some(unit) = single_unit(held) else {
            return Ok(None);
        };
        let parse = match unit.parse {
            Some(i) => Some((
                &held[i],
                ParseMessage::decode(held[i].body())
                    .map_err(|e| FrontendError::Protocol(e.to_string()))?,
            )),
            None => None,
        };
        let Ok(bind) = statements::bind_parts(held[unit.bind].body()) else {
            return Ok(None);
        };
        let parsed = parse.as_ref().map(|(frame, p)| (*frame, p));
        let Some(bound) = statements.bound(parsed, bind.statement) else {
            return Ok(None);
        };
        let named_parse = parse.as_ref().is_some_and(|(_, p)| !p.name.is_empty());
        if mode == PoolMode::Session && named_parse {
            return Ok(None);
        }
        if binds_time_sensitive_values(bind.rest) != Some(false) {
            return Ok(None);
        }
        Ok(Some(UnitRequest {
            parse,
            bound,
            bind: bind.rest,
            describe: unit.describe,
        }))
    }

    /// What besides its text determines the answer.
    #[inline]
    pub fn form(&self) -> Form<'_> {
        Form::Extended {
            types: &self.bound.types,
            bind: self.bind,
            describe: self.describe,
        }
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

/// Whether a Bind's text-format values include one whose meaning depends
/// on when it is read (`'now'`, `'today'`…): such a request is not cached.
fn binds_time_sensitive_values(bind_rest: &[u8]) -> Option<bool> {
    let values = statements::bind_values(bind_rest).ok()?;
    Some(values.iter().any(|(format, value)| {
        *format == 0
            && value
                .and_then(|v| std::str::from_utf8(v).ok())
                .is_some_and(pgstash_rules::is_time_sensitive_input)
    }))
}
