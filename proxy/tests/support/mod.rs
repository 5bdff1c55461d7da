//! The pgstash binary as its own process, for the tests that need its
//! process (its memory, its threads, its signals): started with a config
//! file of the test's, killed and its folder removed when dropped.

#![allow(dead_code, reason = "each test file uses its own part")]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SHARED_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

pub struct Pgstash {
    pub child: Child,
    pub port: u16,
    /// Holds its config file; removed with it.
    dir: PathBuf,
}

impl Drop for Pgstash {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pgstash {
    /// Starts pgstash listening on a free port with the config
    /// `config(port)` (which must set `listen` to it), and waits until it
    /// accepts connections.
    pub fn start(name: &str, config: impl FnOnce(u16) -> String) -> Pgstash {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("pgstash-{name}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgstash.toml");
        std::fs::write(&file, config(port)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pgstash"))
            .arg("--config")
            .arg(&file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pgstash = Pgstash { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pgstash did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        pgstash
    }
}
