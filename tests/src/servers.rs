//! Finding — or starting — the Postgres and Redis servers the tests run against.
//!
//! Each is looked up once per test process: the URL from the environment
//! (`PGSTASH_TEST_DATABASE_URL`, `PGSTASH_TEST_REDIS_URL`) or the default local
//! service. When the variable is unset and nothing answers at the default
//! address, a throwaway server is started from the installed binaries on a free
//! port, in a temporary directory, and stopped when the process exits (an
//! `atexit` hook, plus a parent-death signal in case the process is killed).
//! A URL given explicitly that does not answer is an error, never silently
//! replaced. The value `throwaway` asks for a throwaway server regardless.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const DATABASE_URL_VAR: &str = "PGSTASH_TEST_DATABASE_URL";
pub const REDIS_URL_VAR: &str = "PGSTASH_TEST_REDIS_URL";
pub const DEFAULT_DATABASE_URL: &str = "postgres://root@127.0.0.1:5432/postgres";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The variable value that asks for a throwaway server.
pub const THROWAWAY: &str = "throwaway";

/// A Postgres server reachable over TCP, with a superuser.
#[derive(Debug, Clone)]
pub struct PgServer {
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
    pub superuser: String,
    pub password: Option<String>,
    /// A database that always exists, for CREATE/DROP DATABASE.
    pub admin_database: String,
    /// True when this process started the server.
    pub throwaway: bool,
}

impl PgServer {
    /// A URL for `user` to `database` on this server.
    pub fn url(&self, user: &str, password: Option<&str>, database: &str) -> String {
        let auth = match password {
            Some(p) => format!("{user}:{p}"),
            None => user.to_owned(),
        };
        format!("postgres://{auth}@{}:{}/{database}", self.host, self.port)
    }

    /// The superuser's URL to `database`.
    pub fn admin_url(&self, database: &str) -> String {
        self.url(&self.superuser, self.password.as_deref(), database)
    }
}

/// A Redis server reachable over TCP.
#[derive(Debug, Clone)]
pub struct RedisServer {
    pub url: String,
    pub addr: SocketAddr,
    pub throwaway: bool,
}

/// The Postgres server of this test process (found or started on first use).
pub fn postgres() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(|| on_plain_thread(find_or_start_postgres))
}

/// The Redis server of this test process (found or started on first use).
pub fn redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| on_plain_thread(find_or_start_redis))
}

/// Runs `f` on a fresh thread: initialisation blocks and may start its own
/// runtime, which is not allowed on a tokio worker thread.
fn on_plain_thread<T: Send + 'static>(f: fn() -> T) -> T {
    std::thread::spawn(f)
        .join()
        .expect("test server setup panicked")
}

fn find_or_start_postgres() -> PgServer {
    let (url, explicit) = match std::env::var(DATABASE_URL_VAR) {
        Ok(v) if v == THROWAWAY => return start_throwaway_postgres(),
        Ok(url) => (url, true),
        Err(_) => (DEFAULT_DATABASE_URL.to_owned(), false),
    };
    let config = tokio_postgres::Config::from_str(&url)
        .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR}={url:?} is not a valid URL: {e}"));
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        None => "127.0.0.1".to_owned(),
        Some(other) => panic!("{DATABASE_URL_VAR} must name a TCP host, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match resolve(&host, port).filter(|a| answers(*a)) {
        Some(addr) => PgServer {
            host,
            port,
            addr,
            superuser: config.get_user().unwrap_or("postgres").to_owned(),
            password: config
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            admin_database: config.get_dbname().unwrap_or("postgres").to_owned(),
            throwaway: false,
        },
        None if explicit => panic!("{DATABASE_URL_VAR}={url:?}: nothing answers at {host}:{port}"),
        None => start_throwaway_postgres(),
    }
}

fn find_or_start_redis() -> RedisServer {
    let (url, explicit) = match std::env::var(REDIS_URL_VAR) {
        Ok(v) if v == THROWAWAY => return start_throwaway_redis(),
        Ok(url) => (url, true),
        Err(_) => (DEFAULT_REDIS_URL.to_owned(), false),
    };
    let hostport = url
        .strip_prefix("redis://")
        .unwrap_or_else(|| panic!("{REDIS_URL_VAR}={url:?} must start with redis://"));
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(6379)),
        None => (hostport.to_owned(), 6379),
    };
    match resolve(&host, port).filter(|a| answers(*a)) {
        Some(addr) => RedisServer {
            url,
            addr,
            throwaway: false,
        },
        None if explicit => panic!("{REDIS_URL_VAR}={url:?}: nothing answers at {host}:{port}"),
        None => start_throwaway_redis(),
    }
}

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port).to_socket_addrs().ok()?.next()
}

fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

