//! What a session answers about the client's prepared statements itself,
//! and when it forgets one.
//!
//! Transaction mode: the server-side copies of a client's statement are
//! named by content and shared by clients, so dropping the client's name
//! never reaches the server. A named Parse already known to the pool, the
//! Close of a named statement and SQL `DEALLOCATE name` of one of the
//! client's statements run through the extended protocol (psycopg evicts
//! its statements so: Parse, Bind, Describe, Execute of the text) are
//! answered here, as Postgres would answer them on the client's own server.
//!
//! Session mode: the Close or `DEALLOCATE name` goes to the client's own
//! server, and the name is forgotten once the server confirms it (a
//! [`Forget`] carried by the expected answer), so that what the session
//! knows of a statement (its text: the cache's decisions and the writes
//! it invalidates) is never dropped while the server still has it.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pgstash_rules::{statement_reset, StatementReset};

use super::super::settings::StatementEffects;
use super::super::upstream::Upstream;
use super::ClientStatements;
use crate::frontend::expect::Forget;
use crate::frontend::statements::{self, ParseMessage};
use crate::net::message::{self, ftag};
use crate::net::{Frame, NetError};

/// The portal a Bind of `DEALLOCATE name` made, for one of the client's
/// statements, until it is executed.
pub struct DeallocatePortal {
    portal: Vec<u8>,
    name: Vec<u8>,
}

/// NoData: the answer to a Describe of a `DEALLOCATE` portal.
const NO_DATA: &[u8] = b"n\0\0\0\x04";
/// BindComplete.
const BIND_COMPLETE: &[u8] = b"2\0\0\0\x04";

impl ClientStatements {
    /// Answers a named Parse whose statement is known to parse in this pool
    /// without taking a server connection (transaction mode). Clients such
    /// as pgbench prepare synchronously while other connections of theirs
    /// hold transactions open; needing a server here could deadlock them on
    /// a small pool. Returns the effects to apply when it answered.
    pub fn parse_without_server(
        &mut self,
        frame: &Frame,
        upstream: &mut Upstream,
        client: &mut BytesMut,
        effects_of: impl Fn(&str) -> StatementEffects,
    ) -> Result<Option<StatementEffects>, NetError> {
        // The unnamed statement (an empty name first in the body) always
        // goes to a server; drivers send one per query, so it is not decoded
        // here only to be decoded again.
        if frame.body().first() == Some(&0) {
            return Ok(None);
        }
        let parse = ParseMessage::decode(frame.body())?;
        if parse.name.is_empty() || self.named.contains(parse.name) {
            return Ok(None);
        }
        let names = &upstream.pool().statements;
        let server_name = names.current(statements::server_name(parse.query, parse.types));
        if !names.is_known(&server_name) {
            return Ok(None);
        }
        let effects = effects_of(&parse.query_text());
        self.named.insert(&parse, names);
        client.extend_from_slice(&message::parse_complete());
        Ok(Some(effects))
    }

    /// A Close of a named statement in transaction mode is answered here
    /// (the server-side statement stays for other clients). Returns false
    /// when the Close must go to the server.
    pub fn close_locally(
        &mut self,
        frame: &Frame,
        upstream: &mut Upstream,
        client: &mut BytesMut,
    ) -> Result<bool, NetError> {
        let (kind, name) = statements::decode_target(frame.body(), "Close")?;
        if kind != b'S' || name.is_empty() {
            return Ok(false);
        }
        self.named.remove(name);
        upstream.answer_locally(message::close_complete(), client);
        Ok(true)
    }

