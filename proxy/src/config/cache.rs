//! Cache settings: the in-process store's size, the Redis store's pool,
//! prefix, timeouts, consistency mode and TLS files.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// How instances sharing a Redis agree (guarantee G3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Every lookup reads the entry and the table versions from Redis in one
    /// round trip: all instances give the same answer.
    #[default]
    Strict,
    /// Hits are served from a local tier in front of Redis; other instances'
    /// invalidations arrive over Redis pub/sub, and no local entry is served
    /// for longer than `local_max_age` without asking Redis again.
    Fast,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes the in-process store may hold (entries are evicted beyond it);
    /// with Redis in fast mode, the budget of the local tier.
    pub max_memory_bytes: u64,
    /// Strict or fast agreement between instances sharing a Redis.
    pub mode: CacheMode,
    /// Fast mode: the longest a local entry is served without asking Redis,
    /// which bounds staleness if an invalidation message is ever missed.
    #[serde(with = "humantime_serde")]
    pub local_max_age: Duration,
    /// Prefix of every Redis key (pgstash wraps it in a `{…}` hash tag, so
    /// all its keys share one Redis Cluster slot).
    pub key_prefix: String,
    /// Connections to Redis that carry lookups, fills and invalidations
    /// (per master on Cluster, spread; with per-worker runtimes one per
    /// worker at least).
    pub redis_pool_size: usize,
    /// Longest a store call may take; after it the query goes upstream and
    /// `pgstash_cache_errors_total` counts it.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
    /// How long a client waits for an identical query already running
    /// upstream (coalescing) before it goes upstream itself.
    #[serde(with = "humantime_serde")]
    pub coalesce_wait: Duration,
    /// How often function volatility and table facts are re-read from the
    /// catalog (they are also re-read after DDL through pgstash).
    #[serde(with = "humantime_serde")]
    pub catalog_refresh: Duration,
    /// `rediss://`: the PEM CA certificate(s) Redis' certificate must chain
    /// to; the platform's trust store when unset.
    pub redis_ca: Option<PathBuf>,
    /// `rediss://`: a PEM client certificate for Redis servers that ask for
    /// one (`tls-auth-clients`); with `redis_key`.
    pub redis_cert: Option<PathBuf>,
    /// `rediss://`: the PEM private key of `redis_cert`.
    pub redis_key: Option<PathBuf>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_memory_bytes: 256 * 1024 * 1024,
            mode: CacheMode::Strict,
            local_max_age: Duration::from_secs(5),
            key_prefix: "pgstash:".into(),
            redis_pool_size: 4,
            store_timeout: Duration::from_millis(100),
            coalesce_wait: Duration::from_secs(5),
            catalog_refresh: Duration::from_secs(60),
            redis_ca: None,
            redis_cert: None,
            redis_key: None,
        }
    }
}

impl CacheConfig {
    /// The Redis TLS keys that are set, by name.
    pub fn tls_file_keys(&self) -> Vec<&'static str> {
        [
            ("cache.redis_ca", &self.redis_ca),
            ("cache.redis_cert", &self.redis_cert),
            ("cache.redis_key", &self.redis_key),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.is_some().then_some(key))
        .collect()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.redis_pool_size == 0 {
            return Err(ConfigError::Invalid {
                key: "cache.redis_pool_size",
                reason: "must be at least 1".into(),
            });
        }
        if self.store_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "cache.store_timeout",
                reason: "must be positive".into(),
            });
        }
        if self.local_max_age.is_zero() {
            return Err(ConfigError::Invalid {
                key: "cache.local_max_age",
                reason: "must be positive".into(),
            });
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::Invalid {
                key: "cache.key_prefix",
                reason: "must not contain braces (pgstash adds the hash tag)".into(),
            });
        }
        Ok(())
    }
}
