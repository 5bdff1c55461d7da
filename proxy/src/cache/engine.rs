//! The cache as a session sees it: one entry point, [`Cache::route`], that
//! takes a statement the session is about to send upstream and says what to
//! do with it — note its writes, answer it from the cache, or forward it
//! (filling the entry with its answer, or not). Misses of the same key are
//! coalesced into one upstream query (`fill.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pgstash_rules::{Analysis, SessionFacts, Writes};

use super::catalog::Catalogs;
use super::claim::{self, Claim, Waited};
use super::decide::{Class, Decider, ReadDecision};
use super::decided::Read;
use super::fill::{FillGuard, FillRole, Fills};
use super::invalidate::Invalidator;
use super::key::{Identity, KeyBase, KeyScope};
use super::rules::LiveRules;
use super::store::{CacheStore, Filler, Store, StoreError};
use crate::backend::connect::ConnectTarget;
use crate::config::Config;
use crate::observe::Metrics;
use crate::Boxed;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Rules(#[from] pgstash_rules::RulesError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A statement a session is about to send upstream.
pub struct Ask<'a> {
    pub sql: &'a str,
    /// What besides the text determines its answer.
    pub form: Form<'a>,
    /// Whether the session's state lets the cache answer.
    pub gate: Gate,
    pub facts: SessionFacts,
    /// Who asks: database, role and settings (part of the key).
    pub who: Identity<'a>,
    /// The session's hashed part of the key, kept between requests.
    pub scope: &'a mut KeyScope,
    /// How to reach the database for catalog facts, if a decision needs them.
    pub target: &'a (dyn Fn() -> ConnectTarget + Send + Sync),
}

/// The protocol a statement came in, with the fields of its key.
pub enum Form<'a> {
    /// A simple Query: the text is the whole request.
    Simple,
    /// `[Parse] Bind [Describe portal] Execute Sync`: parameter types as the
    /// Parse gave them, the Bind's formats and values, whether the portal
    /// is described (the answer then carries a RowDescription).
    Extended {
        types: &'a [u8],
        bind: &'a [u8],
        describe: bool,
    },
}

/// Whether the cache may answer the session now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Only forward (requests in flight, a transaction, COPY…). `counted`
    /// names the `cache_bypass` reason a matching read is counted under.
    Closed {
        counted: Option<&'static str>,
    },
}

/// What the session does with the statement.
pub enum Route {
    /// It writes: note the writes, then forward.
    Write(Writes),
    /// Forward; the cache takes no part.
    Forward,
    /// Answer with these bytes (RowDescription, DataRows, CommandComplete).
    Hit { rule: Arc<str>, bytes: Bytes },
    /// Forward and capture the answer for this fill.
    Fill(Fill),
    /// Forward as a miss that fills nothing (the store failed, or waiting
    /// for another client's fill of the same key timed out).
    Miss { rule: Arc<str> },
    /// Forward without asking the store: caching does not pay for the rule
    /// now (see `payoff.rs`).
    NotPaying { rule: Arc<str> },
}

/// A route, decided at once or after a lookup (see [`Cache::route`]).
pub enum Routing<'a> {
    Done(Route),
    Lookup(Boxed<'a, Route>),
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
    /// This instance's lease on the entry, when instances share the store.
    pub claim: Option<Claim>,
}

