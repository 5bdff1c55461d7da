//! Test harness for pgstash: a real Postgres and Redis per test, a pgstash
//! in-process, the fixtures that set both up for a test, a raw wire client,
//! and the differential runner that compares what Postgres sends with what
//! pgstash relays.
//!
//! See `tests/README.md` for the environment variables and how to run.

pub mod cache;
pub mod certs;
pub mod differential;
pub mod files;
pub mod fixture;
pub mod operate;
pub mod postgres;
pub mod proxy;
pub mod redis;
pub mod redis_cluster;
pub mod redis_process;
pub mod servers;
pub mod wire;

pub use postgres::TestPostgres;
pub use proxy::TestProxy;
pub use redis::TestRedis;
pub use wire::{BackendMessage, Frontend, RawClient, Startup};

/// `<prefix>_<12 random lowercase alphanumerics>`: a name no other test
/// (in this process or another) uses.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", unique_suffix())
}

pub(crate) fn unique_suffix() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric
        .sample_string(&mut rand::rng(), 12)
        .to_ascii_lowercase()
}
