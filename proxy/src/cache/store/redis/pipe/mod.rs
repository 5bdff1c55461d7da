//! The store's own connections to one Redis, or to one Cluster master
//! (`direct.rs`), for the calls every read and write makes: the lookup
//! script, the fill, the lease release, the invalidation and the renewal.
//! Everything else goes through fred (Sentinel among it).
//!
//! Why: through fred, one call cost a strict-mode hit ~26,000 instructions
//! of its ~57,000 (callgrind, `bench/hits`), and two task hand-offs (the
//! caller to fred's router task, the router back to the caller). Here the
//! caller encodes its command into the connection's buffer and, on a plain
//! connection, writes it itself; the connection's task (`task.rs`) reads
//! the replies and hands each to its caller in order: one hand-off, a few
//! thousand instructions. Over TLS the task writes too (a TLS stream has
//! one writer), which still spares fred's encoding and routing.
//!
//! Calls are pipelined: any number may be in flight on a connection, their
//! replies come back in the order they were written. A connection that
//! fails answers every call in flight with an error, marks the store dirty
//! and moves its generation on (`dirt::Marks`, as fred's connection events
//! do), then reconnects (`dial.rs`), backing off from 100 ms to 2 s; calls
//! go to the other connections meanwhile, or fail at once when none is up.

mod dial;
mod task;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use fred::prelude::*;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{oneshot, Notify};
use tokio_rustls::rustls;

use self::task::Task;
use super::dirt::Marks;
use super::wire::{self, Reply};
use crate::config::{RedisTarget, Topology};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: Option<u8>,
    /// `rediss://`: pgstash's TLS client.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    /// The host, port, login and TLS of `target`'s URL as fred reads it
    /// (on Cluster, its first node); `None` for Sentinel, whose master
    /// fred finds.
    pub fn of(target: &RedisTarget) -> Option<Endpoint> {
        if target.topology == Topology::Sentinel {
            return None;
        }
        // As fred is handed it (`scripts::builder`): the plain scheme, and
        // pgstash's TLS client.
        let url = match &target.tls {
            Some(_) => target.url.replacen("rediss", "redis", 1),
            None => target.url.clone(),
        };
        let config = Config::from_url(&url).ok()?;
        let server = match &config.server {
            ServerConfig::Centralized { server } => server,
            ServerConfig::Clustered { hosts, .. } => hosts.first()?,
            _ => return None,
        };
        Some(Endpoint {
            host: server.host.to_string(),
            port: server.port,
            username: config.username.clone(),
            password: config.password.clone(),
            database: config.database,
            tls: target.tls.clone(),
        })
    }
}

/// A few connections, used in turn.
///
/// With per-worker runtimes (`workers.rs`) connection `i`'s task runs on
/// worker `i % spread`, and a session calls the connections of its own
/// worker first: its reply is read and handed over on its own thread, with
/// no other thread woken. Every worker has one at least.
pub struct Pipes {
    pipes: Vec<Arc<Shared>>,
    next: AtomicUsize,
    /// The workers the connections' tasks are spread over (0: one runtime).
    spread: usize,
}

/// What a connection's callers and its task share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the task: bytes are left to write, or the pipes are dropped.
    wake: Notify,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Who writes, while the connection is up.
    writer: Option<Writer>,
    /// Encoded commands not yet written.
    out: BytesMut,
    /// One per command written or to write, in order.
    waiting: VecDeque<oneshot::Sender<Reply>>,
}

enum Writer {
    /// A plain connection: the caller that finds nothing queued writes.
    Caller(Arc<OwnedWriteHalf>),
    /// TLS: the connection's task writes everything.
    Task,
}

impl Pipes {
    /// The store's own connections to `target` when it is one Redis
    /// (`None` otherwise: on Cluster `direct.rs` opens them per master).
    pub async fn for_target(
        target: &RedisTarget,
        count: usize,
        marks: Marks,
        wait: Duration,
    ) -> Option<Pipes> {
        if target.topology != Topology::Single {
            return None;
        }
        let endpoint = Endpoint::of(target)?;
        Some(Pipes::start(endpoint, count, marks, wait).await)
    }

