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
pub mod quickstart;
pub mod throwaway;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgstash::observe::digest::ShapeReport;
use pgstash::Config;

pub use crate::files::{temp_path, RulesToml, TempFile};
pub use crate::postgres::column;
use crate::postgres::TestPostgres;
use crate::proxy::TestProxy;
pub use http::HttpResponse;
pub use json::Json;
pub use prom::Scrape;

/// How long the waiting helpers poll before failing the test.
const WAIT: Duration = Duration::from_secs(5);

/// A running pgstash with its slow-query log in a file of its own (and
/// its rules file, when started [`with_rules`](OpsProxy::with_rules)); the
/// address, metrics address, database and user are its [`TestProxy`]'s.
pub struct OpsProxy {
    proxy: TestProxy,
    slow_log: TempFile,
    rules: Option<RulesToml>,
}

impl std::ops::Deref for OpsProxy {
    type Target = TestProxy;
    fn deref(&self) -> &TestProxy {
        &self.proxy
    }
}

impl OpsProxy {
    /// Starts pgstash on `pg` from the harness's base config, with a slow-log
    /// file of its own; `configure` adjusts the config before binding.
    pub async fn start(pg: &TestPostgres, configure: impl FnOnce(&mut Config)) -> OpsProxy {
        let slow_log = TempFile::new("slow", "log");
        let mut config = TestProxy::base_config(pg);
        config.slow_query_log = Some(slow_log.path().to_owned());
        configure(&mut config);
        OpsProxy {
            proxy: TestProxy::bind(pg, config).await,
            slow_log,
            rules: None,
        }
    }

    /// Like [`OpsProxy::start`], reading `rules` (TOML text) from a file of
    /// its own, which the test may rewrite through [`OpsProxy::rules`].
    pub async fn with_rules(
        pg: &TestPostgres,
        rules: &str,
        configure: impl FnOnce(&mut Config),
    ) -> OpsProxy {
        let file = RulesToml::new(rules);
        let path = file.path().to_owned();
        let mut proxy = Self::start(pg, move |c| {
            c.rules = Some(path);
            configure(c);
        })
        .await;
        proxy.rules = Some(file);
        proxy
    }

    /// The rules file of a proxy started [`with_rules`](OpsProxy::with_rules).
    pub fn rules(&self) -> &RulesToml {
        self.rules
            .as_ref()
            .expect("the proxy was started with_rules")
    }

    /// `postgres://user@proxy/db`, with `application_name` when given.
    pub fn app_url(&self, user: &str, application_name: Option<&str>) -> String {
        let mut url = self.url(&self.database, user);
        if let Some(app) = application_name {
            url.push_str(&format!("?application_name={app}"));
        }
        url
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

    /// The slow-query log file.
    pub fn slow_log_path(&self) -> &Path {
        self.slow_log.path()
    }

    /// Every line of the slow-query log so far, each parsed as JSON.
    pub fn slow_lines(&self) -> Vec<Json> {
        let text = std::fs::read_to_string(self.slow_log.path()).unwrap_or_default();
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

    /// Stops the server and waits for `run()` to return.
    pub async fn shutdown(self) {
        self.proxy.shutdown().await.expect("run() failed");
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
