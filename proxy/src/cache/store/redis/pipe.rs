//! The store's own connections to one Redis (no TLS, no Cluster, no
//! Sentinel), for the calls every read makes: the lookup script and the
//! fill. Everything else goes through fred.
//!
//! Why: through fred, one call cost a strict-mode hit ~26,000 instructions
//! of its ~57,000 (callgrind, `bench/hits`), and two task hand-offs (the
//! caller to fred's router task, the router back to the caller). Here the
//! caller encodes its command into the connection's buffer and writes it
//! itself; the connection's task reads the replies and hands each to its
//! caller in order: one hand-off, a few thousand instructions.
//!
//! Calls are pipelined: any number may be in flight on a connection, their
//! replies come back in the order they were written. A connection that
//! fails answers every call in flight with an error, moves the store's
//! generation on and marks it dirty (as fred's connection events do, see
//! `dirt.rs`), then reconnects, backing off from 100 ms to 2 s; calls
//! made while it is down fail at once.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fred::prelude::*;
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use super::dirt::Dirt;
use super::wire::{self, Reply};
use crate::config::{RedisTarget, Topology};

/// The first pause before reconnecting, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long one connection attempt (with AUTH and SELECT) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: Option<u8>,
}

impl Endpoint {
    /// The endpoint of a plain single-Redis URL, as fred reads it; `None`
    /// for anything fred would reach another way (Cluster, Sentinel).
    pub fn of(config: &Config) -> Option<Endpoint> {
        match &config.server {
            ServerConfig::Centralized { server } => Some(Endpoint {
                host: server.host.to_string(),
                port: server.port,
                username: config.username.clone(),
                password: config.password.clone(),
                database: config.database,
            }),
            _ => None,
        }
    }
}

/// A few connections, used in turn.
pub struct Pipes {
    pipes: Vec<Arc<Shared>>,
    next: AtomicUsize,
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
    stream: Option<Arc<OwnedWriteHalf>>,
    /// Encoded commands not yet written.
    out: BytesMut,
    /// One per command written or to write, in order.
    waiting: VecDeque<oneshot::Sender<Reply>>,
}

impl Pipes {
    /// The store's own connections to `target` when it is one Redis
    /// without TLS (`None` otherwise: fred carries every call).
    pub async fn for_target(
        target: &RedisTarget,
        count: usize,
        (dirt, generation): (Arc<Dirt>, Arc<AtomicU64>),
        wait: Duration,
    ) -> Option<Pipes> {
        if target.topology != Topology::Single || target.tls.is_some() {
            return None;
        }
        let config = Config::from_url(&target.url).ok()?;
        let endpoint = Endpoint::of(&config)?;
        Some(Pipes::start(endpoint, count, dirt, generation, wait).await)
    }

    /// Starts `count` connections to `endpoint` (each reconnecting on its
    /// own) and waits up to `wait` for them to be up.
    pub async fn start(
        endpoint: Endpoint,
        count: usize,
        dirt: Arc<Dirt>,
        generation: Arc<AtomicU64>,
        wait: Duration,
    ) -> Pipes {
        let mut pipes = Vec::with_capacity(count.max(1));
        let mut up = Vec::new();
        for _ in 0..count.max(1) {
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
                dirt: dirt.clone(),
                generation: generation.clone(),
            };
            tokio::spawn(task.run(ready));
            pipes.push(shared);
        }
        let _ = tokio::time::timeout(wait, futures_util::future::join_all(up)).await;
        Pipes {
            pipes,
            next: AtomicUsize::new(0),
        }
    }

    /// Sends the command `args` and waits for its reply. A Redis error
    /// reply is an error of kind `Unknown` with Redis' text (as fred makes
    /// it); a connection that is down or fails, one of kind `IO`.
    pub async fn call(&self, args: &[&[u8]]) -> Result<Value, Error> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.pipes.len();
        let reply = self.pipes[n].send(args)?.await;
        match reply {
            Ok(Reply::Value(value)) => Ok(value),
            Ok(Reply::Error(text)) => Err(Error::new(ErrorKind::Unknown, text)),
            Err(_) => Err(lost()),
        }
    }
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
    /// Queues `args` and writes what is queued if nothing was before (else
    /// the task is already writing); returns where the reply will come.
    fn send(&self, args: &[&[u8]]) -> Result<oneshot::Receiver<Reply>, Error> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.state.lock().map_err(|_| lost())?;
        let Some(stream) = state.stream.clone() else {
            return Err(Error::new(ErrorKind::IO, "redis connection down"));
        };
        let idle = state.out.is_empty();
        wire::encode(&mut state.out, args);
        state.waiting.push_back(tx);
        if idle {
            // On an error other than a full socket, the task sees it too.
            if let Ok(n) = stream.try_write(&state.out) {
                state.out.advance(n);
            }
            if !state.out.is_empty() {
                self.wake.notify_one();
            }
        }
        Ok(rx)
    }
}

