//! Read decisions remembered per analysis, so a statement the cache serves
//! again is not decided again.
//!
//! A decision is a pure function of the statement's analysis, the rules,
//! the session facts and the database's catalog snapshot (see
//! `pgstash_rules::decide`). A remembered one is reused only while all four
//! are the ones it was made under: the same analysis and rule set objects
//! (both are replaced, never changed, when they change), equal facts, and
//! the snapshot still current for the database (a refresh or DDL replaces
//! it). Holding the `Arc`s keeps their addresses from being reused while
//! the entry lives.
//!
//! # Performance
//! Deciding a read ran the rules twice (the second time with the catalog),
//! looked the snapshot up and built the invalidation keys: ~35% of the CPU
//! of an in-process hit. A remembered decision costs one lookup and a few
//! pointer comparisons.

use std::sync::Arc;

use pgstash_rules::{Analysis, Rule, RuleSet, SessionFacts};
use prometheus::IntCounter;
use quick_cache::sync::Cache;

use super::catalog::CatalogSnapshot;
use super::key::TableKey;
use super::payoff::Payoff;
use crate::observe::Metrics;

/// A read the cache may serve: its rule and the keys of every table whose
/// writes invalidate it.
#[derive(Debug)]
pub struct Read {
    pub rule: Arc<Rule>,
    /// The rule's name, for per-request accounting without a copy.
    pub rule_name: Arc<str>,
    pub tables: Vec<TableKey>,
    /// The rule's counters, looked up by label once here rather than on
    /// every lookup or fill.
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub fills: IntCounter,
    pub fills_skipped: IntCounter,
    /// Whether caching pays for the rule (shared by all its reads).
    pub payoff: Arc<Payoff>,
}

impl Read {
    pub fn new(
        rule: Arc<Rule>,
        tables: Vec<TableKey>,
        metrics: &Metrics,
        payoff: Arc<Payoff>,
    ) -> Read {
        let labels = [rule.name.as_str()];
        Read {
            hits: metrics.cache_hits.with_label_values(&labels),
            misses: metrics.cache_misses.with_label_values(&labels),
            fills: metrics.cache_fills.with_label_values(&labels),
            fills_skipped: metrics.fills_skipped.with_label_values(&labels),
            payoff,
            rule_name: rule.name.as_str().into(),
            rule,
            tables,
        }
    }
}

/// What a read was decided under.
pub struct Grounds {
    pub analysis: Arc<Analysis>,
    pub database: String,
    pub facts: SessionFacts,
    pub rules: Arc<RuleSet>,
    /// The snapshot consulted, if the decision needed the catalog.
    pub snapshot: Option<Arc<CatalogSnapshot>>,
}

struct Remembered {
    grounds: Grounds,
    read: Arc<Read>,
}

/// The remembered decisions (bounded; see the module documentation).
pub struct Decided {
    entries: Cache<(usize, SessionFacts), Arc<Remembered>>,
}

impl Decided {
    pub fn new(capacity: usize) -> Decided {
        Decided {
            entries: Cache::new(capacity.max(1)),
        }
    }

    /// The read decided for `analysis` under these facts, rules and
    /// current snapshot, if one is remembered. `current` gives the
    /// database's current snapshot (only asked when the decision used one).
    pub fn get(
        &self,
        analysis: &Arc<Analysis>,
        database: &str,
        facts: SessionFacts,
        rules: &Arc<RuleSet>,
        current: impl FnOnce() -> Option<Arc<CatalogSnapshot>>,
    ) -> Option<Arc<Read>> {
        let entry = self.entries.get(&slot(analysis, facts))?;
        let grounds = &entry.grounds;
        let same = Arc::ptr_eq(&grounds.analysis, analysis)
            && grounds.facts == facts
            && grounds.database == database
            && Arc::ptr_eq(&grounds.rules, rules);
        if !same {
            return None;
        }
        if let Some(used) = &grounds.snapshot {
            if !current().is_some_and(|now| Arc::ptr_eq(&now, used)) {
                return None;
            }
        }
        Some(entry.read.clone())
    }

