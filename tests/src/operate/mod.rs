//! Helpers for the operator-facing tests (`tests/operate/`): a pgstash
//! whose metrics port the test can reach over HTTP, its slow-query log in a
//! file of its own, a rules file that can be edited in place, and the
//! `pgstash` binary when it has been built.
//!
//! These tests look at pgstash the way an operator does — scraping
//! `/metrics`, reading the log, calling the admin endpoints and the CLI —
//! so the helpers go through the network and the files, not through the
//! server's in-memory state.

pub mod http;
pub mod json;
pub mod prom;
pub mod throwaway;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgstash::observe::digest::ShapeReport;
use pgstash::{Config, ServeError, Server, ServerHandle};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

pub use crate::files::{temp_path, RulesToml};
pub use crate::postgres::column;
use crate::postgres::TestPostgres;
use crate::proxy::TestProxy;
pub use http::HttpResponse;
pub use json::Json;
pub use prom::Scrape;

/// How long the waiting helpers poll before failing the test.
const WAIT: Duration = Duration::from_secs(5);

/// A running pgstash with its metrics address and slow-query log file.
pub struct OpsProxy {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The test database and the superuser (from [`TestProxy::base_config`]).
    pub database: String,
    pub user: String,
    /// The slow-query log file (a temp file unless the config named one).
    pub slow_log: PathBuf,
    handle: ServerHandle,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl OpsProxy {
    /// Starts pgstash on `pg` from the harness's base config, with a slow-log
    /// file of its own; `configure` adjusts the config before binding.
    pub async fn start(pg: &TestPostgres, configure: impl FnOnce(&mut Config)) -> OpsProxy {
        let mut config = TestProxy::base_config(pg);
        config.slow_query_log = Some(temp_path("slow", "log"));
        configure(&mut config);
        Self::bind(config, &pg.database, pg.superuser())
            .await
            .expect("pgstash failed to bind")
    }

    /// Binds `config` as given and spawns `run()`.
    pub async fn bind(config: Config, database: &str, user: &str) -> Result<OpsProxy, ServeError> {
        let slow_log = config
            .slow_query_log
            .clone()
            .unwrap_or_else(|| temp_path("unused-slow", "log"));
        let server = Server::bind(config).await?;
        let (addr, metrics_addr, handle) =
            (server.local_addr(), server.metrics_addr(), server.handle());
        let task = tokio::spawn(server.run());
        Ok(OpsProxy {
            addr,
            metrics_addr,
            database: database.to_owned(),
            user: user.to_owned(),
            slow_log,
            handle,
            task: Some(task),
        })
    }

    /// `postgres://user@proxy/db`, with `application_name` when given.
    pub fn url(&self, user: &str, application_name: Option<&str>) -> String {
        let mut url = format!("postgres://{user}@{}/{}", self.addr, self.database);
        if let Some(app) = application_name {
            url.push_str(&format!("?application_name={app}"));
        }
        url
    }

    /// A `tokio-postgres` client through the proxy (superuser, test database).
    pub async fn connect(&self) -> Client {
        crate::postgres::connect(&self.url(&self.user, None)).await
    }

    /// `http://127.0.0.1:PORT`, as given to `pgstash top --metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://{}", self.metrics_addr)
    }

    /// `GET path` on the metrics port.
    pub async fn get(&self, path: &str) -> HttpResponse {
        http::request(self.metrics_addr, "GET", path, &[])
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `POST path` on the metrics port, with a bearer token when given.
    pub async fn post(&self, path: &str, token: Option<&str>) -> HttpResponse {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        http::request(self.metrics_addr, "POST", path, &headers)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// `GET /metrics`, parsed strictly (panics with the text if invalid).
    pub async fn scrape(&self) -> Scrape {
        let response = self.get("/metrics").await;
        assert_eq!(response.status, 200, "/metrics: {}", response.body);
        prom::parse(&response.body)
            .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{}", response.body))
    }

    /// Scrapes until `done` holds, failing after a few seconds with `what`.
    pub async fn scrape_until(&self, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + WAIT;
        loop {
            let scrape = self.scrape().await;
            if done(&scrape) {
                return scrape;
            }
            assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/queries`, read by the same function `pgstash top` and
    /// `pgstash rules suggest` use.
    pub async fn queries(&self) -> Vec<ShapeReport> {
        let url = self.metrics_url();
        tokio::task::spawn_blocking(move || pgstash::tools::fetch_queries(&url))
            .await
            .expect("fetch_queries panicked")
            .unwrap_or_else(|e| panic!("fetch_queries: {e}"))
    }

    /// Polls `/queries` until the shape whose normalized text is `query`
    /// has at least `calls` calls (the digest is updated in the background).
    pub async fn wait_for_shape(&self, query: &str, calls: u64) -> Vec<ShapeReport> {
        let deadline = Instant::now() + WAIT;
        loop {
            let shapes = self.queries().await;
            if shapes.iter().any(|s| s.query == query && s.calls >= calls) {
                return shapes;
            }
            assert!(
                Instant::now() < deadline,
                "waited {WAIT:?} for {calls} calls of {query:?} in /queries; have {:#?}",
                shapes
                    .iter()
                    .map(|s| (&s.query, s.calls))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every line of the slow-query log so far, each parsed as JSON.
    pub fn slow_lines(&self) -> Vec<Json> {
        let text = std::fs::read_to_string(&self.slow_log).unwrap_or_default();
        text.lines()
            .map(|line| {
                json::parse(line)
                    .unwrap_or_else(|e| panic!("slow-log line is not JSON ({e}): {line:?}"))
            })
            .collect()
    }

    /// Polls the log until a line satisfies `found`; returns all lines.
    pub async fn wait_for_slow_line(&self, what: &str, found: impl Fn(&Json) -> bool) -> Vec<Json> {
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = self.slow_lines();
            if lines.iter().any(&found) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "waited {WAIT:?} for a slow-log line {what}; the log has {lines:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// Stops the server and waits for `run()` to return.
    pub async fn shutdown(mut self) {
        self.handle.shutdown();
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(joined) => joined
                    .expect("the proxy task panicked")
                    .expect("run() failed"),
                Err(_) => panic!("pgstash did not stop within 10s of shutdown()"),
            }
        }
    }
}

impl Drop for OpsProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.handle.shutdown();
            task.abort();
        }
        let _ = std::fs::remove_file(&self.slow_log);
    }
}

/// The `pgstash` binary of this workspace, if it has been built
/// (`cargo build -p pgstash`): `$CARGO_TARGET_DIR/debug/pgstash`, else
/// `<workspace>/target/debug/pgstash`. Not built from here: a `cargo build`
/// inside `cargo test` would wait on the build lock the test run holds.
pub fn pgstash_binary() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/pgstash");
    bin.is_file().then_some(bin)
}

/// Runs the `pgstash` binary with `args` off the runtime's threads;
/// returns (success, stdout, stderr).
pub async fn run_pgstash(bin: &Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args);
    let shown = format!("{} {}", bin.display(), args.join(" "));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("spawn_blocking")
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
