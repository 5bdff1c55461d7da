//! Routing of CancelRequest: every key a client holds was issued by
//! pgstash, and maps to the upstream backend running that client's query
//! at the moment. The request goes upstream encrypted as every other
//! upstream connection is.
//!
//! The process id in a key depends on the pool mode:
//! - session mode: the real pid of the client's own server connection (it
//!   keeps that one server for its whole session), so `pg_backend_pid()`,
//!   `pg_terminate_backend(<pid>)` and a notification's sender pid agree
//!   with what the client was told; the secret is pgstash's own, never the
//!   server's, so a cancel still has to come through pgstash;
//! - transaction mode: a synthetic pid, because the client has no fixed
//!   server: a real pid would name a backend other clients use in turn.
//!   Synthetic pids lie in `[2^30, 2^31)`, above any process id an
//!   operating system hands out (Linux caps pids at 2^22), so they can
//!   never equal a real one.
//!
//! Keys are (pid, secret) pairs with random secrets, and the registry
//! draws again on the rare pair already in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;

use super::negotiate::open_stream;
use crate::config::Upstream;

/// The lowest synthetic process id (see the module doc).
pub const SYNTHETIC_PID_MIN: i32 = 1 << 30;

/// The upstream backend a cancel must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    pub pid: i32,
    pub secret: i32,
}

/// A client's slot: which backend (if any) currently runs its statements.
pub type CancelSlot = Arc<Mutex<Option<CancelTarget>>>;

/// Client key → slot, shared by all sessions.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    slots: Mutex<HashMap<(i32, i32), CancelSlot>>,
}

impl CancelRegistry {
    /// Registers a client without a fixed server (transaction mode): its
    /// key has a synthetic pid. Returns the key and the client's slot.
    pub fn register(&self) -> ((i32, i32), CancelSlot) {
        self.insert(|| SYNTHETIC_PID_MIN | (rand::random::<i32>() & (SYNTHETIC_PID_MIN - 1)))
    }

    /// Registers a client that keeps the server connection with process id
    /// `pid` for its whole session: its key carries that pid and a secret
    /// pgstash draws.
    pub fn register_with_pid(&self, pid: i32) -> ((i32, i32), CancelSlot) {
        self.insert(|| pid)
    }

    fn insert(&self, pid: impl Fn() -> i32) -> ((i32, i32), CancelSlot) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let key = (pid(), rand::random::<i32>());
            if let std::collections::hash_map::Entry::Vacant(v) = slots.entry(key) {
                let slot = CancelSlot::default();
                v.insert(slot.clone());
                return (key, slot);
            }
        }
    }

    pub fn unregister(&self, key: (i32, i32)) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// The backend to cancel for a client key, if that client is running something.
    pub fn target(&self, key: (i32, i32)) -> Option<CancelTarget> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.get(&key)?;
        let target = *slot.lock().unwrap_or_else(|e| e.into_inner());
        target
    }
}

/// Sends a CancelRequest for `target` on a fresh upstream connection.
pub async fn send_cancel(upstream: &Upstream, target: CancelTarget) -> std::io::Result<()> {
    let mut stream = open_stream(upstream)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .stream;
    let mut packet = BytesMut::with_capacity(16);
    packet.put_i32(16);
    packet.put_i32(80877102);
    packet.put_i32(target.pid);
    packet.put_i32(target.secret);
    stream.write_all(&packet).await?;
    stream.flush().await?;
    // Postgres closes the connection once it has read the request.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut sink),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_pids_are_positive_and_above_every_real_pid() {
        let registry = CancelRegistry::default();
        for _ in 0..1000 {
            let ((pid, _), _) = registry.register();
            assert!((SYNTHETIC_PID_MIN..=i32::MAX).contains(&pid), "{pid}");
        }
    }

    #[test]
    fn clients_of_the_same_server_pid_get_distinct_keys_and_slots() {
        let registry = CancelRegistry::default();
        let (a, slot_a) = registry.register_with_pid(4242);
        let (b, _) = registry.register_with_pid(4242);
        assert_eq!((a.0, b.0), (4242, 4242));
        assert_ne!(a, b);
        *slot_a.lock().unwrap() = Some(CancelTarget {
            pid: 4242,
            secret: 7,
        });
        assert_eq!(registry.target(a).map(|t| t.secret), Some(7));
        assert_eq!(registry.target(b), None);
        registry.unregister(a);
        assert_eq!(registry.target(a), None);
    }
}
