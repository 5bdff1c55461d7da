//! pgstash: a transparent caching proxy that speaks the PostgreSQL wire protocol.
//!
//! The crate is split the way the protocol is: `net` frames bytes, `frontend`
//! owns client connections, `backend` owns upstream connections and their
//! pool, `cache` decides, stores and invalidates, `observe` measures,
//! `config` resolves settings, `admin` serves the admin port.
//! [`server::Server`] ties them together and is what the binary and the
//! integration tests start. See ARCHITECTURE.md.

pub mod admin;
pub mod backend;
mod boxed;
pub mod cache;
pub mod cli;
pub mod config;
pub mod context;
pub mod explain;
pub mod frontend;
#[doc(hidden)]
pub mod fuzzing;
pub mod net;
pub mod observe;
pub mod replication;
pub mod scram;
pub mod server;
pub mod tools;
pub mod workers;

pub(crate) use boxed::Boxed;
pub use config::{CacheMode, Config};

pub use server::{ServeError, Server, ServerHandle};
