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
    /// Pool sizes for particular databases, users or both (`[[pool.overrides]]`);
    /// the most specific match wins, then `size`.
    pub overrides: Vec<PoolOverride>,
}

/// A pool size for the pools of one database, one user, or one pair.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolOverride {
    pub database: Option<String>,
    pub user: Option<String>,
    pub size: u32,
}

impl PoolOverride {
    /// How specifically this override names a pool (`None`: not at all).
    fn specificity(&self, database: &str, user: &str) -> Option<u8> {
        let database_matches = self.database.as_deref().map(|d| d == database);
        let user_matches = self.user.as_deref().map(|u| u == user);
        match (database_matches, user_matches) {
            (Some(true), Some(true)) => Some(3),
            (Some(true), None) => Some(2),
            (None, Some(true)) => Some(1),
            _ => None,
        }
    }
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
            overrides: Vec::new(),
        }
    }
}

impl PoolConfig {
    /// Server connections for the pool of (`database`, `user`).
    pub fn size_for(&self, database: &str, user: &str) -> u32 {
        self.overrides
            .iter()
            .filter_map(|o| Some((o.specificity(database, user)?, o.size)))
            .max_by_key(|(specificity, _)| *specificity)
            .map_or(self.size, |(_, size)| size)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for o in &self.overrides {
            if o.size == 0 || (o.database.is_none() && o.user.is_none()) {
                return Err(ConfigError::Invalid {
                    key: "pool.overrides",
                    reason: "each needs a database, a user or both, and a size of at least 1"
                        .into(),
                });
            }
        }
        if self.size == 0 {
            return Err(ConfigError::Invalid {
                key: "pool.size",
                reason: "must be at least 1".into(),
            });
        }
        if self.acquire_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "pool.acquire_timeout",
                reason: "timeouts must be positive".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_override_wins() {
        let o = |database: Option<&str>, user: Option<&str>, size| PoolOverride {
            database: database.map(Into::into),
            user: user.map(Into::into),
            size,
        };
        let config = PoolConfig {
            size: 20,
            overrides: vec![
                o(None, Some("batch"), 2),
                o(Some("shop"), Some("batch"), 5),
                o(Some("shop"), None, 50),
            ],
            ..PoolConfig::default()
        };
        assert_eq!(config.size_for("shop", "batch"), 5);
        assert_eq!(config.size_for("shop", "app"), 50);
        assert_eq!(config.size_for("crm", "batch"), 2);
        assert_eq!(config.size_for("crm", "app"), 20);
    }
}
