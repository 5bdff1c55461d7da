//! Settings that are valid but can have no effect in the configuration
//! they are in (`redis` without rules, `[cache]` keys of a Redis store when
//! there is none, …). Each is logged as one warning line when pgstash
//! starts and printed by `pgstash config check`, so that nothing set is
//! silently ignored; contradictions are errors instead (`validate`).

use super::{AdminConfig, CacheConfig, CacheMode, Config, ReplicationConfig, UpstreamHost};

/// A setting that does nothing here, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The dotted key it is about (`cache.key_prefix`), to locate it.
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Config {
    /// Every setting of this configuration that cannot take effect.
    pub fn warnings(&self) -> Vec<Warning> {
        let mut found = Vec::new();
        let mut warn = |key: &'static str, message: &str| {
            found.push(Warning {
                key,
                message: format!("{key}: {message}"),
            });
        };
        let cache = &self.cache;
        let defaults = CacheConfig::default();
        if self.rules.is_none() {
            if self.redis.is_some() {
                warn(
                    "redis",
                    "set, but no rules are: nothing is cached, so Redis is never used",
                );
            }
            if self.replication.enabled {
                warn(
                    "replication.enabled",
                    "on, but no rules are set: nothing is cached, so the stream is not followed",
                );
            }
            if *cache != defaults {
                warn("cache", "set, but no rules are: nothing is cached");
            }
        } else if self.redis.is_none() {
            if cache.mode == CacheMode::Fast {
                warn(
                    "cache.mode",
                    "\"fast\" applies to a Redis store; the in-process store is always exact",
                );
            }
            let redis_only = [
                ("cache.key_prefix", cache.key_prefix != defaults.key_prefix),
                (
                    "cache.redis_pool_size",
                    cache.redis_pool_size != defaults.redis_pool_size,
                ),
                (
                    "cache.store_timeout",
                    cache.store_timeout != defaults.store_timeout,
                ),
                (
                    "cache.local_max_age",
                    cache.local_max_age != defaults.local_max_age,
                ),
            ];
            for (key, _) in redis_only.iter().filter(|(_, set)| *set) {
                warn(key, "applies to a Redis store, and no redis is set");
            }
        } else if cache.mode == CacheMode::Strict {
            for (key, set) in [
                (
                    "cache.local_max_age",
                    cache.local_max_age != defaults.local_max_age,
                ),
                (
                    "cache.max_memory_bytes",
                    cache.max_memory_bytes != defaults.max_memory_bytes,
                ),
            ] {
                if set {
                    warn(
                        key,
                        "sizes the local tier of cache.mode = \"fast\"; in strict mode with Redis there is none",
                    );
                }
            }
        }
        let replication = ReplicationConfig {
            enabled: false,
            ..self.replication.clone()
        };
        if !self.replication.enabled && replication != ReplicationConfig::default() {
            warn(
                "replication",
                "set, but replication is off (enabled = false, no --replication)",
            );
        }
        let AdminConfig { enabled, token } = &self.admin;
        if token.is_some() && !enabled {
            warn(
                "admin.token",
                "set, but admin.enabled is false: no admin action is served",
            );
        }
        if matches!(self.upstream.host, UpstreamHost::Unix(_))
            && !self.upstream.tls.mode.allows_plain()
        {
            warn(
                "upstream",
                &format!(
                    "the upstream is a Unix socket: connections to it are not encrypted, \
                     whatever sslmode says (sslmode={}, as in libpq)",
                    self.upstream.tls.mode.as_str()
                ),
            );
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn keys(text: &str) -> Vec<&'static str> {
        let config = Config::from_toml(text, Path::new("x.toml")).unwrap();
        config.warnings().into_iter().map(|w| w.key).collect()
    }

    #[test]
    fn the_defaults_and_a_coherent_file_warn_of_nothing() {
        assert!(keys("").is_empty());
        assert!(keys(
            "rules = \"r.toml\"\nredis = \"redis://r:6379\"\n[cache]\nmode = \"fast\"\n\
             local_max_age = \"1s\"\n[replication]\nenabled = true\nmax_lag = \"1s\"\n\
             [admin]\nenabled = true\ntoken = \"t\"\n"
        )
        .is_empty());
    }

    #[test]
    fn settings_that_need_rules_warn_without_them() {
        assert_eq!(
            keys("redis = \"redis://r:6379\"\n[replication]\nenabled = true\n[cache]\nmax_memory_bytes = 1\n"),
            ["redis", "replication.enabled", "cache"]
        );
    }

    #[test]
    fn redis_settings_warn_without_redis_and_local_tier_ones_in_strict_mode() {
        assert_eq!(
            keys("rules = \"r.toml\"\n[cache]\nmode = \"fast\"\nkey_prefix = \"app:\"\nstore_timeout = \"1s\"\n"),
            ["cache.mode", "cache.key_prefix", "cache.store_timeout"]
        );
        assert_eq!(
            keys("rules = \"r.toml\"\nredis = \"redis://r:6379\"\n[cache]\nmax_memory_bytes = 1\n"),
            ["cache.max_memory_bytes"]
        );
    }

    #[test]
    fn replication_and_admin_settings_warn_when_off() {
        assert_eq!(
            keys("[replication]\nmax_lag = \"2s\"\n[admin]\ntoken = \"t\"\n"),
            ["replication", "admin.token"]
        );
    }

    #[test]
    fn runtime_layouts_do_not_warn() {
        // A pool smaller than the worker count keeps its size (`pool.rs`);
        // one worker is the single-threaded runtime, whatever the layout.
        for config in [
            "workers = 2\nruntime = \"per_worker\"\n",
            "workers = 4\n[[pool.overrides]]\nuser = \"u\"\nsize = 3\n",
            "workers = 1\nruntime = \"per_worker\"\n",
            "workers = 4\nruntime = \"shared\"\n[pool]\nsize = 2\n",
        ] {
            assert!(keys(config).is_empty(), "{config}");
        }
    }

    #[test]
    fn sslmode_over_a_unix_socket_warns() {
        assert_eq!(
            keys("upstream = \"postgres:///db?host=/run/pg&sslmode=require\"\n"),
            ["upstream"]
        );
    }
}
