//! Frontend (client → server) messages, as data.
//!
//! Test cases are lists of these values rather than calls, so a corpus can be
//! printed, replayed against two servers and compared. [`Frontend::encode`] is
//! the one place that knows the byte layout of each message.

use bytes::{BufMut, BytesMut};

/// Protocol version 3.0, as sent in the StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
/// The magic "protocol version" of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;

/// What `Describe` and `Close` act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// One frontend message. `Raw` is written as given, for malformed input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frontend {
    Query(String),
    Parse {
        name: String,
        sql: String,
        param_types: Vec<u32>,
    },
    Bind {
        portal: String,
        statement: String,
        /// Per-parameter format codes (0 text, 1 binary); empty = all text,
        /// one code = applies to all.
        param_formats: Vec<i16>,
        /// `None` is SQL NULL.
        params: Vec<Option<Vec<u8>>>,
        /// Per-column result format codes, with the same conventions.
        result_formats: Vec<i16>,
    },
    Describe(Target, String),
    Execute {
        portal: String,
        max_rows: i32,
    },
    Close(Target, String),
    Flush,
    Sync,
    CopyData(Vec<u8>),
    CopyDone,
    CopyFail(String),
    Terminate,
    /// Bytes written untouched (garbage, bad lengths, a second startup…).
    Raw(Vec<u8>),
}

impl Frontend {
    pub fn query(sql: impl Into<String>) -> Frontend {
        Frontend::Query(sql.into())
    }

    pub fn parse(name: &str, sql: impl Into<String>, param_types: &[u32]) -> Frontend {
        Frontend::Parse {
            name: name.into(),
            sql: sql.into(),
            param_types: param_types.to_vec(),
        }
    }

    /// A Bind of text parameters with one result format code for all columns.
    pub fn bind(
        portal: &str,
        statement: &str,
        params: &[Option<&str>],
        result_format: i16,
    ) -> Frontend {
        Frontend::Bind {
            portal: portal.into(),
            statement: statement.into(),
            param_formats: vec![],
            params: params
                .iter()
                .map(|p| p.map(|s| s.as_bytes().to_vec()))
                .collect(),
            result_formats: vec![result_format],
        }
    }

    pub fn describe_statement(name: &str) -> Frontend {
        Frontend::Describe(Target::Statement, name.into())
    }

    pub fn describe_portal(name: &str) -> Frontend {
        Frontend::Describe(Target::Portal, name.into())
    }

    pub fn execute(portal: &str, max_rows: i32) -> Frontend {
        Frontend::Execute {
            portal: portal.into(),
            max_rows,
        }
    }

    pub fn close_statement(name: &str) -> Frontend {
        Frontend::Close(Target::Statement, name.into())
    }

    pub fn close_portal(name: &str) -> Frontend {
        Frontend::Close(Target::Portal, name.into())
    }

    /// Appends the wire form of this message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Frontend::Query(sql) => frame(out, b'Q', |b| put_cstr(b, sql)),
            Frontend::Parse {
                name,
                sql,
                param_types,
            } => frame(out, b'P', |b| {
                put_cstr(b, name);
                put_cstr(b, sql);
                b.put_i16(param_types.len() as i16);
                for oid in param_types {
                    b.put_u32(*oid);
                }
            }),
            Frontend::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            } => frame(out, b'B', |b| {
                put_cstr(b, portal);
                put_cstr(b, statement);
                b.put_i16(param_formats.len() as i16);
                for f in param_formats {
                    b.put_i16(*f);
                }
                b.put_i16(params.len() as i16);
                for p in params {
                    match p {
                        Some(v) => {
                            b.put_i32(v.len() as i32);
                            b.put_slice(v);
                        }
                        None => b.put_i32(-1),
                    }
                }
                b.put_i16(result_formats.len() as i16);
                for f in result_formats {
                    b.put_i16(*f);
                }
            }),
            Frontend::Describe(target, name) => frame(out, b'D', |b| {
                b.put_u8(target.byte());
                put_cstr(b, name);
            }),
            Frontend::Execute { portal, max_rows } => frame(out, b'E', |b| {
                put_cstr(b, portal);
                b.put_i32(*max_rows);
            }),
            Frontend::Close(target, name) => frame(out, b'C', |b| {
                b.put_u8(target.byte());
                put_cstr(b, name);
            }),
            Frontend::Flush => frame(out, b'H', |_| {}),
            Frontend::Sync => frame(out, b'S', |_| {}),
            Frontend::CopyData(data) => frame(out, b'd', |b| b.put_slice(data)),
            Frontend::CopyDone => frame(out, b'c', |_| {}),
            Frontend::CopyFail(reason) => frame(out, b'f', |b| put_cstr(b, reason)),
            Frontend::Terminate => frame(out, b'X', |_| {}),
            Frontend::Raw(bytes) => out.put_slice(bytes),
        }
    }
}

/// Encodes a StartupMessage (protocol 3.0) with the given parameters.
pub fn startup_message(params: &[(String, String)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(&mut body, k);
        put_cstr(&mut body, v);
    }
    body.put_u8(0);
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
    out
}

/// Encodes a password / SASL response message (`p`) with a raw body.
pub fn password_message(body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    frame(&mut out, b'p', |b| b.put_slice(body));
    out
}

/// Writes `tag`, a length placeholder, the body, then patches the length.
fn frame(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let len_at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - len_at) as i32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

pub(crate) fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}