    pub fn remember(&self, grounds: Grounds, read: Arc<Read>) {
        let slot = slot(&grounds.analysis, grounds.facts);
        self.entries
            .insert(slot, Arc::new(Remembered { grounds, read }));
    }

    /// Forgets everything (rules reloaded; entries would no longer match).
    pub fn clear(&self) {
        self.entries.clear();
    }
}

fn slot(analysis: &Arc<Analysis>, facts: SessionFacts) -> (usize, SessionFacts) {
    (Arc::as_ptr(analysis) as usize, facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgstash_rules::{parse_rules, AnalysisCache};

    const RULES: &str = "[[rule]]\nname = \"a\"\nquery = \"SELECT 1\"\n";

    struct World {
        analysis: Arc<Analysis>,
        rules: Arc<RuleSet>,
        snapshot: Arc<CatalogSnapshot>,
    }

    fn world() -> World {
        World {
            analysis: AnalysisCache::new(4).analyze("SELECT 1").unwrap(),
            rules: Arc::new(parse_rules(RULES, "rules.toml").unwrap()),
            snapshot: Arc::new(CatalogSnapshot::default()),
        }
    }

    fn remember(decided: &Decided, w: &World, snapshot: Option<Arc<CatalogSnapshot>>) {
        let rule = w.rules.rules()[0].clone();
        let gauge = prometheus::IntGauge::new("g", "g").unwrap();
        let payoff = Arc::new(Payoff::new(true, gauge));
        let read = Arc::new(Read::new(rule, Vec::new(), &Metrics::new(), payoff));
        let grounds = Grounds {
            analysis: w.analysis.clone(),
            database: "app".into(),
            facts: SessionFacts::default(),
            rules: w.rules.clone(),
            snapshot,
        };
        decided.remember(grounds, read);
    }

    #[test]
    fn a_decision_is_reused_under_the_same_grounds_only() {
        let w = world();
        let decided = Decided::new(16);
        remember(&decided, &w, Some(w.snapshot.clone()));
        let facts = SessionFacts::default();
        let current = || Some(w.snapshot.clone());
        assert!(decided
            .get(&w.analysis, "app", facts, &w.rules, current)
            .is_some());
        // Another database, other facts.
        assert!(decided
            .get(&w.analysis, "other", facts, &w.rules, current)
            .is_none());
        let in_transaction = SessionFacts {
            in_transaction: true,
            ..facts
        };
        assert!(decided
            .get(&w.analysis, "app", in_transaction, &w.rules, current)
            .is_none());
        // Reloaded rules, even with the same content.
        let reloaded = Arc::new(parse_rules(RULES, "rules.toml").unwrap());
        assert!(decided
            .get(&w.analysis, "app", facts, &reloaded, current)
            .is_none());
        // The snapshot was refreshed (or dropped after DDL).
        let refreshed = || Some(Arc::new(CatalogSnapshot::default()));
        assert!(decided
            .get(&w.analysis, "app", facts, &w.rules, refreshed)
            .is_none());
        assert!(decided
            .get(&w.analysis, "app", facts, &w.rules, || None)
            .is_none());
        // Another analysis of the same text is another object.
        let again = AnalysisCache::new(4).analyze("SELECT 1").unwrap();
        assert!(decided
            .get(&again, "app", facts, &w.rules, current)
            .is_none());
    }

    #[test]
    fn a_decision_made_without_the_catalog_ignores_it() {
        let w = world();
        let decided = Decided::new(16);
        remember(&decided, &w, None);
        let facts = SessionFacts::default();
        assert!(decided
            .get(&w.analysis, "app", facts, &w.rules, || None)
            .is_some());
        decided.clear();
        assert!(decided
            .get(&w.analysis, "app", facts, &w.rules, || None)
            .is_none());
    }
}
