//! The operator's tools on a live workload: `pgstash rules suggest` turns
//! the query digest into a `[[rule]]` that `rules check` accepts and that,
//! once loaded (hot reload or restart), makes the hot query a hit with the
//! same answer; `pgstash top` shows the hot query with its call count.
//!
//! The tools are called through the library functions the binary uses
//! (`tools::fetch_queries`, `tools::suggest::suggest`, `tools::top::render`)
//! and, when `target/debug/pgstash` has been built, through the binary too.

use pgstash_tests::fixture::{database, operated};
use pgstash_tests::operate::{column, pgstash_binary, run_pgstash, OpsProxy, RulesToml};

const SCHEMA: &str = "CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance int);
                      INSERT INTO accounts SELECT g, 'owner ' || g, g * 10 FROM generate_series(1, 50) g;
                      CREATE TABLE audit (id serial PRIMARY KEY, note text);";

/// A rules file with one rule that does not concern the workload (so the
/// cache is on and the new rule can be hot-reloaded).
const START_RULES: &str = r#"
[[rule]]
name = "audit_rows"
tables = ["audit"]
"#;

const HOT: &str = "SELECT owner, balance FROM accounts WHERE id = $1";
const HOT_CALLS: u64 = 30;

/// The hot read (30 calls with different ids, simple protocol), a volatile
/// read and a write that must not be suggested.
async fn workload(client: &tokio_postgres::Client) {
    for i in 0..HOT_CALLS {
        column(
            client,
            &format!(
                "SELECT owner, balance FROM accounts WHERE id = {}",
                1 + i % 7
            ),
        )
        .await;
    }
    for _ in 0..5 {
        column(
            client,
            "SELECT count(*) FROM accounts WHERE balance > random() * 100",
        )
        .await;
    }
    client
        .simple_query("INSERT INTO audit (note) VALUES ('workload ran')")
        .await
        .expect("insert through pgstash");
}

/// The `[[rule]]` block of `suggested` whose query is `query`.
fn rule_block<'a>(suggested: &'a str, query: &str) -> Option<&'a str> {
    suggested
        .split("[[rule]]")
        .skip(1)
        .find(|block| block.contains(&format!("query = {query:?}")))
}

fn rule_name(block: &str) -> String {
    block
        .lines()
        .find_map(|l| l.strip_prefix("name = "))
        .map(|n| n.trim().trim_matches('"').to_owned())
        .expect("a suggested rule has a name")
}

#[tokio::test]
async fn suggested_rule_is_valid_and_makes_the_hot_query_a_hit() {
    let (pg, proxy) = operated(&[SCHEMA], START_RULES, |c| c.admin.enabled = true).await;
    let rules = proxy.rules();
    let client = proxy.connect().await;
    workload(&client).await;

    let shapes = proxy.wait_for_shape(HOT, HOT_CALLS).await;
    let suggested = pgstash::tools::suggest::suggest(&shapes, 10);
    let block = rule_block(&suggested, HOT)
        .unwrap_or_else(|| panic!("no rule suggested for the hot query:\n{suggested}"));
    let at = suggested.find(block).expect("block is part of the text");
    let comment = suggested[..at]
        .lines()
        .rev()
        .find(|l| l.starts_with("# "))
        .unwrap_or_default();
    assert!(
        comment.starts_with(&format!("# {HOT_CALLS} calls")),
        "the rule's comment gives the call count: {comment:?}\n{suggested}"
    );
    assert!(
        !suggested.contains("random()") && !suggested.contains("INSERT"),
        "volatile reads and writes are never suggested:\n{suggested}"
    );
    let name = rule_name(block);

    // The binary prints the same suggestion and accepts it.
    if let Some(bin) = pgstash_binary() {
        let (ok, out, err) = run_pgstash(
            &bin,
            &["rules", "suggest", "--metrics", &proxy.metrics_url()],
        )
        .await;
        assert!(ok, "pgstash rules suggest failed: {err}");
        assert!(rule_block(&out, HOT).is_some(), "binary output:\n{out}");
    } else {
        eprintln!("note: target/debug/pgstash not built; CLI part of the test skipped");
    }

    // Into rules.toml, checked like an operator would.
    let combined = format!("{START_RULES}\n{suggested}");
    let candidate = RulesToml::new(&combined);
    if let Some(bin) = pgstash_binary() {
        let path = candidate.path().display().to_string();
        let (ok, out, err) = run_pgstash(&bin, &["rules", "check", &path]).await;
        assert!(
            ok,
            "pgstash rules check rejected the suggestion: {err}\n{combined}"
        );
        assert!(out.contains("ok"), "{out}");
    }
    rules.rewrite_unnoticed(&combined);
    let reload = proxy.post("/admin/reload", None).await;
    assert_eq!(
        reload.status, 200,
        "reload with the suggestion: {}",
        reload.body
    );

    // Hot reload: the hot query misses once, then hits with the same answer.
    let sql = "SELECT owner, balance FROM accounts WHERE id = 3";
    let expect = column(&pg.connect().await, sql).await;
    let labels = [("rule", name.as_str())];
    let s0 = proxy.scrape().await;
    assert_eq!(column(&client, sql).await, expect);
    proxy
        .scrape_until("the fill of the suggested rule", |s| {
            s.value("pgstash_cache_fills_total", &labels) >= 1.0
        })
        .await;
    assert_eq!(column(&client, sql).await, expect);
    let s1 = proxy.scrape().await;
    assert_eq!(
        s1.value("pgstash_cache_misses_total", &labels)
            - s0.value("pgstash_cache_misses_total", &labels),
        1.0
    );
    assert_eq!(
        s1.value("pgstash_cache_hits_total", &labels)
            - s0.value("pgstash_cache_hits_total", &labels),
        1.0,
        "the second run is served from the cache"
    );

    // Restart: a fresh pgstash started with the file does the same.
    drop(client);
    proxy.shutdown().await;
    let candidate_path = candidate.path().to_owned();
    let restarted = OpsProxy::start(&pg, move |c| c.rules = Some(candidate_path)).await;
    let client = restarted.connect().await;
    assert_eq!(column(&client, sql).await, expect);
    restarted
        .scrape_until("the fill after restart", |s| {
            s.value("pgstash_cache_fills_total", &labels) >= 1.0
        })
        .await;
    assert_eq!(column(&client, sql).await, expect);
    let s = restarted.scrape().await;
    assert_eq!(s.value("pgstash_cache_hits_total", &labels), 1.0);
    assert_eq!(s.value("pgstash_cache_misses_total", &labels), 1.0);
}

