//! The README's quick start and journeys, run as written: every command of
//! the `console` blocks marked `<!-- quickstart -->` runs in one bash
//! session, in order, and must succeed and print the lines the README shows
//! under it (see `pgstash_tests::operate::quickstart` for how output is
//! compared). A renamed flag, a changed message or SQL that no longer runs
//! fails this test.
//!
//! The commands run against a Postgres of the test's own, set up like a
//! fresh Debian install (the `postgres` superuser over the Unix socket,
//! SCRAM passwords over TCP), with the `pgstash` binary of this workspace
//! first on `PATH`. The only changes made to the README's text: the
//! addresses `127.0.0.1:5432` / `:6432` / `:9930` become free ports,
//! `sudo -u postgres psql` becomes `psql` as `postgres` over the test
//! server's socket, and `PGSTASH_METRICS_URL` points `pgstash top` and
//! `rules suggest` at the test's metrics port. The commands run in a
//! directory of the test's own, removed afterwards.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgstash_tests::operate::quickstart::{missing, parse, script, split_output, Step};
use pgstash_tests::operate::throwaway::{Setup, ThrowawayPostgres};
use pgstash_tests::operate::{pgstash_binary, temp_path};
use pgstash_tests::servers::free_port;

/// The longest the whole walk-through may take.
const LIMIT: Duration = Duration::from_secs(60);

/// A fresh Debian cluster's `pg_hba.conf`, with `trust` standing in for
/// `peer` on the superuser's socket login (`sudo -u postgres psql`).
const DEBIAN_HBA: &str = "local all postgres trust
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
";

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A directory removed on drop.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the script's process group (pgstash started with `&` included)
/// however the test ends.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        unsafe {
            libc::kill(-self.0, libc::SIGKILL);
        }
    }
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    let steps = parse(&readme());
    assert!(
        steps.len() >= 10,
        "the README has {} runnable commands; were the <!-- quickstart --> markers removed?",
        steps.len()
    );
    let bin = pgstash_binary().expect(
        "target/debug/pgstash is not built: `cargo build -p pgstash` \
         (`cargo test --workspace` builds it)",
    );
    for tool in ["bash", "psql", "curl"] {
        assert!(which(tool), "the quick start needs {tool} on PATH");
    }
    let pg = ThrowawayPostgres::start_setup(Setup {
        hba: Some(DEBIAN_HBA),
        ..Setup::default()
    })
    .expect("the quick start test needs initdb and pg_ctl (Debian: postgresql)");
    let (proxy_port, metrics_port) = (free_port(), free_port());
    let superuser = format!(
        "psql -h {} -p {} -U postgres",
        pg.socket_dir().display(),
        pg.port
    );
    let edits = [
        ("sudo -u postgres psql".to_owned(), superuser),
        ("127.0.0.1:5432".into(), format!("127.0.0.1:{}", pg.port)),
        ("127.0.0.1:6432".into(), format!("127.0.0.1:{proxy_port}")),
        ("127.0.0.1:9930".into(), format!("127.0.0.1:{metrics_port}")),
    ];
    let adapted: Vec<Step> = steps
        .iter()
        .map(|s| Step {
            command: edits
                .iter()
                .fold(s.command.clone(), |c, (from, to)| c.replace(from, to)),
            expected: s.expected.clone(),
        })
        .collect();

    let dir = WorkDir(temp_path("quickstart", "d"));
    std::fs::create_dir_all(&dir.0).expect("create the work dir");
    let bin_dir = bin.parent().expect("binary has a directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script(&adapted, &dir.0))
        .env_clear()
        .env("PATH", path)
        .env("HOME", &dir.0)
        .env("PSQLRC", "/dev/null")
        .env("LANG", "C.UTF-8")
        .env(
            "PGSTASH_METRICS_URL",
            format!("http://127.0.0.1:{metrics_port}"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("run bash");
    let _group = Group(child.id() as i32);
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        drop(_group);
    }
    let output = reader.join().expect("reader thread");
    let cut = split_output(&output, adapted.len());
    let (outputs, finished) = (&cut.steps, cut.finished);
    // The last command that started (the one that failed, if one did).
    let reached = cut.started.saturating_sub(1);

    let mut failures = Vec::new();
    for (i, (step, out)) in steps.iter().zip(outputs).enumerate() {
        let absent = missing(&step.expected, out);
        if !absent.is_empty() && i <= reached {
            failures.push(format!(
                "$ {}\n--- the README shows, but this run did not print:\n{}\n--- it printed:\n{}",
                step.command,
                absent.join("\n"),
                out
            ));
        }
    }
    let Some(status) = status else {
        panic!(
            "the quick start did not finish within {LIMIT:?}; last command:\n$ {}\n{}\n{}",
            steps[reached].command,
            outputs[reached],
            failures.join("\n\n")
        );
    };
    assert!(
        status.success() && finished,
        "the README's command failed ({status}):\n$ {}\n{}\npgstash.log:\n{}\nPostgres log:\n{}",
        steps[reached].command,
        outputs[reached],
        std::fs::read_to_string(dir.0.join("pgstash.log")).unwrap_or_default(),
        pg.log()
    );
    assert!(
        failures.is_empty(),
        "{} command(s) of the README printed something else:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    eprintln!(
        "quick start: {} commands in {:.1?}",
        steps.len(),
        started.elapsed()
    );
}