    /// A Bind, Describe or Execute on its way: notes the portal of a Bind
    /// that runs `DEALLOCATE name` for one of the client's statements and,
    /// when `answer` (transaction mode, outside a failed transaction),
    /// answers that portal's Bind, Describe and Execute here — forgetting
    /// the statement at its Execute. Returns whether it answered.
    pub fn deallocation(
        &mut self,
        frame: &Frame,
        upstream: &mut Upstream,
        client: &mut BytesMut,
        answer: bool,
    ) -> Result<bool, NetError> {
        let bytes = match frame.tag() {
            ftag::BIND => {
                let bind = statements::bind_parts(frame.body())?;
                if self.portal_is(bind.portal) {
                    self.deallocating = None;
                }
                let name = self
                    .text_of(bind.statement)
                    .and_then(|text| deallocated_name(&text))
                    .filter(|name| self.named.contains(name.as_bytes()));
                let Some(name) = name.filter(|_| without_parameters(bind.rest)) else {
                    return Ok(false);
                };
                self.deallocating = Some(Box::new(DeallocatePortal {
                    portal: bind.portal.to_vec(),
                    name: name.into_bytes(),
                }));
                Bytes::from_static(BIND_COMPLETE)
            }
            ftag::DESCRIBE => {
                let (kind, portal) = statements::decode_target(frame.body(), "Describe")?;
                if kind != b'P' || !self.portal_is(portal) {
                    return Ok(false);
                }
                Bytes::from_static(NO_DATA)
            }
            ftag::EXECUTE if answer => {
                let (portal, _) = statements::execute_parts(frame.body())?;
                let Some(name) = self.take_deallocation(portal) else {
                    return Ok(false);
                };
                self.named.remove(&name);
                let mut out = BytesMut::new();
                message::command_complete(&mut out, "DEALLOCATE");
                out.freeze()
            }
            _ => return Ok(false),
        };
        if answer {
            upstream.answer_locally(bytes, client);
        }
        Ok(answer)
    }

    /// The statement the `DEALLOCATE` bound to `portal` drops, if any.
    pub(super) fn take_deallocation(&mut self, portal: &[u8]) -> Option<Vec<u8>> {
        if !self.portal_is(portal) {
            return None;
        }
        self.deallocating.take().map(|d| d.name)
    }

    fn portal_is(&self, portal: &[u8]) -> bool {
        self.deallocating
            .as_ref()
            .is_some_and(|d| d.portal == portal)
    }

    /// What to forget when the server confirms it dropped the client's
    /// named statement `name` (session mode; None for a name the client
    /// did not prepare with Parse).
    pub(super) fn forget_of(&self, name: &[u8]) -> Option<Box<Forget>> {
        let statement = self.named.get(name).filter(|_| !name.is_empty())?;
        Some(Box::new(Forget {
            name: name.into(),
            text: statement.query.clone(),
        }))
    }

    /// A simple Query of session mode: what it drops, when its whole text
    /// is `DEALLOCATE name` of a statement the client prepared with Parse.
    pub fn deallocated_by(&self, sql: &str) -> Option<Box<Forget>> {
        self.forget_of(deallocated_name(sql)?.as_bytes())
    }

    /// The server confirmed it dropped a statement: forgotten, unless the
    /// name was prepared again since (it then stands for a newer one).
    pub fn forget_confirmed(&mut self, forget: Forget) {
        let same = self
            .named
            .get(&forget.name)
            .is_some_and(|s| Arc::ptr_eq(&s.query, &forget.text));
        if same {
            self.named.remove(&forget.name);
        }
    }
}

/// The statement a text drops when it is one `DEALLOCATE name`. The first
/// letter is looked at before anything is parsed: most texts Bind runs
/// start with another.
fn deallocated_name(text: &str) -> Option<String> {
    let first = text.trim_start().bytes().next()?;
    if first | 0x20 != b'd' && first != b'-' && first != b'/' {
        return None;
    }
    match statement_reset(text)? {
        StatementReset::Deallocate(name) => Some(name),
        _ => None,
    }
}

/// Whether a Bind's tail binds no parameter values (`DEALLOCATE` takes
/// none; with some, Postgres' own error is wanted).
fn without_parameters(rest: &[u8]) -> bool {
    statements::bind_values(rest).is_ok_and(|values| values.is_empty())
}
