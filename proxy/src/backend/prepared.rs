//! The prepared statements pgstash created on one server connection, in
//! order of last use, so that the connection can be kept under `[client]
//! max_prepared_statements`: past it, the least recently used are
//! deallocated when the connection goes back to the pool (never in the
//! middle of a request, where a Close could be skipped after an error and
//! leave the set out of step with the server).

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct PreparedSet {
    /// Server-side name → when it was last used (a counter).
    names: HashMap<Arc<str>, u64>,
    clock: u64,
}

impl PreparedSet {
    /// Notes a use of `name`; true when it was not prepared here yet (the
    /// caller then prepares it).
    #[inline]
    pub fn insert(&mut self, name: Arc<str>) -> bool {
        self.clock += 1;
        self.names.insert(name, self.clock).is_none()
    }

    #[inline]
    pub fn remove(&mut self, name: &str) {
        self.names.remove(name);
    }

    pub fn clear(&mut self) {
        self.names.clear();
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    /// Takes out the least recently used names beyond `cap`, down to a
    /// tenth under it (so that trimming is rare), for deallocation.
    pub fn take_over(&mut self, cap: usize) -> Vec<Arc<str>> {
        if self.names.len() <= cap {
            return Vec::new();
        }
        let keep = cap - cap / 10;
        let mut by_age: Vec<(u64, Arc<str>)> = self
            .names
            .iter()
            .map(|(name, used)| (*used, name.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(used, _)| *used);
        let over = self.names.len() - keep;
        by_age
            .into_iter()
            .take(over)
            .map(|(_, name)| {
                self.names.remove(&name);
                name
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_first() {
        let mut set = PreparedSet::default();
        for i in 0..12 {
            assert!(set.insert(format!("s{i}").into()));
        }
        // s0 and s1 used again: they are now the most recent.
        assert!(!set.insert("s0".into()));
        assert!(!set.insert("s1".into()));
        assert!(set.take_over(20).is_empty());
        let taken = set.take_over(10);
        let taken: Vec<&str> = taken.iter().map(|n| &**n).collect();
        assert_eq!(taken, ["s2", "s3", "s4"]);
        assert_eq!(set.len(), 9);
        assert!(set.contains("s0") && set.contains("s11") && !set.contains("s2"));
    }
}
