//! The in-process store: entries in a byte-bounded map (evicting the least
//! valuable when full), table versions in a map. Every call is a map
//! operation under a short lock; it cannot fail, so G4 holds trivially.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use super::contract::{CacheStore, Filler, Lookup, StoreError};
use super::entries::Entries;
use crate::cache::key::{KeyBase, TableKey};

pub struct MemoryStore {
    entries: Entries,
    versions: Mutex<HashMap<TableKey, u64>>,
    /// Bumped by a flush: part of every key, like Redis' epoch.
    epoch: Mutex<u64>,
}

impl MemoryStore {
    pub fn new(max_bytes: u64) -> MemoryStore {
        MemoryStore {
            entries: Entries::new(max_bytes),
            versions: Mutex::new(HashMap::new()),
            epoch: Mutex::new(0),
        }
    }

    pub fn lookup(&self, base: &KeyBase, tables: &[TableKey]) -> Lookup {
        let mut key = String::with_capacity(96);
        let epoch = *self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        base.push_hex(&mut key);
        // itoa, not `write!`: the formatting machinery was ~4% of a hit.
        let mut digits = itoa::Buffer::new();
        key.push(':');
        key.push_str(digits.format(epoch));
        {
            let versions = self.versions.lock().unwrap_or_else(|e| e.into_inner());
            for table in tables {
                key.push('.');
                key.push_str(digits.format(versions.get(table).copied().unwrap_or(0)));
            }
        }
        let value = self.entries.get(&key);
        Lookup {
            key,
            value,
            versions: Vec::new(),
            filler: Filler::Unclaimed,
        }
    }

    pub fn put(&self, key: &str, value: Bytes, ttl: Duration) {
        self.entries.insert(key, value, ttl);
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
        self.entries.usage()
    }
}

impl CacheStore for MemoryStore {
    async fn lookup(&self, base: &KeyBase, tables: &[TableKey]) -> Result<Lookup, StoreError> {
        Ok(MemoryStore::lookup(self, base, tables))
    }

    /// Fills are kept by [`CacheStore::keep_local`]; a `put` stores too.
    async fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        _tables: &[TableKey],
        _versions: &[u64],
    ) -> Result<bool, StoreError> {
        MemoryStore::put(self, key, value, ttl);
        Ok(true)
    }

    fn keep_local(&self, key: &str, value: &Bytes, ttl: Duration) -> bool {
        MemoryStore::put(self, key, value.clone(), ttl);
        true
    }

    /// One instance: its in-process coalescing is all there is.
    fn abandon(&self, _key: &str) {}

    async fn invalidate(&self, tables: &[TableKey]) -> Result<(), StoreError> {
        MemoryStore::invalidate(self, tables);
        Ok(())
    }

    async fn invalidate_all(&self) -> Result<(), StoreError> {
        MemoryStore::invalidate_all(self);
        Ok(())
    }

    async fn ready(&self) -> bool {
        true
    }

    fn memory_usage(&self) -> Option<(u64, u64)> {
        Some(self.usage())
    }

    fn local_live(&self) -> Option<bool> {
        None
    }

    fn kind(&self) -> &'static str {
        "memory"
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
