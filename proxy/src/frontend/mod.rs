//! The client side: the startup handshake, authentication, and the session
//! that relays a client's requests to a pooled server connection.

pub mod admission;
pub mod auth;
pub mod auth_query;
pub mod error;
pub mod expect;
pub mod handshake;
pub mod session;
pub mod statements;

pub use error::FrontendError;
