//! Whether the cache may answer for a database: every source of
//! invalidation that covers it must prove, at every moment, that it is
//! current to within its bound (guarantee G8). Postgres' replication
//! stream proves it with heartbeats: once the heartbeat sent at `t` has
//! been read back from the stream (after every commit before it was
//! recorded), every write acknowledged before `t` is invalidated. A
//! database whose proof is older than its bound, or that no source covers
//! while one is required, is served upstream only (fail closed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

/// How far before its creation a proof can reach.
const ORIGIN_BACK: Duration = Duration::from_secs(3600);

/// One source's proof for one database.
#[derive(Debug)]
pub struct Proof {
    max_lag: Duration,
    origin: Instant,
    /// Nanoseconds after `origin` up to which every write is invalidated;
    /// 0: nothing proven yet.
    proven: AtomicU64,
}

impl Proof {
    pub fn new(max_lag: Duration) -> Proof {
        // Proofs from before the origin cannot be stored; an hour back is
        // far past any bound (where the clock allows it).
        let now = Instant::now();
        Proof {
            max_lag,
            origin: now.checked_sub(ORIGIN_BACK).unwrap_or(now),
            proven: AtomicU64::new(0),
        }
    }

    /// Every write acknowledged before `at` is invalidated. Only moves on.
    /// A moment from before the proof's origin proves nothing (rounding it
    /// up would claim more than is known).
    pub fn prove(&self, at: Instant) {
        let Some(since) = at.checked_duration_since(self.origin) else {
            return;
        };
        let nanos = (since.as_nanos() as u64).max(1);
        self.proven.fetch_max(nanos, Ordering::SeqCst);
    }

    /// Nothing is proven any more (the stream broke: what it missed is
    /// unknown until the source has recovered and proven again).
    pub fn forget(&self) {
        self.proven.store(0, Ordering::SeqCst);
    }

    /// How far behind now the proof is; `None` when nothing is proven.
    pub fn lag(&self) -> Option<Duration> {
        let proven = self.proven.load(Ordering::SeqCst);
        (proven > 0).then(|| {
            let at = self.origin + Duration::from_nanos(proven);
            Instant::now().saturating_duration_since(at)
        })
    }

    /// Proven to within the bound.
    pub fn is_current(&self) -> bool {
        self.lag().is_some_and(|lag| lag <= self.max_lag)
    }
}

/// The proofs the cache checks, by database.
#[derive(Default)]
pub struct Freshness {
    /// Set once a source that covers databases is configured: a database
    /// without a proof is then not current.
    proofs: ArcSwap<Option<HashMap<String, Arc<Proof>>>>,
}

impl Freshness {
    /// A source now proves `database`: the cache answers for it only while
    /// `proof` is current, and for databases no source covers not at all.
    pub fn require(&self, database: &str, proof: Arc<Proof>) {
        let mut proofs = (**self.proofs.load()).clone().unwrap_or_default();
        proofs.insert(database.to_owned(), proof);
        self.proofs.store(Arc::new(Some(proofs)));
    }

    /// Whether the cache may answer for `database` now.
    pub fn is_current(&self, database: &str) -> bool {
        match &**self.proofs.load() {
            None => true,
            Some(proofs) => proofs.get(database).is_some_and(|p| p.is_current()),
        }
    }

    /// The proofs, for metrics.
    pub fn proofs(&self) -> Vec<(String, Arc<Proof>)> {
        match &**self.proofs.load() {
            None => Vec::new(),
            Some(proofs) => proofs
                .iter()
                .map(|(db, p)| (db.clone(), p.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_current_only_within_its_bound() {
        let proof = Proof::new(Duration::from_millis(50));
        assert!(!proof.is_current(), "nothing proven yet");
        proof.prove(Instant::now());
        assert!(proof.is_current());
        // An older heartbeat read late does not move the proof back.
        proof.prove(Instant::now() - Duration::from_secs(10));
        assert!(proof.is_current());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!proof.is_current(), "lag {:?}", proof.lag());
        proof.prove(Instant::now());
        proof.forget();
        assert!(!proof.is_current());
    }

    #[test]
    fn a_moment_from_before_the_proof_was_made_is_never_rounded_up() {
        let proof = Proof::new(Duration::from_millis(500));
        // Another instance's progress, 600 ms old when read.
        if let Some(at) = Instant::now().checked_sub(Duration::from_millis(600)) {
            proof.prove(at);
            assert!(!proof.is_current(), "lag {:?}", proof.lag());
            assert!(proof.lag() >= Some(Duration::from_millis(600)));
        }
    }

    #[test]
    fn once_a_source_covers_a_database_the_others_fail_closed() {
        let freshness = Freshness::default();
        assert!(freshness.is_current("any"), "no source configured");
        let proof = Arc::new(Proof::new(Duration::from_secs(1)));
        freshness.require("shop", proof.clone());
        assert!(!freshness.is_current("shop"));
        assert!(!freshness.is_current("other"));
        proof.prove(Instant::now());
        assert!(freshness.is_current("shop"));
        assert!(!freshness.is_current("other"));
    }
}
