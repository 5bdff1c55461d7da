//! `TestProxy`: a pgstash server in the test's runtime, pointed at the test
//! Postgres, on a free port.
//!
//! The config starts from `Config::default()` with test-friendly changes
//! (ephemeral listen and metrics ports, a small pool, a 1 MiB message limit);
//! the closure given to [`TestProxy::start`] adjusts it further.

use std::net::SocketAddr;
use std::time::Duration;

use pgstash::config::{PoolMode, Upstream};
use pgstash::{Config, ServeError, Server, ServerHandle};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::postgres::{connect, try_connect, TestPostgres};
use crate::wire::{RawClient, Startup, WireError};

/// A running pgstash for one test.
pub struct TestProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The metrics (and admin) HTTP port.
    pub metrics_addr: SocketAddr,
    /// The test database (clients' database names pass through upstream).
    pub database: String,
    /// The user tests log in as by default (the Postgres superuser).
    pub user: String,
    handle: ServerHandle,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestProxy {
    /// The config every test proxy starts from.
    pub fn base_config(pg: &TestPostgres) -> Config {
        let server = pg.server();
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream: Upstream::parse(&server.admin_url(&server.admin_database))
                .expect("the test server URL is a valid upstream"),
            max_message_bytes: 1 << 20,
            shutdown_timeout: Duration::from_secs(2),
            // Tests that want the slow-query log set a threshold and a file;
            // the rest keep stderr quiet.
            slow_query_ms: 600_000,
            ..Config::default()
        };
        // The whole suite runs in parallel on small machines: a client may
        // wait long for one of the few server connections; that is not what
        // these tests measure.
        config.pool.acquire_timeout = Duration::from_secs(60);
        config.pool.size = 4;
        config.pool.mode = PoolMode::Transaction;
        config
    }

    /// Binds on 127.0.0.1:0 and spawns `run()`.
    pub async fn start(pg: &TestPostgres, configure: impl FnOnce(&mut Config)) -> TestProxy {
        let mut config = Self::base_config(pg);
        configure(&mut config);
        Self::bind(pg, config).await
    }

    /// Binds `config` as given (clients log in to `pg`'s database as its
    /// superuser by default) and spawns `run()`.
    pub async fn bind(pg: &TestPostgres, config: Config) -> TestProxy {
        let server = Server::bind(config).await.expect("pgstash failed to bind");
        let (addr, metrics_addr) = (server.local_addr(), server.metrics_addr());
        let handle = server.handle();
        let task = tokio::spawn(server.run());
        TestProxy {
            addr,
            metrics_addr,
            database: pg.database.clone(),
            user: pg.superuser().to_owned(),
            handle,
            task: Some(task),
        }
    }

    /// Starts a proxy in `mode` with a pool of `size`.
    pub async fn with_pool(pg: &TestPostgres, mode: PoolMode, size: u32) -> TestProxy {
        Self::start(pg, |c| {
            c.pool.mode = mode;
            c.pool.size = size;
        })
        .await
    }

    /// A URL for `user` to `database` through the proxy.
    pub fn url(&self, database: &str, user: &str) -> String {
        format!(
            "postgres://{user}@{}:{}/{database}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// A URL with a password through the proxy.
    pub fn url_with_password(&self, database: &str, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@{}:{}/{database}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// The URL of the test database as the default user.
    pub fn db_url(&self) -> String {
        self.url(&self.database, &self.user)
    }

    /// A `tokio-postgres` client through the proxy (test database, default user).
    pub async fn connect(&self) -> Client {
        connect(&self.db_url()).await
    }

    /// A `tokio-postgres` client through the proxy to the test database, as `user`.
    pub async fn connect_as(&self, user: &str) -> Client {
        connect(&self.url(&self.database, user)).await
    }

    /// Like [`Self::connect`], returning the error.
    pub async fn try_connect(&self) -> Result<Client, tokio_postgres::Error> {
        try_connect(&self.db_url()).await
    }

    /// A raw wire client through the proxy (test database, default user).
    pub async fn raw(&self) -> Result<RawClient, WireError> {
        RawClient::connect_with(self.addr, self.startup()).await
    }

    /// The StartupMessage parameters of the default user on the test database.
    pub fn startup(&self) -> Startup {
        Startup::new(&self.user, &self.database)
    }

    /// The running server's handle (its shared state, for assertions).
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// The server's metrics (each server has its own registry).
    pub fn metrics(&self) -> &pgstash::observe::Metrics {
        &self.handle.context().metrics
    }

    /// Asks for a graceful stop and waits for `run()` to return.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.handle.shutdown();
        let task = self
            .task
            .take()
            .expect("the proxy task is there until shutdown");
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(joined) => joined.expect("the proxy task panicked"),
            Err(_) => panic!("pgstash did not stop within 10s of shutdown()"),
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.handle.shutdown();
            task.abort();
        }
    }
}
