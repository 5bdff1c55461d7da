//! Messages pgstash writes itself rather than forwards: authentication,
//! errors it raises, synthesized completions and the startup greeting.
//! Encoding is pgwire's; this module only gives it names that read well at
//! the call sites.

use bytes::{BufMut, Bytes, BytesMut};
use pgwire::error::ErrorInfo;
use pgwire::messages::extendedquery::{CloseComplete, ParseComplete};
use pgwire::messages::response::{
    CommandComplete, ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus,
};
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use pgwire::messages::Message;

/// Message type bytes of the backend messages pgstash looks at.
pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    pub const NO_DATA: u8 = b'n';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// Message type bytes of frontend messages.
pub mod ftag {
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    pub const PASSWORD: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
}

/// Severity of an error pgstash raises itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement fails; the connection stays usable.
    Error,
    /// The connection is closed after the message.
    Fatal,
}

fn encode<M: Message>(message: &M, out: &mut BytesMut) {
    // Only ErrorResponse can exceed pgwire's size limits, and pgstash's own
    // messages are short; a failure would mean a bug, so fall back to a
    // minimal error rather than send nothing.
    if message.encode(out).is_err() {
        error_response(
            out,
            Severity::Error,
            "XX000",
            "pgstash: could not encode a message",
        );
    }
}

/// Appends an ErrorResponse with the given SQLSTATE and message.
pub fn error_response(out: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let severity = match severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    let mut info = ErrorInfo::new(severity.to_owned(), code.to_owned(), message.to_owned());
    info.severity_nonlocalized = Some(severity.to_owned());
    let response: ErrorResponse = info.into();
    let _ = response.encode(out);
}

/// A NoticeResponse of severity WARNING.
pub fn warning(out: &mut BytesMut, code: &str, message: &str) {
    let mut info = ErrorInfo::new("WARNING".to_owned(), code.to_owned(), message.to_owned());
    info.severity_nonlocalized = Some("WARNING".to_owned());
    let notice: NoticeResponse = info.into();
    let _ = notice.encode(out);
}

/// An ErrorResponse as a standalone buffer.
pub fn error_bytes(severity: Severity, code: &str, message: &str) -> Bytes {
    let mut out = BytesMut::new();
    error_response(&mut out, severity, code, message);
    out.freeze()
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    encode(&ReadyForQuery::new(status), out);
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    encode(&CommandComplete::new(tag.to_owned()), out);
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    encode(
        &ParameterStatus::new(name.to_owned(), value.to_owned()),
        out,
    );
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    encode(&BackendKeyData::new(pid, SecretKey::I32(secret)), out);
}

pub fn parse_complete() -> Bytes {
    let mut out = BytesMut::with_capacity(5);
    encode(&ParseComplete::new(), &mut out);
    out.freeze()
}

pub fn close_complete() -> Bytes {
    let mut out = BytesMut::with_capacity(5);
    encode(&CloseComplete::new(), &mut out);
    out.freeze()
}

pub fn auth_ok(out: &mut BytesMut) {
    encode(&Authentication::Ok, out);
}

pub fn auth_md5(out: &mut BytesMut, salt: [u8; 4]) {
    encode(&Authentication::MD5Password(salt.to_vec()), out);
}

pub fn auth_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    encode(
        &Authentication::SASL(mechanisms.iter().map(|m| m.to_string()).collect()),
        out,
    );
}

pub fn auth_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    encode(
        &Authentication::SASLContinue(Bytes::copy_from_slice(data)),
        out,
    );
}

pub fn auth_sasl_final(out: &mut BytesMut, data: &[u8]) {
    encode(
        &Authentication::SASLFinal(Bytes::copy_from_slice(data)),
        out,
    );
}

/// NegotiateProtocolVersion: pgstash speaks 3.0 and no `_pq_.` options.
pub fn negotiate_protocol_version(out: &mut BytesMut, unsupported: &[String]) {
    let mut body = BytesMut::new();
    body.put_i32(0);
    body.put_i32(unsupported.len() as i32);
    for option in unsupported {
        body.put_slice(option.as_bytes());
        body.put_u8(0);
    }
    out.put_u8(b'v');
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
}

/// Builds a frontend message from its tag and body (used to talk upstream).
pub fn frontend(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

/// A simple Query message.
pub fn query(out: &mut BytesMut, sql: &str) {
    out.put_u8(ftag::QUERY);
    out.put_i32(sql.len() as i32 + 5);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
}

/// Reads the SQLSTATE and message of an ErrorResponse or NoticeResponse body.
pub fn error_fields(body: &[u8]) -> (String, String, String) {
    let mut severity = String::new();
    let mut code = String::new();
    let mut message = String::new();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match field {
            b'V' => severity = value,
            b'S' if severity.is_empty() => severity = value,
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    (severity, code, message)
}

/// An ErrorResponse with `from` replaced by `to` in its message field (used
/// to show a client's statement name instead of pgstash's server-side one).
pub fn rename_in_error(frame: &[u8], from: &str, to: &str) -> Bytes {
    let Some(body) = frame.get(5..) else {
        return Bytes::copy_from_slice(frame);
    };
    let mut out_body = BytesMut::with_capacity(body.len() + to.len());
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let value = &tail[..end];
        out_body.put_u8(field);
        if field == b'M' {
            let text = String::from_utf8_lossy(value).replace(from, to);
            out_body.put_slice(text.as_bytes());
        } else {
            out_body.put_slice(value);
        }
        out_body.put_u8(0);
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    out_body.put_u8(0);
    let mut out = BytesMut::with_capacity(out_body.len() + 5);
    out.put_u8(frame[0]);
    out.put_i32(out_body.len() as i32 + 4);
    out.put_slice(&out_body);
    out.freeze()
}
