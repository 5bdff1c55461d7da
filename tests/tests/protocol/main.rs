//! pgstash as a Postgres server to its clients, caching aside: the bytes it
//! relays are Postgres's own (`differential`), real clients work through it
//! (`clients`), and so do cancellation (`cancel`), password authentication
//! (`auth`) and TLS (`tls`); faults upstream and misbehaving clients cost
//! only the client concerned (`faults`), and a shutdown is graceful
//! (`shutdown`).
//!
//! One test binary: `cargo test -p pgstash-tests --test protocol`.

mod auth;
mod cancel;
mod clients;
mod differential;
mod faults;
mod shutdown;
mod tls;
