//! The `pgstash` binary's own contract: `rules check` exits non-zero with
//! file:line:column on a broken file, and a broken config file stops
//! `serve` with its file, line and column before anything listens.

use std::process::Command;

fn pgstash() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgstash"))
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pgstash-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
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
    assert!(stderr.contains("pgstash.toml"), "{stderr}");
    assert!(stderr.contains("line 3, column 8"), "{stderr}");
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
