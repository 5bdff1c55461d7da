//! Errors of the upstream side, and what a client is told about each.

use std::sync::Arc;

use bytes::Bytes;

use crate::net::message::{self, Severity};
use crate::net::NetError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// Postgres answered with an ErrorResponse; `frame` holds it verbatim so
    /// that the client sees exactly what Postgres said.
    #[error("upstream error {code}: {message}")]
    Server {
        frame: Bytes,
        code: String,
        message: String,
        fatal: bool,
    },
    #[error("upstream connection failed: {0}")]
    Io(Arc<std::io::Error>),
    #[error("upstream protocol error: {0}")]
    Net(Arc<NetError>),
    #[error("upstream sent an unexpected message {tag:?} during {during}")]
    Unexpected { tag: char, during: &'static str },
    #[error("upstream asks for an unsupported authentication method ({0})")]
    UnsupportedAuth(i32),
    #[error("upstream asks for a password but none is configured for user {0:?}")]
    NoPassword(String),
    /// Postgres asks for a secret pgstash does not have for this user
    /// (pass-through: no client proved one yet, or not one Postgres takes).
    #[error("upstream asks user {user:?} for {asks}, and pgstash {lacks}")]
    NoSecret {
        user: String,
        asks: &'static str,
        lacks: &'static str,
    },
    #[error("upstream SCRAM exchange failed: {0}")]
    Scram(String),
    /// TLS to Postgres could not be had as `sslmode` asks (declined, a
    /// failed handshake, a certificate that does not verify).
    #[error("upstream TLS: {0}")]
    Tls(String),
    /// A control connection (`tokio-postgres`) failed to log in.
    #[error("upstream control connection: {0}")]
    Control(Arc<tokio_postgres::Error>),
    #[error("timed out connecting to upstream after {0:?}")]
    ConnectTimeout(std::time::Duration),
    #[error(
        "upstream unavailable, next connection attempt in {retry_in_ms} ms (last error: {last})"
    )]
    BackingOff { retry_in_ms: u64, last: String },
    #[error("timed out after {0:?} waiting for a server connection")]
    AcquireTimeout(std::time::Duration),
    /// A pooled connection failed its checkout check; bb8 replaces it.
    #[error("pooled server connection is no longer usable")]
    Stale,
}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        BackendError::Io(Arc::new(e))
    }
}

impl From<NetError> for BackendError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Io(io) => BackendError::Io(Arc::new(io)),
            other => BackendError::Net(Arc::new(other)),
        }
    }
}

impl BackendError {
    /// Builds the error from an ErrorResponse frame's bytes.
    pub fn from_error_frame(frame: Bytes) -> BackendError {
        let (severity, code, message) = message::error_fields(frame.get(5..).unwrap_or(&[]));
        BackendError::Server {
            fatal: severity == "FATAL" || severity == "PANIC",
            frame,
            code,
            message,
        }
    }

    /// A network-level failure, worth backing off for (as opposed to an
    /// answer from Postgres such as "database does not exist"). A TLS
    /// failure counts: trying again at once would fail the same way.
    pub fn is_network(&self) -> bool {
        matches!(
            self,
            BackendError::Io(_)
                | BackendError::Net(_)
                | BackendError::ConnectTimeout(_)
                | BackendError::Tls(_)
        )
    }

    /// The ErrorResponse a client gets for this error.
    pub fn to_client(&self, severity: Severity) -> Bytes {
        match self {
            BackendError::Server { frame, .. } => frame.clone(),
            BackendError::AcquireTimeout(_) => {
                message::error_bytes(severity, "53300", &format!("pgstash: {self}"))
            }
            BackendError::UnsupportedAuth(_)
            | BackendError::NoPassword(_)
            | BackendError::NoSecret { .. }
            | BackendError::Scram(_) => {
                message::error_bytes(severity, "28000", &format!("pgstash: {self}"))
            }
            BackendError::Unexpected { .. } => {
                message::error_bytes(severity, "08P01", &format!("pgstash: {self}"))
            }
            _ => message::error_bytes(severity, "08006", &format!("pgstash: {self}")),
        }
    }
}
