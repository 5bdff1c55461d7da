//! Whether the Redis store may have lost an invalidation since its epoch
//! was last renewed (guarantee G4: while it may have, nothing is served).
//!
//! The store is *dirty* — nothing is served from it until the epoch has
//! been replaced with a fresh random value, which makes every existing entry
//! unreachable — whenever an invalidation may have been lost:
//! - an invalidation could not be written (or was not tried: the store was
//!   down);
//! - the connection reported an error or was re-established (Redis may have
//!   restarted from an older snapshot); a lookup that was in flight across
//!   such an event is discarded, since it may have run on the restarted
//!   server before the event was seen;
//! - a lookup that started after this instance bumped a table to version v
//!   read a lower version (versions only grow, so Redis lost data: a restart
//!   from a snapshot, or an evicted version key).
//!
//! A background task keeps trying to renew the epoch while dirty.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fred::prelude::*;

/// Whether an invalidation may have been lost since the epoch was last
/// renewed. Marks are counted, so a renewal clears only the marks made
/// before it began: one made while it runs keeps the store dirty.
#[derive(Default)]
pub struct Dirt {
    marks: AtomicU64,
    cleaned: AtomicU64,
}

impl Dirt {
    /// Returns whether the store was clean before.
    pub fn mark(&self) -> bool {
        let before = self.marks.fetch_add(1, Ordering::SeqCst);
        before == self.cleaned.load(Ordering::SeqCst)
    }

    pub fn is_dirty(&self) -> bool {
        self.marks.load(Ordering::SeqCst) != self.cleaned.load(Ordering::SeqCst)
    }

    /// Taken before a renewal's write.
    pub fn seen(&self) -> u64 {
        self.marks.load(Ordering::SeqCst)
    }

    /// The renewal that began at `seen` succeeded; returns whether that
    /// made the store clean.
    pub fn clean(&self, seen: u64) -> bool {
        let was_dirty = self.is_dirty();
        self.cleaned.fetch_max(seen, Ordering::SeqCst);
        was_dirty && !self.is_dirty()
    }
}

/// What a connection event marks: the store's dirt and its generation
/// (which moves on at every such event).
#[derive(Clone, Default)]
pub struct Marks {
    pub dirt: Arc<Dirt>,
    pub generation: Arc<AtomicU64>,
}

impl Marks {
    /// A connection failed or came back: Redis may have restarted from an
    /// older snapshot, and a lookup in flight across the event may have
    /// run there. The store is marked dirty *before* the generation moves,
    /// and a lookup loads the generation before it checks the dirt: so it
    /// either sees the mark, or sees the generation move under it (and is
    /// discarded). The other order let a lookup load the new generation,
    /// find the store clean, and serve from the restarted server once a
    /// renewal had cleaned the mark meanwhile.
    pub fn connection(&self, event: &str) {
        let was_clean = self.dirt.mark();
        self.generation.fetch_add(1, Ordering::SeqCst);
        if was_clean {
            tracing::warn!(
                event,
                "redis connection {event}; renewing the cache epoch before serving"
            );
        }
    }
}

/// Marks the store at every error or reconnection of `client` (see
/// [`Marks::connection`]).
pub fn watch(client: &Client, marks: Marks) {
    let mut reconnects = client.reconnect_rx();
    let mut errors = client.error_rx();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                r = reconnects.recv() => r.map(|_| "re-established").map_err(|_| ()),
                r = errors.recv() => r.map(|_| "failed").map_err(|_| ()),
            };
            let Ok(event) = event else { return };
            marks.connection(event);
        }
    });
}
