//! The validated rules.toml model: defaults, rules, and rule lookup.
//!
//! Values here are resolved (a rule's missing `ttl` is the default's), so
//! the proxy reads a [`Rule`] without consulting [`Defaults`] again.
//! Loading and validation live in `load.rs`.

use std::sync::Arc;
use std::time::Duration;

use crate::analysis::Analysis;
use crate::fingerprint::{Fingerprint, FingerprintMap};
use crate::names::TableRef;

/// `[defaults]`: values used by rules that do not set their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// How long an entry lives. Default 60s.
    pub ttl: Duration,
    /// Results larger than this (in wire bytes) are not stored. Default 1 MiB.
    pub max_entry_bytes: u64,
    /// Let STABLE functions (`now()`, `current_user`…) be cached. Default false.
    pub allow_stable_functions: bool,
    /// Let reads of tables with row-level security be cached. Default false.
    pub allow_rls: bool,
    /// Serve and fill the cache inside explicit transactions. Default false
    /// (reads in a transaction go upstream so isolation levels keep meaning).
    pub cache_in_transactions: bool,
    /// Watch whether caching pays and, while it does not, look up only a
    /// sample of the rule's keys (the rest go straight upstream). Default
    /// true; false looks every read up whatever its hit ratio.
    pub adaptive: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            ttl: Duration::from_secs(60),
            max_entry_bytes: 1024 * 1024,
            allow_stable_functions: false,
            allow_rls: false,
            cache_in_transactions: false,
            adaptive: true,
        }
    }
}

/// One `[[rule]]`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique; used as the metrics label.
    pub name: String,
    pub matcher: Matcher,
    pub ttl: Duration,
    /// Extra relations whose writes invalidate this rule's entries (e.g.
    /// tables changed by triggers or `ON DELETE CASCADE`).
    pub invalidate_on: Vec<TableRef>,
    /// Entries may be served across roles (G5 otherwise keys them by role).
    pub shared: bool,
    /// Disabled rules are loaded and checked but never match.
    pub enabled: bool,
    pub max_entry_bytes: u64,
    pub allow_stable_functions: bool,
    pub allow_rls: bool,
    pub cache_in_transactions: bool,
    /// See [`Defaults::adaptive`].
    pub adaptive: bool,
    /// 1-based line of the rule's `name` in its file, for messages.
    pub line: usize,
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// `query = "…"`: any text with the same fingerprint as this one.
    Query {
        text: String,
        fingerprint: Fingerprint,
    },
    /// `fingerprint = "hex"`.
    Fingerprint(Fingerprint),
    /// `tables = […]`: any eligible read whose every relation is listed.
    Tables(Vec<TableRef>),
}

impl Matcher {
    /// The fingerprint matched, for `query` and `fingerprint` matchers.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        match self {
            Matcher::Query { fingerprint, .. } | Matcher::Fingerprint(fingerprint) => {
                Some(*fingerprint)
            }
            Matcher::Tables(_) => None,
        }
    }
}

/// A loaded rules file.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// Where the rules came from (a path, or a name given to `parse_rules`).
    pub origin: String,
    pub defaults: Defaults,
    rules: Vec<Arc<Rule>>,
    /// Enabled fingerprint rules.
    by_fingerprint: FingerprintMap<Arc<Rule>>,
    /// Enabled `tables` rules, in file order.
    by_tables: Vec<Arc<Rule>>,
}

impl RuleSet {
    /// Builds a set from validated rules (see `load.rs`).
    pub(crate) fn new(origin: String, defaults: Defaults, rules: Vec<Rule>) -> Self {
        let rules: Vec<Arc<Rule>> = rules.into_iter().map(Arc::new).collect();
        let mut by_fingerprint = FingerprintMap::default();
        let mut by_tables = Vec::new();
        for rule in rules.iter().filter(|r| r.enabled) {
            match rule.matcher.fingerprint() {
                Some(fp) => {
                    by_fingerprint.entry(fp).or_insert_with(|| Arc::clone(rule));
                }
                None => by_tables.push(Arc::clone(rule)),
            }
        }
        RuleSet {
            origin,
            defaults,
            rules,
            by_fingerprint,
            by_tables,
        }
    }

    /// All rules in file order, enabled or not.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// The rule called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Rule>> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The enabled rule matching `analysis`: a fingerprint rule first, else
    /// the first `tables` rule listing every relation the string reads.
    /// Matching says nothing about eligibility: see [`crate::decide`].
    pub fn find(&self, analysis: &Analysis) -> Option<&Arc<Rule>> {
        if let Some(rule) = self.by_fingerprint.get(&analysis.fingerprint) {
            return Some(rule);
        }
        let reads = analysis.tables_read();
        if reads.is_empty() {
            return None;
        }
        self.by_tables.iter().find(|rule| match &rule.matcher {
            Matcher::Tables(listed) => reads.iter().all(|r| listed.iter().any(|l| l.may_be(r))),
            _ => false,
        })
    }
}
