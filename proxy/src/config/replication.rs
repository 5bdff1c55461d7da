//! `[replication]`: invalidation from Postgres' logical replication stream,
//! for writes that do not pass through pgstash (guarantee G8).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Follow the stream (needs `wal_level = logical`, a publication, and
    /// an upstream user with the REPLICATION attribute: see
    /// `pgstash replication setup`). Off by default.
    pub enabled: bool,
    /// Databases followed, one stream each; the cache answers for no other
    /// database while replication is on. Default: the upstream URL's
    /// database.
    pub databases: Vec<String>,
    /// The publication to follow (`CREATE PUBLICATION … FOR ALL TABLES`).
    pub publication: String,
    /// The slot's name. A temporary slot gets a unique suffix per
    /// connection; a persistent one is used as named.
    pub slot: String,
    /// A temporary slot (default) lives as long as the stream: Postgres
    /// keeps no WAL for pgstash while it is down, and every (re)connect
    /// starts from now and empties the cache (writes in between were not
    /// seen). A persistent slot resumes where it left off — nothing is
    /// missed, but Postgres keeps WAL for it while pgstash is down (bound
    /// it with `max_slot_wal_keep_size`).
    pub temporary: bool,
    /// The cache answers for a database only while every write
    /// acknowledged more than this long ago is proven invalidated;
    /// otherwise reads go upstream (`cache_bypass{reason="replication_lag"}`).
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// How often a heartbeat goes through the stream (the proof's step).
    /// Default: a tenth of `max_lag`.
    #[serde(with = "humantime_serde::option")]
    pub heartbeat: Option<Duration>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            enabled: false,
            databases: Vec::new(),
            publication: "pgstash".into(),
            slot: "pgstash".into(),
            temporary: true,
            max_lag: Duration::from_millis(500),
            heartbeat: None,
        }
    }
}

impl ReplicationConfig {
    /// The heartbeat interval in force.
    pub fn heartbeat_every(&self) -> Duration {
        self.heartbeat.unwrap_or(self.max_lag / 10)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        if self.max_lag < Duration::from_millis(10) {
            return Err(invalid("replication.max_lag", "must be at least 10ms"));
        }
        if self.heartbeat_every() >= self.max_lag || self.heartbeat_every().is_zero() {
            return Err(invalid(
                "replication.heartbeat",
                "must be shorter than max_lag (and not zero)",
            ));
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 40
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !name_ok(&self.slot) {
            return Err(invalid(
                "replication.slot",
                "lower-case letters, digits and _ only, at most 40",
            ));
        }
        if self.publication.is_empty() || self.publication.contains('"') {
            return Err(invalid("replication.publication", "a plain name"));
        }
        Ok(())
    }
}
