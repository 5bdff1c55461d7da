//! Upstream pool settings: size, mode and the timeouts of a pooled connection.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// When a client gives its server connection back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// After each transaction, or each Sync-delimited batch outside one.
    #[default]
    Transaction,
    /// When the client disconnects.
    Session,
}

impl std::str::FromStr for PoolMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "transaction" => Ok(PoolMode::Transaction),
            "session" => Ok(PoolMode::Session),
            other => Err(format!("unknown pool mode {other:?} (transaction|session)")),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Server connections per (database, user).
    pub size: u32,
    pub mode: PoolMode,
    /// How long a client waits for a server connection before `53300`.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// How long opening one upstream connection (TCP + auth) may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Idle server connections beyond this age are closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Server connections older than this are closed when next idle.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// A connection idle for longer than this is checked with an empty query
    /// before a client gets it.
    #[serde(with = "humantime_serde")]
    pub health_check_after: Duration,
    /// First wait after a failed upstream connect; doubles per failure.
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff: Duration,
    /// Upper bound of the reconnect backoff.
    #[serde(with = "humantime_serde")]
    pub reconnect_backoff_max: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: 20,
            mode: PoolMode::Transaction,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            health_check_after: Duration::from_secs(30),
            reconnect_backoff: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(5),
        }
    }
}

impl PoolConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.size == 0 {
            return Err(ConfigError::Invalid {
                key: "pool.size",
                reason: "must be at least 1".into(),
            });
        }
        for (key, timeout) in [
            ("pool.acquire_timeout", self.acquire_timeout),
            ("pool.connect_timeout", self.connect_timeout),
        ] {
            if timeout.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "must be positive".into(),
                });
            }
        }
        if self.reconnect_backoff > self.reconnect_backoff_max {
            return Err(ConfigError::Invalid {
                key: "pool.reconnect_backoff",
                reason: "longer than reconnect_backoff_max, its upper bound".into(),
            });
        }
        Ok(())
    }
}
