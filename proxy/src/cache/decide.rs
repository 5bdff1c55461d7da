//! What the cache does with a statement: a write to invalidate after it
//! commits, or a read to serve (under which rule, depending on which
//! tables) or to bypass (and why). Owns what decisions are made from: the
//! rules in force, the analysis cache, the remembered decisions, the
//! per-rule payoff measurements and the catalog snapshots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pgstash_rules::{
    Analysis, AnalysisCache, BypassReason, Decision, Rule, RulesError, SessionFacts, Writes,
};

use super::catalog::{self, Catalogs};
use super::decided::{Decided, Grounds, Read};
use super::key::TableKey;
use super::payoff::Payoff;
use super::rules::LiveRules;
use crate::backend::connect::ConnectTarget;
use crate::observe::Metrics;
use crate::Boxed;

/// Distinct SQL texts (and shapes) whose analysis is kept.
const ANALYSIS_CACHE_ENTRIES: usize = 10_000;

/// What a statement text is to the cache.
pub enum Class {
    /// It writes: these tables are invalidated when it commits.
    Write(Writes),
    /// It only reads; `None` when pg_query cannot parse it.
    Read(Option<Arc<Analysis>>),
}

/// What the cache does with a read.
pub enum ReadDecision {
    /// Look it up, and fill it on a miss.
    Serve(Arc<Read>),
    /// Send it upstream, for this reason.
    Bypass(BypassReason),
}

pub struct Decider {
    rules: LiveRules,
    analyses: AnalysisCache,
    decided: Decided,
    catalogs: Arc<Catalogs>,
    metrics: Arc<Metrics>,
    /// By rule name; started over when the rules are reloaded.
    payoffs: Mutex<HashMap<String, Arc<Payoff>>>,
}

impl Decider {
    pub fn new(rules: LiveRules, catalogs: Arc<Catalogs>, metrics: Arc<Metrics>) -> Decider {
        metrics.register_labels(rules.guard().rules().iter().map(|r| r.name.as_str()));
        Decider {
            rules,
            analyses: AnalysisCache::new(ANALYSIS_CACHE_ENTRIES),
            decided: Decided::new(ANALYSIS_CACHE_ENTRIES),
            catalogs,
            metrics,
            payoffs: Mutex::new(HashMap::new()),
        }
    }

    pub fn rules(&self) -> &LiveRules {
        &self.rules
    }

    /// Whether `sql` writes (and what), from one analysis that a read then
    /// hands on to [`Decider::decide`]. The writes are `rules`' answer
    /// ([`Writes::of`]); text pg_query cannot parse but that may write
    /// invalidates everything.
    pub fn classify(&self, sql: &str) -> Class {
        let Ok(analysis) = self.analyses.analyze(sql) else {
            return match pgstash_rules::decide_unparsable(sql) {
                Decision::Write(writes) => Class::Write(writes),
                _ => Class::Read(None),
            };
        };
        match Writes::of(&analysis) {
            Some(writes) => Class::Write(writes),
            None => Class::Read(Some(analysis)),
        }
    }

    /// A read decision remembered for `analysis` under these grounds, if
    /// any: the synchronous fast path of [`Decider::decide`] (no future to
    /// box, nothing to copy), which a caller tries first.
    pub fn remembered(
        &self,
        analysis: &Arc<Analysis>,
        facts: SessionFacts,
        database: &str,
    ) -> Option<Arc<Read>> {
        let rules = self.rules.guard();
        self.decided.get(analysis, database, facts, &rules, || {
            self.catalogs.current(database)
        })
    }

