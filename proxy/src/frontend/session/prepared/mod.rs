//! A client's prepared statements as the session keeps them: its named
//! statements, its last unnamed one, and — in transaction mode — the
//! rewriting that lets them run on whichever server connection the client
//! holds (see `frontend/statements.rs` for the naming scheme). Session
//! mode forwards Parse, Bind and Describe as they are: the statements live
//! on the client's own server. What is answered without the server, and
//! when a dropped statement is forgotten, is `local.rs`.

mod execute;
mod local;

use std::sync::Arc;

use bytes::Bytes;

use self::execute::prepare_required;
use self::local::DeallocatePortal;

use super::settings::StatementEffects;
use super::upstream::Upstream;
use crate::backend::statement_names::StatementNames;
use crate::frontend::expect::Expect;
use crate::frontend::statements::{self, ParseMessage, Statements};
use crate::net::message::{self, ftag};
use crate::net::{Frame, NetError};

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
    /// The statements its text runs by name (see `execute.rs`).
    requires: Vec<(Arc<str>, Bytes)>,
}

/// The statement a Bind names, as the cache sees it.
pub struct Bound {
    pub text: Arc<str>,
    pub types: Bytes,
    /// The client's unnamed statement, already known from an earlier Parse.
    pub known_unnamed: bool,
}

#[derive(Default)]
pub struct ClientStatements {
    named: Statements,
    /// Boxed: a parked session carries a pointer (issue #20).
    unnamed: Option<Box<Unnamed>>,
    /// The held server connection has the client's unnamed statement.
    unnamed_on_server: bool,
    /// The client dropped server-side statements in a way pgstash cannot
    /// map (transaction mode; see [`StatementReset::Other`]): the server
    /// connection's statements are all deallocated before it is released.
    ///
    /// [`StatementReset::Other`]: pgstash_rules::StatementReset::Other
    forget_on_release: bool,
    /// The portal bound to run `DEALLOCATE` of one of the client's
    /// statements, until it is executed. Boxed: rare, and every idle
    /// session would carry its room.
    deallocating: Option<Box<DeallocatePortal>>,
}

impl ClientStatements {
    /// A new server connection is held: it has no unnamed statement.
    pub fn on_attach(&mut self) {
        self.unnamed_on_server = false;
    }

    /// The client's simple Query: Postgres drops the unnamed statement.
    /// On the client's own server (session mode) it then has none until
    /// its next unnamed Parse: a Bind of it is Postgres' 26000. A shared
    /// connection (transaction mode) may hold another client's unnamed
    /// statement, so there the client's is parsed again before a later
    /// Bind instead (never someone else's bound in its place).
    pub fn on_simple_query(&mut self, own_server: bool) {
        if own_server {
            self.unnamed = None;
        }
        self.unnamed_on_server = false;
    }

    /// pgstash ran a query of its own on the held connection (reading
    /// settings back, checking for session-bound state): that dropped the
    /// server's unnamed statement, but not the client's, which is parsed
    /// again before the client next uses it.
    pub fn on_internal_query(&mut self) {
        self.unnamed_on_server = false;
    }

    /// The client dropped server-side statements in a way pgstash cannot map.
    pub fn forget_on_release(&mut self) {
        self.forget_on_release = true;
    }

    /// Whether the connection's statements must all go before it is released.
    pub fn take_forget(&mut self) -> bool {
        std::mem::take(&mut self.forget_on_release)
    }

    /// `DEALLOCATE name` (transaction mode): the client's statement is
    /// forgotten; its server-side copies stay for other clients (they are
    /// named by content, not by client). Returns whether there was one.
    pub fn forget(&mut self, name: &[u8]) -> bool {
        self.named.remove(name)
    }

    /// `DEALLOCATE ALL` or `DISCARD ALL` ran on the server: the client's
    /// named statements are gone, as they would be on its own server.
    pub fn forget_all(&mut self) {
        self.named.clear();
    }

    /// The text of the statement a Bind names (`name` empty: the unnamed one).
    pub fn text_of(&self, name: &[u8]) -> Option<Arc<str>> {
        if name.is_empty() {
            self.unnamed.as_ref().map(|u| u.text.clone())
        } else {
            self.named.get(name).map(|s| s.query.clone())
        }
    }

