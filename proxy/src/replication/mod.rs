//! Writes that bypass pgstash (guarantee G8): Postgres' logical
//! replication stream, followed into the invalidator.
//!
//! Per database in `[replication] databases`, three tasks:
//! - the consumer (`consumer.rs`) reads the `pgoutput` stream of a slot
//!   (`stream.rs`, decoded by `protocol.rs`) and invalidates the tables of
//!   every committed transaction — inserts, updates, deletes, truncates,
//!   whoever made them (another service, psql, a trigger, a cascade);
//!   partitions invalidate their partitioned tables too;
//! - the heartbeat (`heartbeat.rs`) writes a message into the stream every
//!   `heartbeat`; read back, it proves every write acknowledged before it
//!   was sent is invalidated;
//! - a watch of the slot's retained WAL, for the metric.
//!
//! The cache answers for the database only while that proof is younger
//! than `max_lag` (`cache/freshness.rs`); otherwise reads go upstream.
//! With the in-process store every instance follows the stream itself;
//! instances sharing a Redis store follow it once between them
//! (`shared.rs`). `setup.rs` is `pgstash replication setup`.

mod consumer;
mod error;
mod heartbeat;
pub(crate) mod protocol;
pub mod setup;
mod shared;
mod stream;
mod visible;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::connect::ConnectTarget;
use crate::backend::control;
use tokio_util::sync::CancellationToken;

use crate::cache::freshness::Proof;
use crate::cache::{Cache, Store};
use crate::config::ReplicationConfig;
use crate::observe::Metrics;

pub use error::ReplicationError;

/// How often the slot's retained WAL is measured.
const RETAINED_EVERY: Duration = Duration::from_secs(5);

/// Starts following every configured database until `shutdown`; from now
/// on the cache answers only for those databases, and only while they are
/// proven current.
pub fn start(
    config: &ReplicationConfig,
    databases: &[String],
    target: impl Fn(&str) -> ConnectTarget,
    cache: &Cache,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) {
    let instance = format!("{:016x}", rand::random::<u64>());
    for database in databases {
        let proof = Arc::new(Proof::new(config.max_lag));
        cache
            .invalidator()
            .freshness()
            .require(database, proof.clone());
        let slot = Arc::new(Mutex::new(None));
        let consumer = consumer::Consumer {
            target: target(database),
            config: config.clone(),
            invalidator: cache.invalidator().clone(),
            proof,
            beats: Arc::new(heartbeat::Beats::new(&instance)),
            metrics: metrics.clone(),
            slot: slot.clone(),
        };
        let shutdown = shutdown.clone();
        match cache.store() {
            Store::Redis(redis) => {
                let follow = shared::lead_or_follow(
                    redis.clone(),
                    consumer,
                    instance.clone(),
                    shutdown.clone(),
                );
                tokio::spawn(follow);
            }
            Store::Memory(_) => {
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = consumer.run() => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        }
        let watch = watch_retained(target(database), slot, metrics.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = watch => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

/// Keeps `pgstash_replication_retained_bytes` at the WAL the slot holds
/// back (what Postgres may not recycle until pgstash confirms it).
async fn watch_retained(
    target: ConnectTarget,
    slot: Arc<Mutex<Option<String>>>,
    metrics: Arc<Metrics>,
) {
    let gauge = metrics
        .replication_retained_bytes
        .with_label_values(&[target.database.as_str()]);
    let mut client = None;
    loop {
        tokio::time::sleep(RETAINED_EVERY).await;
        let name = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(name) = name else { continue };
        if client.is_none() {
            client = control::connect(&target, "pgstash-replication-watch")
                .await
                .ok();
        }
        let Some(c) = &client else { continue };
        let row = c
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await;
        match row {
            Ok(Some(row)) => gauge.set(row.get::<_, Option<i64>>(0).unwrap_or(0)),
            Ok(None) => {}
            Err(_) => client = None,
        }
    }
}
