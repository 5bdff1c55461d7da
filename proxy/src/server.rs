//! The listening server: builds the shared state, accepts clients on TCP
//! and (optionally) a Unix socket, hands each to a session task, starts the
//! admin port and the rules file watch, and shuts down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::context::Context;
use crate::frontend::handshake::serve_client;
use crate::net::Stream;
use crate::workers::Workers;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error("cannot listen on {what}: {source}")]
    Listen {
        what: String,
        source: std::io::Error,
    },
}

/// A bound, not yet running, pgstash server.
pub struct Server {
    context: Arc<Context>,
    listener: TcpListener,
    unix: Option<(UnixListener, PathBuf)>,
    local_addr: SocketAddr,
    metrics_listener: TcpListener,
    metrics_addr: SocketAddr,
    /// Per-worker runtimes the clients are handed to; `None`: sessions run
    /// on the runtime that runs the server.
    workers: Option<Arc<Workers>>,
}

/// Controls a running server from elsewhere (signal handlers, tests).
#[derive(Clone)]
pub struct ServerHandle {
    context: Arc<Context>,
}

impl ServerHandle {
    /// Stops accepting clients; idle sessions close at once, busy ones after
    /// their transaction, and the rest when `shutdown_timeout` runs out.
    pub fn shutdown(&self) {
        self.context.shutdown.cancel();
    }

    /// Applies a new configuration (listen addresses excepted).
    pub fn reload(&self, config: Config) -> Result<(), ConfigError> {
        config.validate()?;
        self.context.reload(config)
    }

    /// The shared state, for tests and the metrics port.
    pub fn context(&self) -> &Arc<Context> {
        &self.context
    }
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, ServeError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    what: config.listen.to_string(),
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServeError::Listen {
            what: config.listen.to_string(),
            source,
        })?;
        let unix = match &config.unix_socket_dir {
            Some(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", local_addr.port()));
                // A socket file left by a process that died is in the way.
                if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
                    let _ = std::fs::remove_file(&path);
                }
                let listener = UnixListener::bind(&path).map_err(|source| ServeError::Listen {
                    what: path.display().to_string(),
                    source,
                })?;
                Some((listener, path))
            }
            None => None,
        };
        if config.auth.method == crate::config::AuthMethod::Trust
            && !config.listen.ip().is_loopback()
        {
            tracing::warn!(listen = %config.listen, "auth type is trust on a non-loopback address: anyone who can reach it logs in");
        }
        let metrics_listener =
            crate::admin::bind(config.metrics_listen)
                .await
                .map_err(|source| ServeError::Listen {
                    what: format!("metrics {}", config.metrics_listen),
                    source,
                })?;
        let metrics_addr = metrics_listener
            .local_addr()
            .map_err(|source| ServeError::Listen {
                what: config.metrics_listen.to_string(),
                source,
            })?;
        let metrics = Arc::new(crate::observe::Metrics::new());
        metrics.register_labels([]);
        let catalogs = Arc::new(crate::cache::catalog::Catalogs::new(
            config.cache.catalog_refresh,
        ));
        let cache = crate::cache::Cache::start(&config, metrics.clone(), catalogs.clone()).await?;
        if let Some(cache) = &cache {
            tokio::spawn(watch_rules(Arc::downgrade(cache)));
        }
        let context = Arc::new(Context::new(config, metrics, cache, catalogs)?);
        start_replication(&context);
        crate::explain::start(&context);
        Ok(Server {
            context,
            listener,
            unix,
            local_addr,
            metrics_listener,
            metrics_addr,
            workers: None,
        })
    }

    /// Serves every client on one of `workers` (`runtime = "per_worker"`),
    /// each worker with its own share of every pool.
    pub fn spread_over(&mut self, workers: Arc<Workers>) {
        self.context.pools.set_shards(workers.len());
        self.workers = Some(workers);
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Address of the metrics and health port.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            context: self.context.clone(),
        }
    }

    /// Accepts clients until shutdown, then waits for sessions to end.
    pub async fn run(self) -> Result<(), ServeError> {
        let Server {
            context,
            listener,
            unix,
            local_addr,
            metrics_listener,
            metrics_addr,
            workers,
        } = self;
        tracing::info!(metrics = %metrics_addr, "metrics port listening");
        let threads = match &workers {
            Some(workers) => workers.len(),
            None => tokio::runtime::Handle::current().metrics().num_workers(),
        };
        context.metrics.workers.set(threads as i64);
        tokio::spawn(crate::admin::serve(metrics_listener, context.clone()));
        let upstream = context.config.load().upstream.clone();
        tracing::info!(listen = %local_addr, upstream = %upstream.display, sslmode = upstream.tls.mode.as_str(), "pgstash listening");
        let tracker = TaskTracker::new();
        let shutdown = context.shutdown.clone();
        loop {
            let unix_accept = async {
                match &unix {
                    Some((listener, _)) => listener.accept().await.map(|(s, _)| s),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        start_session(workers.as_deref(), &tracker, &context, Accepted::Tcp(stream));
                    }
                    Err(e) => accept_failed(e).await,
                },
                accepted = unix_accept => match accepted {
                    Ok(stream) => {
                        start_session(workers.as_deref(), &tracker, &context, Accepted::Unix(stream));
                    }
                    Err(e) => accept_failed(e).await,
                },
                _ = shutdown.cancelled() => break,
            }
        }
        drop(listener);
        if let Some((listener, path)) = unix {
            drop(listener);
            let _ = std::fs::remove_file(path);
        }
        tracker.close();
        let timeout = context.config.load().shutdown_timeout;
        tracing::info!(
            sessions = tracker.len(),
            ?timeout,
            "shutting down: waiting for sessions"
        );
        if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
            tracing::warn!(
                sessions = tracker.len(),
                "shutdown timeout reached; closing remaining sessions"
            );
        }
        Ok(())
    }
}

