//! The cache as a session sees it: decide what a statement is, look it up
//! (coalescing identical misses), fill it, and invalidate after writes.
//! Owns the rules (hot-reloaded from rules.toml), the analysis cache, the
//! catalog snapshots and the store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use pgstash_rules::{
    Analysis, AnalysisCache, BypassReason, Decision, Rule, RuleSet, RulesError, SessionFacts,
    StatementKind, TableRef,
};

use super::catalog::{self, Catalogs};
use super::decided::{Decided, Grounds, Read};
use super::fill::{FillGuard, FillRole, Fills};
use super::key::{KeyBase, TableKey};
use super::payoff::Payoff;
use super::store::{LocalCounters, MemoryStore, RedisStore, Store, StoreError};
use crate::backend::connect::ConnectTarget;
use crate::config::Config;
use crate::observe::Metrics;
use crate::Boxed;

/// Distinct SQL texts (and shapes) whose analysis is kept.
const ANALYSIS_CACHE_ENTRIES: usize = 10_000;

/// How often rules.toml is checked for changes.
const RULES_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a statement text is to the cache (see [`Cache::classify`]).
pub enum Classified {
    /// It writes: these tables are invalidated when it commits.
    Write(Writes),
    /// It only reads; `None` when pg_query cannot parse it.
    Read(Option<Arc<Analysis>>),
}

/// What the cache does with a read (see [`Cache::decide`]).
pub enum ReadDecision {
    /// Look it up, and fill it on a miss.
    Serve(Arc<Read>),
    /// Send it upstream, for this reason.
    Bypass(BypassReason),
    /// It turned out to write (the session's classification missed it).
    NotARead,
}

/// What a lookup tells the session to do.
pub enum Plan {
    /// Answer with these bytes.
    Hit(Bytes),
    /// Run the request upstream and store its answer.
    Fill(Fill),
    /// Run the request upstream; nothing to store.
    Upstream,
    /// Run the request upstream without having asked the store: caching
    /// does not pay for its rule now (see `payoff.rs`).
    NotPaying,
}

/// A fill in progress: the leader's guard and where the answer goes (its
/// rule's `ttl` and `max_entry_bytes` apply).
pub struct Fill {
    pub guard: FillGuard,
    pub read: Arc<Read>,
    /// The table versions its key names (see
    /// [`Lookup::versions`](super::store::Lookup::versions)).
    pub versions: Vec<u64>,
    /// When the request went upstream (after its lookup).
    pub started: Instant,
    /// The key's base, for its rule's payoff measurements.
    pub base: KeyBase,
}

/// A statement's writes: the tables to invalidate after it commits.
#[derive(Debug, Clone, Default)]
pub struct Writes {
    pub tables: Vec<TableRef>,
    pub all: bool,
    /// DDL: the catalog snapshot must be re-read.
    pub ddl: bool,
}

pub struct Cache {
    pub store: Arc<Store>,
    fills: Arc<Fills>,
    rules: ArcSwap<RuleSet>,
    rules_path: PathBuf,
    rules_modified: Mutex<Option<SystemTime>>,
    analyses: AnalysisCache,
    decided: Decided,
    catalogs: Arc<Catalogs>,
    coalesce_wait: Duration,
    metrics: Arc<Metrics>,
    /// `store_call{op=…}` and `cache_errors{op="put"}`, looked up once.
    lookup_latency: prometheus::Histogram,
    put_latency: prometheus::Histogram,
    invalidate_latency: prometheus::Histogram,
    put_errors: prometheus::IntCounter,
    /// `cache_bypass{reason="not_paying"}`, looked up once.
    not_paying: prometheus::IntCounter,
    /// By rule name; replaced when the rules are reloaded.
    payoffs: Mutex<HashMap<String, Arc<Payoff>>>,
}

