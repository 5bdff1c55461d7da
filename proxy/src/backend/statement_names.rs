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
//!
//! A client's Parse after a schema change must not even land on a stale
//! copy: directly it would parse afresh, against the new definitions
//! (asyncpg's suite creates and drops `tab1` test after test, preparing
//! `SELECT * FROM tab1` each time; a new client got the copy of an older
//! `tab1` and Postgres' `0A000`). So every schema change pgstash sees
//! complete (a CommandComplete `CREATE …`, `ALTER …` or `DROP …`, through
//! any pool) starts a new era, shared by all pools: the generation of every
//! name is the era plus the times that name went stale, so new Parses
//! prepare afresh after it. Schema changes made past pgstash are still
//! only noticed by the `0A000` they cause.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
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
    /// Schema changes seen so far (shared by the pools of a process).
    era: Arc<AtomicU32>,
}

impl StatementNames {
    /// The names of a pool in the schema era `era` (see [`Pools`]).
    ///
    /// [`Pools`]: super::Pools
    pub fn new(era: Arc<AtomicU32>) -> StatementNames {
        StatementNames {
            era,
            ..StatementNames::default()
        }
    }

    /// A schema change completed: new Parses of every statement prepare it
    /// afresh.
    pub fn schema_changed(&self) {
        self.era.fetch_add(1, Ordering::Relaxed);
    }

    /// The name new Parses of the statement first named `base` use.
    pub fn current(&self, base: Arc<str>) -> Arc<str> {
        match self.generation(&base) {
            0 => base,
            generation => format!("{base}_{generation}").into(),
        }
    }

    /// The era plus the times `base` went stale in it.
    fn generation(&self, base: &str) -> u32 {
        let era = self.era.load(Ordering::Relaxed);
        if !self.any_stale.load(Ordering::Relaxed) {
            return era;
        }
        let generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        era.wrapping_add(generations.get(base).copied().unwrap_or(0))
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
        let era = self.era.load(Ordering::Relaxed);
        let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        let stale = generations.get(base).copied().unwrap_or(0);
        if era.wrapping_add(stale) != generation {
            // An older copy: the name already moved on.
            return;
        }
        if generations.len() >= NAMES_MAX {
            generations.clear();
        }
        generations.insert(base.into(), stale + 1);
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
    fn a_schema_change_moves_every_name_on_for_all_pools_sharing_the_era() {
        let era = Arc::new(AtomicU32::new(0));
        let (a, b) = (
            StatementNames::new(era.clone()),
            StatementNames::new(era.clone()),
        );
        assert_eq!(&*a.current(BASE.into()), BASE);
        a.went_stale(BASE);
        assert_eq!(&*a.current(BASE.into()), format!("{BASE}_1"));
        b.schema_changed();
        assert_eq!(&*a.current(BASE.into()), format!("{BASE}_2"));
        assert_eq!(&*b.current(BASE.into()), format!("{BASE}_1"));
        // A copy of the era before is old: no further move.
        a.went_stale(&format!("{BASE}_1"));
        assert_eq!(&*a.current(BASE.into()), format!("{BASE}_2"));
        a.went_stale(&format!("{BASE}_2"));
        assert_eq!(&*a.current(BASE.into()), format!("{BASE}_3"));
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