/// Follows the replication stream of each configured database, when
/// replication is on and there is a cache to invalidate.
fn start_replication(context: &Arc<Context>) {
    let config = context.config.load();
    if !config.replication.enabled {
        return;
    }
    // Without rules there is nothing to invalidate (`Config::warnings`
    // says so at start).
    let Some(cache) = &context.cache else {
        return;
    };
    let user = config
        .upstream
        .user
        .clone()
        .unwrap_or_else(|| "postgres".into());
    let databases = config.replicated_databases();
    crate::replication::start(
        &config.replication,
        &databases,
        |database| context.connect_target(database, &user),
        cache,
        &context.metrics,
        &context.shutdown,
    );
}

/// How often rules.toml is checked for changes.
const RULES_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Re-reads rules.toml whenever it changes, for as long as the cache lives.
async fn watch_rules(cache: std::sync::Weak<crate::cache::Cache>) {
    loop {
        tokio::time::sleep(RULES_POLL).await;
        let Some(cache) = cache.upgrade() else { return };
        cache.decider().reload_if_changed();
    }
}

/// A client socket as accepted, before a worker takes it.
enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Starts an accepted client's session: on this runtime, or with
/// per-worker runtimes on the next worker's, where the socket moves (it
/// leaves this runtime's reactor and joins the worker's).
fn start_session(
    workers: Option<&Workers>,
    tracker: &TaskTracker,
    context: &Arc<Context>,
    accepted: Accepted,
) {
    let Some(workers) = workers else {
        let stream = match accepted {
            Accepted::Tcp(stream) => Stream::Tcp(stream),
            Accepted::Unix(stream) => Stream::Unix(stream),
        };
        tracker.spawn(serve_client(context.clone(), stream));
        return;
    };
    enum Socket {
        Tcp(std::net::TcpStream),
        Unix(std::os::unix::net::UnixStream),
    }
    let socket = match accepted {
        Accepted::Tcp(stream) => stream.into_std().map(Socket::Tcp),
        Accepted::Unix(stream) => stream.into_std().map(Socket::Unix),
    };
    let socket = match socket {
        Ok(socket) => socket,
        Err(e) => return tracing::warn!(error = %e, "could not hand a client to a worker"),
    };
    let context = context.clone();
    workers.next().spawn(tracker.track_future(async move {
        // Registered with the reactor of the runtime running this task.
        let stream = match socket {
            Socket::Tcp(socket) => tokio::net::TcpStream::from_std(socket).map(Stream::Tcp),
            Socket::Unix(socket) => tokio::net::UnixStream::from_std(socket).map(Stream::Unix),
        };
        match stream {
            Ok(stream) => serve_client(context, stream).await,
            Err(e) => tracing::warn!(error = %e, "a worker could not take a client"),
        }
    }));
}

/// Accept errors (e.g. out of file descriptors) must not stop the server;
/// a short pause keeps the loop from spinning while they last.
async fn accept_failed(e: std::io::Error) {
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}
