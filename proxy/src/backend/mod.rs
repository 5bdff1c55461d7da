//! The upstream side: connections to Postgres (negotiated as the upstream
//! URL's `sslmode` says), their pool, and cancel requests. A server
//! connection is a raw frame stream; only the messages needed to track its
//! state are decoded.

pub mod cancel;
pub mod connect;
pub mod control;
pub mod error;
pub mod greeted;
pub mod negotiate;
pub mod params;
pub mod passthrough;
pub mod pool;
pub mod prepared;
pub mod server;
pub mod statement_names;

pub use error::BackendError;
pub use params::SessionParams;
pub use pool::{PoolKey, Pools, UpstreamPool};
pub use server::ServerConn;
