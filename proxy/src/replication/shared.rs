//! Several pgstash instances sharing one Redis store follow a database's
//! stream once between them: the instance holding the database's lease
//! (`store/redis/lease.rs`) runs the consumer and publishes, with every
//! renewal, how current it is; the others read that progress and prove
//! their own freshness from it (by Redis' clock), failing closed when it
//! ages past `max_lag`. When the holder stops renewing (killed, cut off
//! from Redis) its lease expires and another instance takes over, starting
//! the stream anew (a temporary slot: the cache is emptied first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::consumer::Consumer;
use crate::cache::freshness::Proof;
use crate::cache::store::RedisStore;

/// How long a lease outlives its holder's last renewal.
const LEASE_TTL: Duration = Duration::from_secs(2);

/// How often the holder renews (and publishes its progress).
const RENEW_EVERY: Duration = Duration::from_millis(100);

/// How long a standby follows the holder's progress between attempts to
/// take the lease.
const STANDBY_FOR: Duration = Duration::from_millis(500);

/// Leads (runs `consumer`) while this instance holds the lease, follows
/// the holder's progress otherwise, until `shutdown`.
pub async fn lead_or_follow(
    redis: Arc<RedisStore>,
    consumer: Consumer,
    instance: String,
    shutdown: CancellationToken,
) {
    let name = format!("replication:{}", consumer.target.database);
    let proof = consumer.proof.clone();
    while !shutdown.is_cancelled() {
        let took = redis.leases().take(&name, &instance, LEASE_TTL).await;
        if matches!(took, Ok(true)) {
            tracing::info!(database = %consumer.target.database, %instance, "this instance follows the replication stream");
            tokio::select! {
                _ = consumer.run() => {}
                _ = hold(&redis, &name, &instance, &proof) => {
                    tracing::warn!(database = %consumer.target.database, "replication lease lost; another instance follows the stream");
                }
                _ = shutdown.cancelled() => {}
            }
            proof.forget();
            continue;
        }
        tokio::select! {
            _ = follow_holder(&redis, &name, &proof, STANDBY_FOR) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

/// Renews the lease, publishing the proof's age, until it is lost (or
/// cannot be renewed for half its lifetime: it may be lost).
async fn hold(redis: &RedisStore, name: &str, instance: &str, proof: &Proof) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match redis
            .leases()
            .renew(name, instance, LEASE_TTL, proof.lag())
            .await
        {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => return,
            Err(e) => {
                tracing::debug!(error = %e, "replication lease not renewed");
                if renewed.elapsed() > LEASE_TTL / 2 {
                    return;
                }
            }
        }
    }
}

/// A standby's proof: the holder's published progress.
async fn follow_holder(redis: &RedisStore, name: &str, proof: &Proof, period: Duration) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        // The age is Redis' reckoning when it answers; taken from before
        // the question, the proof is never newer than the holder's.
        let asked = Instant::now();
        if let Ok(Some(age)) = redis.leases().progress(name).await {
            if let Some(at) = asked.checked_sub(age) {
                proof.prove(at);
            }
        }
        tokio::time::sleep(RENEW_EVERY / 2).await;
    }
}
