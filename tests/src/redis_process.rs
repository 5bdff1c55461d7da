//! `RedisProcess`: a redis-server of one test's own, which the test may stop,
//! kill, restart with the data it had, or freeze — the failures pgstash must
//! survive without serving stale entries (G4). Never the shared Redis.
//!
//! The server listens on a free port and persists to `dump.rdb` in a
//! temporary directory only when told (`SAVE`, `SHUTDOWN SAVE`): automatic
//! snapshots are off (`--save ""`), so the test decides exactly which state
//! a restart comes back with.
//!
//! [`RedisOptions`] adds a TLS port (the plain one stays, for the test's
//! own `redis-cli`) and an ACL user in place of the default user.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisProcess {
    pub port: u16,
    /// The TLS port, when started with one.
    pub tls_port: Option<u16>,
    /// The ACL user (name, password) the test's `redis-cli` logs in as.
    user: Option<(String, String)>,
    /// Options for TLS and ACL, kept for restarts.
    extra: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// A TLS listener for [`RedisProcess::start_with`].
#[derive(Debug, Clone, Copy)]
pub struct RedisTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    /// The CA client certificates must chain to.
    pub ca: &'a Path,
    /// `tls-auth-clients yes` (otherwise `no`).
    pub client_certs: bool,
}

/// What a [`RedisProcess`] starts with besides its plain port.
#[derive(Debug, Default, Clone, Copy)]
pub struct RedisOptions<'a> {
    pub tls: Option<RedisTls<'a>>,
    /// An ACL user (name, password) allowed everything; the default user
    /// is then off, so every connection must log in.
    pub user: Option<(&'a str, &'a str)>,
}

impl RedisProcess {
    /// Starts a fresh, empty server and waits until it answers.
    pub fn start() -> RedisProcess {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a fresh, empty server with `options` and waits until it answers.
    pub fn start_with(options: RedisOptions<'_>) -> RedisProcess {
        let dir = std::env::temp_dir().join(crate::unique_name("pgstash-test-redis"));
        std::fs::create_dir_all(&dir).expect("create redis dir");
        let mut extra = Vec::new();
        let mut tls_port = None;
        if let Some(tls) = options.tls {
            let port = crate::servers::free_port();
            tls_port = Some(port);
            extra.extend(["--tls-port".to_owned(), port.to_string()]);
            for (flag, path) in [
                ("--tls-cert-file", tls.cert),
                ("--tls-key-file", tls.key),
                ("--tls-ca-cert-file", tls.ca),
            ] {
                extra.extend([flag.to_owned(), path.display().to_string()]);
            }
            let auth = if tls.client_certs { "yes" } else { "no" };
            extra.extend(["--tls-auth-clients".to_owned(), auth.to_owned()]);
        }
        if let Some((name, password)) = options.user {
            extra.extend(
                [
                    "--user",
                    name,
                    "on",
                    &format!(">{password}"),
                    "~*",
                    "&*",
                    "+@all",
                ]
                .map(str::to_owned),
            );
            extra.extend(["--user", "default", "off"].map(str::to_owned));
        }
        let mut redis = RedisProcess {
            port: crate::servers::free_port(),
            tls_port,
            user: options.user.map(|(n, p)| (n.to_owned(), p.to_owned())),
            extra,
            dir,
            child: None,
            paused: false,
        };
        redis.spawn();
        redis
    }

    /// How many clients are connected to `port` (`CLIENT LIST`'s `laddr`).
    pub fn clients_on(&self, port: u16) -> usize {
        let laddr = format!(" laddr=127.0.0.1:{port} ");
        self.cli(&["CLIENT", "LIST"])
            .lines()
            .filter(|l| l.contains(&laddr))
            .count()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Points pgstash's `config` at this server (the default key prefix:
    /// the server is the test's alone, and instances sharing it agree).
    pub fn configure(&self, config: &mut pgstash::Config) {
        config.redis = Some(self.url());
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dbfilename", "dump.rdb"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra);
        self.child = Some(spawn_with_the_test(cmd));
        self.paused = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // PONG only once the dump is loaded (LOADING before).
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
                && self.cli(&["PING"]).trim() == "PONG"
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not come up on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `redis-cli -p PORT args…` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if let Some((name, password)) = &self.user {
            cmd.args(["--user", name, "--pass", password, "--no-auth-warning"]);
        }
        let out = cmd.args(args).output().expect("cannot run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many times `command` ran in this server (`INFO commandstats`;
    /// commands run by scripts count too).
    pub fn calls(&self, command: &str) -> u64 {
        let stats = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map(|n| n.parse().expect("calls is a number"))
            .unwrap_or(0)
    }

    /// Writes the data to dump.rdb now (the state a later restart returns to).
    pub fn save(&self) {
        let reply = self.cli(&["SAVE"]);
        assert_eq!(reply.trim(), "OK", "redis SAVE failed: {reply}");
    }

    /// `SHUTDOWN SAVE`: the data survives into the next [`Self::restart`].
    pub fn stop_saving(&mut self) {
        let _ = self.cli(&["SHUTDOWN", "SAVE"]);
        self.wait_exit();
    }

    /// SIGKILL: whatever was not saved is lost.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
        self.wait_exit();
    }

    fn wait_exit(&mut self) {
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.paused = false;
    }

    /// Starts the server again on the same port, loading the saved data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() of a running redis-server");
        self.spawn();
    }

    /// SIGSTOP: connections stay open, nothing is answered.
    pub fn freeze(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// SIGCONT after [`Self::freeze`].
    pub fn thaw(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("redis-server is not running");
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", child.id());
    }
}

/// Spawns a `redis-server` command, its output discarded, killed when the
/// thread that spawned it exits.
pub(crate) fn spawn_with_the_test(mut cmd: Command) -> Child {
    use std::os::unix::process::CommandExt;
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe. The signal fires when the
    // spawning thread exits: the test's own thread, which outlives the
    // test body (and Drop kills the server before that anyway).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("cannot start redis-server")
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if self.paused {
            self.thaw();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