/// One connection's life: connect, serve until it fails, reconnect.
struct Task {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    dirt: Arc<Dirt>,
    generation: Arc<AtomicU64>,
}

impl Task {
    async fn run(self, ready: oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut backoff = MIN_BACKOFF;
        let mut connected_before = false;
        while !self.shared.closed.load(Ordering::SeqCst) {
            let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect(&self.endpoint)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "redis connection could not be opened");
                    self.pause(&mut backoff).await;
                    continue;
                }
                Err(_) => {
                    self.pause(&mut backoff).await;
                    continue;
                }
            };
            backoff = MIN_BACKOFF;
            if connected_before {
                // Redis may have restarted from an older snapshot.
                self.moved_on("re-established");
            }
            connected_before = true;
            let (mut reader, writer) = stream.into_split();
            let writer = Arc::new(writer);
            if let Ok(mut state) = self.shared.state.lock() {
                state.stream = Some(writer.clone());
            }
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
            let error = self.serve(&mut reader, &writer).await;
            if let Ok(mut state) = self.shared.state.lock() {
                state.stream = None;
                state.out.clear();
                // Dropping the senders answers every caller in flight.
                state.waiting.clear();
            }
            if self.shared.closed.load(Ordering::SeqCst) {
                return;
            }
            tracing::debug!(error = %error, "redis connection failed");
            self.moved_on("failed");
        }
    }

    /// What fred's connection events do (`dirt::watch`).
    fn moved_on(&self, event: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.dirt.mark() {
            tracing::warn!(
                event,
                "redis connection {event}; renewing the cache epoch before serving"
            );
        }
    }

    async fn pause(&self, backoff: &mut Duration) {
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = self.shared.wake.notified() => {}
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }

    /// Reads replies and hands each to its caller; writes what callers
    /// could not. Returns the error that ended the connection.
    ///
    /// Reads go through `AsyncRead`, which marks the socket drained after a
    /// read that did not fill the buffer: a `try_read` loop would make one
    /// more `recvfrom`, answered `EAGAIN`, after every reply.
    async fn serve(&self, reader: &mut OwnedReadHalf, writer: &OwnedWriteHalf) -> io::Error {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            if self.shared.closed.load(Ordering::SeqCst) {
                return io::Error::other("closed");
            }
            let pending = match self.shared.state.lock() {
                Ok(state) => !state.out.is_empty(),
                Err(_) => return io::Error::other("poisoned"),
            };
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 * 1024);
            }
            tokio::select! {
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) => return io::Error::new(io::ErrorKind::UnexpectedEof, "closed by redis"),
                    Ok(_) => {
                        if let Err(e) = self.answer(&mut buf) {
                            return e;
                        }
                    }
                    Err(e) => return e,
                },
                writable = writer.writable(), if pending => {
                    if let Err(e) = writable.and_then(|_| self.flush(writer)) {
                        return e;
                    }
                }
                _ = self.shared.wake.notified() => {}
            }
        }
    }

    fn flush(&self, stream: &OwnedWriteHalf) -> io::Result<()> {
        let mut state = self
            .shared
            .state
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        while !state.out.is_empty() {
            match stream.try_write(&state.out) {
                Ok(n) => state.out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Hands every whole reply in `buf` to its caller, in order.
    fn answer(&self, buf: &mut BytesMut) -> io::Result<()> {
        while let Some(reply) = wire::parse(buf).map_err(io::Error::other)? {
            let caller = self
                .shared
                .state
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .waiting
                .pop_front();
            match caller {
                // A caller that gave up (its timeout) is gone: fine.
                Some(caller) => {
                    let _ = caller.send(reply);
                }
                None => return Err(io::Error::other("a reply nobody asked for")),
            }
        }
        Ok(())
    }
}

/// Opens a connection and logs in (`AUTH`, `SELECT`) as the URL says.
async fn connect(endpoint: &Endpoint) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
    stream.set_nodelay(true)?;
    if let Some(password) = &endpoint.password {
        match &endpoint.username {
            Some(user) => {
                handshake(
                    &mut stream,
                    &[b"AUTH", user.as_bytes(), password.as_bytes()],
                )
                .await?
            }
            None => handshake(&mut stream, &[b"AUTH", password.as_bytes()]).await?,
        }
    }
    if let Some(db) = endpoint.database {
        handshake(&mut stream, &[b"SELECT", db.to_string().as_bytes()]).await?;
    }
    Ok(stream)
}

/// One command and its reply, before the connection is shared.
async fn handshake(stream: &mut TcpStream, args: &[&[u8]]) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = BytesMut::new();
    wire::encode(&mut out, args);
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if let Some(reply) = wire::parse(&mut buf).map_err(io::Error::other)? {
            return match reply {
                Reply::Value(_) => Ok(()),
                Reply::Error(text) => Err(io::Error::other(format!(
                    "{}: {text}",
                    String::from_utf8_lossy(args[0])
                ))),
            };
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed by redis",
            ));
        }
    }
}
