//! Coalescing misses across the instances that share a store. Within one
//! instance, concurrent identical misses already wait for one leader
//! (`fill.rs`); across instances, a miss names who fills the entry
//! ([`Filler`]), from a short lease the store keeps per entry:
//! - this instance holds it: its leader fills, and the lease is given up
//!   when the entry is stored, or when the fill is abandoned ([`Claim`]);
//! - another instance holds it: the leader looks the entry up again, with
//!   a growing pause, until that fill lands (a hit for everyone waiting
//!   here), the lease is given up (this instance fills), or
//!   `coalesce_wait` runs out (it fills anyway: a wait is bounded).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::key::{KeyBase, TableKey};
use super::store::{CacheStore, Filler, Store};

/// The first pause between two looks at an entry another instance fills;
/// it doubles up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const LONGEST_PAUSE: Duration = Duration::from_millis(50);

/// This instance's lease on an entry it fills. Dropped unsettled (the
/// query failed, the client went away, the answer is not cached), it gives
/// the lease up so the instances waiting for it stop waiting.
pub struct Claim {
    store: Arc<Store>,
    key: String,
    settled: bool,
}

impl Claim {
    pub fn new(store: Arc<Store>, key: String) -> Claim {
        Claim {
            store,
            key,
            settled: false,
        }
    }

    /// The fill is being stored: the store's put gives the lease up.
    pub fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled {
            self.store.abandon(&self.key);
        }
    }
}

/// How a wait for another instance's fill ended.
pub enum Waited {
    /// Its fill landed: the answer.
    Filled(Bytes),
    /// Its lease was given up or expired, and this instance took it.
    TookOver,
    /// `limit` ran out, or the store failed: fill without a lease.
    TimedOut,
}

impl Waited {
    /// The `outcome` label of `pgstash_cache_lease_waits_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Waited::Filled(_) => "filled",
            Waited::TookOver => "took_over",
            Waited::TimedOut => "timed_out",
        }
    }
}

/// Looks `base` up again until another instance's fill of it lands, for
/// at most `limit`.
pub async fn wait_for_other(
    store: &Store,
    base: &KeyBase,
    tables: &[TableKey],
    limit: Duration,
) -> Waited {
    let deadline = Instant::now() + limit;
    let mut pause = FIRST_PAUSE;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Waited::TimedOut;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
        match store.lookup(base, tables).await {
            Ok(lookup) => match (lookup.value, lookup.filler) {
                (Some(bytes), _) => return Waited::Filled(bytes),
                (None, Filler::Other) => continue,
                (None, _) => return Waited::TookOver,
            },
            Err(_) => return Waited::TimedOut,
        }
    }
}