impl Cache {
    /// Builds the cache when rules are configured (`None` otherwise).
    pub async fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        catalogs: Arc<Catalogs>,
    ) -> Result<Option<Arc<Cache>>, CacheError> {
        let Some(rules_path) = config.rules.clone() else {
            return Ok(None);
        };
        let rules = pgstash_rules::load_rules(&rules_path)?;
        let store = match &config.redis {
            Some(url) => {
                let counters = LocalCounters {
                    hits: metrics.local_hits.clone(),
                    resets: metrics.local_resets.clone(),
                };
                Store::Redis(RedisStore::connect(url, &config.cache, counters).await?)
            }
            None => {
                if config.cache.mode == crate::config::CacheMode::Fast {
                    tracing::warn!("cache.mode = \"fast\" applies to a Redis store; the in-process store is always exact");
                }
                Store::Memory(MemoryStore::new(config.cache.max_memory_bytes))
            }
        };
        let modified = std::fs::metadata(&rules_path)
            .and_then(|m| m.modified())
            .ok();
        let cache = Arc::new(Cache {
            store: Arc::new(store),
            fills: Arc::new(Fills::default()),
            rules: ArcSwap::from_pointee(rules),
            rules_path,
            rules_modified: Mutex::new(modified),
            analyses: AnalysisCache::new(ANALYSIS_CACHE_ENTRIES),
            decided: Decided::new(ANALYSIS_CACHE_ENTRIES),
            catalogs,
            coalesce_wait: config.cache.coalesce_wait,
            lookup_latency: metrics.store_call.with_label_values(&["lookup"]),
            put_latency: metrics.store_call.with_label_values(&["put"]),
            invalidate_latency: metrics.store_call.with_label_values(&["invalidate"]),
            put_errors: metrics.cache_errors.with_label_values(&["put"]),
            not_paying: metrics.cache_bypass.with_label_values(&["not_paying"]),
            payoffs: Mutex::new(HashMap::new()),
            metrics,
        });
        tracing::info!(rules = %cache.rules_path.display(), count = cache.rules.load().rules().len(), store = cache.store.kind(), "cache enabled");
        cache
            .metrics
            .register_labels(cache.rules.load().rules().iter().map(|r| r.name.as_str()));
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RULES_POLL).await;
                let Some(cache) = weak.upgrade() else { return };
                cache.reload_if_changed();
            }
        });
        Ok(Some(cache))
    }

    /// Re-reads rules.toml when its modification time changed. A broken file
    /// is reported (file:line:column) and the running rules stay.
    pub fn reload_if_changed(&self) {
        let modified = std::fs::metadata(&self.rules_path)
            .and_then(|m| m.modified())
            .ok();
        {
            let mut last = self
                .rules_modified
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if *last == modified {
                return;
            }
            *last = modified;
        }
        let _ = self.reload_rules();
    }

    pub fn reload_rules(&self) -> Result<(), RulesError> {
        match pgstash_rules::load_rules(&self.rules_path) {
            Ok(rules) => {
                tracing::info!(count = rules.rules().len(), "rules reloaded");
                self.metrics
                    .register_labels(rules.rules().iter().map(|r| r.name.as_str()));
                // Every rule starts over, measured under its new settings:
                // first, so reads decided under the new rules find none of
                // the old measurements (one decided under the old rules
                // meanwhile may bring them back: see `Cache::payoff`).
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
                self.rules.store(Arc::new(rules));
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

    /// What `sql` writes, if anything (no catalog needed).
    pub fn writes(&self, sql: &str) -> Option<Writes> {
        match self.classify(sql) {
            Classified::Write(writes) => Some(writes),
            Classified::Read(_) => None,
        }
    }

    /// Whether `sql` writes, from one analysis that a read then hands on to
    /// [`Cache::decide`].
    pub fn classify(&self, sql: &str) -> Classified {
        let Ok(analysis) = self.analyses.analyze(sql) else {
            // Text pg_query cannot parse but that may write: everything goes.
            return match pgstash_rules::decide_unparsable(sql) {
                Decision::Write {
                    tables,
                    invalidate_all,
                } => Classified::Write(Writes {
                    tables,
                    all: invalidate_all,
                    ddl: true,
                }),
                _ => Classified::Read(None),
            };
        };
        if !analysis.writes() {
            return Classified::Read(Some(analysis));
        }
        let statements = &analysis.statements;
        Classified::Write(Writes {
            tables: analysis.tables_written(),
            all: statements.iter().any(|s| s.writes_unknown),
            ddl: statements.iter().any(|s| s.kind == StatementKind::Ddl),
        })
    }

    /// A read decision remembered for `analysis` under these grounds, if
    /// any: the synchronous fast path of [`Cache::decide`] (no future to
    /// box, nothing to copy), which a caller tries first.
    pub fn remembered(
        &self,
        analysis: &Arc<Analysis>,
        facts: SessionFacts,
        database: &str,
    ) -> Option<Arc<Read>> {
        let rules = self.rules.load();
        self.decided.get(analysis, database, facts, &rules, || {
            self.catalogs.current(database)
        })
    }

    /// The caching decision for a read `sql`, given its analysis from
    /// [`Cache::classify`] (`None`: unparsable), made from scratch: callers
    /// try [`Cache::remembered`] first. Loads the catalog only when a rule
    /// matches and the answer depends on it. Reads are remembered (see
    /// `decided.rs`).
    pub fn decide<'a>(
        &'a self,
        sql: &'a str,
        analysis: Option<Arc<Analysis>>,
        facts: SessionFacts,
        database: &'a str,
        target: impl FnOnce() -> ConnectTarget + Send + 'a,
    ) -> Boxed<'a, ReadDecision> {
        Box::pin(self.decide_inline(sql, analysis, facts, database, target))
    }

    async fn decide_inline(
        &self,
        sql: &str,
        analysis: Option<Arc<Analysis>>,
        facts: SessionFacts,
        database: &str,
        target: impl FnOnce() -> ConnectTarget,
    ) -> ReadDecision {
        let Some(analysis) = analysis else {
            return self.read_decision(pgstash_rules::decide_unparsable(sql), database);
        };
        let rules = self.rules.load_full();
        let first = pgstash_rules::decide(&analysis, &rules, &facts, &*catalog::unknown());
        let (decision, snapshot) = match &first {
            Decision::Bypass {
                reason:
                    pgstash_rules::BypassReason::UnknownFunction(_)
                    | pgstash_rules::BypassReason::UnknownRelation(_),
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
                    table_keys(database, &tables),
                    &self.metrics,
                    payoff,
                )))
            }
            Decision::Bypass { reason } => ReadDecision::Bypass(reason),
            Decision::Write { .. } => ReadDecision::NotARead,
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

    /// Looks `base` up under the current versions of `tables`. On a miss the
    /// first caller becomes the filler; concurrent callers wait for it.
    pub fn lookup<'a>(&'a self, base: &'a KeyBase, read: &'a Arc<Read>) -> Boxed<'a, Plan> {
        Box::pin(self.lookup_inline(base, read))
    }

    async fn lookup_inline(&self, base: &KeyBase, read: &Arc<Read>) -> Plan {
        if read.payoff.skips(base) {
            self.not_paying.inc();
            return Plan::NotPaying;
        }
        let (tables, rule) = (&read.tables, &read.rule);
        let started = Instant::now();
        let result = self.store.lookup(base, tables).await;
        let spent = started.elapsed();
        self.lookup_latency.observe(spent.as_secs_f64());
        let measure = |hit| read.payoff.lookup(base, spent, hit, &read.rule_name);
        let lookup = match result {
            Ok(lookup) => lookup,
            Err(e) => {
                // An outage says nothing of whether caching pays; G4's
                // recovery handles it.
                tracing::debug!(error = %e, "cache lookup failed; going upstream");
                self.metrics
                    .cache_errors
                    .with_label_values(&["lookup"])
                    .inc();
                return Plan::Upstream;
            }
        };
        if let Some(value) = lookup.value {
            measure(true);
            read.hits.inc();
            return Plan::Hit(value);
        }
        match self.fills.begin(&lookup.key) {
            FillRole::Leader(guard) => {
                measure(false);
                read.misses.inc();
                Plan::Fill(Fill {
                    guard,
                    versions: lookup.versions,
                    read: read.clone(),
                    started: Instant::now(),
                    base: *base,
                })
            }
            FillRole::Follower(slot) => match Fills::wait(slot, self.coalesce_wait).await {
                Some(value) => {
                    measure(true);
                    self.metrics
                        .cache_coalesced
                        .with_label_values(&[rule.name.as_str()])
                        .inc();
                    read.hits.inc();
                    Plan::Hit(value)
                }
                None => {
                    measure(false);
                    read.misses.inc();
                    Plan::Upstream
                }
            },
        }
    }

    /// Stores a filled entry and hands it to coalesced waiters. A Redis
    /// write runs in the background: the client does not wait for it.
    pub fn complete_fill(&self, fill: Fill, value: Bytes) {
        fill.read.payoff.fill(&fill.base, fill.started.elapsed());
        let ttl = fill.read.rule.ttl;
        if self.store.keep_local(fill.guard.key(), &value, ttl) {
            // A map insert: cheaper than the task a background write costs.
            fill.read.fills.inc();
            fill.guard.complete(value);
            return;
        }
        let key = fill.guard.key().to_owned();
        let store = self.store.clone();
        let (errors, latency) = (self.put_errors.clone(), self.put_latency.clone());
        let (read, versions) = (fill.read.clone(), fill.versions);
        fill.guard.complete(value.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let result = store.put(&key, value, ttl, &read.tables, &versions).await;
            latency.observe(started.elapsed().as_secs_f64());
            match result {
                Ok(true) => read.fills.inc(),
                Ok(false) => read.fills_skipped.inc(),
                Err(e) => {
                    tracing::debug!(error = %e, "cache fill not stored");
                    errors.inc();
                }
            }
        });
    }

    /// Records that `writes` committed in `database`. Called after the
    /// commit and before the client sees its acknowledgement.
    pub fn invalidate<'a>(&'a self, database: &'a str, writes: &'a Writes) -> Boxed<'a, ()> {
        Box::pin(self.invalidate_inline(database, writes))
    }

    async fn invalidate_inline(&self, database: &str, writes: &Writes) {
        if writes.ddl || writes.all {
            self.catalogs.invalidate(database);
        }
        let started = std::time::Instant::now();
        let result = if writes.all {
            self.metrics.invalidations.with_label_values(&["*"]).inc();
            self.store.invalidate_all().await
        } else {
            let keys = table_keys(database, &writes.tables);
            for key in &keys {
                self.metrics
                    .invalidations
                    .with_label_values(&[key.as_str()])
                    .inc();
            }
            self.store.invalidate(&keys).await
        };
        self.invalidate_latency
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            tracing::warn!(error = %e, "invalidation not recorded");
            self.metrics
                .cache_errors
                .with_label_values(&["invalidate"])
                .inc();
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Invalidation keys for tables of `database` (see `TableRef::invalidation_key`).
pub fn table_keys(database: &str, tables: &[TableRef]) -> Vec<TableKey> {
    let mut keys: Vec<TableKey> = tables
        .iter()
        .map(|t| TableKey::new(database, t.invalidation_key()))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
