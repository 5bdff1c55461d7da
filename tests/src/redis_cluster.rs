//! `RedisCluster`: a Redis Cluster of a test's own on loopback — three
//! masters with one replica each, `redis-server --cluster-enabled yes` in a
//! temporary directory, joined by `redis-cli --cluster create`. The test may
//! kill a master (its replica is promoted after `cluster-node-timeout`) or
//! migrate a slot between masters while pgstash runs on it. Never the shared
//! Redis.
//!
//! `RedisSentinel`: one master watched by one Sentinel, for the
//! `redis-sentinel://` URL.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long a master may be unreachable before its replica takes over.
const NODE_TIMEOUT_MS: u64 = 1000;

pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

/// A master: its port and its node id.
#[derive(Debug, Clone)]
pub struct Master {
    pub port: u16,
    pub id: String,
}

impl RedisCluster {
    /// Starts six nodes and joins them: three masters, a replica each.
    pub fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(crate::unique_name("pgstash-test-cluster"));
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = crate::servers::free_port();
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("create node dir");
            let child = spawn_redis(
                &node_dir,
                &[
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    &NODE_TIMEOUT_MS.to_string(),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
            );
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let cluster = RedisCluster { nodes, dir };
        for node in &cluster.nodes {
            wait_until(Duration::from_secs(10), "a cluster node to answer", || {
                cli(node.port, &["PING"]).trim() == "PONG"
            });
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_healthy();
        cluster
    }

    /// `redis-cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let mut nodes = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port));
        let first = nodes.next().expect("nodes");
        let rest: Vec<String> = nodes.map(|n| format!("node={n}")).collect();
        format!("redis-cluster://{first}?{}", rest.join("&"))
    }

