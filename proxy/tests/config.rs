//! The config file's contract, through the `pgstash` binary: `config check`
//! answers ok for a valid file and `file:line:column: message` for every
//! kind of error (TOML syntax, an unknown key, a bad value, a
//! contradiction, a file it names that cannot be read, the rules file it
//! names); paths in the file are relative to the file; settings that
//! cannot take effect are warned of, at start and on a SIGHUP that
//! changes one; log lines on a pipe carry no colour codes, and
//! `log_format = "json"` writes JSON lines.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test: a failure should say where"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn pgstash() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgstash"))
}

/// A fresh folder for one test, removed when the test is done with it.
fn folder(name: &str) -> Folder {
    let dir = std::env::temp_dir().join(format!("pgstash-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Folder(dir)
}

struct Folder(PathBuf);

impl std::ops::Deref for Folder {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `pgstash config check FILE`, run from `/` so that nothing is found
/// relative to the test's working directory by accident.
fn check(file: &Path) -> Output {
    pgstash()
        .args(["config", "check"])
        .arg(file)
        .current_dir("/")
        .output()
        .unwrap()
}

/// Checks a file holding `text`; it must be refused. Answers stderr with
/// the file's path replaced by `FILE`.
fn refused(name: &str, text: &str) -> String {
    let dir = folder(name);
    let file = write(&dir, "pgstash.toml", text);
    let out = check(&file);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{name} accepted: {stderr}");
    stderr.replace(&dir.display().to_string(), "DIR")
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

#[test]
fn config_check_accepts_the_example_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/pgstash.toml");
    let out = check(&example);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "the example warns: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("pgstash.toml: ok"), "{stdout}");
}

#[test]
fn config_check_places_a_toml_syntax_error() {
    let stderr = refused("syntax", "listen = \"127.0.0.1:6432\"\n[pool\nsize = 3\n");
    assert!(
        stderr.starts_with("DIR/pgstash.toml:2:6: invalid table header: expected"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[test]
fn config_check_places_an_unknown_key() {
    let stderr = refused("unknown", "[pool]\nsize = 3\nsise = 4\n");
    assert!(stderr.starts_with("DIR/pgstash.toml:3:1: "), "{stderr}");
    assert!(stderr.contains("unknown field `sise`"), "{stderr}");
}

#[test]
fn config_check_places_bad_values() {
    for (name, text, place, says) in [
        (
            "sslmode",
            "listen = \"127.0.0.1:6432\"\nupstream = \"postgres://db/app?sslmode=sometimes\"\n",
            ":2:12: ",
            "invalid sslmode value: \"sometimes\"",
        ),
        (
            "upstream-scheme",
            "\nupstream = \"mysql://db/app\"\n",
            ":2:12: ",
            "scheme must be postgres://",
        ),
        (
            "redis-scheme",
            "rules = \"r.toml\"\nredis = \"http://cache:6379\"\n",
            ":2:9: ",
            "unsupported scheme \"http\"",
        ),
        (
            "pool-size",
            "[pool]\nmode = \"session\"\nsize = 0\n",
            ":3:8: ",
            "pool.size: must be at least 1",
        ),
        (
            "same-port",
            "listen = \"127.0.0.1:7000\"\nmetrics_listen = \"127.0.0.1:7000\"\n",
            ":2:18: ",
            "127.0.0.1:7000 is also listen",
        ),
        (
            "backoff",
            "[pool]\nreconnect_backoff = \"10s\"\nreconnect_backoff_max = \"1s\"\n",
            ":2:21: ",
            "longer than reconnect_backoff_max",
        ),
        (
            "tls-pair",
            "[tls]\ncert_file = \"server.crt\"\n",
            ":1:1: ",
            "cert_file and key_file go together",
        ),
    ] {
        let stderr = refused(name, text);
        let expected = format!("DIR/pgstash.toml{place}");
        assert!(stderr.starts_with(&expected), "{name}: {stderr}");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
}

#[test]
fn config_check_places_a_file_it_names_that_cannot_be_read() {
    let stderr = refused(
        "password-file",
        "[auth]\ntype = \"md5\"\n\n[[auth.users]]\nname = \"app\"\npassword_file = \"app.secret\"\n",
    );
    assert!(stderr.starts_with("DIR/pgstash.toml:6:17: "), "{stderr}");
    assert!(
        stderr.contains("DIR/app.secret"),
        "the file is looked for beside the config: {stderr}"
    );
    let stderr = refused(
        "upstream-ca",
        "upstream = \"postgres://db/app?sslmode=verify-ca&sslrootcert=ca.pem\"\n",
    );
    assert!(stderr.starts_with("DIR/pgstash.toml:1:12: "), "{stderr}");
    assert!(stderr.contains("DIR/ca.pem"), "{stderr}");
}

#[test]
fn config_check_reports_the_rules_file_it_names() {
    let dir = folder("rules-broken");
    write(
        &dir,
        "rules.toml",
        "[[rule]]\nname = \"x\"\nttl = \"soon\"\ntables = [\"t\"]\n",
    );
    let file = write(&dir, "pgstash.toml", "rules = \"rules.toml\"\n");
    let out = check(&file);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:3:7: ", dir.join("rules.toml").display());
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn paths_in_the_config_file_are_relative_to_it() {
    let dir = folder("relative");
    write(
        &dir,
        "rules.toml",
        "[[rule]]\nname = \"users\"\ntables = [\"users\"]\n",
    );
    let file = write(
        &dir,
        "pgstash.toml",
        "rules = \"rules.toml\"\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n",
    );
    let out = check(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let expected = format!("{}: 1 rules", dir.join("rules.toml").display());
    assert!(stdout.contains(&expected), "{stdout}");

    // And serving from another working directory finds them too.
    let mut server = Server::start(&file, &[]);
    let line = server.wait_for("cache enabled");
    assert!(
        line.contains(&dir.join("rules.toml").display().to_string()),
        "{line}"
    );
}

#[test]
fn config_check_warns_of_settings_without_effect_and_still_passes() {
    let dir = folder("warnings");
    let file = write(
        &dir,
        "pgstash.toml",
        "redis = \"redis://127.0.0.1:6379\"\n\n[admin]\ntoken = \"t\"\n",
    );
    let out = check(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let name = file.display();
    assert!(
        stderr.contains(&format!(
            "{name}:1:9: warning: redis: set, but no rules are"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{name}:4:9: warning: admin.token: set, but admin.enabled is false"
        )),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 warnings"));
}

#[test]
fn serve_refuses_an_unknown_redis_scheme_from_a_flag() {
    let out = pgstash()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--redis", "http://127.0.0.1:6379"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unsupported scheme \"http\""), "{stderr}");
}

/// A running `pgstash serve` whose stderr lines are read as they come.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    /// Serves with `config` and `flags`, from `/` as working directory.
    fn start(config: &Path, flags: &[&str]) -> Server {
        let mut child = pgstash()
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(flags)
            .current_dir("/")
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Server {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) containing `text`.
    fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {text:?} in:\n{}", self.seen.join("\n"));
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(sent.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_warns_of_redis_without_rules_in_plain_text_on_a_pipe() {
    let dir = folder("serve-warn");
    let file = write(
        &dir,
        "pgstash.toml",
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n",
    );
    let mut server = Server::start(&file, &["--redis", "redis://127.0.0.1:6379"]);
    let line = server.wait_for("redis: set, but no rules are");
    assert!(line.contains("WARN"), "{line}");
    server.wait_for("pgstash listening");
    for line in &server.seen {
        assert!(!line.contains('\u{1b}'), "colour codes on a pipe: {line:?}");
    }
}

#[test]
fn log_format_json_writes_json_lines() {
    let dir = folder("json");
    let file = write(
        &dir,
        "pgstash.toml",
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nlog_format = \"json\"\n",
    );
    let mut server = Server::start(&file, &[]);
    server.wait_for("pgstash listening");
    for line in &server.seen {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.get("level").is_some(), "{line}");
    }
}

#[test]
fn a_reload_that_changes_listen_warns_and_keeps_serving_on_the_old_address() {
    let dir = folder("sighup");
    let (port, metrics, other) = (free_port(), free_port(), free_port());
    let text = |listen: u16, slow: u32| {
        format!(
            "listen = \"127.0.0.1:{listen}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
             slow_query_ms = {slow}\n"
        )
    };
    let file = write(&dir, "pgstash.toml", &text(port, 100));
    let mut server = Server::start(&file, &[]);
    server.wait_for("pgstash listening");
    write(&dir, "pgstash.toml", &text(other, 50));
    server.signal("-HUP");
    let line = server.wait_for("reload: listen changed");
    assert!(line.contains("WARN") && line.contains("restarts"), "{line}");
    server.wait_for("SIGHUP: configuration reloaded");
    assert!(
        !server
            .seen
            .iter()
            .any(|l| l.contains("slow_query_ms changed")),
        "a setting a reload applies is not warned of"
    );
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the old address still serves");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", other)).is_err(),
        "the new address is not listened on"
    );
}
