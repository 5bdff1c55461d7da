//! The state every session shares: configuration, user credentials, pools,
//! cancel keys and the shutdown signal.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::backend::connect::ConnectTarget;
use crate::backend::pool::{PoolEntry, PoolKey};
use crate::backend::{cancel::CancelRegistry, Pools};
use crate::config::{Config, ConfigError};
use crate::frontend::auth::UserDirectory;

#[derive(Debug)]
pub struct Context {
    pub config: ArcSwap<Config>,
    pub users: ArcSwap<UserDirectory>,
    pub pools: Pools,
    pub cancels: CancelRegistry,
    /// Cancelled when the server stops accepting; idle sessions then close.
    pub shutdown: CancellationToken,
}

impl Context {
    pub fn new(config: Config) -> Result<Context, ConfigError> {
        let users = UserDirectory::from_config(&config.auth)?;
        Ok(Context {
            config: ArcSwap::from_pointee(config),
            users: ArcSwap::from_pointee(users),
            pools: Pools::new(),
            cancels: CancelRegistry::default(),
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
        self.pools.get(
            &key,
            || ConnectTarget {
                upstream: config.upstream.clone(),
                database: database.to_owned(),
                user: user.to_owned(),
                password: self
                    .users
                    .load()
                    .upstream_password(user)
                    .or_else(|| config.upstream.password.clone()),
            },
            &config.pool,
        )
    }

    /// Swaps in a new configuration. Pools are rebuilt when their settings
    /// or the upstream changed; sessions pick up auth changes at next login.
    pub fn reload(&self, config: Config) -> Result<(), ConfigError> {
        let users = UserDirectory::from_config(&config.auth)?;
        let old = self.config.load();
        let pools_changed = format!("{:?}{:?}", old.pool, old.upstream)
            != format!("{:?}{:?}", config.pool, config.upstream)
            || format!("{:?}", old.auth) != format!("{:?}", config.auth);
        self.users.store(Arc::new(users));
        self.config.store(Arc::new(config));
        if pools_changed {
            self.pools.clear();
        }
        Ok(())
    }
}

