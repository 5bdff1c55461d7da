//! Cache settings: the in-process store's size, the Redis store's pool,
//! prefix and timeouts.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes the in-process store may hold (entries are evicted beyond it).
    pub max_memory_bytes: u64,
    /// Prefix of every Redis key (pgstash wraps it in a `{…}` hash tag, so
    /// all its keys share one Redis Cluster slot).
    pub key_prefix: String,
    /// Connections to Redis.
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
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_memory_bytes: 256 * 1024 * 1024,
            key_prefix: "pgstash:".into(),
            redis_pool_size: 4,
            store_timeout: Duration::from_millis(100),
            coalesce_wait: Duration::from_secs(5),
            catalog_refresh: Duration::from_secs(60),
        }
    }
}

impl CacheConfig {
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
        if self.key_prefix.contains(['{', '}']) {
            return Err(ConfigError::Invalid {
                key: "cache.key_prefix",
                reason: "must not contain braces (pgstash adds the hash tag)".into(),
            });
        }
        Ok(())
    }
}
