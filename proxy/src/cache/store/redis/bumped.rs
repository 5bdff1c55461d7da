//! The table versions this instance bumped (since the last epoch
//! renewal), by Redis version key, each with the sequence number of its
//! bump. Versions only grow, so they tell two things about a later reply:
//! a lookup that started after a bump and read a lower version saw Redis
//! lose data (G4), and a fill whose key names a lower version is dead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Bumped {
    versions: Mutex<HashMap<String, (u64, u64)>>,
    /// Counts completed bumps; a lookup compares only with earlier ones.
    bumps: AtomicU64,
}

impl Bumped {
    /// The number of bumps completed so far (taken before a lookup).
    pub fn sequence(&self) -> u64 {
        self.bumps.load(Ordering::SeqCst)
    }

    /// Records one invalidation script's answer: `keys` now at `versions`.
    pub fn record(&self, keys: Vec<String>, versions: &[u64]) {
        let mut bumped = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        let sequence = self.bumps.load(Ordering::SeqCst) + 1;
        for (key, &version) in keys.into_iter().zip(versions) {
            let slot = bumped.entry(key).or_insert((version, sequence));
            if version >= slot.0 {
                *slot = (version, sequence);
            }
        }
        self.bumps.store(sequence, Ordering::SeqCst);
    }

    /// The first of `keys` whose version read by a lookup that began after
    /// bump number `before` is lower than this instance bumped it to, as
    /// (key, read, bumped to).
    pub fn went_backwards<'a>(
        &self,
        keys: &'a [String],
        versions: &[u64],
        before: u64,
    ) -> Option<(&'a str, u64, u64)> {
        let bumped = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter().zip(versions).find_map(|(key, &version)| {
            let (to, sequence) = *bumped.get(key)?;
            (sequence <= before && version < to).then_some((key.as_str(), version, to))
        })
    }

    /// Whether a lookup that began after bump number `before` read, for one
    /// of `keys`, a version lower than this instance bumped it to: Redis
    /// lost data, and that answer must not be used (logged here).
    pub fn lost_data(&self, keys: &[String], versions: &[u64], before: u64) -> bool {
        match self.went_backwards(keys, versions, before) {
            Some((key, version, bumped_to)) => {
                tracing::error!(%key, version, bumped_to, "a table version went backwards (redis lost data); renewing the cache epoch");
                true
            }
            None => false,
        }
    }

    /// Whether one of `keys` was bumped past the version read with it.
    pub fn newer_than<'a>(&self, mut pairs: impl Iterator<Item = (String, &'a u64)>) -> bool {
        let bumped = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        if bumped.is_empty() {
            return false;
        }
        pairs.any(|(key, version)| bumped.get(&key).is_some_and(|(to, _)| version < to))
    }

    /// The epoch was renewed: versions seen before no longer matter.
    pub fn clear(&self) {
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
