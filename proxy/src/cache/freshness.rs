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
        Proof {
            max_lag,
            origin: Instant::now(),
            proven: AtomicU64::new(0),
        }
    }

    /// Every write acknowledged before `at` is invalidated. Only moves on.
    pub fn prove(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.origin).as_nanos() as u64;
        self.proven.fetch_max(nanos.max(1), Ordering::SeqCst);
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
