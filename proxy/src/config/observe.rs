//! `[observe]`: what pgstash looks for in the queries it sees, beyond the
//! slow-query log — N+1 bursts (one shape run over and over by one
//! session), the plans of slow shapes and the indexes they lack.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ObserveConfig {
    /// A session running one query shape at least this many times in a
    /// burst is reported as an N+1 pattern; 0 turns detection off.
    pub n_plus_one_min: u32,
    /// The longest pause between two runs of the shape within one burst
    /// (from the end of one to the start of the next). Runs inside one
    /// transaction belong to one burst whatever the pause.
    #[serde(with = "humantime_serde")]
    pub n_plus_one_window: Duration,
    /// Fetch the plan of a shape that ran at or over `slow_query_ms`
    /// (plain reads only; `EXPLAIN` without `ANALYZE`).
    pub explain: bool,
    /// A shape's plan is fetched again at most this often while it runs.
    #[serde(with = "humantime_serde")]
    pub explain_every: Duration,
    /// Index hints only for sequential scans of tables with more rows.
    pub index_hint_min_rows: u64,
}

impl Default for ObserveConfig {
    fn default() -> Self {
        ObserveConfig {
            n_plus_one_min: 10,
            n_plus_one_window: Duration::from_millis(100),
            explain: true,
            explain_every: Duration::from_secs(600),
            index_hint_min_rows: 10_000,
        }
    }
}

impl ObserveConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.n_plus_one_min == 1 {
            return Err(ConfigError::Invalid {
                key: "observe.n_plus_one_min",
                reason: "1 would report every query: use 0 (off) or at least 2".into(),
            });
        }
        if self.n_plus_one_window > Duration::from_secs(60) {
            return Err(ConfigError::Invalid {
                key: "observe.n_plus_one_window",
                reason: "at most 60s".into(),
            });
        }
        Ok(())
    }
}
