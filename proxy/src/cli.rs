//! Command-line interface: `pgstash serve` (the default), `pgstash config
//! check`, `pgstash rules check` and the tools. Every serve flag has a
//! `PGSTASH_*` environment variable; flags and variables override the
//! config file, and their paths are relative to the working directory
//! (those in the file, to the file's folder).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, PoolMode, Upstream};

#[derive(Debug, Parser)]
#[command(
    name = "pgstash",
    version,
    about = "A transparent caching proxy for PostgreSQL"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Serve(Box<ServeArgs>),
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with rules files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Prepare the upstream for `--replication`.
    Replication {
        #[command(subcommand)]
        command: ReplicationCommand,
    },
    /// Show the busiest query shapes of a running pgstash, refreshed live.
    Top {
        /// Base URL of its metrics port.
        #[arg(
            long,
            default_value = "http://127.0.0.1:9930",
            env = "PGSTASH_METRICS_URL"
        )]
        metrics: String,
        /// Print once and exit.
        #[arg(long)]
        once: bool,
        /// Refresh interval, e.g. "2s".
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Rows shown.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Print the plan pgstash fetched for a slow query shape, and the
    /// indexes it suggests.
    Explain {
        /// The shape's fingerprint (its first 8 or more hex digits will do).
        fingerprint: String,
        /// Print the plan as Postgres' EXPLAIN (FORMAT JSON, VERBOSE) gave it.
        #[arg(long)]
        json: bool,
        /// Base URL of its metrics port.
        #[arg(
            long,
            default_value = "http://127.0.0.1:9930",
            env = "PGSTASH_METRICS_URL"
        )]
        metrics: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file and the rules file it names, and print the
    /// settings that would have no effect; exits non-zero with
    /// file:line:column on errors.
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate a rules file; exits non-zero with file:line:column on errors.
    Check { file: PathBuf },
    /// Print [[rule]] entries for the read queries of a running pgstash
    /// that would save the most upstream time.
    Suggest {
        /// Base URL of its metrics port.
        #[arg(
            long,
            default_value = "http://127.0.0.1:9930",
            env = "PGSTASH_METRICS_URL"
        )]
        metrics: String,
        /// Rules printed at most.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReplicationCommand {
    /// Check wal_level, the role's REPLICATION attribute and free slots, and
    /// create the publication; prints the SQL for what it cannot do.
    Setup {
        /// Upstream Postgres URL (its user must be able to replicate).
        #[arg(long, env = "PGSTASH_UPSTREAM")]
        upstream: String,
        /// Databases to check (default: the URL's).
        #[arg(long = "database")]
        databases: Vec<String>,
        /// The publication to create.
        #[arg(long, default_value = "pgstash")]
        publication: String,
    },
}

#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "PGSTASH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address clients connect to [default: 127.0.0.1:6432].
    #[arg(long, env = "PGSTASH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for a Unix socket `.s.PGSQL.<port>`.
    #[arg(long, env = "PGSTASH_UNIX_SOCKET_DIR")]
    pub unix_socket_dir: Option<PathBuf>,
    /// Upstream Postgres URL [default: postgres://127.0.0.1:5432].
    #[arg(long, env = "PGSTASH_UPSTREAM")]
    pub upstream: Option<String>,
    /// rules.toml marking cacheable queries.
    #[arg(long, env = "PGSTASH_RULES")]
    pub rules: Option<PathBuf>,
    /// Redis URL for a shared cache (default: in-process cache).
    #[arg(long, env = "PGSTASH_REDIS")]
    pub redis: Option<String>,
    /// Metrics and health HTTP address [default: 127.0.0.1:9930].
    #[arg(long, env = "PGSTASH_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log queries at or over this many milliseconds [default: 100].
    #[arg(long, env = "PGSTASH_SLOW_QUERY_MS")]
    pub slow_query_ms: Option<u64>,
    /// Slow-query log file [default: stderr].
    #[arg(long, env = "PGSTASH_SLOW_QUERY_LOG")]
    pub slow_query_log: Option<PathBuf>,
    /// Server connections per (database, user) [default: 20].
    #[arg(long, env = "PGSTASH_POOL_SIZE")]
    pub pool_size: Option<u32>,
    /// transaction or session [default: transaction].
    #[arg(long, env = "PGSTASH_POOL_MODE")]
    pub pool_mode: Option<PoolMode>,
    /// Threads serving connections; 0 = one per CPU, 1 = a single-threaded
    /// runtime [default: 0].
    #[arg(long, env = "PGSTASH_WORKERS")]
    pub workers: Option<usize>,
    /// per_worker (a single-threaded runtime and a share of each pool per
    /// worker) or shared (one work-stealing runtime) [default: per_worker].
    #[arg(long, env = "PGSTASH_RUNTIME")]
    pub runtime: Option<crate::config::RuntimeLayout>,
    /// Invalidate from Postgres' logical replication stream (writes that
    /// bypass pgstash); see `pgstash replication setup`.
    #[arg(long, env = "PGSTASH_REPLICATION")]
    pub replication: bool,
}

impl ServeArgs {
    /// The configuration: file (if any), then these flags/variables on top.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        self.apply(&mut config)?;
        config.validate()?;
        Ok(config)
    }

    fn apply(&self, config: &mut Config) -> Result<(), ConfigError> {
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = &self.unix_socket_dir {
            config.unix_socket_dir = Some(v.clone());
        }
        if let Some(v) = &self.upstream {
            config.upstream = Upstream::parse(v)?;
        }
        if let Some(v) = &self.rules {
            config.rules = Some(v.clone());
        }
        if let Some(v) = &self.redis {
            config.redis = Some(v.clone());
        }
        if let Some(v) = self.metrics_listen {
            config.metrics_listen = v;
        }
        if let Some(v) = self.slow_query_ms {
            config.slow_query_ms = v;
        }
        if let Some(v) = &self.slow_query_log {
            config.slow_query_log = Some(v.clone());
        }
        if let Some(v) = self.pool_size {
            config.pool.size = v;
        }
        if let Some(v) = self.pool_mode {
            config.pool.mode = v;
        }
        if let Some(v) = self.workers {
            config.workers = v;
        }
        if let Some(v) = self.runtime {
            config.runtime = v;
        }
        if self.replication {
            config.replication.enabled = true;
        }
        Ok(())
    }
}
