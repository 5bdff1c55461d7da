//! The state every session shares, built once by the server: the live
//! configuration, what faces clients (users, TLS, cancel keys), the
//! upstream pools, the cache, and the observers (metrics, digest, query
//! recorder), plus the shutdown signal. Each part is owned by its module;
//! this file only holds them together and applies a reload to them.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::backend::cancel::CancelRegistry;
use crate::backend::connect::ConnectTarget;
use crate::backend::passthrough::PassThrough;
use crate::backend::pool::{PoolEntry, PoolKey};
use crate::backend::Pools;
use crate::cache::catalog::Catalogs;
use crate::cache::Cache;
use crate::config::{Config, ConfigError, UserDirectory};
use crate::frontend::auth_query::AuthQuery;
use crate::observe::digest::Digest;
use crate::observe::plans::PlanQueue;
use crate::observe::record::{LogSettings, Recorder};
use crate::observe::Metrics;

/// What faces clients, shared by every connection.
pub struct FrontDoor {
    pub users: ArcSwap<UserDirectory>,
    /// TLS for clients, when configured.
    pub tls: ArcSwapOption<ServerConfig>,
    pub cancels: CancelRegistry,
    /// The secrets clients proved, which log pgstash in upstream as them.
    pub pass_through: Arc<PassThrough>,
    /// Secrets of users the configuration does not list (`auth_query`).
    pub auth_query: AuthQuery,
    /// Client connections open now (`[client] max_client_conn`).
    pub clients: std::sync::atomic::AtomicUsize,
    /// What statements do to session state, remembered by text.
    pub session_effects: pgstash_rules::EffectsCache,
}

pub struct Context {
    pub config: ArcSwap<Config>,
    pub front: FrontDoor,
    pub pools: Pools,
    /// Present when rules are configured.
    pub cache: Option<Arc<Cache>>,
    /// Catalog facts per database (caching decisions, digest eligibility).
    pub catalogs: Arc<Catalogs>,
    pub metrics: Arc<Metrics>,
    /// Per query shape statistics (`/queries`).
    pub digest: Arc<Digest>,
    /// Where sessions send finished requests.
    pub recorder: Recorder,
    /// Plans the recorder asks for, fetched by `explain::start`.
    pub plans: Arc<PlanQueue>,
    /// Cancelled when the server stops accepting; idle sessions then close.
    pub shutdown: CancellationToken,
}

/// The slow-query log settings of a configuration.
pub fn log_settings(config: &Config) -> LogSettings {
    LogSettings {
        threshold: std::time::Duration::from_millis(config.slow_query_ms),
        log_parameters: config.log_parameters,
        n_plus_one: crate::observe::nplusone::Thresholds {
            min: config.observe.n_plus_one_min,
            window: config.observe.n_plus_one_window,
        },
        explain_every: config
            .observe
            .explain
            .then_some(config.observe.explain_every),
    }
}

impl Context {
    /// Starts the query recorder (a task: call inside the runtime).
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        cache: Option<Arc<Cache>>,
        catalogs: Arc<Catalogs>,
    ) -> Result<Context, ConfigError> {
        let users = UserDirectory::from_config(&config.auth)?;
        let tls = config.tls.server_config()?;
        let digest = Arc::new(Digest::new(config.digest_size));
        let plans = Arc::new(PlanQueue::default());
        let recorder = Recorder::start(
            digest.clone(),
            metrics.clone(),
            config.slow_query_log.clone(),
            log_settings(&config),
            plans.clone(),
        );
        Ok(Context {
            front: FrontDoor {
                users: ArcSwap::from_pointee(users),
                tls: ArcSwapOption::new(tls),
                cancels: CancelRegistry::default(),
                pass_through: Arc::default(),
                auth_query: AuthQuery::default(),
                clients: Default::default(),
                session_effects: pgstash_rules::EffectsCache::new(10_000),
            },
            pools: Pools::new(),
            cache,
            catalogs,
            metrics,
            digest,
            recorder,
            plans,
            config: ArcSwap::from_pointee(config),
            shutdown: CancellationToken::new(),
        })
    }

    /// The pool for a client's (database, user), created on first use.
    pub fn pool(&self, database: &str, user: &str) -> Arc<PoolEntry> {
        let key = PoolKey {
            database: database.to_owned(),
            user: user.to_owned(),
        };
        let config = self.config.load();
        let size = config.pool.size_for(database, user);
        self.pools.get(
            &key,
            || self.connect_target(database, user),
            &config.pool,
            size,
        )
    }

    /// How pgstash logs in upstream as `user` to `database`: with the
    /// user's configured password, or else by pass-through of what its
    /// clients proved, or else with the upstream URL's password.
    pub fn connect_target(&self, database: &str, user: &str) -> ConnectTarget {
        let config = self.config.load();
        let configured = self.front.users.load().upstream_password(user);
        ConnectTarget {
            upstream: config.upstream.clone(),
            database: database.to_owned(),
            user: user.to_owned(),
            pass_through: configured
                .is_none()
                .then(|| self.front.pass_through.clone()),
            password: configured.or_else(|| config.upstream.password.clone()),
        }
    }

    /// Swaps in a new configuration. Pools are rebuilt when their settings
    /// or the upstream changed; sessions pick up auth changes at next login;
    /// the rules are re-read and the slow-query log reopened. A setting
    /// read only at start keeps its running value, with a warning.
    pub fn reload(&self, mut config: Config) -> Result<(), ConfigError> {
        let users = UserDirectory::from_config(&config.auth)?;
        self.front.tls.store(config.tls.server_config()?);
        let old = self.config.load();
        for key in config.keep_start_only(&old) {
            tracing::warn!("reload: {key} changed, but it is read only at start: the running value stays until pgstash restarts");
        }
        let pools_changed = format!("{:?}{:?}", old.pool, old.upstream)
            != format!("{:?}{:?}", config.pool, config.upstream)
            || format!("{:?}", old.auth) != format!("{:?}", config.auth);
        self.front.users.store(Arc::new(users));
        self.front.auth_query.clear();
        self.recorder.reconfigure(log_settings(&config));
        self.config.store(Arc::new(config));
        if pools_changed {
            self.pools.clear();
        }
        if let Some(cache) = &self.cache {
            let _ = cache.decider().reload();
        }
        Ok(())
    }
}