#[tokio::test]
async fn rules_check_reports_line_and_column_of_a_mistake() {
    let Some(bin) = pgstash_binary() else {
        eprintln!("skipped: target/debug/pgstash not built");
        return;
    };
    let bad = RulesToml::new("[[rule]]\nname = \"x\"\nquery = \"SELECT 1\"\ntables = [\"t\"]\n");
    let path = bad.path().display().to_string();
    let (ok, _out, err) = run_pgstash(&bin, &["rules", "check", &path]).await;
    assert!(!ok, "two matchers must be rejected");
    assert!(
        err.contains(&format!("{path}:")) && err.contains("both"),
        "file:line:column and the reason: {err}"
    );
}

#[tokio::test]
async fn top_shows_the_hot_query_with_its_call_count() {
    let pg = database(&[SCHEMA]).await;
    let proxy = OpsProxy::start(&pg, |_| {}).await;
    let client = proxy.connect().await;
    workload(&client).await;
    let shapes = proxy.wait_for_shape(HOT, HOT_CALLS).await;

    let table = pgstash::tools::top::render(&shapes, 20);
    let header = table.lines().next().expect("a header line");
    for column in [
        "CALLS", "TOTAL_MS", "MEAN_MS", "P95_MS", "HIT%", "RULE", "QUERY",
    ] {
        assert!(header.contains(column), "header has {column}: {header}");
    }
    let row = table
        .lines()
        .find(|l| l.ends_with(HOT))
        .unwrap_or_else(|| panic!("no row for the hot query:\n{table}"));
    let calls: u64 = row
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("CALLS column: {row}"));
    assert_eq!(calls, HOT_CALLS, "{table}");

    if let Some(bin) = pgstash_binary() {
        let (ok, out, err) =
            run_pgstash(&bin, &["top", "--once", "--metrics", &proxy.metrics_url()]).await;
        assert!(ok, "pgstash top --once failed: {err}");
        let row = out
            .lines()
            .find(|l| l.ends_with(HOT))
            .unwrap_or_else(|| panic!("no row for the hot query:\n{out}"));
        assert_eq!(
            row.split_whitespace().next(),
            Some(HOT_CALLS.to_string().as_str()),
            "{out}"
        );
        assert!(!out.contains("\x1b["), "--once prints no terminal escapes");
    }
}

/// `--workers 1` runs pgstash on a single-threaded runtime (the least CPU
/// per query). Everything must still run on that one thread: serving,
/// caching, the recorder, the metrics endpoint and a graceful SIGTERM.
#[tokio::test]
async fn one_worker_serves_caches_and_stops_on_a_single_thread() {
    let Some(bin) = pgstash_binary() else {
        eprintln!("skipped: target/debug/pgstash not built");
        return;
    };
    let pg = database(&[SCHEMA]).await;
    let rules = RulesToml::new(&format!("[[rule]]\nname = \"hot\"\nquery = \"{HOT}\"\n"));
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    };
    let (listen, metrics) = (free(), free());
    let mut child = tokio::process::Command::new(&bin)
        .args(["serve", "--workers", "1", "--listen", &listen.to_string()])
        .args(["--metrics-listen", &metrics.to_string()])
        .args(["--upstream", &format!("postgres://{}", pg.addr())])
        .arg("--rules")
        .arg(rules.path())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start pgstash");

    let url = format!("postgres://{}@{}/{}", pg.superuser(), listen, pg.database);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let client = loop {
        match pgstash_tests::postgres::try_connect(&url).await {
            Ok(client) => break client,
            Err(e) if std::time::Instant::now() > deadline => panic!("no connection: {e}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    };
    let expect = column(
        &pg.connect().await,
        "SELECT owner, balance FROM accounts WHERE id = 7",
    )
    .await;
    for _ in 0..3 {
        let rows = client
            .query(HOT, &[&7i32])
            .await
            .expect("the hot read through a one-worker pgstash");
        let got: Vec<Option<String>> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(got, expect);
    }

    let scrape = loop {
        let response = pgstash_tests::operate::http::request(metrics, "GET", "/metrics", &[])
            .await
            .expect("/metrics");
        let scrape = pgstash_tests::operate::prom::parse(&response.body).expect("metrics text");
        if scrape.value("pgstash_cache_hits_total", &[("rule", "hot")]) >= 2.0
            || std::time::Instant::now() > deadline
        {
            break scrape;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(scrape.value("pgstash_worker_threads", &[]), 1.0);
    assert_eq!(
        scrape.value("pgstash_cache_hits_total", &[("rule", "hot")]),
        2.0,
        "one miss, then hits"
    );

    drop(client);
    let pid = child.id().expect("pgstash is running") as libc::pid_t;
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("pgstash exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "a clean exit: {status}");
}
