//! A byte-bounded map of cache entries that expire: the in-process store's
//! entries, and the local tier that fast mode keeps in front of Redis.
//! `quick_cache` evicts the least valuable entries when the budget is full.

use std::time::{Duration, Instant};

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::Weighter;

#[derive(Clone)]
struct Entry {
    value: Bytes,
    expires: Instant,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<String, Entry> for ByBytes {
    fn weight(&self, key: &String, entry: &Entry) -> u64 {
        (key.len() + entry.value.len() + 64) as u64
    }
}

/// Rough entry size used to size quick_cache's internal tables.
const TYPICAL_ENTRY_BYTES: u64 = 2048;

pub struct Entries {
    map: Cache<String, Entry, ByBytes>,
}

impl Entries {
    pub fn new(max_bytes: u64) -> Entries {
        let estimated_items = (max_bytes / TYPICAL_ENTRY_BYTES).max(16) as usize;
        Entries {
            map: Cache::with_weighter(estimated_items, max_bytes.max(1), ByBytes),
        }
    }

    /// The value under `key`, unless it has expired.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        match self.map.get(key) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.value),
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: &str, value: Bytes, ttl: Duration) {
        self.map.insert(
            key.to_owned(),
            Entry {
                value,
                expires: Instant::now() + ttl,
            },
        );
    }

    pub fn clear(&self) {
        self.map.clear();
    }

    /// (entries, bytes) held.
    pub fn usage(&self) -> (u64, u64) {
        (self.map.len() as u64, self.map.weight())
    }
}
