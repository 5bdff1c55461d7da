//! `TestRedis`: the Redis server of the test process and a key prefix of
//! one's own, whose keys are deleted when the value is dropped.
//!
//! The harness talks to Redis with a few lines of RESP over a blocking socket
//! (PING, SCAN, DEL): enough to check the server and clean up, without a
//! Redis client crate the tests would otherwise not need.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::servers::{self, RedisServer};

pub struct TestRedis {
    server: &'static RedisServer,
    /// Prefix (`pgstash_t_<random>:`) this test's keys must start with.
    pub prefix: String,
}

impl TestRedis {
    /// Finds or starts the Redis server and checks it answers PING.
    pub fn new() -> TestRedis {
        let server = servers::redis();
        let reply = command(server.addr, &["PING"]).expect("redis PING");
        assert_eq!(reply, Reply::Simple("PONG".into()), "unexpected PING reply");
        TestRedis {
            server,
            prefix: format!("{}:", crate::unique_name("pgstash_t")),
        }
    }

    /// The URL to give pgstash (`config.redis`).
    pub fn url(&self) -> &str {
        &self.server.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Runs one Redis command, e.g. `["GET", "k"]`.
    pub fn command(&self, args: &[&str]) -> std::io::Result<Reply> {
        command(self.server.addr, args)
    }

    /// Deletes `keys` (in batches, so a long list fits in commands).
    pub fn delete(&self, keys: &[String]) {
        for chunk in keys.chunks(500) {
            let mut args = vec!["DEL"];
            args.extend(chunk.iter().map(String::as_str));
            let _ = self.command(&args);
        }
    }

    /// All keys under this test's prefix.
    pub fn keys(&self) -> Vec<String> {
        self.scan(&format!("{}*", self.prefix))
            .expect("redis SCAN failed or gave an unexpected reply")
    }

    /// Every key matching `pattern`; `None` if a SCAN fails.
    pub fn scan(&self, pattern: &str) -> Option<Vec<String>> {
        let mut cursor = "0".to_owned();
        let mut keys = Vec::new();
        loop {
            let Ok(Reply::Array(mut parts)) =
                self.command(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"])
            else {
                return None;
            };
            if let Some(Reply::Array(found)) = parts.pop() {
                keys.extend(found.into_iter().filter_map(|k| match k {
                    Reply::Bulk(Some(k)) => Some(String::from_utf8_lossy(&k).into_owned()),
                    _ => None,
                }));
            }
            match parts.pop() {
                Some(Reply::Bulk(Some(c))) if c != b"0" => {
                    cursor = String::from_utf8_lossy(&c).into_owned()
                }
                _ => return Some(keys),
            }
        }
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.delete(&self.keys());
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

fn command(addr: SocketAddr, args: &[&str]) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    stream.write_all(&req)?;
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1.min(line.len()));
    let int = || rest.parse::<i64>().map_err(|_| bad("bad integer in RESP"));
    Ok(match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(int()?),
        "$" => {
            let n = int()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
        }
        "*" => {
            let n = int()?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => return Err(bad("unknown RESP type")),
    })
}
