//! The state every session shares: configuration, user credentials, pools,
//! cancel keys and the shutdown signal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::backend::connect::ConnectTarget;
use crate::backend::pool::{PoolEntry, PoolKey};
use crate::backend::{cancel::CancelRegistry, Pools};
use crate::cache::catalog::Catalogs;
use crate::cache::Cache;
use crate::config::{Config, ConfigError};
use crate::frontend::auth::UserDirectory;
use crate::observe::digest::Digest;
use crate::observe::record::Recorder;
use crate::observe::Metrics;

pub struct Context {
    pub config: ArcSwap<Config>,
    pub users: ArcSwap<UserDirectory>,
    pub pools: Pools,
    pub cancels: CancelRegistry,
    /// Cancelled when the server stops accepting; idle sessions then close.
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    /// Present when rules are configured.
    pub cache: Option<Arc<Cache>>,
    /// Per query shape statistics (`/queries`).
    pub digest: Digest,
    /// Where sessions send finished requests (set once the server starts).
    pub recorder: OnceLock<Recorder>,
    /// Set on reload: the slow-query log reopens its file.
    pub reopen_slow_log: Arc<AtomicBool>,
    /// Catalog facts per database (caching decisions, digest eligibility).
    pub catalogs: Arc<Catalogs>,
    /// TLS for clients, when configured.
    pub tls: arc_swap::ArcSwapOption<tokio_rustls::rustls::ServerConfig>,
    /// What statements do to session state, remembered by text.
    pub session_effects: pgstash_rules::EffectsCache,
}

impl Context {
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        cache: Option<Arc<Cache>>,
        catalogs: Arc<Catalogs>,
    ) -> Result<Context, ConfigError> {
        let users = UserDirectory::from_config(&config.auth)?;
        let tls = config.tls.server_config()?;
        Ok(Context {
            tls: arc_swap::ArcSwapOption::new(tls),
            metrics,
            cache,
            digest: Digest::new(config.digest_size),
            recorder: OnceLock::new(),
            reopen_slow_log: Arc::new(AtomicBool::new(false)),
            catalogs,
            config: ArcSwap::from_pointee(config),
            users: ArcSwap::from_pointee(users),
            pools: Pools::new(),
            cancels: CancelRegistry::default(),
            shutdown: CancellationToken::new(),
            session_effects: pgstash_rules::EffectsCache::new(10_000),
        })
    }

    /// The pool for a client's (database, user), created on first use.
    pub fn pool(&self, database: &str, user: &str) -> Arc<PoolEntry> {
        let key = PoolKey {
            database: database.to_owned(),
            user: user.to_owned(),
        };
        let config = self.config.load();
        self.pools
            .get(&key, || self.connect_target(database, user), &config.pool)
    }

    /// How pgstash logs in upstream as `user` to `database`.
    pub fn connect_target(&self, database: &str, user: &str) -> ConnectTarget {
        let config = self.config.load();
        ConnectTarget {
            upstream: config.upstream.clone(),
            database: database.to_owned(),
            user: user.to_owned(),
            password: self
                .users
                .load()
                .upstream_password(user)
                .or_else(|| config.upstream.password.clone()),
        }
    }

    /// Swaps in a new configuration. Pools are rebuilt when their settings
    /// or the upstream changed; sessions pick up auth changes at next login.
    pub fn reload(&self, config: Config) -> Result<(), ConfigError> {
        let users = UserDirectory::from_config(&config.auth)?;
        self.tls.store(config.tls.server_config()?);
        let old = self.config.load();
        let pools_changed = format!("{:?}{:?}", old.pool, old.upstream)
            != format!("{:?}{:?}", config.pool, config.upstream)
            || format!("{:?}", old.auth) != format!("{:?}", config.auth);
        self.users.store(Arc::new(users));
        self.config.store(Arc::new(config));
        if pools_changed {
            self.pools.clear();
        }
        if let Some(cache) = &self.cache {
            let _ = cache.reload_rules();
        }
        self.reopen_slow_log.store(true, Ordering::SeqCst);
        Ok(())
    }
}
