//! Per-worker runtimes (`runtime = "per_worker"`, issue #20): one
//! single-threaded tokio runtime per worker thread. The accept loop hands
//! each client to the next worker in turn, and the client's session runs
//! there for its whole life, with server connections from that worker's own
//! share of each pool (`backend/pool.rs`): a socket is registered with the
//! runtime that opened it, so a session never waits on another thread's
//! reactor, and a forwarded query wakes no other thread. (Redis calls do:
//! the store's clients live on the main runtime.)
//!
//! The clients are dealt out in turn, whatever their pool: a (database,
//! user)'s clients may gather on one worker while its share of the pool on
//! another sits idle. And a pool smaller than the worker count grows to it,
//! one connection per worker (`Config::warnings` says so).
//!
//! The default layout (`shared`) is one work-stealing runtime: any worker
//! runs any session. `bench/runtimes` measured both (bench/README.md):
//! the shared runtime spends 4–5 µs of CPU per transaction on waking its
//! idle worker and stealing; a runtime per worker does not, at the price of
//! pools split between the workers (one worker's clients may wait while
//! another's connections are idle).
//!
//! Everything else (the accept loop, the metrics port, Redis clients, the
//! control connection, the recorder) stays on the main runtime; sessions
//! reach it through channels, as they do under the shared layout.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The worker the calling thread is, if it is one.
pub fn current() -> Option<usize> {
    WORKER.with(Cell::get)
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