    /// Points pgstash's `config` at the cluster.
    pub fn configure(&self, config: &mut pgstash::Config) {
        config.redis = Some(self.url());
    }

    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
    }

    /// Waits until every live node reports `cluster_state:ok` and sees
    /// three masters serving all 16384 slots, and every replica has synced
    /// with its master (one that never has cannot be promoted).
    pub fn wait_healthy(&self) {
        wait_until(Duration::from_secs(30), "the cluster to be healthy", || {
            self.live_ports().all(|port| {
                let replication = cli(port, &["INFO", "replication"]);
                cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && self.masters_seen_by(port).len() == 3
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            })
        });
    }

    /// Waits until every live node sees `slot` served by a master other
    /// than `old` (a replica promoted, or the slot moved) and the cluster
    /// is healthy again.
    pub fn wait_moved(&self, slot: u16, old: u16) {
        wait_until(
            Duration::from_secs(30),
            format!("slot {slot} to leave its master"),
            || {
                self.live_ports().all(|port| {
                    self.master_of_seen_by(port, slot)
                        .is_some_and(|m| m.port != old)
                })
            },
        );
        self.wait_healthy();
    }

    /// The masters as `port` sees them (those serving slots).
    fn masters_seen_by(&self, port: u16) -> Vec<Master> {
        cli(port, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") || fields.len() < 9 {
                    return None;
                }
                let port = fields[1].split([':', '@']).nth(1)?.parse().ok()?;
                Some(Master {
                    port,
                    id: fields[0].to_owned(),
                })
            })
            .collect()
    }

    /// The three masters.
    pub fn masters(&self) -> Vec<Master> {
        let port = self.live_ports().next().expect("a live node");
        let mut masters = self.masters_seen_by(port);
        masters.sort_by_key(|m| m.port);
        masters
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        let port = self.live_ports().next().expect("a live node");
        cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// The master serving `slot`.
    pub fn master_of(&self, slot: u16) -> Master {
        let port = self.live_ports().next().expect("a live node");
        self.master_of_seen_by(port, slot)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The master serving `slot`, as the node on `port` sees it.
    fn master_of_seen_by(&self, port: u16, slot: u16) -> Option<Master> {
        // CLUSTER NODES: "<id> <addr> <flags> <master> … <slot ranges>".
        for line in cli(port, &["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            for range in &fields[8..] {
                if range.starts_with('[') {
                    continue;
                }
                let (lo, hi) = match range.split_once('-') {
                    Some((lo, hi)) => (lo.parse().ok(), hi.parse().ok()),
                    None => (range.parse().ok(), range.parse().ok()),
                };
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    if (lo..=hi).contains(&slot) {
                        let port = fields[1].split([':', '@']).nth(1)?.parse().ok()?;
                        return Some(Master {
                            port,
                            id: fields[0].to_owned(),
                        });
                    }
                }
            }
        }
        None
    }

    /// Keys matching `pattern` on each master, by master port.
    pub fn keys_per_master(&self, pattern: &str) -> Vec<(u16, usize)> {
        self.masters()
            .into_iter()
            .map(|m| {
                let out = cli(m.port, &["--scan", "--pattern", pattern]);
                (m.port, out.lines().filter(|l| !l.is_empty()).count())
            })
            .collect()
    }

    /// Calls of `command` on each master (`INFO commandstats`).
    pub fn calls_per_master(&self, command: &str) -> Vec<(u16, u64)> {
        let prefix = format!("cmdstat_{command}:calls=");
        self.masters()
            .into_iter()
            .map(|m| {
                let calls = cli(m.port, &["INFO", "commandstats"])
                    .lines()
                    .find_map(|l| l.strip_prefix(&prefix))
                    .and_then(|rest| rest.split(',').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                (m.port, calls)
            })
            .collect()
    }

    /// SIGKILLs the master on `port`: what it did not replicate yet is
    /// lost. Its replica is promoted after the node timeout; see
    /// [`Self::wait_healthy`].
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Moves `slot` and its keys from one master to another, the way
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, `MIGRATE` of
    /// every key (clients meanwhile get `ASK`), then `SETSLOT NODE`.
    pub fn migrate_slot(&self, slot: u16, from: &Master, to: &Master) {
        let slot_text = slot.to_string();
        let ok = |port: u16, args: &[&str]| {
            let out = cli(port, args);
            assert!(out.trim() == "OK", "{args:?} on {port}: {out}");
        };
        ok(
            to.port,
            &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from.id],
        );
        ok(
            from.port,
            &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to.id],
        );
        loop {
            let keys = cli(from.port, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to_port = to.port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            let out = cli(from.port, &args);
            assert!(out.trim() == "OK", "MIGRATE: {out}");
        }
        for master in self.masters() {
            ok(
                master.port,
                &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to.id],
            );
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One Redis master with one replica, watched by one Sentinel (service
/// `pgstash`), which promotes the replica when the master dies.
pub struct RedisSentinel {
    pub master_port: u16,
    pub replica_port: u16,
    pub sentinel_port: u16,
    master: Option<Child>,
    others: Vec<Child>,
    dir: PathBuf,
}

impl RedisSentinel {
    pub const SERVICE: &'static str = "pgstash";

    pub fn start() -> RedisSentinel {
        let dir = std::env::temp_dir().join(crate::unique_name("pgstash-test-sentinel"));
        let server = |name: &str, port: u16, extra: &[&str]| {
            let own = dir.join(name);
            std::fs::create_dir_all(&own).expect("create server dir");
            let port_text = port.to_string();
            let mut args = vec!["--port", &port_text, "--bind", "127.0.0.1", "--save", ""];
            args.extend(extra);
            let child = spawn_redis(&own, &args);
            wait_until(Duration::from_secs(10), format!("{name} to answer"), || {
                cli(port, &["PING"]).trim() == "PONG"
            });
            child
        };
        let (master_port, replica_port) =
            (crate::servers::free_port(), crate::servers::free_port());
        let master = server("master", master_port, &[]);
        let master_text = master_port.to_string();
        let replica = server(
            "replica",
            replica_port,
            &["--replicaof", "127.0.0.1", &master_text],
        );
        wait_until(Duration::from_secs(10), "the replica to sync", || {
            cli(replica_port, &["INFO", "replication"]).contains("master_link_status:up")
        });
        let sentinel_port = crate::servers::free_port();
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\n\
                 sentinel monitor {service} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {service} 1000\n\
                 sentinel failover-timeout {service} 5000\n",
                service = Self::SERVICE,
            ),
        )
        .expect("write sentinel.conf");
        let sentinel = spawn_redis(&dir, &[&config.display().to_string(), "--sentinel"]);
        wait_until(
            Duration::from_secs(20),
            "the sentinel to know both servers",
            || {
                cli(sentinel_port, &["SENTINEL", "replicas", Self::SERVICE])
                    .contains(&replica_port.to_string())
            },
        );
        RedisSentinel {
            master_port,
            replica_port,
            sentinel_port,
            master: Some(master),
            others: vec![replica, sentinel],
            dir,
        }
    }

    /// `redis-sentinel://` naming the sentinel and the service.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}?sentinelServiceName={}",
            self.sentinel_port,
            Self::SERVICE
        )
    }

    /// The port the sentinel names as the master now.
    pub fn current_master(&self) -> Option<u16> {
        cli(
            self.sentinel_port,
            &["SENTINEL", "get-master-addr-by-name", Self::SERVICE],
        )
        .lines()
        .nth(1)
        .and_then(|port| port.trim().parse().ok())
    }

    /// SIGKILLs the master and waits until the sentinel has promoted the
    /// replica and the replica acts as master.
    pub fn fail_over(&mut self) {
        if let Some(mut master) = self.master.take() {
            let _ = master.kill();
            let _ = master.wait();
        }
        let replica = self.replica_port;
        wait_until(Duration::from_secs(30), "the sentinel to fail over", || {
            self.current_master() == Some(replica)
                && cli(replica, &["INFO", "replication"]).contains("role:master")
        });
    }

    /// Runs `redis-cli` on the server the sentinel names as master.
    pub fn master_cli(&self, args: &[&str]) -> String {
        cli(self.current_master().unwrap_or(self.master_port), args)
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for child in self.master.iter_mut().chain(self.others.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `redis-server args…` in `dir`, killed if the test dies.
fn spawn_redis(dir: &std::path::Path, args: &[&str]) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(args).current_dir(dir);
    crate::redis_process::spawn_with_the_test(cmd)
}

/// Runs `redis-cli -p PORT args…` and returns its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("cannot run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(limit: Duration, what: impl std::fmt::Display, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
