//! The resolved configuration of a pgstash process.
//!
//! A [`Config`] is built in three layers, later ones winning: the TOML file
//! (`--config`), then `PGSTASH_*` environment variables, then command-line
//! flags (the last two are merged by clap, see `cli.rs`). Every key has a
//! default, so `pgstash serve --upstream postgres://…` works with no file.
//! `deploy/pgstash.toml` documents each key.

mod auth;
mod cache;
mod certs;
mod check;
mod client;
mod file;
mod locate;
mod observe;
mod paths;
mod pool;
mod redis;
mod reload;
mod replication;
mod tls;
mod upstream;
mod upstream_tls;
mod users;
mod verify;
mod warnings;

pub use auth::{AuthConfig, AuthMethod, UserConfig};
pub use cache::{CacheConfig, CacheMode};
pub use client::{ClientConfig, SessionTimeouts, PRE_AUTH_MESSAGE_BYTES};
pub use observe::ObserveConfig;
pub use pool::{PoolConfig, PoolMode, PoolOverride};
pub use redis::{RedisTarget, Topology};
pub use replication::ReplicationConfig;
pub use tls::TlsConfig;
pub use upstream::{Upstream, UpstreamHost};
pub use upstream_tls::{
    ClientCert, Encryption, RootCert, SslMode, SslNegotiation, UpstreamTls, ALPN_POSTGRESQL,
};
pub use users::{parse_verifier, ScramKeys, UserDirectory};
pub use warnings::Warning;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Everything that can go wrong while loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A problem at a place in a config file; line and column are 1-based,
    /// the column counts characters.
    #[error("{}:{line}:{column}: {problem}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        problem: Box<ConfigError>,
    },
    /// A problem of a config file that is at no one place in it.
    #[error("{}: {problem}", path.display())]
    In {
        path: PathBuf,
        problem: Box<ConfigError>,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{0}")]
    Toml(String),
    #[error("invalid upstream URL {url:?}: {reason}")]
    Upstream { url: String, reason: String },
    #[error("invalid value for {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("user {user:?}: cannot read password: {reason}")]
    Password { user: String, reason: String },
}

impl ConfigError {
    /// The problem itself, without the place in a file it was found at.
    pub fn problem(&self) -> &ConfigError {
        match self {
            ConfigError::At { problem, .. } | ConfigError::In { problem, .. } => problem.problem(),
            other => other,
        }
    }
}

/// The whole configuration, as read from `pgstash.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TCP address clients connect to.
    pub listen: SocketAddr,
    /// Directory for a Unix-domain socket named `.s.PGSQL.<port>` (as
    /// Postgres names it, so `psql -h DIR -p PORT` works). Off when unset.
    pub unix_socket_dir: Option<PathBuf>,
    /// The Postgres server to forward to. Client user and database names are
    /// passed through; user and password in the URL are used for the control
    /// connection and as the upstream password of users that have none.
    pub upstream: Upstream,
    /// Path to `rules.toml` (caching is off when unset).
    pub rules: Option<PathBuf>,
    /// Redis URL for the shared cache (`redis://`, `rediss://` for TLS,
    /// `redis-cluster://`, `rediss-cluster://`, `redis-sentinel://`,
    /// `rediss-sentinel://`; an ACL user and password as
    /// `rediss://user:password@host:port`); the in-process store is used
    /// when unset. TLS files are in `[cache]`.
    pub redis: Option<String>,
    /// Address of the metrics and health HTTP port.
    pub metrics_listen: SocketAddr,
    /// Queries at or over this many milliseconds are logged (0 logs all).
    pub slow_query_ms: u64,
    /// File the slow-query log is appended to; stderr when unset.
    pub slow_query_log: Option<PathBuf>,
    /// Log literal and parameter values in the slow-query log (off: only
    /// normalized text, literals replaced by `$n`).
    pub log_parameters: bool,
    /// Distinct query shapes kept in the query digest (`/queries`); the
    /// ones with the least total time are evicted beyond it.
    pub digest_size: usize,
    /// Largest protocol message accepted from a client, in bytes. Larger
    /// messages get `08P01` and the connection is closed.
    pub max_message_bytes: usize,
    /// How long a graceful shutdown waits for running transactions.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// The process log's lines on stderr: `text` (coloured only on a
    /// terminal) or `json`. Read at start only.
    pub log_format: LogFormat,
    /// Threads that serve connections; 0 means one per CPU, 1 a
    /// single-threaded runtime. Read at start only (a reload does not
    /// change it).
    pub workers: usize,
    /// How the workers share the clients: `per_worker` (the default), a
    /// single-threaded runtime per worker with a share of every pool of
    /// its own (see `workers.rs`), or `shared`, one work-stealing runtime.
    /// Read at start only.
    pub runtime: RuntimeLayout,
    pub pool: PoolConfig,
    pub client: ClientConfig,
    pub auth: AuthConfig,
    pub cache: CacheConfig,
    pub admin: AdminConfig,
    pub tls: TlsConfig,
    pub replication: ReplicationConfig,
    pub observe: ObserveConfig,
}

