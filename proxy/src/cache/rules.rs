//! The rules in force and the file they come from. Reloading replaces the
//! whole set (an `ArcSwap`, so a decision in flight keeps the set it
//! started with); a broken file is reported with file:line:column and the
//! running rules stay. What else a reload resets is the decider's business
//! (`decide.rs`); who triggers it (the file watch, SIGHUP, the admin
//! endpoint) is the server's.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use pgstash_rules::{RuleSet, RulesError};

pub struct LiveRules {
    current: ArcSwap<RuleSet>,
    path: PathBuf,
    /// The file's modification time when it was last read.
    modified: Mutex<Option<SystemTime>>,
}

impl LiveRules {
    /// Reads `path`; a broken file is an error here (pgstash does not start).
    pub fn load(path: PathBuf) -> Result<LiveRules, RulesError> {
        let modified = modified(&path);
        let rules = pgstash_rules::load_rules(&path)?;
        Ok(LiveRules {
            current: ArcSwap::from_pointee(rules),
            path,
            modified: Mutex::new(modified),
        })
    }

    /// The rules in force.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// The rules in force, for a decision made now (no reference count
    /// taken).
    pub fn guard(&self) -> arc_swap::Guard<Arc<RuleSet>> {
        self.current.load()
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether the file changed since it was last read.
    pub fn changed(&self) -> bool {
        let now = modified(&self.path);
        let mut last = self.modified.lock().unwrap_or_else(|e| e.into_inner());
        if *last == now {
            return false;
        }
        *last = now;
        true
    }

    /// Reads the file again (the running rules stay in force until
    /// [`LiveRules::install`]).
    pub fn read(&self) -> Result<RuleSet, RulesError> {
        pgstash_rules::load_rules(&self.path)
    }

    /// Puts `rules` in force.
    pub fn install(&self, rules: RuleSet) {
        self.current.store(Arc::new(rules));
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
