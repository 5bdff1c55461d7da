//! One upstream server connection and the state pgstash tracks about it.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::error::BackendError;
use super::params::SessionParams;
use crate::net::message::{self, tag};
use crate::net::{Frame, FrameReader, Stream};

/// Upstream messages are not limited by `max_message_bytes` (that limit
/// protects pgstash from clients); 1 GiB is Postgres' own field limit.
pub const UPSTREAM_FRAME_LIMIT: usize = 1 << 30;

/// A logged-in connection to Postgres.
///
/// State machine of `status` (from the last ReadyForQuery):
/// `I` idle → `T` in transaction → `E` failed transaction → `I`.
/// The pool only takes a connection back in state `I` with nothing buffered.
#[derive(Debug)]
pub struct ServerConn {
    pub stream: Stream,
    pub reader: FrameReader,
    /// ParameterStatus values as last reported by Postgres.
    pub reported: BTreeMap<String, String>,
    /// Backend process id and secret, for CancelRequest.
    pub pid: i32,
    pub secret: i32,
    /// The user this connection logged in as.
    pub user: String,
    /// Server-side names of the prepared statements pgstash created here.
    pub prepared: super::prepared::PreparedSet,
    /// Session settings applied on top of the login defaults.
    pub applied: SessionParams,
    /// Transaction status byte of the last ReadyForQuery.
    pub status: u8,
    /// Set when the connection must not be reused.
    pub broken: bool,
    pub created: Instant,
    pub last_used: Instant,
}

/// Rows and messages of an internal query.
#[derive(Debug, Default)]
pub struct InternalResult {
    pub rows: Vec<Vec<Option<String>>>,
    /// ParameterStatus messages the query caused.
    pub parameter_changes: Vec<(String, String)>,
    /// NotificationResponses that arrived meanwhile (a LISTENing session's
    /// notifications are the client's: the caller passes them on).
    pub notifications: Vec<bytes::Bytes>,
}

impl ServerConn {
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        if let Err(e) = self.stream.write_all(bytes).await {
            self.broken = true;
            return Err(e.into());
        }
        Ok(())
    }

    pub async fn read_frame(&mut self) -> Result<Frame, BackendError> {
        match self.reader.read_frame(&mut self.stream).await {
            Ok(frame) => Ok(frame),
            Err(e) => {
                self.broken = true;
                Err(e.into())
            }
        }
    }

    /// Records a ParameterStatus message in `reported`.
    pub fn note_parameter_status(&mut self, body: &[u8]) -> Option<(String, String)> {
        let (name, value) = parameter_status(body)?;
        self.reported.insert(name.clone(), value.clone());
        Some((name, value))
    }

    /// Runs pgstash's own simple query and reads its whole answer. Text
    /// results only; an ErrorResponse becomes [`BackendError::Server`] after
    /// the connection is back at ReadyForQuery.
    pub async fn run_internal(&mut self, sql: &str) -> Result<InternalResult, BackendError> {
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        message::query(&mut out, sql);
        self.send(&out).await?;
        let mut result = InternalResult::default();
        let mut error = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag() {
                tag::DATA_ROW => result.rows.push(decode_text_row(frame.body())),
                tag::NOTIFICATION_RESPONSE => result.notifications.push(frame.into_bytes()),
                tag::PARAMETER_STATUS => {
                    if let Some(change) = self.note_parameter_status(frame.body()) {
                        result.parameter_changes.push(change);
                    }
                }
                tag::ERROR_RESPONSE => {
                    error = Some(BackendError::from_error_frame(frame.into_bytes()))
                }
                tag::READY_FOR_QUERY => {
                    self.status = frame.body().first().copied().unwrap_or(b'I');
                    break;
                }
                tag::COPY_IN_RESPONSE | tag::COPY_OUT_RESPONSE | tag::COPY_BOTH_RESPONSE => {
                    self.broken = true;
                    return Err(BackendError::Unexpected {
                        tag: frame.tag() as char,
                        during: "an internal query",
                    });
                }
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }

    /// True if nothing arrived while the connection sat idle. A server that
    /// went away leaves an error message or an EOF in the socket, so this
    /// catches dead connections without a round trip.
    pub fn idle_and_quiet(&mut self) -> bool {
        if self.broken || self.reader.has_buffered() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// The name and value of a ParameterStatus body (lossy on invalid UTF-8).
pub(crate) fn parameter_status(body: &[u8]) -> Option<(String, String)> {
    let mut parts = body.split(|b| *b == 0);
    let name = String::from_utf8_lossy(parts.next()?).into_owned();
    let value = String::from_utf8_lossy(parts.next()?).into_owned();
    Some((name, value))
}

/// Decodes a DataRow of text values (internal queries only).
pub(crate) fn decode_text_row(body: &[u8]) -> Vec<Option<String>> {
    let mut values = Vec::new();
    let Some(count) = body.get(0..2) else {
        return values;
    };
    let count = i16::from_be_bytes([count[0], count[1]]);
    let mut rest = &body[2..];
    for _ in 0..count {
        let Some(len) = rest.get(0..4) else { break };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        rest = &rest[4..];
        if len < 0 {
            values.push(None);
            continue;
        }
        let Some(value) = rest.get(..len as usize) else {
            break;
        };
        values.push(Some(String::from_utf8_lossy(value).into_owned()));
        rest = &rest[len as usize..];
    }
    values
}
