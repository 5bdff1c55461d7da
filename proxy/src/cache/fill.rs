//! Coalescing of concurrent identical misses: the first client to miss a
//! key runs the query upstream and fills the entry; the others wait for
//! that result instead of all going upstream (no stampede on expiry).
//!
//! The leader holds a [`FillGuard`]. Completing it hands the bytes to the
//! waiters; dropping it without a value (the query failed, the client went
//! away, the result was too large) releases them to go upstream themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pgstash_rules::FingerprintHashing;
use tokio::sync::watch;

type Slot = watch::Receiver<Option<Option<Bytes>>>;

/// Keys being filled right now, each with a channel for its result.
///
/// # Performance
/// A miss hashes its key three times here (look up, insert, remove). The
/// keys are hex SHA-256 digests with version numbers, so the keyed
/// multiply used for fingerprints spreads them as well as SipHash does, at
/// a fraction of the cost (SipHash over the ~70-byte key was ~3% of a miss).
#[derive(Default)]
pub struct Fills {
    running: Mutex<HashMap<String, Slot, FingerprintHashing>>,
}

/// What a client that missed should do.
pub enum FillRole {
    /// Run the query upstream and complete the guard.
    Leader(FillGuard),
    /// Someone else is filling this key: wait for the result.
    Follower(Slot),
}

impl Fills {
    pub fn begin(self: &Arc<Self>, key: &str) -> FillRole {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = running.get(key) {
            return FillRole::Follower(slot.clone());
        }
        let (tx, rx) = watch::channel(None);
        running.insert(key.to_owned(), rx);
        FillRole::Leader(FillGuard {
            fills: self.clone(),
            key: key.to_owned(),
            tx: Some(tx),
        })
    }

    /// Waits up to `limit` for the leader's result; `None` means go upstream.
    pub async fn wait(mut slot: Slot, limit: Duration) -> Option<Bytes> {
        let outcome = tokio::time::timeout(limit, async {
            loop {
                if let Some(result) = slot.borrow_and_update().clone() {
                    return result;
                }
                if slot.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        outcome.ok().flatten()
    }

    pub fn in_flight(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }
}

/// The leader's obligation to publish a result for its key.
pub struct FillGuard {
    fills: Arc<Fills>,
    key: String,
    tx: Option<watch::Sender<Option<Option<Bytes>>>>,
}

impl FillGuard {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Hands the result to the waiters.
    pub fn complete(mut self, value: Bytes) {
        self.publish(Some(value));
    }

    fn publish(&mut self, value: Option<Bytes>) {
        if let Some(tx) = self.tx.take() {
            self.fills
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.key);
            let _ = tx.send(Some(value));
        }
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.publish(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_result() {
        let fills = Arc::new(Fills::default());
        let FillRole::Leader(guard) = fills.begin("k") else {
            panic!("first is leader")
        };
        let FillRole::Follower(slot) = fills.begin("k") else {
            panic!("second follows")
        };
        let waiter = tokio::spawn(Fills::wait(slot, Duration::from_secs(5)));
        guard.complete(Bytes::from_static(b"v"));
        assert_eq!(waiter.await.unwrap().as_deref(), Some(&b"v"[..]));
        assert!(matches!(fills.begin("k"), FillRole::Leader(_)));
    }

    #[tokio::test]
    async fn dropping_the_guard_releases_followers() {
        let fills = Arc::new(Fills::default());
        let FillRole::Leader(guard) = fills.begin("k") else {
            panic!()
        };
        let FillRole::Follower(slot) = fills.begin("k") else {
            panic!()
        };
        drop(guard);
        assert_eq!(Fills::wait(slot, Duration::from_secs(5)).await, None);
        assert_eq!(fills.in_flight(), 0);
    }
}