    /// The caching decision for a read `sql`, given its analysis from
    /// [`Decider::classify`] (`None`: unparsable), made from scratch:
    /// callers try [`Decider::remembered`] first. Loads the catalog only
    /// when a rule matches and the answer depends on it. Reads are
    /// remembered (see `decided.rs`).
    pub fn decide<'a>(
        &'a self,
        sql: &'a str,
        analysis: Option<Arc<Analysis>>,
        facts: SessionFacts,
        database: &'a str,
        target: &'a (dyn Fn() -> ConnectTarget + Send + Sync),
    ) -> Boxed<'a, ReadDecision> {
        Box::pin(self.decide_inline(sql, analysis, facts, database, target))
    }

    async fn decide_inline(
        &self,
        sql: &str,
        analysis: Option<Arc<Analysis>>,
        facts: SessionFacts,
        database: &str,
        target: &(dyn Fn() -> ConnectTarget + Send + Sync),
    ) -> ReadDecision {
        let Some(analysis) = analysis else {
            return self.read_decision(pgstash_rules::decide_unparsable(sql), database);
        };
        let rules = self.rules.current();
        let first = pgstash_rules::decide(&analysis, &rules, &facts, &*catalog::unknown());
        let (decision, snapshot) = match &first {
            Decision::Bypass {
                reason: BypassReason::UnknownFunction(_) | BypassReason::UnknownRelation(_),
            } => {
                let snapshot = self.catalogs.get(database, &target()).await;
                let decision = pgstash_rules::decide(&analysis, &rules, &facts, &*snapshot);
                (decision, Some(snapshot))
            }
            _ => (first, None),
        };
        let decision = self.read_decision(decision, database);
        if let ReadDecision::Serve(read) = &decision {
            let grounds = Grounds {
                analysis,
                database: database.to_owned(),
                facts,
                rules,
                snapshot,
            };
            self.decided.remember(grounds, read.clone());
        }
        decision
    }

    fn read_decision(&self, decision: Decision, database: &str) -> ReadDecision {
        match decision {
            Decision::CacheRead { rule, tables } => {
                let payoff = self.payoff(&rule);
                ReadDecision::Serve(Arc::new(Read::new(
                    rule,
                    TableKey::all(database, &tables),
                    &self.metrics,
                    payoff,
                )))
            }
            Decision::Bypass { reason } => ReadDecision::Bypass(reason),
            // The classification said read; a write here would be a bug in
            // `rules`. Going upstream uncached is the safe answer.
            Decision::Write(_) => ReadDecision::Bypass(BypassReason::NotPlainRead(
                pgstash_rules::StatementKind::Other,
            )),
        }
    }

    /// The measurements of `rule`, shared by all its reads. Ones made
    /// under another `adaptive` setting (a read decided under the rules
    /// before a reload can race the reload's reset) are replaced.
    fn payoff(&self, rule: &Rule) -> Arc<Payoff> {
        let mut payoffs = self.payoffs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(payoff) = payoffs.get(&rule.name) {
            if payoff.adaptive() == rule.adaptive {
                return payoff.clone();
            }
        }
        let gauge = self
            .metrics
            .rule_bypassing
            .with_label_values(&[rule.name.as_str()]);
        let payoff = Arc::new(Payoff::new(rule.adaptive, gauge));
        payoffs.insert(rule.name.clone(), payoff.clone());
        payoff
    }

    /// Re-reads rules.toml when its modification time changed.
    pub fn reload_if_changed(&self) {
        if self.rules.changed() {
            let _ = self.reload();
        }
    }

    /// Re-reads rules.toml. A broken file is reported (file:line:column)
    /// and the running rules stay.
    pub fn reload(&self) -> Result<(), RulesError> {
        match self.rules.read() {
            Ok(rules) => {
                tracing::info!(count = rules.rules().len(), "rules reloaded");
                self.metrics
                    .register_labels(rules.rules().iter().map(|r| r.name.as_str()));
                // Every rule starts over, measured under its new settings:
                // first, so reads decided under the new rules find none of
                // the old measurements (one decided under the old rules
                // meanwhile may bring them back: see `Decider::payoff`).
                for (rule, _) in self
                    .payoffs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .drain()
                {
                    self.metrics
                        .rule_bypassing
                        .with_label_values(&[rule.as_str()])
                        .set(0);
                }
                self.rules.install(rules);
                // Entries of the old rules can never match again; free them.
                self.decided.clear();
                self.metrics.rule_reloads.with_label_values(&["ok"]).inc();
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "rules reload failed; keeping the previous rules");
                self.metrics
                    .rule_reloads
                    .with_label_values(&["failed"])
                    .inc();
                Err(e)
            }
        }
    }
}
