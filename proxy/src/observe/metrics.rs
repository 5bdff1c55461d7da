//! The Prometheus metrics of one pgstash server, and their names.
//!
//! Each server has its own registry (two servers in one process, as in the
//! tests, do not mix counts). Label values are bounded: rule names, table
//! names, fixed words; never SQL text or parameters.

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

pub use super::names::name;

/// The values of `pgstash_client_limit_total`'s `limit` label.
pub const CLIENT_LIMITS: [&str; 6] = [
    "max_client_conn",
    "pre_auth_message",
    "login_timeout",
    "idle_timeout",
    "idle_transaction_timeout",
    "query_timeout",
];

/// The values of `pgstash_cache_lease_waits_total`'s `outcome` label: the
/// other instance's fill arrived, its lease was given up and this instance
/// filled, or `coalesce_wait` ran out.
pub const LEASE_WAIT_OUTCOMES: [&str; 3] = ["filled", "took_over", "timed_out"];

use super::register::{counter, counter_vec, gauge};

pub struct Metrics {
    pub registry: Registry,
    /// Label `rule`.
    pub cache_hits: IntCounterVec,
    pub cache_misses: IntCounterVec,
    pub cache_fills: IntCounterVec,
    /// Fills not written because a write had already made their key
    /// unreachable (label `rule`).
    pub fills_skipped: IntCounterVec,
    /// 1 while caching does not pay for a rule and only a sample of its
    /// keys is looked up (label `rule`; see `cache/payoff.rs`).
    pub rule_bypassing: IntGaugeVec,
    pub cache_coalesced: IntCounterVec,
    /// Misses whose entry another instance held the fill lease of, by how
    /// the wait ended (`filled`, `took_over`, `timed_out`).
    pub lease_waits: IntCounterVec,
    /// Label `reason` (a fixed word per bypass reason).
    pub cache_bypass: IntCounterVec,
    /// Label `op`: lookup, put, invalidate.
    pub cache_errors: IntCounterVec,
    pub cache_bytes_served: IntCounter,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    /// Label `table` (`database.table`, or `*` for invalidate-all).
    pub invalidations: IntCounterVec,
    /// Label `path`: hit, miss, bypass, write.
    pub query_duration: HistogramVec,
    /// `query_duration` resolved per path (no label lookup per query).
    durations: [Histogram; 4],
    pub slow_queries: IntCounter,
    /// N+1 bursts detected (`observe/nplusone.rs`), label `database`.
    pub n_plus_one: IntCounterVec,
    /// Shapes in the digest whose plan has an index hint (`explain/`).
    pub index_hints: IntGauge,
    pub client_connections: IntGauge,
    /// Label `state`: idle, active.
    pub upstream_connections: IntGaugeVec,
    pub pool_acquire_wait: Histogram,
    /// Label `result`: ok, failed.
    pub rule_reloads: IntCounterVec,
    /// Query events (slow log, digest) dropped because the recorder lagged.
    pub events_dropped: IntCounter,
    /// Log lines dropped or not written (set from `logging` at scrape).
    pub log_write_errors: IntCounter,
    /// Latency of cache store calls; label `op`: lookup, put, invalidate.
    pub store_call: HistogramVec,
    /// Clients waiting for a server connection right now.
    pub clients_waiting: IntGauge,
    /// Server connections the pools may open (size × pools).
    pub pool_size: IntGauge,
    /// Threads serving connections (the `workers` setting, resolved).
    pub workers: IntGauge,
    /// Fast mode: hits served by the local tier without asking Redis.
    pub local_hits: IntCounter,
    /// Fast mode: times the local tier was dropped because an invalidation
    /// message may have been missed (subscription lost, epoch renewed).
    pub local_resets: IntCounter,
    /// Fast mode: 1 while the invalidation subscription is down (nothing is
    /// served locally then); always 0 in strict mode and without Redis.
    pub local_down: IntGauge,
    /// 1 while calls go to the cache store; 0 while it is down and every
    /// cached query goes straight upstream (the breaker: `store/redis/breaker.rs`).
    pub store_up: IntGauge,
    /// Label `to`: down, up.
    pub store_transitions: IntCounterVec,
    /// How old the proof that a database's invalidations are current is
    /// (label `database`; +Inf while nothing is proven).
    pub replication_lag: GaugeVec,
    /// 1 while the proof is within `max_lag` and the cache answers for the
    /// database (label `database`).
    pub replication_caught_up: IntGaugeVec,
    /// WAL the slot keeps Postgres from recycling (label `database`).
    pub replication_retained_bytes: IntGaugeVec,
    /// Stream messages read; label `kind`: change, truncate, relation,
    /// commit, heartbeat.
    pub replication_events: IntCounterVec,
    /// Times a stream ended and was started again (label `database`).
    pub replication_restarts: IntCounterVec,
    /// 1 while this instance follows the database's stream (with a shared
    /// Redis store, one instance does; label `database`).
    pub replication_leading: IntGaugeVec,
    /// Clients stopped by a `[client]` limit (label `limit`:
    /// max_client_conn, pre_auth_message, login_timeout, idle_timeout,
    /// idle_transaction_timeout, query_timeout).
    pub client_limits: IntCounterVec,
    /// Transaction-mode clients holding their server connection for
    /// session-bound state (advisory lock, temp table, LISTEN…), and how
    /// many times a client was pinned.
    pub pinned_clients: IntGauge,
    pub pins: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[allow(
        clippy::expect_used,
        reason = "metric definitions are constants: a mistake fails at startup, in every test"
    )]
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let cache_bytes_served = IntCounter::new(
            name::CACHE_BYTES_SERVED,
            "Bytes sent to clients from the cache",
        )
        .expect("valid");
        let cache_entries = IntGauge::new(
            name::CACHE_ENTRIES,
            "Entries held in process (in-process store, or fast mode's local tier)",
        )
        .expect("valid");
        let cache_bytes = IntGauge::new(
            name::CACHE_BYTES,
            "Bytes held in process (in-process store, or fast mode's local tier)",
        )
        .expect("valid");
        let local_hits = IntCounter::new(
            name::LOCAL_HITS,
            "Fast mode: hits served by the local tier without a Redis call",
        )
        .expect("valid");
        let local_resets = IntCounter::new(
            name::LOCAL_RESETS,
            "Fast mode: local tier dropped because an invalidation may have been missed",
        )
        .expect("valid");
        let local_down = IntGauge::new(
            name::LOCAL_DOWN,
            "Fast mode: 1 while the invalidation subscription is down (no local hits)",
        )
        .expect("valid");
        let query_duration = HistogramVec::new(
            HistogramOpts::new(
                name::QUERY_DURATION,
                "Time from a request to its last answer byte",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
            &["path"],
        )
        .expect("valid");
        let slow_queries =
            IntCounter::new(name::SLOW_QUERIES, "Queries at or over the slow threshold")
                .expect("valid");
        let events_dropped = IntCounter::new(
            name::EVENTS_DROPPED,
            "Query events not logged because the recorder was behind",
        )
        .expect("valid");
        let log_write_errors = IntCounter::new(
            name::LOG_WRITE_ERRORS,
            "Process log lines dropped (writer behind) or not written (stderr failed)",
        )
        .expect("valid");
        let store_call = HistogramVec::new(
            HistogramOpts::new(name::STORE_CALL, "Cache store call latency").buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25,
            ]),
            &["op"],
        )
        .expect("valid");
        let clients_waiting = IntGauge::new(
            name::CLIENTS_WAITING,
            "Clients waiting for a server connection",
        )
        .expect("valid");
        let pool_size =
            IntGauge::new(name::POOL_SIZE, "Server connections the pools may open").expect("valid");
        let workers = IntGauge::new(name::WORKERS, "Threads serving connections").expect("valid");
        let client_connections =
            IntGauge::new(name::CLIENT_CONNECTIONS, "Connected clients").expect("valid");
        let upstream_connections = IntGaugeVec::new(
            Opts::new(name::UPSTREAM_CONNECTIONS, "Server connections by state"),
            &["state"],
        )
        .expect("valid");
        let pool_acquire_wait = Histogram::with_opts(
            HistogramOpts::new(name::POOL_ACQUIRE_WAIT, "Wait for a server connection").buckets(
                vec![
                    0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
                ],
            ),
        )
        .expect("valid");
        let rule_bypassing = IntGaugeVec::new(
            Opts::new(
                name::RULE_BYPASSING,
                "1 while caching does not pay for a rule and only a sample of its keys is looked up",
            ),
            &["rule"],
        )
        .expect("valid");
        let replication_lag = GaugeVec::new(
            Opts::new(
                name::REPLICATION_LAG,
                "Age of the proof that every write to the database is invalidated (+Inf: none)",
            ),
            &["database"],
        )
        .expect("valid");
        let replication_caught_up = IntGaugeVec::new(
            Opts::new(
                name::REPLICATION_CAUGHT_UP,
                "1 while the replication stream is proven current within max_lag",
            ),
            &["database"],
        )
        .expect("valid");
        let store_up = IntGauge::new(
            name::STORE_UP,
            "1 while the cache store is asked; 0 while it is down and cached queries go upstream",
        )
        .expect("valid");
        store_up.set(1);
        let replication_leading = IntGaugeVec::new(
            Opts::new(
                name::REPLICATION_LEADING,
                "1 while this instance follows the database's replication stream",
            ),
            &["database"],
        )
        .expect("valid");
        let replication_retained_bytes = IntGaugeVec::new(
            Opts::new(
                name::REPLICATION_RETAINED,
                "WAL bytes the replication slot keeps Postgres from recycling",
            ),
            &["database"],
        )
        .expect("valid");
        for metric in [
            Box::new(cache_bytes_served.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(replication_lag.clone()),
            Box::new(replication_caught_up.clone()),
            Box::new(replication_retained_bytes.clone()),
            Box::new(replication_leading.clone()),
            Box::new(store_up.clone()),
            Box::new(rule_bypassing.clone()),
            Box::new(cache_entries.clone()),
            Box::new(cache_bytes.clone()),
            Box::new(query_duration.clone()),
            Box::new(slow_queries.clone()),
            Box::new(events_dropped.clone()),
            Box::new(log_write_errors.clone()),
            Box::new(store_call.clone()),
            Box::new(clients_waiting.clone()),
            Box::new(pool_size.clone()),
            Box::new(workers.clone()),
            Box::new(local_hits.clone()),
            Box::new(local_resets.clone()),
            Box::new(local_down.clone()),
            Box::new(client_connections.clone()),
            Box::new(upstream_connections.clone()),
            Box::new(pool_acquire_wait.clone()),
        ] {
            r.register(metric).expect("metric names are unique");
        }
        Metrics {
            cache_hits: counter_vec(
                r,
                name::CACHE_HITS,
                "Requests answered from the cache",
                &["rule"],
            ),
            cache_misses: counter_vec(
                r,
                name::CACHE_MISSES,
                "Cacheable requests not in the cache",
                &["rule"],
            ),
            cache_fills: counter_vec(r, name::CACHE_FILLS, "Entries stored", &["rule"]),
            fills_skipped: counter_vec(
                r,
                name::FILLS_SKIPPED,
                "Fills not stored because a write had already made them unreachable",
                &["rule"],
            ),
            rule_bypassing,
            cache_coalesced: counter_vec(
                r,
                name::CACHE_COALESCED,
                "Misses answered by another client's identical upstream query",
                &["rule"],
            ),
            lease_waits: counter_vec(
                r,
                name::LEASE_WAITS,
                "Misses that waited for another instance's fill of the same entry",
                &["outcome"],
            ),
            cache_bypass: counter_vec(
                r,
                name::CACHE_BYPASS,
                "Reads not eligible for the cache",
                &["reason"],
            ),
            cache_errors: counter_vec(
                r,
                name::CACHE_ERRORS,
                "Failed or timed-out store calls",
                &["op"],
            ),
            invalidations: counter_vec(
                r,
                name::INVALIDATIONS,
                "Table invalidations recorded",
                &["table"],
            ),
            rule_reloads: counter_vec(r, name::RULE_RELOADS, "rules.toml reloads", &["result"]),
            pinned_clients: gauge(
                r,
                name::PINNED_CLIENTS,
                "Transaction-mode clients pinned to their server connection by session-bound state",
            ),
            pins: counter(
                r,
                name::PINS,
                "Times a transaction-mode client was pinned to its server connection",
            ),
            client_limits: counter_vec(
                r,
                name::CLIENT_LIMITS,
                "Clients refused, disconnected or cancelled by a [client] limit",
                &["limit"],
            ),
            replication_events: counter_vec(
                r,
                name::REPLICATION_EVENTS,
                "Replication stream messages read",
                &["kind"],
            ),
            replication_restarts: counter_vec(
                r,
                name::REPLICATION_RESTARTS,
                "Replication streams ended and started again",
                &["database"],
            ),
            store_transitions: counter_vec(
                r,
                name::STORE_TRANSITIONS,
                "Times the cache store went down (a call failed) or came back up",
                &["to"],
            ),
            n_plus_one: counter_vec(r, name::N_PLUS_ONE, "N+1 bursts detected", &["database"]),
            index_hints: gauge(r, name::INDEX_HINTS, "Query shapes with an index hint"),
            store_up,
            replication_lag,
            replication_caught_up,
            replication_retained_bytes,
            replication_leading,
            cache_bytes_served,
            cache_entries,
            cache_bytes,
            durations: ["hit", "miss", "bypass", "write"]
                .map(|p| query_duration.with_label_values(&[p])),
            query_duration,
            slow_queries,
            events_dropped,
            log_write_errors,
            store_call,
            clients_waiting,
            pool_size,
            workers,
            local_hits,
            local_resets,
            local_down,
            client_connections,
            upstream_connections,
            pool_acquire_wait,
            registry,
        }
    }

    /// The duration histogram of `path` (hit, miss, bypass or write).
    pub fn duration(&self, path: &str) -> &Histogram {
        match path {
            "hit" => &self.durations[0],
            "miss" => &self.durations[1],
            "write" => &self.durations[3],
            _ => &self.durations[2],
        }
    }

    /// Creates the series of fixed label values (and of each rule), so
    /// dashboards show 0 rather than no data before the first event.
    pub fn register_labels<'a>(&self, rules: impl IntoIterator<Item = &'a str>) {
        for path in ["hit", "miss", "bypass", "write"] {
            self.query_duration.with_label_values(&[path]);
        }
        for op in ["lookup", "put", "invalidate"] {
            self.cache_errors.with_label_values(&[op]);
            self.store_call.with_label_values(&[op]);
        }
        for to in ["down", "up"] {
            self.store_transitions.with_label_values(&[to]);
        }
        for state in ["idle", "active"] {
            self.upstream_connections.with_label_values(&[state]);
        }
        for result in ["ok", "failed"] {
            self.rule_reloads.with_label_values(&[result]);
        }
        for outcome in LEASE_WAIT_OUTCOMES {
            self.lease_waits.with_label_values(&[outcome]);
        }
        for limit in CLIENT_LIMITS {
            self.client_limits.with_label_values(&[limit]);
        }
        for rule in rules {
            for counter in [
                &self.cache_hits,
                &self.cache_misses,
                &self.cache_fills,
                &self.fills_skipped,
                &self.cache_coalesced,
            ] {
                counter.with_label_values(&[rule]);
            }
            self.rule_bypassing.with_label_values(&[rule]);
        }
    }

    /// The registry rendered as Prometheus text.
    pub fn render(&self) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}