    /// Starts `count` connections to `endpoint` (each reconnecting on its
    /// own; at least one per worker) and waits up to `wait` for them to be
    /// up.
    pub async fn start(endpoint: Endpoint, count: usize, marks: Marks, wait: Duration) -> Pipes {
        let workers = crate::workers::handles();
        let count = count.max(1).max(workers.len());
        let mut pipes = Vec::with_capacity(count);
        let mut up = Vec::new();
        for i in 0..count {
            let shared = Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                closed: AtomicBool::new(false),
            });
            let (ready, is_up) = oneshot::channel();
            up.push(is_up);
            let task = Task {
                shared: shared.clone(),
                endpoint: endpoint.clone(),
                marks: marks.clone(),
            };
            match workers.get(i % workers.len().max(1)) {
                Some(worker) => drop(worker.spawn(task.run(ready))),
                None => drop(tokio::spawn(task.run(ready))),
            }
            pipes.push(shared);
        }
        let _ = tokio::time::timeout(wait, futures_util::future::join_all(up)).await;
        Pipes {
            pipes,
            next: AtomicUsize::new(0),
            spread: workers.len(),
        }
    }

    /// Sends on the first connection of `order` that is up (`None`: none).
    fn send_on_first_up(
        &self,
        mut order: impl Iterator<Item = usize>,
        args: &[&[u8]],
    ) -> Option<oneshot::Receiver<Reply>> {
        order.find_map(|i| self.pipes.get(i)?.send(args).ok())
    }

    /// Whether every connection is up.
    pub fn is_up(&self) -> bool {
        self.pipes
            .iter()
            .all(|p| p.lock().is_ok_and(|s| s.writer.is_some()))
    }

    /// Sends the command `args` and waits for its reply. A Redis error
    /// reply is an error of kind `Unknown` with Redis' text (as fred makes
    /// it); a connection that is down or fails, one of kind `IO`.
    pub async fn call(&self, args: &[&[u8]]) -> Result<Value, Error> {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        // The next connection that is up: one reconnecting does not fail
        // the calls its turn would have been (each trips the breaker).
        // The calling worker's own connections first (with per-worker
        // runtimes), then any.
        let count = self.pipes.len();
        let own = (self.spread > 0)
            .then(crate::workers::current)
            .flatten()
            .map(|worker| in_turn(count, self.spread, worker % self.spread, first));
        let sent = own
            .and_then(|own| self.send_on_first_up(own, args))
            .or_else(|| self.send_on_first_up(in_turn(count, 1, 0, first), args));
        let Some(reply) = sent else {
            return Err(Error::new(ErrorKind::IO, "redis connections down"));
        };
        let reply = reply.await;
        match reply {
            Ok(Reply::Value(value)) => Ok(value),
            Ok(Reply::Error(text)) => Err(Error::new(ErrorKind::Unknown, text)),
            Err(_) => Err(lost()),
        }
    }
}

/// Connections `offset`, `offset + spread`, … among `count`, starting at
/// the `first`-th of them in turn: those whose task runs on worker
/// `offset` of `spread` (`start` opens one per worker at least), or with a
/// spread of 1, every connection.
fn in_turn(
    count: usize,
    spread: usize,
    offset: usize,
    first: usize,
) -> impl Iterator<Item = usize> {
    let these = count.saturating_sub(offset).div_ceil(spread.max(1));
    (0..these).map(move |k| offset + spread * ((first + k) % these))
}

impl Drop for Pipes {
    fn drop(&mut self) {
        for shared in &self.pipes {
            shared.closed.store(true, Ordering::SeqCst);
            shared.wake.notify_one();
        }
    }
}

fn lost() -> Error {
    Error::new(ErrorKind::IO, "redis connection lost")
}

impl Shared {
    fn lock(&self) -> io::Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| io::Error::other("poisoned"))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Queues `args` and, on a plain connection with nothing queued before,
    /// writes them (else the task writes); returns where the reply comes.
    fn send(&self, args: &[&[u8]]) -> Result<oneshot::Receiver<Reply>, Error> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock().map_err(|_| lost())?;
        let caller = match &state.writer {
            None => return Err(Error::new(ErrorKind::IO, "redis connection down")),
            Some(Writer::Caller(stream)) => Some(stream.clone()),
            Some(Writer::Task) => None,
        };
        let idle = state.out.is_empty();
        wire::encode(&mut state.out, args);
        state.waiting.push_back(tx);
        if idle {
            if let Some(stream) = caller {
                // On an error other than a full socket, the task sees it
                // too, when it reads.
                if let Ok(n) = stream.try_write(&state.out) {
                    state.out.advance(n);
                }
            }
            if !state.out.is_empty() {
                self.wake.notify_one();
            }
        }
        Ok(rx)
    }

    /// A connection is up and `writer` writes on it.
    fn open(&self, writer: Writer) {
        if let Ok(mut state) = self.lock() {
            state.writer = Some(writer);
        }
    }

    /// The connection is gone: what was queued is dropped, and dropping
    /// the senders answers every caller in flight.
    fn close_connection(&self) {
        if let Ok(mut state) = self.lock() {
            state.writer = None;
            state.out.clear();
            state.waiting.clear();
        }
    }

    fn has_output(&self) -> bool {
        self.lock().map(|s| !s.out.is_empty()).unwrap_or(false)
    }

    /// Everything queued, for the task to write (TLS).
    fn take_output(&self) -> Bytes {
        self.lock()
            .map(|mut s| s.out.split().freeze())
            .unwrap_or_default()
    }

    /// Writes what a full socket left, as far as the socket takes it.
    fn write_some(&self, stream: &OwnedWriteHalf) -> io::Result<()> {
        let mut state = self.lock()?;
        while !state.out.is_empty() {
            match stream.try_write(&state.out) {
                Ok(n) => state.out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The caller the next reply answers.
    fn next_caller(&self) -> io::Result<Option<oneshot::Sender<Reply>>> {
        Ok(self.lock()?.waiting.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use super::in_turn;

    #[test]
    fn each_worker_calls_the_connections_its_runtime_runs_in_turn() {
        let of = |count, spread, worker, first| {
            in_turn(count, spread, worker, first).collect::<Vec<_>>()
        };
        // Five connections over two workers: 0, 2, 4 on worker 0; 1, 3 on 1.
        assert_eq!(of(5, 2, 0, 0), [0, 2, 4]);
        assert_eq!(of(5, 2, 0, 1), [2, 4, 0]);
        assert_eq!(of(5, 2, 1, 0), [1, 3]);
        assert_eq!(of(5, 2, 1, 7), [3, 1]);
        // As many as workers: one each.
        assert_eq!(of(4, 4, 3, 9), [3]);
        // One runtime: every connection.
        assert_eq!(of(3, 1, 0, 1), [1, 2, 0]);
    }
}
