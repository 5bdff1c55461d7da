//! A session's write path: the tables its request or transaction wrote,
//! and its acknowledgement, held back until their invalidation is recorded
//! (guarantees G2 and G7).
//!
//! The acknowledgement of a write is the CommandComplete of an autocommit
//! statement or of COMMIT, and the ReadyForQuery after it. From that
//! CommandComplete on, nothing more reaches the client; at the
//! ReadyForQuery that ends the transaction the relay stops, the writes go
//! to the [`Invalidator`], and only then is the ReadyForQuery released. A
//! ROLLBACK records nothing; inside a transaction block the writes wait for
//! its end.

use std::sync::Arc;

use bytes::BytesMut;
use pgstash_rules::Writes;

use super::invalidate::{Invalidator, Source};
use crate::net::frame::FrameRef;
use crate::net::Frame;

/// How the writes noted so far end.
///
/// Transitions: `Autocommit` or `Block` when the first write is noted
/// (outside or inside a transaction block); → `RolledBack` at a ROLLBACK's
/// CommandComplete; → `Committed` at a COMMIT's (or PREPARE TRANSACTION's);
/// → `Block` at a ReadyForQuery that leaves a transaction block open; the
/// writes are recorded (or, after `RolledBack`, dropped) at the
/// ReadyForQuery that leaves none open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Noted outside a transaction block: the statement commits itself.
    Autocommit,
    /// Inside a transaction block: COMMIT or ROLLBACK will tell.
    Block,
    Committed,
    RolledBack,
}

/// What the client may see now.
///
/// Transitions: `Flowing` → `Held` at an acknowledging CommandComplete;
/// `Held` → `Deferred` at the ReadyForQuery that commits; `Deferred` →
/// `Flowing` once recorded; `Held` → `Flowing` at a ReadyForQuery that
/// commits nothing (still in a block, or rolled back).
enum Ack {
    Flowing,
    Held,
    /// The ReadyForQuery that ends the write, sent once it is recorded.
    Deferred(Frame),
}

pub struct WritePath {
    invalidator: Arc<Invalidator>,
    pending: Option<(Writes, Ending)>,
    ack: Ack,
}

impl WritePath {
    #[inline]
    pub fn new(invalidator: Arc<Invalidator>) -> WritePath {
        WritePath {
            invalidator,
            pending: None,
            ack: Ack::Flowing,
        }
    }

    /// Notes a statement's writes as it goes upstream; `in_block` whether
    /// a transaction block is open.
    #[inline]
    pub fn note(&mut self, writes: Writes, in_block: bool) {
        match &mut self.pending {
            Some((pending, _)) => pending.merge(writes),
            None => {
                let ending = if in_block {
                    Ending::Block
                } else {
                    Ending::Autocommit
                };
                self.pending = Some((writes, ending));
            }
        }
    }

    /// Writes are noted and not yet recorded or dropped.
    #[inline]
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Client output is held back until a write is recorded.
    #[inline]
    pub fn is_holding(&self) -> bool {
        !matches!(self.ack, Ack::Flowing)
    }

    /// A CommandComplete went by: a COMMIT (or an autocommit write) starts
    /// holding client output; a ROLLBACK drops the writes.
    #[inline]
    pub fn on_command_complete(&mut self, body: &[u8]) {
        let Some((_, ending)) = self.pending.as_mut() else {
            return;
        };
        let tag = body.split(|b| *b == 0).next().unwrap_or_default();
        if tag == b"ROLLBACK" {
            *ending = Ending::RolledBack;
        } else if tag.starts_with(b"COMMIT") || tag.starts_with(b"PREPARE TRANSACTION") {
            *ending = Ending::Committed;
            self.ack = Ack::Held;
        } else if *ending == Ending::Autocommit {
            self.ack = Ack::Held;
        }
    }

    /// A ReadyForQuery went by (`in_block`: it leaves a transaction block
    /// open). Returns true when it commits writes: the relay must stop,
    /// [`WritePath::record`] them, and only then let the client see `frame`.
    #[inline]
    pub fn on_ready(&mut self, in_block: bool, frame: FrameRef<'_>) -> bool {
        let Some((_, ending)) = self.pending.as_mut() else {
            return false;
        };
        if in_block {
            *ending = Ending::Block;
            self.ack = Ack::Flowing;
            return false;
        }
        if *ending == Ending::RolledBack {
            self.pending = None;
            self.ack = Ack::Flowing;
            return false;
        }
        self.ack = Ack::Deferred(frame.to_frame());
        true
    }

    /// Records the writes that [`WritePath::on_ready`] said commit (in
    /// `database`), then releases their acknowledgement into `client`.
    pub async fn record(&mut self, database: &str, client: &mut BytesMut) {
        if let Some((writes, _)) = self.pending.take() {
            let _ = self
                .invalidator
                .record(Source::CLIENT, database, &writes)
                .await;
        }
        if let Ack::Deferred(frame) = std::mem::replace(&mut self.ack, Ack::Flowing) {
            client.extend_from_slice(frame.as_bytes());
        }
    }

    /// The connection ended between a write and its acknowledgement: if it
    /// may have committed, invalidate anyway.
    pub async fn on_disconnect(&mut self, database: &str) {
        let Some((writes, ending)) = self.pending.take() else {
            return;
        };
        if matches!(ending, Ending::Autocommit | Ending::Committed) {
            let _ = self
                .invalidator
                .record(Source::CLIENT, database, &writes)
                .await;
        }
    }
}
