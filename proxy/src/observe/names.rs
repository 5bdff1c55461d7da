//! The names of pgstash's Prometheus metrics, in one place for the code
//! that registers them, the tests and the dashboards that read them.

pub mod name {
    pub const CACHE_HITS: &str = "pgstash_cache_hits_total";
    pub const CACHE_MISSES: &str = "pgstash_cache_misses_total";
    pub const CACHE_FILLS: &str = "pgstash_cache_fills_total";
    pub const CACHE_COALESCED: &str = "pgstash_cache_coalesced_total";
    pub const CACHE_BYPASS: &str = "pgstash_cache_bypass_total";
    pub const CACHE_ERRORS: &str = "pgstash_cache_errors_total";
    pub const CACHE_BYTES_SERVED: &str = "pgstash_cache_bytes_served_total";
    pub const CACHE_ENTRIES: &str = "pgstash_cache_entries";
    pub const CACHE_BYTES: &str = "pgstash_cache_bytes";
    pub const INVALIDATIONS: &str = "pgstash_invalidations_total";
    pub const QUERY_DURATION: &str = "pgstash_query_duration_seconds";
    pub const SLOW_QUERIES: &str = "pgstash_slow_queries_total";
    pub const CLIENT_CONNECTIONS: &str = "pgstash_client_connections";
    pub const UPSTREAM_CONNECTIONS: &str = "pgstash_upstream_connections";
    pub const POOL_ACQUIRE_WAIT: &str = "pgstash_pool_acquire_wait_seconds";
    pub const RULE_RELOADS: &str = "pgstash_rule_reloads_total";
    pub const EVENTS_DROPPED: &str = "pgstash_query_events_dropped_total";
    pub const LOG_WRITE_ERRORS: &str = "pgstash_log_write_errors_total";
    pub const STORE_CALL: &str = "pgstash_store_call_seconds";
    pub const CLIENTS_WAITING: &str = "pgstash_clients_waiting";
    pub const POOL_SIZE: &str = "pgstash_pool_size";
    pub const WORKERS: &str = "pgstash_worker_threads";
    pub const LOCAL_HITS: &str = "pgstash_cache_local_hits_total";
    pub const LOCAL_RESETS: &str = "pgstash_cache_local_resets_total";
    pub const LOCAL_DOWN: &str = "pgstash_cache_local_down";
    pub const FILLS_SKIPPED: &str = "pgstash_cache_fills_skipped_total";
    pub const RULE_BYPASSING: &str = "pgstash_rule_bypassing";
    pub const STORE_UP: &str = "pgstash_cache_store_up";
    pub const STORE_TRANSITIONS: &str = "pgstash_cache_store_transitions_total";
    pub const REPLICATION_LAG: &str = "pgstash_replication_lag_seconds";
    pub const REPLICATION_CAUGHT_UP: &str = "pgstash_replication_caught_up";
    pub const REPLICATION_RETAINED: &str = "pgstash_replication_retained_bytes";
    pub const REPLICATION_EVENTS: &str = "pgstash_replication_events_total";
    pub const REPLICATION_RESTARTS: &str = "pgstash_replication_restarts_total";
    pub const REPLICATION_LEADING: &str = "pgstash_replication_leading";
    pub const CLIENT_LIMITS: &str = "pgstash_client_limit_total";
    pub const PINNED_CLIENTS: &str = "pgstash_pinned_clients";
    pub const PINS: &str = "pgstash_pins_total";
    pub const N_PLUS_ONE: &str = "pgstash_n_plus_one_total";
    pub const INDEX_HINTS: &str = "pgstash_index_hints";
    pub const LEASE_WAITS: &str = "pgstash_cache_lease_waits_total";
}
