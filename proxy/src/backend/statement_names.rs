//! The server-side names of the prepared statements of one pool
//! (transaction mode): which have parsed on some connection of the pool,
//! and which generation of a statement's name new Parses use.
//!
//! A statement is prepared under a name derived from its content
//! (`frontend/statements.rs`), so every copy on every connection shares
//! it. When a table's definition changes under a prepared statement,
//! Postgres answers its next Bind with `0A000` ("cached plan must not
//! change result type"), and keeps answering so: the server-side copy is
//! stale for good. A driver then drops its statement and prepares the same
//! text again — which, under the same content-derived name, would land on
//! the stale copy again. So a statement reported stale gets a new
//! generation, part of its name (`pgstash_<hash>_<generation>`): new
//! Parses prepare it afresh on every connection, while the stale copies
//! are left to the clients that still bind them (who get Postgres' own
//! `0A000`, as they would directly) and to the connection's LRU trim.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Above this many distinct names a set starts over.
const NAMES_MAX: usize = 10_000;

/// Length of a first-generation name: `pgstash_` and 24 hex digits.
const BASE_LEN: usize = 32;

#[derive(Debug, Default)]
pub struct StatementNames {
    /// Names that have parsed successfully on some connection of this
    /// pool: a client's Parse of one can be answered without a server
    /// connection (it is prepared where it is later bound).
    known: Mutex<HashSet<Arc<str>>>,
    /// First-generation name → current generation, for statements that
    /// went stale (few: one per changed statement).
    generations: Mutex<HashMap<Arc<str>, u32>>,
    /// Whether `generations` has anything (read on every Parse: no lock
    /// while no statement ever went stale).
    any_stale: AtomicBool,
}

impl StatementNames {
    /// The name new Parses of the statement first named `base` use.
    pub fn current(&self, base: Arc<str>) -> Arc<str> {
        if !self.any_stale.load(Ordering::Relaxed) {
            return base;
        }
        let generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        match generations.get(&base) {
            Some(generation) => format!("{base}_{generation}").into(),
            None => base,
        }
    }

    pub fn is_known(&self, name: &str) -> bool {
        self.known
            .lock()
            .map(|known| known.contains(name))
            .unwrap_or(false)
    }

    pub fn parsed(&self, name: Arc<str>) {
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= NAMES_MAX {
                known.clear();
            }
            known.insert(name);
        }
    }

    /// The server-side statement `name` answered a Bind with `0A000`: if
    /// it is the current generation, new Parses move to the next one.
    pub fn went_stale(&self, name: &str) {
        if let Ok(mut known) = self.known.lock() {
            known.remove(name);
        }
        let Some((base, generation)) = split(name) else {
            return;
        };
        let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        let current = generations.get(base).copied().unwrap_or(0);
        if current != generation {
            // An older copy: the name already moved on.
            return;
        }
        if generations.len() >= NAMES_MAX {
            generations.clear();
        }
        generations.insert(base.into(), current + 1);
        self.any_stale.store(true, Ordering::Relaxed);
    }
}

/// A name's first-generation name and its generation.
fn split(name: &str) -> Option<(&str, u32)> {
    let base = name.get(..BASE_LEN)?;
    match name.get(BASE_LEN..)? {
        "" => Some((base, 0)),
        rest => Some((base, rest.strip_prefix('_')?.parse().ok()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "pgstash_0123456789abcdef01234567";

    #[test]
    fn a_stale_statement_moves_to_the_next_generation_once() {
        let names = StatementNames::default();
        assert_eq!(&*names.current(BASE.into()), BASE);
        names.parsed(BASE.into());
        names.went_stale(BASE);
        assert!(!names.is_known(BASE));
        let next = format!("{BASE}_1");
        assert_eq!(&*names.current(BASE.into()), next);
        // Other clients still binding the old copy report it too: no
        // further move.
        names.went_stale(BASE);
        assert_eq!(&*names.current(BASE.into()), next);
        names.went_stale(&next);
        assert_eq!(&*names.current(BASE.into()), format!("{BASE}_2"));
    }

    #[test]
    fn names_pgstash_did_not_make_are_ignored() {
        let names = StatementNames::default();
        for name in [
            "s1",
            "pgstash_short",
            &format!("{BASE}x"),
            &format!("{BASE}_x"),
        ] {
            names.went_stale(name);
        }
        assert_eq!(&*names.current(BASE.into()), BASE);
    }
}
