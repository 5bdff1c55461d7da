//! Named prepared statements under transaction pooling.
//!
//! A client's statement `S1` may have to run on any server connection, and
//! another client may use the name `S1` for different SQL. So pgstash
//! prepares each distinct (query, parameter types) once per server
//! connection under a server-side name derived from its content
//! (`pgstash_<hash>`), rewrites the names in Bind, Describe and Close, and
//! re-prepares a statement on a connection that has not seen it yet.
//! Clients preparing the same SQL share the server-side statement. A
//! statement whose server-side copies went stale (a table's column type
//! changed under it) moves to a new generation of its name
//! (`backend/statement_names.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use crate::backend::statement_names::StatementNames;
use crate::net::body::Body;
use crate::net::frame::NetError;
use crate::net::message::ftag;

/// A client's prepared statement, as pgstash keeps it.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The name the statement has on every server connection.
    pub server_name: Arc<str>,
    /// A Parse message that creates it under `server_name`.
    pub parse: Bytes,
    /// Its SQL text and parameter types, for cache decisions and keys.
    pub query: Arc<str>,
    pub types: Bytes,
    /// The statements its text runs by name (`EXECUTE name`), as
    /// (server-side name, Parse message): prepared first wherever it is.
    pub requires: Vec<(Arc<str>, Bytes)>,
}

/// The fields of a Parse message pgstash needs.
#[derive(Debug)]
pub struct ParseMessage<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
    /// Parameter count and type OIDs, as sent.
    pub types: &'a [u8],
}

impl<'a> ParseMessage<'a> {
    pub fn decode(body: &'a [u8]) -> Result<ParseMessage<'a>, NetError> {
        let mut b = Body::new(body, "Parse");
        let name = b.cstr()?;
        let query = b.cstr()?;
        let types = b.rest();
        let mut t = Body::new(types, "Parse");
        let count = t.i16()?;
        if count < 0 {
            return Err(NetError::Malformed { what: "Parse" });
        }
        t.take(count as usize * 4)?;
        Ok(ParseMessage { name, query, types })
    }

    /// The query text, for analysis (lossy on invalid UTF-8; Postgres will
    /// reject such text itself).
    pub fn query_text(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.query)
    }
}

/// Client statement name → statement.
#[derive(Debug, Default)]
pub struct Statements {
    by_name: HashMap<Vec<u8>, Statement>,
}

impl Statements {
    pub fn get(&self, name: &[u8]) -> Option<&Statement> {
        self.by_name.get(name)
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.by_name.contains_key(name)
    }

    /// Records a client's named Parse and returns the statement to prepare
    /// (under the current generation of its name in `names`).
    pub fn insert(&mut self, parse: &ParseMessage<'_>, names: &StatementNames) -> Statement {
        self.insert_requiring(parse, names, Vec::new())
    }

    /// [`Statements::insert`] of a statement whose text runs `requires`.
    pub fn insert_requiring(
        &mut self,
        parse: &ParseMessage<'_>,
        names: &StatementNames,
        requires: Vec<(Arc<str>, Bytes)>,
    ) -> Statement {
        let server_name = names.current(server_name(parse.query, parse.types));
        let statement = Statement {
            parse: parse_frame(&server_name, parse.query, parse.types),
            server_name,
            query: parse.query_text().into(),
            types: Bytes::copy_from_slice(parse.types),
            requires,
        };
        self.by_name.insert(parse.name.to_vec(), statement.clone());
        statement
    }

    /// Forgets the statement `name`; whether there was one.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        self.by_name.remove(name).is_some()
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }
}

/// `pgstash_` and 24 hex digits of SHA-256 over the query and its types.
pub fn server_name(query: &[u8], types: &[u8]) -> Arc<str> {
    let mut hasher = Sha256::new();
    hasher.update(query);
    hasher.update([0]);
    hasher.update(types);
    let digest = hasher.finalize();
    format!("pgstash_{}", hex::encode(&digest[..12])).into()
}

/// Builds a Parse message.
pub fn parse_frame(name: &str, query: &[u8], types: &[u8]) -> Bytes {
    let len = 4 + name.len() + 1 + query.len() + 1 + types.len();
    let mut out = BytesMut::with_capacity(len + 1);
    out.put_u8(ftag::PARSE);
    out.put_i32(len as i32);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(query);
    out.put_u8(0);
    out.put_slice(types);
    out.freeze()
}

