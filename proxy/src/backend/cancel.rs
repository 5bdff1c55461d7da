//! Routing of CancelRequest: clients hold keys pgstash made up; each maps to
//! the upstream backend running that client's query at the moment. The
//! request goes upstream encrypted as every other upstream connection is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, BytesMut};
use tokio::io::AsyncWriteExt;

use super::negotiate::open_stream;
use crate::config::Upstream;

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
    /// Registers a new client and returns its (pid, secret) and slot.
    pub fn register(&self) -> ((i32, i32), CancelSlot) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let key = (rand::random::<i32>() & 0x7fff_ffff, rand::random::<i32>());
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