pub struct Cache {
    store: Arc<Store>,
    fills: Arc<Fills>,
    decider: Decider,
    invalidator: Arc<Invalidator>,
    coalesce_wait: Duration,
    metrics: Arc<Metrics>,
    /// `store_call{op=…}`, `cache_errors{op="put"}` and
    /// `cache_bypass{reason="not_paying" | "replication_lag"}`, looked up once.
    lookup_latency: prometheus::Histogram,
    put_latency: prometheus::Histogram,
    put_errors: prometheus::IntCounter,
    not_paying: prometheus::IntCounter,
    replication_lag: prometheus::IntCounter,
    store_down: prometheus::IntCounter,
    lease_waits: prometheus::IntCounterVec,
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
        let rules = LiveRules::load(rules_path)?;
        let store = Store::from_config(config, &metrics).await?;
        let store = Arc::new(store);
        tracing::info!(rules = %rules.path().display(), count = rules.guard().rules().len(), store = store.kind(), "cache enabled");
        let invalidator = Invalidator::new(store.clone(), catalogs.clone(), metrics.clone());
        Ok(Some(Arc::new(Cache {
            fills: Arc::new(Fills::default()),
            decider: Decider::new(rules, catalogs, metrics.clone()),
            invalidator: Arc::new(invalidator),
            coalesce_wait: config.cache.coalesce_wait,
            lookup_latency: metrics.store_call.with_label_values(&["lookup"]),
            put_latency: metrics.store_call.with_label_values(&["put"]),
            put_errors: metrics.cache_errors.with_label_values(&["put"]),
            not_paying: metrics.cache_bypass.with_label_values(&["not_paying"]),
            replication_lag: metrics.cache_bypass.with_label_values(&["replication_lag"]),
            store_down: metrics.cache_bypass.with_label_values(&["store_down"]),
            lease_waits: metrics.lease_waits.clone(),
            store,
            metrics,
        })))
    }

    /// Where writes are recorded (every source hands them here).
    pub fn invalidator(&self) -> &Arc<Invalidator> {
        &self.invalidator
    }

    /// The rules, their reload and the decisions made from them.
    pub fn decider(&self) -> &Decider {
        &self.decider
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What to do with `ask` (see [`Route`]): the one call a session makes
    /// for a statement when caching is configured. Writes, and reads the
    /// cache may not answer now, are routed at once; a read the cache may
    /// answer is looked up ([`Routing::Lookup`]).
    pub fn route<'a>(&'a self, ask: Ask<'a>) -> Routing<'a> {
        let analysis = match self.decider.classify(ask.sql) {
            Class::Write(writes) => return Routing::Done(Route::Write(writes)),
            Class::Read(analysis) => analysis,
        };
        if let Gate::Closed { counted } = ask.gate {
            if let Some(reason) = counted {
                self.metrics.cache_bypass.with_label_values(&[reason]).inc();
            }
            return Routing::Done(Route::Forward);
        }
        // Fail closed (G8): a source of invalidation cannot prove it has
        // seen every write older than its bound.
        if !self.invalidator.freshness().is_current(ask.who.database) {
            self.replication_lag.inc();
            return Routing::Done(Route::Forward);
        }
        let serve = Box::pin(self.serve(ask, analysis));
        Routing::Lookup(serve)
    }

    /// Decides a read (a remembered decision first), builds its key and
    /// looks it up.
    async fn serve(&self, ask: Ask<'_>, analysis: Option<Arc<Analysis>>) -> Route {
        let remembered = analysis
            .as_ref()
            .and_then(|a| self.decider.remembered(a, ask.facts, ask.who.database));
        let read = match remembered {
            Some(read) => read,
            None => {
                let decision = self
                    .decider
                    .decide(ask.sql, analysis, ask.facts, ask.who.database, ask.target)
                    .await;
                match decision {
                    ReadDecision::Serve(read) => read,
                    ReadDecision::Bypass(reason) => {
                        self.metrics
                            .cache_bypass
                            .with_label_values(&[reason.label()])
                            .inc();
                        return Route::Forward;
                    }
                }
            }
        };
        let (domain, sql) = (ask.form.domain(), ask.sql);
        let base = ask
            .scope
            .base(domain, read.rule.shared, &ask.who, |k| match ask.form {
                Form::Simple => {
                    k.field(sql.as_bytes());
                }
                Form::Extended {
                    types,
                    bind,
                    describe,
                } => {
                    k.field(sql.as_bytes())
                        .field(types)
                        .field(bind)
                        .field(&[describe as u8]);
                }
            });
        self.lookup(&base, &read).await
    }

    /// Looks `base` up under the current versions of its tables. On a miss
    /// the first caller becomes the filler; concurrent callers wait for it.
    async fn lookup(&self, base: &KeyBase, read: &Arc<Read>) -> Route {
        let rule = read.rule_name.clone();
        if read.payoff.skips(base) {
            self.not_paying.inc();
            return Route::NotPaying { rule };
        }
        let started = Instant::now();
        let result = self.store.lookup(base, &read.tables).await;
        let spent = started.elapsed();
        self.lookup_latency.observe(spent.as_secs_f64());
        let measure = |hit| read.payoff.lookup(base, spent, hit, &read.rule_name);
        let lookup = match result {
            Ok(lookup) => lookup,
            // The store is down: no call was made, nothing waited.
            Err(StoreError::Down) => {
                self.store_down.inc();
                return Route::Forward;
            }
            Err(e) => {
                // An outage says nothing of whether caching pays; G4's
                // recovery handles it.
                tracing::debug!(error = %e, "cache lookup failed; going upstream");
                self.metrics
                    .cache_errors
                    .with_label_values(&["lookup"])
                    .inc();
                return Route::Miss { rule };
            }
        };
        if let Some(bytes) = lookup.value {
            measure(true);
            read.hits.inc();
            return Route::Hit { rule, bytes };
        }
        match self.fills.begin(&lookup.key) {
            FillRole::Leader(guard) => {
                let mut filler = lookup.filler;
                if filler == Filler::Other {
                    let waited =
                        claim::wait_for_other(&self.store, base, &read.tables, self.coalesce_wait)
                            .await;
                    self.lease_waits.with_label_values(&[waited.label()]).inc();
                    match waited {
                        Waited::Filled(bytes) => {
                            measure(true);
                            read.hits.inc();
                            guard.complete(bytes.clone());
                            return Route::Hit { rule, bytes };
                        }
                        Waited::TookOver => filler = Filler::Us,
                        Waited::TimedOut => {}
                    }
                }
                measure(false);
                read.misses.inc();
                let claim = (filler == Filler::Us)
                    .then(|| Claim::new(self.store.clone(), lookup.key.clone()));
                Route::Fill(Fill {
                    guard,
                    versions: lookup.versions,
                    read: read.clone(),
                    started: Instant::now(),
                    base: *base,
                    claim,
                })
            }
            FillRole::Follower(slot) => match Fills::wait(slot, self.coalesce_wait).await {
                Some(bytes) => {
                    measure(true);
                    self.metrics
                        .cache_coalesced
                        .with_label_values(&[read.rule.name.as_str()])
                        .inc();
                    read.hits.inc();
                    Route::Hit { rule, bytes }
                }
                None => {
                    measure(false);
                    read.misses.inc();
                    Route::Miss { rule }
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
        if let Some(claim) = fill.claim {
            claim.settle();
        }
        fill.guard.complete(value.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let result = store.put(&key, value, ttl, &read.tables, &versions).await;
            latency.observe(started.elapsed().as_secs_f64());
            match result {
                Ok(true) => read.fills.inc(),
                Ok(false) => read.fills_skipped.inc(),
                // Down: nothing was asked of the store.
                Err(StoreError::Down) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "cache fill not stored");
                    errors.inc();
                }
            }
        });
    }
}

impl Form<'_> {
    /// Keeps the two protocols' keys apart.
    fn domain(&self) -> &'static str {
        match self {
            Form::Simple => "simple/1",
            Form::Extended { .. } => "extended/1",
        }
    }
}
