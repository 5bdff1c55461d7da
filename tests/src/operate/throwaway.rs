//! A Postgres server of one test's own, which the test may stop: for
//! checking how pgstash reports an upstream that goes away, without
//! touching the server every other test shares.
//!
//! `initdb` into a temp dir (as the `postgres` OS user when running as root,
//! since Postgres refuses root), `pg_ctl start -w` on a free port, and
//! `pg_ctl stop -m immediate` on [`ThrowawayPostgres::stop`] or drop.
//! [`Setup`] adds a `pg_hba.conf` of the test's own and files in the data
//! directory (a TLS certificate and key, a CA), for tests of what the
//! shared trust-everyone server cannot show: TLS and password logins.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::servers::{bindir_with, os_user};

pub struct ThrowawayPostgres {
    dir: PathBuf,
    bindir: PathBuf,
    run_as: Option<(u32, u32)>,
    pub port: u16,
    /// The `postgres` options it was started with.
    options: String,
    running: bool,
}

impl ThrowawayPostgres {
    /// Starts one, or `None` when the server binaries are not installed.
    pub fn start() -> Option<ThrowawayPostgres> {
        Self::start_with("")
    }

    /// Starts one with extra `postgres` options (e.g.
    /// `-c max_prepared_transactions=4`).
    pub fn start_with(options: &str) -> Option<ThrowawayPostgres> {
        Self::start_setup(Setup {
            options,
            ..Setup::default()
        })
    }

    /// Starts one as `setup` says.
    pub fn start_setup(setup: Setup<'_>) -> Option<ThrowawayPostgres> {
        let options = setup.options;
        let bindir = bindir()?;
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(os_user("postgres")?)
        } else {
            None
        };
        let dir = super::temp_path("pgstash-ops-pg", "d");
        std::fs::create_dir_all(&dir).expect("create throwaway dir");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown throwaway dir");
        }
        let port = crate::servers::free_port();
        let mut server = ThrowawayPostgres {
            dir,
            bindir,
            run_as,
            port,
            options: String::new(),
            running: false,
        };
        let data = server.dir.join("data");
        server.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        for (name, contents) in setup.files {
            server.write_owned(&data.join(name), contents);
        }
        if let Some(hba) = setup.hba {
            server.write_owned(&data.join("pg_hba.conf"), hba);
        }
        server.options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {options}",
            server.dir.display()
        );
        server.start_again();
        server.running = true;
        Some(server)
    }

    /// Starts the server again after [`ThrowawayPostgres::stop`] (same
    /// data, port and options).
    pub fn start_again(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                self.options.as_ref(),
            ],
        );
    }

    /// The superuser's URL to the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The directory of its Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `sql` as the superuser over the Unix socket (which a test's
    /// `pg_hba.conf` keeps at `local all all trust`), panicking on error.
    pub fn psql(&self, sql: &str) {
        let out = Command::new(self.bindir.join("psql"))
            .arg("-h")
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Writes a file the server's user owns, mode 0600 (Postgres refuses a
    /// private key others may read).
    fn write_owned(&self, path: &Path, contents: &str) {
        std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
        }
    }

    /// Stops the server at once (no shutdown checkpoint).
    pub fn stop(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-w".as_ref(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
            ],
        );
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(self.bindir.join(tool));
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        if let Some((uid, gid)) = self.run_as {
            cmd.gid(gid).uid(uid);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{tool} failed: {}\n{log}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.dir.join("data");
            let mut cmd = Command::new(self.bindir.join("pg_ctl"));
            cmd.args(["stop", "-m", "immediate", "-D"])
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some((uid, gid)) = self.run_as {
                use std::os::unix::process::CommandExt;
                cmd.gid(gid).uid(uid);
            }
            let _ = cmd.status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a throwaway server starts with besides initdb's defaults.
#[derive(Debug, Default, Clone, Copy)]
pub struct Setup<'a> {
    /// Extra `postgres` options (`-c ssl=on -c ssl_cert_file=server.crt`).
    pub options: &'a str,
    /// The whole `pg_hba.conf`, in place of initdb's (trust for all).
    pub hba: Option<&'a str>,
    /// Files written into the data directory (name, contents), owned by the
    /// server's user, mode 0600: relative names in `options` find them.
    pub files: &'a [(&'a str, &'a str)],
}

/// Where `initdb` and `pg_ctl` live.
fn bindir() -> Option<PathBuf> {
    bindir_with(&["initdb", "pg_ctl"])
}