/// How the worker threads share the clients (`runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeLayout {
    /// One work-stealing runtime over every worker: any worker runs any
    /// session, and the pools are shared.
    Shared,
    /// One single-threaded runtime per worker; each client stays on the
    /// worker it was handed to at accept, and each worker has its own share
    /// of every pool (lending idle connections to the others). The default:
    /// measured faster for everything but a few clients' in-process hits
    /// (bench/README.md, issue #20).
    #[default]
    PerWorker,
}

impl std::str::FromStr for RuntimeLayout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shared" => Ok(RuntimeLayout::Shared),
            "per_worker" => Ok(RuntimeLayout::PerWorker),
            other => Err(format!("unknown runtime {other:?} (shared|per_worker)")),
        }
    }
}

/// How the process log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Admin actions on the metrics port (`POST /admin/…`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Off by default.
    pub enabled: bool,
    /// When set, requests need `Authorization: Bearer <token>` and may come
    /// from anywhere; when unset, only from loopback addresses.
    pub token: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 6432)),
            unix_socket_dir: None,
            upstream: Upstream::default(),
            rules: None,
            redis: None,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9930)),
            slow_query_ms: 100,
            slow_query_log: None,
            log_parameters: false,
            digest_size: 1000,
            max_message_bytes: 64 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(30),
            workers: 0,
            runtime: RuntimeLayout::PerWorker,
            log_format: LogFormat::Text,
            pool: PoolConfig::default(),
            client: ClientConfig::default(),
            auth: AuthConfig::default(),
            cache: CacheConfig::default(),
            admin: AdminConfig::default(),
            tls: TlsConfig::default(),
            replication: ReplicationConfig::default(),
            observe: ObserveConfig::default(),
        }
    }
}

impl Config {
    /// The threads `workers` asks for: one per CPU when 0.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The databases the replication stream follows: as configured, or the
    /// upstream URL's database.
    pub fn replicated_databases(&self) -> Vec<String> {
        if !self.replication.databases.is_empty() {
            return self.replication.databases.clone();
        }
        vec![self
            .upstream
            .database
            .clone()
            .unwrap_or_else(|| "postgres".into())]
    }

    /// Checks the relations between keys that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pool.validate()?;
        self.client.validate()?;
        self.cache.validate()?;
        self.tls.validate()?;
        self.auth.validate()?;
        self.replication.validate()?;
        self.observe.validate()?;
        match &self.redis {
            Some(url) => {
                RedisTarget::new(url, &self.cache)?;
            }
            None => {
                if let Some(key) = self.cache.tls_file_keys().first() {
                    return Err(ConfigError::Invalid {
                        key,
                        reason: "set, but there is no redis URL".into(),
                    });
                }
            }
        }
        if self.metrics_listen == self.listen && self.listen.port() != 0 {
            return Err(ConfigError::Invalid {
                key: "metrics_listen",
                reason: format!("{} is also listen: use another port", self.listen),
            });
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "max_message_bytes",
                reason: "must be at least 1024".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn example_config_in_deploy_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/pgstash.toml");
        let config = Config::from_file(&path).unwrap();
        let defaults = Config::default();
        assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        let err = Config::from_toml(
            "listen = \"127.0.0.1:6432\"\n[pool]\nsize = \"many\"\n",
            Path::new("pgstash.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("pgstash.toml:3:8: invalid type"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[pool]\nsise = 3\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `sise`"), "{err}");
    }

    #[test]
    fn cache_mode_parses_and_a_misspelling_is_located() {
        let config = Config::from_toml(
            "[cache]\nmode = \"fast\"\nlocal_max_age = \"250ms\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(config.cache.mode, CacheMode::Fast);
        assert_eq!(config.cache.local_max_age, Duration::from_millis(250));
        let err = Config::from_toml("[cache]\nmode = \"quick\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.toml:2:8: "), "{err}");
        assert!(err.contains("strict") && err.contains("fast"), "{err}");
    }

    #[test]
    fn password_auth_without_users_is_rejected() {
        let err = Config::from_toml("[auth]\ntype = \"scram-sha-256\"\n", Path::new("x.toml"))
            .unwrap_err();
        assert!(err.to_string().starts_with("x.toml:2:8: "), "{err}");
        assert!(matches!(
            err.problem(),
            ConfigError::Invalid {
                key: "auth.type",
                ..
            }
        ));
    }
}
