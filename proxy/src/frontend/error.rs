//! Errors that end or interrupt a client session.

use crate::backend::BackendError;
use crate::net::NetError;

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("client connection: {0}")]
    Net(#[from] NetError),
    #[error("client disconnected")]
    ClientGone,
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("authentication failed for user {0:?}")]
    AuthFailed(String),
    #[error(transparent)]
    AuthQuery(#[from] super::auth_query::LookupError),
}

impl FrontendError {
    /// SQLSTATE the client is told, when it can still be told anything.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            FrontendError::Net(e) => e.sqlstate(),
            FrontendError::ClientGone => "08006",
            FrontendError::Backend(_) => "08006",
            FrontendError::Protocol(_) => "08P01",
            FrontendError::AuthFailed(_) => "28P01",
            FrontendError::AuthQuery(_) => "08006",
        }
    }
}
