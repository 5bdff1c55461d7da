//! Invalidations asked for while one is being written to Redis wait, and
//! go together in the next call: one script call bumps the tables of many
//! writers.
//!
//! A writer's acknowledgement waits for a call that *began after it
//! asked* (G2): a call takes what is queued when it starts, so requests
//! that arrive while it runs are never folded into it, only into the next.
//! At most one call runs at a time; its runner is a task of its own, so a
//! writer that goes away while waiting (its future dropped) neither stops
//! the call nor leaves the queue without a runner. A runner that stops
//! without finishing [`Coalescer::abandon`]s the queue: its writers get an
//! error (and the store turns dirty, G4) rather than waiting forever.
//!
//! # Performance
//! Under an update-heavy load every write bumps a table version before
//! its acknowledgement: one Redis script call each, which cost as much of
//! pgstash's and Redis' CPU as the write's own round trip to Postgres.
//! Coalesced, concurrent writers share calls. An uncontended write pays
//! one task spawn and a channel send more than a direct call.

use std::sync::Mutex;

use tokio::sync::oneshot;

use super::contract::StoreError;
use crate::cache::key::TableKey;

type Done = oneshot::Sender<Result<(), StoreError>>;

/// The queue of invalidations waiting for the next call.
#[derive(Default)]
pub struct Coalescer {
    inner: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// A runner is taking batches.
    running: bool,
    tables: Vec<TableKey>,
    waiters: Vec<Done>,
}

/// One call's worth: the tables to bump (sorted, once each) and whom to
/// tell the result.
pub struct Batch {
    pub tables: Vec<TableKey>,
    waiters: Vec<Done>,
}

impl Batch {
    /// Tells every writer of the batch how its call went.
    pub fn finish(self, result: Result<(), StoreError>) {
        for waiter in self.waiters {
            let _ = waiter.send(result.clone());
        }
    }

    #[cfg(test)]
    fn writers(&self) -> usize {
        self.waiters.len()
    }
}

impl Coalescer {
    /// Queues `tables`. Returns where the result will arrive, and whether
    /// the caller must start a runner (none is taking batches).
    pub fn push(&self, tables: &[TableKey]) -> (oneshot::Receiver<Result<(), StoreError>>, bool) {
        let (tx, rx) = oneshot::channel();
        let mut queue = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        queue.tables.extend_from_slice(tables);
        queue.waiters.push(tx);
        let start = !queue.running;
        queue.running = true;
        (rx, start)
    }

    /// The runner stopped without finishing: every queued writer gets an
    /// error (its sender is dropped), and the next `push` starts another.
    pub fn abandon(&self) {
        let mut queue = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        queue.running = false;
        queue.tables.clear();
        queue.waiters.clear();
    }

    /// The next batch; `None` when nothing is queued, and then the runner
    /// must stop (the next `push` starts another).
    pub fn take(&self) -> Option<Batch> {
        let mut queue = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if queue.waiters.is_empty() {
            queue.running = false;
            return None;
        }
        let mut tables = std::mem::take(&mut queue.tables);
        tables.sort();
        tables.dedup();
        Some(Batch {
            tables,
            waiters: std::mem::take(&mut queue.waiters),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<TableKey> {
        names.iter().map(|n| TableKey::new("db", n)).collect()
    }

    #[tokio::test]
    async fn requests_queued_during_a_call_go_into_the_next_one() {
        let c = Coalescer::default();
        let (first, start) = c.push(&keys(&["a"]));
        assert!(start, "the first request starts a runner");
        let batch = c.take().unwrap();
        assert_eq!(batch.tables, keys(&["a"]));
        // While that call runs, two more writers ask.
        let (second, start) = c.push(&keys(&["b", "a"]));
        assert!(!start, "a runner is already taking batches");
        let (third, _) = c.push(&keys(&["b"]));
        batch.finish(Ok(()));
        assert_eq!(first.await.unwrap(), Ok(()));
        let next = c.take().unwrap();
        assert_eq!(next.tables, keys(&["a", "b"]), "sorted, once each");
        assert_eq!(next.writers(), 2);
        next.finish(Err(StoreError::Recovering));
        assert_eq!(second.await.unwrap(), Err(StoreError::Recovering));
        assert_eq!(third.await.unwrap(), Err(StoreError::Recovering));
        assert!(c.take().is_none());
        let (_, start) = c.push(&keys(&["c"]));
        assert!(start, "an idle queue needs a new runner");
    }

    #[tokio::test]
    async fn an_abandoned_queue_fails_its_writers_and_takes_a_new_runner() {
        let c = Coalescer::default();
        let (first, _) = c.push(&keys(&["a"]));
        let batch = c.take().unwrap();
        let (second, start) = c.push(&keys(&["b"]));
        assert!(!start);
        // The runner dies holding `batch`.
        drop(batch);
        c.abandon();
        assert!(first.await.is_err());
        assert!(second.await.is_err());
        let (_, start) = c.push(&keys(&["c"]));
        assert!(start, "the next writer starts a runner");
    }
}
