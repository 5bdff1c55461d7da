//! A raw PostgreSQL wire client for tests: frontend messages as data,
//! backend messages as raw bytes, and a connection that sends exactly what it
//! is told to.

mod backend;
mod client;
mod frontend;

pub use backend::{escape, BackendMessage};
pub use client::{first_error, text_rows, Ending, RawClient, Startup, WireError, DEFAULT_TIMEOUT};
pub use frontend::{startup_message, Frontend, Target, PROTOCOL_3_0, SSL_REQUEST_CODE};
