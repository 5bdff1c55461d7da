//! Per-worker runtimes (`runtime = "per_worker"`, the default since issue
//! #20; with more than one worker thread): one
//! single-threaded tokio runtime per worker thread. The accept loop hands
//! each client to the next worker in turn, and the client's session runs
//! there for its whole life, with server connections from that worker's own
//! share of each pool (`backend/pool.rs`): a socket is registered with the
//! runtime that opened it, so as a rule a session waits on no other
//! thread's reactor, and a forwarded query wakes no other thread (the
//! exceptions: a connection borrowed from another worker's share, below,
//! and a Redis call when its worker's connections are down). The Redis
//! store's own connections (`cache/store/redis/pipe/`) are spread over the
//! workers too, and a session calls its own worker's first: a hit's reply
//! is read on the session's thread.
//!
//! The clients are dealt out in turn, whatever their pool: a (database,
//! user)'s clients may gather on one worker. When that worker's share of
//! the pool is all in use, its clients take another worker's idle
//! connections (their sockets stay with that worker's reactor), so the pool
//! keeps its configured size as a whole. A pool smaller than the worker
//! count has one share per connection, shared by several workers.
//!
//! The other layout (`shared`) is one work-stealing runtime: any worker
//! runs any session. `bench/runtimes` and `bench/run` measured both
//! (bench/README.md): the shared runtime spends 4–5 µs of CPU per
//! transaction on waking its idle worker and stealing; a runtime per
//! worker does not, and forwards 1.02–1.21× as many transactions, serves
//! Redis hits 1.06–1.18× as fast. But an idle worker thread sleeps at once
//! where the shared runtime's look for work a while first: a few clients'
//! in-process hits wait for their worker to wake (0.84–0.99× as many).
//!
//! Everything else (the accept loop, the metrics port, fred's Redis
//! clients, the control connection, the recorder) stays on the main
//! runtime; sessions reach it through channels, as they do under the
//! shared layout.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The workers' runtimes, once started: for what must run on each worker
/// beside its sessions (the Redis store's connections, `pipe/mod.rs`).
static HANDLES: OnceLock<Vec<Handle>> = OnceLock::new();

/// The worker the calling thread is, if it is one.
pub fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// The per-worker runtimes of this process, in worker order (empty under
/// the shared layout).
pub fn handles() -> &'static [Handle] {
    HANDLES.get().map(Vec::as_slice).unwrap_or_default()
}

/// The worker threads and their runtimes.
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `count` worker threads (at least one), each running its own
    /// single-threaded runtime until [`Workers::stop`].
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let (mut handles, mut threads) = (Vec::new(), Vec::new());
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stopped = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("pgstash-worker-{index}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(Some(index)));
                    // A current-thread runtime runs its tasks only while
                    // its thread is inside `block_on`.
                    runtime.block_on(stopped.cancelled());
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })?;
            threads.push(thread);
        }
        // One set of workers per process: a second start keeps the first's.
        let _ = HANDLES.set(handles.clone());
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            threads: Mutex::new(threads),
            stop,
        })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The runtime the next client goes to (in turn).
    pub fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Stops every worker's runtime (after the sessions ended, or the
    /// shutdown timeout passed) and waits for the threads.
    pub fn stop(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}
