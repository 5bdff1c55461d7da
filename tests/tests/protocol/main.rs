//! pgstash as a Postgres server to its clients, caching aside: the bytes it
//! relays are Postgres's own (`differential`), real clients work through it
//! (`clients`), and so do cancellation (`cancel`), the backend key
//! (`backend_key`: session mode hands out the server's real pid), password authentication
//! (`auth`) and TLS (`tls`); faults upstream and misbehaving clients cost
//! only the client concerned (`faults`), so do the `[client]` limits
//! (`limits`), session-bound state pins a transaction-mode client to its
//! server connection (`pinning`), a client's next transaction runs on the server
//! connection used last (`pool_order`), and a shutdown is graceful
//! (`shutdown`). The client's unnamed statement lives as long as on its
//! own server (`unnamed`), and a client's `DROP DATABASE` is not kept
//! from running by pgstash's idle pooled connections (`drop_database`). Transaction mode keeps the client's prepared statements
//! through what drivers do to them (`statements`), and a statement dropped
//! by name is gone as on the client's own server in both modes (`deallocate`). Upstream, pgstash encrypts as libpq's `sslmode` says
//! (`upstream_tls`, `upstream_direct`) and logs in with md5 and SCRAM
//! (`upstream_auth`), also without knowing the password: SCRAM
//! pass-through and `auth_query` (`passthrough`).
//!
//! One test binary: `cargo test -p pgstash-tests --test protocol`.

mod auth;
mod backend_key;
mod cancel;
mod clients;
mod deallocate;
mod differential;
mod drop_database;
mod faults;
mod limits;
mod passthrough;
mod pinning;
mod pool_order;
mod shutdown;
mod statements;
mod tls;
mod unnamed;
mod upstream_auth;
mod upstream_direct;
mod upstream_replication;
mod upstream_tls;
