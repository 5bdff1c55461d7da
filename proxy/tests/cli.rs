//! The `pgstash` binary's own contract: `rules check` exits non-zero with
//! file:line:column on a broken file, a broken config file stops `serve`
//! with its file, line and column before anything listens, `--workers`
//! sets the serving threads, and a closed log pipe neither stops pgstash nor
//! keeps it from shutting down.

#![allow(clippy::unwrap_used, reason = "a test: a failure should say where")]

use std::process::Command;

fn pgstash() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgstash"))
}

/// A file holding `text`, in a folder of its own that goes with it.
fn temp_file(name: &str, text: &str) -> TempFile {
    let dir = std::env::temp_dir().join(format!("pgstash-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    TempFile(path)
}

struct TempFile(std::path::PathBuf);

impl AsRef<std::ffi::OsStr> for TempFile {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs `pgstash rules check` on a file with `text`; it must fail. Returns stderr.
fn failed_check(name: &str, text: &str) -> String {
    let path = temp_file(name, text);
    let out = pgstash()
        .args(["rules", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "rules check accepted {name}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rules_check_accepts_the_example_rules() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rules.toml");
    let out = pgstash()
        .args(["rules", "check", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (3 rules)"));
}

#[test]
fn rules_check_reports_line_and_column_of_a_bad_ttl() {
    let stderr = failed_check(
        "rules.toml",
        "[defaults]\nttl = \"30s\"\n\n[[rule]]\nname = \"hot\"\ntables = [\"users\"]\nttl = \"5 parsecs\"\n",
    );
    assert!(stderr.contains("rules.toml:7:7:"), "{stderr}");
    assert!(stderr.contains("5 parsecs"), "{stderr}");
}

#[test]
fn rules_check_reports_sql_that_does_not_parse() {
    let stderr = failed_check(
        "sql.toml",
        "[[rule]]\nname = \"x\"\nquery = \"SELECT id FROM users WHERE\"\n",
    );
    assert!(stderr.contains("sql.toml:3:9:"), "{stderr}");
    assert!(stderr.contains("does not parse"), "{stderr}");
}

#[test]
fn serve_refuses_a_broken_config_file_with_its_position() {
    let path = temp_file(
        "pgstash.toml",
        "listen = \"127.0.0.1:0\"\n[pool]\nsize = \"many\"\n",
    );
    let out = pgstash().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pgstash.toml:3:8: invalid type"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_bad_upstream_url_from_the_environment() {
    let out = pgstash()
        .env("PGSTASH_UPSTREAM", "mysql://localhost")
        .env("PGSTASH_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid upstream URL"));
}

/// Starts `pgstash serve --workers N` and returns the worker threads its
/// metrics port reports (`pgstash_worker_threads`).
fn serve_with_workers(workers: &str) -> Option<u64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut child = pgstash()
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", workers])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut found = None;
    for _ in 0..100 {
        let body = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok());
        found = body.as_deref().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("pgstash_worker_threads "))
                .and_then(|n| n.trim().parse().ok())
        });
        if found.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    found
}

#[test]
fn workers_sets_the_number_of_serving_threads() {
    assert_eq!(serve_with_workers("1"), Some(1));
    assert_eq!(serve_with_workers("3"), Some(3));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    assert_eq!(serve_with_workers("0"), Some(cpus), "0 means one per CPU");
}

/// Reads one unlabelled sample from `pgstash serve`'s metrics port.
fn sample(port: u16, name: &str) -> Option<u64> {
    let body = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())?;
    let prefix = format!("{name} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.trim().parse().ok())
}

/// A log reader that went away (`pgstash serve 2>&1 | head -1`, a crashed
/// log shipper) must cost log lines, counted, and nothing else: SIGTERM
/// still shuts pgstash down, and it exits cleanly.
#[test]
fn a_closed_log_pipe_is_counted_and_sigterm_still_stops_pgstash() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut child = pgstash()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let mut failed = None;
    for _ in 0..100 {
        failed = sample(port, "pgstash_log_write_errors_total").filter(|&n| n > 0);
        if failed.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        failed.is_some(),
        "the lines written to a closed stderr were not counted"
    );
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let status = status.expect("pgstash did not stop on SIGTERM with its log pipe closed");
    assert!(status.success(), "pgstash exited with {status}");
}