/// Replaces the statement name in a Bind message (portal name kept).
pub fn rewrite_bind(body: &[u8], server_name: &str) -> Result<Bytes, NetError> {
    let mut b = Body::new(body, "Bind");
    let portal = b.cstr()?;
    b.cstr()?;
    let rest = b.rest();
    let len = 4 + portal.len() + 1 + server_name.len() + 1 + rest.len();
    let mut out = BytesMut::with_capacity(len + 1);
    out.put_u8(ftag::BIND);
    out.put_i32(len as i32);
    out.put_slice(portal);
    out.put_u8(0);
    out.put_slice(server_name.as_bytes());
    out.put_u8(0);
    out.put_slice(rest);
    Ok(out.freeze())
}

/// Builds a Describe or Close message for a statement (`kind` = b'S').
pub fn target_frame(tag: u8, kind: u8, name: &str) -> Bytes {
    let len = 4 + 1 + name.len() + 1;
    let mut out = BytesMut::with_capacity(len + 1);
    out.put_u8(tag);
    out.put_i32(len as i32);
    out.put_u8(kind);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.freeze()
}

/// Reads the (kind, name) of a Describe or Close body.
pub fn decode_target<'a>(body: &'a [u8], what: &'static str) -> Result<(u8, &'a [u8]), NetError> {
    let mut b = Body::new(body, what);
    let kind = b.u8()?;
    let name = b.cstr()?;
    if kind != b'S' && kind != b'P' {
        return Err(NetError::Malformed { what });
    }
    Ok((kind, name))
}

/// A Bind body split into portal name, statement name, and the rest
/// (parameter formats, values and result formats, as sent).
pub struct BindParts<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    pub rest: &'a [u8],
}

pub fn bind_parts(body: &[u8]) -> Result<BindParts<'_>, NetError> {
    let mut b = Body::new(body, "Bind");
    let portal = b.cstr()?;
    let statement = b.cstr()?;
    Ok(BindParts {
        portal,
        statement,
        rest: b.rest(),
    })
}

/// A bound parameter: format code and value (`None` for NULL).
pub type BoundValue<'a> = (i16, Option<&'a [u8]>);

/// The parameter values of a Bind's tail with their format codes
/// (`None` for NULL).
pub fn bind_values(rest: &[u8]) -> Result<Vec<BoundValue<'_>>, NetError> {
    let mut b = Body::new(rest, "Bind");
    let format_count = b.i16()?;
    let mut formats = Vec::with_capacity(format_count.max(0) as usize);
    for _ in 0..format_count {
        formats.push(b.i16()?);
    }
    let count = b.i16()?;
    let mut values = Vec::with_capacity(count.max(0) as usize);
    for i in 0..count.max(0) as usize {
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => *formats.get(i).ok_or(NetError::Malformed { what: "Bind" })?,
        };
        let len = b.i32()?;
        let value = if len < 0 {
            None
        } else {
            Some(b.take(len as usize)?)
        };
        values.push((format, value));
    }
    Ok(values)
}

/// Reads (portal, max_rows) of an Execute body.
pub fn execute_parts(body: &[u8]) -> Result<(&[u8], i32), NetError> {
    let mut b = Body::new(body, "Execute");
    let portal = b.cstr()?;
    let max_rows = b.i32()?;
    Ok((portal, max_rows))
}

/// Reads the statement name of a Bind body.
pub fn bind_statement(body: &[u8]) -> Result<&[u8], NetError> {
    let mut b = Body::new(body, "Bind");
    b.cstr()?;
    b.cstr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_sql_gets_the_same_server_name_for_every_client() {
        let mut a = Statements::default();
        let mut b = Statements::default();
        let names = StatementNames::default();
        let types = [0u8, 0];
        let pa = ParseMessage {
            name: b"s1",
            query: b"select 1",
            types: &types,
        };
        let pb = ParseMessage {
            name: b"other",
            query: b"select 1",
            types: &types,
        };
        assert_eq!(
            a.insert(&pa, &names).server_name,
            b.insert(&pb, &names).server_name
        );
        let pc = ParseMessage {
            name: b"s1",
            query: b"select 2",
            types: &types,
        };
        assert_ne!(
            a.get(b"s1").unwrap().server_name,
            b.insert(&pc, &names).server_name
        );
    }

    #[test]
    fn rewrites_bind_statement_name_and_keeps_the_rest() {
        let body = b"portal\0s1\0\0\0\0\0\0\0";
        let out = rewrite_bind(body, "pgstash_x").unwrap();
        assert_eq!(&out[5..], b"portal\0pgstash_x\0\0\0\0\0\0\0");
        assert_eq!(
            i32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize,
            out.len() - 1
        );
    }

    #[test]
    fn malformed_parse_is_an_error_not_a_panic() {
        assert!(ParseMessage::decode(b"s1\0select 1\0\x00\x05").is_err());
        assert!(ParseMessage::decode(b"s1\0select 1").is_err());
        assert!(ParseMessage::decode(b"s1\0select 1\0\xff\xff").is_err());
    }
}