fn start_throwaway_postgres() -> PgServer {
    let bindir = postgres_bindir();
    let dir = scratch_dir("pg");
    let data = dir.join("data");
    // Postgres refuses to run as root: use the `postgres` account then.
    let run_as = if unsafe { libc::geteuid() } == 0 {
        Some(os_user("postgres").expect("running as root and there is no `postgres` OS user"))
    } else {
        None
    };
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown scratch dir");
    }
    let superuser = "postgres";
    let mut initdb = Command::new(bindir.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            superuser,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_user(&mut initdb, run_as);
    let out = initdb.output().expect("cannot run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let log = std::fs::File::create(dir.join("postgres.log")).expect("create postgres.log");
    if let Some((uid, gid)) = run_as {
        let _ = std::os::unix::fs::chown(dir.join("postgres.log"), Some(uid), Some(gid));
    }
    let mut cmd = Command::new(bindir.join("postgres"));
    cmd.arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(&dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=300",
        ])
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log);
    as_user(&mut cmd, run_as);
    register_dir(dir.clone());
    let child = spawn_daemon(cmd);
    let pid = child.id();
    register_child(child);
    let server = PgServer {
        host: "127.0.0.1".into(),
        port,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        superuser: superuser.into(),
        password: None,
        admin_database: "postgres".into(),
        throwaway: true,
    };
    wait_for_postgres(&server, pid, &dir);
    server
}

fn wait_for_postgres(server: &PgServer, pid: u32, dir: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let url = server.admin_url(&server.admin_database);
        let ok = rt.block_on(async {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    client.simple_query("select 1").await.is_ok()
                }
                Err(_) => false,
            }
        });
        if ok {
            eprintln!(
                "pgstash-tests: started throwaway Postgres (pid {pid}) on port {}",
                server.port
            );
            return;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            panic!("throwaway Postgres did not come up within 60s; log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_throwaway_redis() -> RedisServer {
    let dir = scratch_dir("redis");
    let port = free_port();
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .arg("--dir")
    .arg(&dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    register_dir(dir);
    let child = spawn_daemon(cmd);
    register_child(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !answers(addr) {
        assert!(
            Instant::now() < deadline,
            "throwaway redis-server did not come up on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("pgstash-tests: started throwaway redis-server on port {port}");
    RedisServer {
        url: format!("redis://127.0.0.1:{port}"),
        addr,
        throwaway: true,
    }
}

/// Where `initdb` and `postgres` live.
fn postgres_bindir() -> PathBuf {
    bindir_with(&["initdb", "postgres"])
        .expect("no Postgres server binaries (initdb) found; set PGSTASH_TEST_DATABASE_URL")
}

/// The first directory holding every one of `tools`: `pg_config --bindir`,
/// then `PATH`, then the newest Debian `/usr/lib/postgresql/*/bin`.
pub(crate) fn bindir_with(tools: &[&str]) -> Option<PathBuf> {
    let has_tools = |d: &PathBuf| tools.iter().all(|t| d.join(t).is_file());
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&dir) {
            return Some(dir);
        }
    }
    let from_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(has_tools);
    if from_path.is_some() {
        return from_path;
    }
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(has_tools)
        .collect();
    debian.sort();
    debian.pop()
}

/// The uid and gid of OS user `name`, if there is one.
pub(crate) fn os_user(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: checked non-null above.
    let pw = unsafe { &*pw };
    Some((pw.pw_uid, pw.pw_gid))
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        cmd.gid(gid).uid(uid);
    }
}

fn scratch_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pgstash-test-{kind}-{}-{}",
        std::process::id(),
        crate::unique_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Spawns a server process from a thread that lives as long as the process,
/// with a parent-death signal: the signal fires when the *spawning thread*
/// exits, so it must not be a (short-lived) test thread.
fn spawn_daemon(mut cmd: Command) -> Child {
    use std::os::unix::process::CommandExt;
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("pgstash-test-servers".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static: we get here only at exit.
            })
            .expect("spawn keeper thread");
        Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe; it runs in the child after the uid
    // switch (std applies uid/gid before pre_exec hooks), so it is not reset.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    keeper
        .lock()
        .expect("keeper lock")
        .send((cmd, tx))
        .expect("keeper thread is gone");
    rx.recv()
        .expect("keeper thread dropped the request")
        .expect("cannot start throwaway server")
}

static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn register_child(child: Child) {
    install_exit_hook();
    CHILDREN.lock().expect("children lock").push(child);
}

fn register_dir(dir: PathBuf) {
    install_exit_hook();
    DIRS.lock().expect("dirs lock").push(dir);
}

fn install_exit_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(stop_throwaway_servers) };
    });
}

/// Stops throwaway servers (fast shutdown, then kill) and removes their files.
extern "C" fn stop_throwaway_servers() {
    let children = std::mem::take(&mut *CHILDREN.lock().unwrap_or_else(|e| e.into_inner()));
    for mut child in children {
        // SIGINT is Postgres' "fast" shutdown and stops redis-server as well.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    for dir in std::mem::take(&mut *DIRS.lock().unwrap_or_else(|e| e.into_inner())) {
        let _ = std::fs::remove_dir_all(dir);
    }
}
