//! The Redis store's circuit breaker: once a call fails or times out, the
//! store is *down* and lookups and fills stop waiting on it — they fail at
//! once and the query goes upstream, costing what pass-through costs —
//! until a probe (a PING every 200 ms, in the store's repair task) sees
//! Redis answer again. Invalidations keep their fail-closed rule: one made
//! while the store is down marks the store dirty at once, exactly as a
//! failed one does, and nothing is served until the epoch is renewed (see
//! `dirt.rs`); it is still tried, briefly, because other instances may be
//! serving (`invalidations.rs`).

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::{IntCounter, IntGauge};

/// Whether the store answers, with its metrics.
pub struct Breaker {
    down: AtomicBool,
    /// `pgstash_cache_store_up`: 1 while calls go to Redis.
    up: IntGauge,
    /// `pgstash_cache_store_transitions_total{to="down"|"up"}`.
    went_down: IntCounter,
    came_up: IntCounter,
}

impl Breaker {
    pub fn new(up: IntGauge, went_down: IntCounter, came_up: IntCounter) -> Breaker {
        up.set(1);
        Breaker {
            down: AtomicBool::new(false),
            up,
            went_down,
            came_up,
        }
    }

    /// Calls that may wait on Redis must not: it is down.
    #[inline]
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A call failed or timed out.
    pub fn trip(&self) {
        if !self.down.swap(true, Ordering::SeqCst) {
            self.up.set(0);
            self.went_down.inc();
            tracing::warn!("redis store down: cached queries go upstream until it answers again");
        }
    }

    /// The probe got an answer.
    pub fn reset(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            self.up.set(1);
            self.came_up.inc();
            tracing::info!("redis store answers again");
        }
    }
}
