//! The cache, from the outside: what a ruled query's second run is answered
//! with and whether Postgres ran it again (`hits`), that no read is older
//! than an acknowledged write, under concurrency and across instances
//! (`consistency`, `transactions`), that an entry never reaches another
//! identity or setting (`isolation`), that a Redis in trouble is never a
//! reason to serve stale data (`failures`), the fast mode's local tier
//! (`fast`), that store calls are spent only where they pay (`payoff`),
//! that every store keeps the store contract (`stores`), and that writes
//! made directly on Postgres are invalidated from its replication stream
//! within `max_lag` (`replication`), and that the Redis store works over
//! TLS with an ACL user and is unavailable, never wrong, when either does
//! not check out (`redis_tls`); and that all of it holds on a Redis Cluster
//! shared by several instances, through failover and slot migration, with
//! one instance filling an expiring hot entry for all (`cluster`), and
//! behind Sentinel.
//!
//! One test binary: `cargo test -p pgstash-tests --test cache`.

mod cluster;
mod consistency;
mod failures;
mod fast;
mod hits;
mod isolation;
mod payoff;
mod redis_login;
mod redis_tls;
mod replication;
mod stores;
mod transactions;
