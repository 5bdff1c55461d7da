//! pgstash: a transparent caching proxy that speaks the PostgreSQL wire protocol.
//!
//! The crate is split the way the protocol is: `net` frames bytes, `frontend`
//! owns client connections, `backend` owns upstream connections and their
//! pool, `config` resolves settings. [`server::Server`] ties them together and
//! is what the binary and the integration tests start.

pub mod backend;
pub mod cache;
pub mod cli;
pub mod config;
pub mod context;
pub mod frontend;
pub mod net;
pub mod observe;
pub mod server;
pub mod tools;

pub use config::{CacheMode, Config};

/// A future on the heap. The deep paths a session rarely suspends in
/// (store calls, catalog loads, settings round trips, error exits) return
/// one, so that they do not size every session's state machine: an idle
/// session would otherwise carry their largest state (about 12 KiB).
pub(crate) type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
pub use server::{ServeError, Server, ServerHandle};
