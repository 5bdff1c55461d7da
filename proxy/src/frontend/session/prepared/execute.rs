//! SQL `EXECUTE name` of the client's own protocol-level statements, in
//! transaction mode. The client's `foobar` lives on the server connections
//! under a content-derived name (`frontend/statements.rs`), so a text that
//! runs it by name — a simple Query, or the text of a statement the client
//! prepares (asyncpg prepares `EXECUTE foobar` itself) — is sent with the
//! server-side name, the statement prepared first on a connection that
//! lacks it. A statement whose text runs others keeps them as its
//! `requires`: wherever it is prepared, they are prepared first.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::super::settings::StatementEffects;
use super::super::upstream::Upstream;
use super::{ClientStatements, Unnamed};
use crate::frontend::expect::Expect;
use crate::frontend::statements::{self, ParseMessage};
use crate::net::message;
use crate::net::NetError;

/// A Sync message.
const SYNC: &[u8] = b"S\0\0\0\x04";

/// A statement a text runs by name: (server-side name, Parse message).
type Required = (Arc<str>, Bytes);

impl ClientStatements {
    /// A simple Query running the client's statements by name (outside a
    /// failed transaction): each is prepared on the held connection if it
    /// is not there yet (Parse messages and a Sync of pgstash's own,
    /// answered to pgstash; see [`Expect::SyncInjected`]), and the Query
    /// to send instead, with the server-side names, is returned.
    pub fn execute_by_name(&mut self, sql: &str, upstream: &mut Upstream) -> Option<Bytes> {
        let (text, requires) = self.renamed(sql)?;
        if prepare_required(&requires, upstream) {
            upstream.send(
                SYNC,
                Expect::SyncInjected {
                    parse_failed: false,
                },
            );
        }
        let mut query = BytesMut::new();
        message::query(&mut query, &text);
        Some(query.freeze())
    }

    /// A Parse of a text that runs the client's statements by name: the
    /// text with their server-side names, and those statements. None for
    /// a name already prepared (Postgres' own 42P05 comes from the
    /// unchanged path).
    pub(super) fn renamed_parse(&self, parse: &ParseMessage) -> Option<(String, Vec<Required>)> {
        if !parse.name.is_empty() && self.named.contains(parse.name) {
            return None;
        }
        // Almost every text: no UTF-8 check, no scan.
        if !pgstash_rules::may_execute(parse.query) {
            return None;
        }
        self.renamed(&parse.query_text())
    }

    /// Parses a renamed text (see [`ClientStatements::renamed_parse`]):
    /// the statements it runs first, then the text, unnamed or under its
    /// content-derived name.
    pub(super) fn parse_renamed(
        &mut self,
        parse: &ParseMessage,
        requires: Vec<Required>,
        upstream: &mut Upstream,
        client: &mut BytesMut,
        effects: StatementEffects,
    ) -> Result<Option<StatementEffects>, NetError> {
        prepare_required(&requires, upstream);
        let expect = |prepared| Expect::Parse {
            forward: true,
            prepared,
            rename: None,
        };
        if parse.name.is_empty() {
            let frame = statements::parse_frame("", parse.query, parse.types);
            upstream.send(&frame, expect(None));
            self.unnamed = Some(Box::new(Unnamed {
                parse: frame,
                text: parse.query_text().into(),
                types: Bytes::copy_from_slice(parse.types),
                effects: Some(effects),
                requires,
            }));
            self.unnamed_on_server = true;
            return Ok(Some(effects));
        }
        let names = &upstream.pool().statements;
        let statement = self.named.insert_requiring(parse, names, requires);
        let prepared_here = upstream
            .conn()
            .is_some_and(|c| !c.prepared.insert(statement.server_name.clone()));
        if prepared_here {
            upstream.answer_locally(message::parse_complete(), client);
        } else {
            upstream.send(&statement.parse, expect(Some(statement.server_name)));
        }
        Ok(Some(effects))
    }

    /// `sql` with the client's statements it runs by name renamed, and
    /// those statements (each after the ones it runs itself).
    fn renamed(&self, sql: &str) -> Option<(String, Vec<Required>)> {
        let mut text = sql.to_owned();
        let mut requires = Vec::new();
        // From the last, so that the earlier positions stay true.
        for executed in pgstash_rules::executed_statements(sql).iter().rev() {
            let Some(statement) = self.named.get(executed.name.as_bytes()) else {
                continue;
            };
            text.replace_range(
                executed.at.clone(),
                &format!("\"{}\"", statement.server_name),
            );
            requires.extend(statement.requires.iter().cloned());
            requires.push((statement.server_name.clone(), statement.parse.clone()));
        }
        (!requires.is_empty()).then_some((text, requires))
    }
}

/// Prepares `requires` on the held connection where it lacks them (Parse
/// messages answered to pgstash). Returns whether it sent any.
pub(super) fn prepare_required(requires: &[Required], upstream: &mut Upstream) -> bool {
    let mut sent = false;
    for (server_name, parse) in requires {
        let missing = !upstream.skipping()
            && upstream
                .conn()
                .is_some_and(|c| c.prepared.insert(server_name.clone()));
        if missing {
            let expect = Expect::Parse {
                forward: false,
                prepared: Some(server_name.clone()),
                rename: None,
            };
            upstream.send(parse, expect);
            sent = true;
        }
    }
    sent
}