    /// What a one-statement request binds: the unnamed statement when the
    /// request has no Parse and an unnamed Bind, or re-sends the same
    /// Parse as last time (drivers do, before every execution); else the
    /// request's own Parse, or a named statement.
    pub fn bound(&self, parse: Option<(&Frame, &ParseMessage)>, name: &[u8]) -> Option<Bound> {
        let unnamed = self.unnamed.as_ref().filter(|u| match parse {
            Some((frame, _)) => u.parse[..] == *frame.as_bytes(),
            None => name.is_empty(),
        });
        if let Some(u) = unnamed {
            return Some(Bound {
                text: u.text.clone(),
                types: u.types.clone(),
                known_unnamed: true,
            });
        }
        let (text, types) = match parse {
            Some((_, p)) => (p.query_text().into(), Bytes::copy_from_slice(p.types)),
            None if name.is_empty() => return None,
            None => {
                let s = self.named.get(name)?;
                (s.query.clone(), s.types.clone())
            }
        };
        Some(Bound {
            text,
            types,
            known_unnamed: false,
        })
    }

    /// A request answered from the cache carried this Parse: remember the
    /// statement as if the server had parsed it.
    pub fn served_parse(
        &mut self,
        frame: &Frame,
        parse: &ParseMessage,
        bound: Bound,
        names: &StatementNames,
    ) {
        if parse.name.is_empty() {
            if !bound.known_unnamed {
                self.unnamed = Some(Box::new(Unnamed {
                    parse: Bytes::copy_from_slice(frame.as_bytes()),
                    text: bound.text,
                    types: bound.types,
                    effects: None,
                    requires: Vec::new(),
                }));
            }
            self.unnamed_on_server = false;
        } else {
            self.named.insert(parse, names);
        }
    }

    /// Parse, Bind, Describe, Execute and (session-mode) Close, with a
    /// server connection held. Returns the effects of a parsed text.
    pub fn forward(
        &mut self,
        frame: &Frame,
        upstream: &mut Upstream,
        client: &mut bytes::BytesMut,
        rewrite: bool,
        effects_of: impl Fn(&str) -> StatementEffects,
    ) -> Result<Option<StatementEffects>, NetError> {
        match frame.tag() {
            ftag::PARSE => return self.parse(frame, upstream, client, rewrite, effects_of),
            ftag::BIND => {
                let name = statements::bind_statement(frame.body())?;
                if !rewrite || name.is_empty() {
                    if name.is_empty() {
                        self.ensure_unnamed(upstream);
                    }
                    upstream.send(frame.as_bytes(), Expect::Bind { statement: None });
                } else if let Some(server_name) = self.ensure_prepared(name, upstream) {
                    let bind = statements::rewrite_bind(frame.body(), &server_name)?;
                    let expect = Expect::Bind {
                        statement: Some(server_name),
                    };
                    upstream.send(&bind, expect);
                } else {
                    // Unknown name: Postgres reports 26000 with the client's name.
                    upstream.send(frame.as_bytes(), Expect::Bind { statement: None });
                }
            }
            ftag::DESCRIBE => {
                let (kind, name) = statements::decode_target(frame.body(), "Describe")?;
                if kind == b'P' {
                    upstream.send(frame.as_bytes(), Expect::DescribePortal);
                } else if !rewrite {
                    upstream.send(frame.as_bytes(), Expect::DescribeStatement);
                } else if name.is_empty() {
                    self.ensure_unnamed(upstream);
                    upstream.send(frame.as_bytes(), Expect::DescribeStatement);
                } else if let Some(server_name) = self.ensure_prepared(name, upstream) {
                    let describe = statements::target_frame(ftag::DESCRIBE, b'S', &server_name);
                    upstream.send(&describe, Expect::DescribeStatement);
                } else {
                    upstream.send(frame.as_bytes(), Expect::DescribeStatement);
                }
            }
            ftag::EXECUTE => {
                // Session mode: a `DEALLOCATE` of the client's statement
                // forgets it once its CommandComplete confirms it.
                let (portal, _) = statements::execute_parts(frame.body())?;
                let forget = self
                    .take_deallocation(portal)
                    .filter(|_| !rewrite)
                    .and_then(|name| self.forget_of(&name));
                upstream.send(frame.as_bytes(), Expect::Execute { forget });
            }
            _ => {
                let (kind, name) = statements::decode_target(frame.body(), "Close")?;
                let forget = (kind == b'S').then(|| self.forget_of(name)).flatten();
                upstream.send(frame.as_bytes(), Expect::Close { forget });
            }
        }
        Ok(None)
    }

