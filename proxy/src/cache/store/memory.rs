//! The in-process store: entries in a byte-bounded `quick_cache` (evicting
//! the least valuable when full), table versions in a map.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::cache::key::{KeyBase, TableKey};

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

pub struct MemoryStore {
    entries: Cache<String, Entry, ByBytes>,
    versions: Mutex<HashMap<TableKey, u64>>,
    /// Bumped by a flush: part of every key, like Redis' epoch.
    epoch: Mutex<u64>,
}

/// Rough entry size used to size quick_cache's internal tables.
const TYPICAL_ENTRY_BYTES: u64 = 2048;

impl MemoryStore {
    pub fn new(max_bytes: u64) -> MemoryStore {
        let estimated_items = (max_bytes / TYPICAL_ENTRY_BYTES).max(16) as usize;
        MemoryStore {
            entries: Cache::with_weighter(estimated_items, max_bytes.max(1), ByBytes),
            versions: Mutex::new(HashMap::new()),
            epoch: Mutex::new(0),
        }
    }

    pub fn lookup(&self, base: &KeyBase, tables: &[TableKey]) -> super::Lookup {
        let mut key = String::with_capacity(96);
        let epoch = *self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        let _ = write!(key, "{}:{}", base.hex(), epoch);
        {
            let versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
            for table in tables {
                let _ = write!(key, ".{}", versions.get(table).copied().unwrap_or(0));
            }
        }
        let value = match self.entries.get(&key) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.value),
            Some(_) => {
                self.entries.remove(&key);
                None
            }
            None => None,
        };
        super::Lookup { key, value }
    }

    pub fn put(&self, key: &str, value: Bytes, ttl: Duration) {
        self.entries.insert(
            key.to_owned(),
            Entry {
                value,
                expires: Instant::now() + ttl,
            },
        );
    }

    pub fn invalidate(&self, tables: &[TableKey]) {
        let mut versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        for table in tables {
            *versions.entry(table.clone()).or_insert(0) += 1;
        }
    }

    pub fn invalidate_all(&self) {
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.entries.clear();
    }

    pub fn usage(&self) -> (u64, u64) {
        (self.entries.len() as u64, self.entries.weight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(n: u8) -> KeyBase {
        KeyBase([n; 32])
    }

    #[test]
    fn invalidating_a_table_hides_entries_that_read_it() {
        let store = MemoryStore::new(1 << 20);
        let users = TableKey::new("db", "users");
        let other = TableKey::new("db", "orders");
        let l = store.lookup(&base(1), std::slice::from_ref(&users));
        store.put(&l.key, Bytes::from_static(b"rows"), Duration::from_secs(60));
        assert!(store
            .lookup(&base(1), std::slice::from_ref(&users))
            .value
            .is_some());
        store.invalidate(std::slice::from_ref(&other));
        assert!(store
            .lookup(&base(1), std::slice::from_ref(&users))
            .value
            .is_some());
        store.invalidate(std::slice::from_ref(&users));
        assert!(store
            .lookup(&base(1), std::slice::from_ref(&users))
            .value
            .is_none());
    }

    #[test]
    fn expired_entries_are_not_served() {
        let store = MemoryStore::new(1 << 20);
        let l = store.lookup(&base(2), &[]);
        store.put(
            &l.key,
            Bytes::from_static(b"rows"),
            Duration::from_millis(0),
        );
        assert!(store.lookup(&base(2), &[]).value.is_none());
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let store = MemoryStore::new(64 * 1024);
        for i in 0..1000u32 {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            let l = store.lookup(&KeyBase(b), &[]);
            store.put(
                &l.key,
                Bytes::from(vec![0u8; 1024]),
                Duration::from_secs(60),
            );
        }
        assert!(store.usage().1 <= 64 * 1024, "{:?}", store.usage());
    }
}