    fn parse(
        &mut self,
        frame: &Frame,
        upstream: &mut Upstream,
        client: &mut bytes::BytesMut,
        rewrite: bool,
        effects_of: impl Fn(&str) -> StatementEffects,
    ) -> Result<Option<StatementEffects>, NetError> {
        let parse = ParseMessage::decode(frame.body())?;
        let effects = if parse.name.is_empty() {
            self.parse_unnamed(frame, &parse, effects_of)
        } else {
            effects_of(&parse.query_text())
        };
        // Transaction mode: a text that runs the client's statements by
        // name runs them by their server-side names.
        let renamed = rewrite.then(|| self.renamed_parse(&parse)).flatten();
        if let Some((text, requires)) = renamed {
            let parse = ParseMessage {
                name: parse.name,
                query: text.as_bytes(),
                types: parse.types,
            };
            return self.parse_renamed(&parse, requires, upstream, client, effects);
        }
        // Session mode forwards every Parse as it is (the names live on the
        // client's own server); transaction mode forwards the unnamed one
        // and manages named ones below.
        if !rewrite || parse.name.is_empty() {
            if parse.name.is_empty() {
                self.unnamed_on_server = true;
            } else {
                self.named.insert(&parse, &upstream.pool().statements);
            }
            let expect = Expect::Parse {
                forward: true,
                prepared: None,
                rename: None,
            };
            upstream.send(frame.as_bytes(), expect);
        } else if self.named.contains(parse.name) {
            // Let Postgres raise its own 42P05: re-parse under the existing
            // server-side name, then show the client's name.
            let client_name: Arc<str> = String::from_utf8_lossy(parse.name).into();
            if let Some(server_name) = self.ensure_prepared(parse.name, upstream) {
                let frame = statements::parse_frame(&server_name, parse.query, parse.types);
                let expect = Expect::Parse {
                    forward: true,
                    prepared: None,
                    rename: Some((server_name, client_name)),
                };
                upstream.send(&frame, expect);
            }
        } else {
            let statement = self.named.insert(&parse, &upstream.pool().statements);
            let prepared_here = upstream
                .conn()
                .is_some_and(|c| !c.prepared.insert(statement.server_name.clone()));
            if prepared_here {
                upstream.answer_locally(message::parse_complete(), client);
            } else {
                let expect = Expect::Parse {
                    forward: true,
                    prepared: Some(statement.server_name),
                    rename: None,
                };
                upstream.send(&statement.parse, expect);
            }
        }
        Ok(Some(effects))
    }

    /// Makes sure the held server connection has the client's statement
    /// `name`; returns its server-side name (None for an unknown name).
    fn ensure_prepared(&mut self, name: &[u8], upstream: &mut Upstream) -> Option<Arc<str>> {
        let statement = self.named.get(name)?.clone();
        if upstream.skipping() {
            return Some(statement.server_name);
        }
        prepare_required(&statement.requires, upstream);
        let missing = upstream
            .conn()
            .is_some_and(|c| c.prepared.insert(statement.server_name.clone()));
        if missing {
            let expect = Expect::Parse {
                forward: false,
                prepared: Some(statement.server_name.clone()),
                rename: None,
            };
            upstream.send(&statement.parse, expect);
        }
        Some(statement.server_name)
    }

    /// Re-sends the client's unnamed statement if this server has not seen it.
    fn ensure_unnamed(&mut self, upstream: &mut Upstream) {
        if self.unnamed_on_server || upstream.skipping() {
            return;
        }
        if let Some(unnamed) = self.unnamed.as_ref() {
            let parse = unnamed.parse.clone();
            prepare_required(&unnamed.requires, upstream);
            upstream.send(
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
    fn parse_unnamed(
        &mut self,
        frame: &Frame,
        parse: &ParseMessage,
        effects_of: impl Fn(&str) -> StatementEffects,
    ) -> StatementEffects {
        let known = self
            .unnamed
            .as_ref()
            .filter(|u| u.parse[..] == *frame.as_bytes())
            .and_then(|u| u.effects);
        if let Some(effects) = known {
            return effects;
        }
        let text: Arc<str> = parse.query_text().into();
        let effects = effects_of(&text);
        self.unnamed = Some(Box::new(Unnamed {
            parse: Bytes::copy_from_slice(frame.as_bytes()),
            text,
            types: Bytes::copy_from_slice(parse.types),
            effects: Some(effects),
            requires: Vec::new(),
        }));
        effects
    }
}
