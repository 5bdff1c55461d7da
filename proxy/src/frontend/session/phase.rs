//! The session's phase: where the client's current request stands
//! ([`Flow`]) and the transaction status Postgres last reported ([`Tx`]).
//! Together with the answers still expected from the server (`expect.rs`)
//! they decide when a session is idle: only then may the cache serve it,
//! may a transaction-mode session give its server connection back, and
//! may shutdown close it.

/// Where the session stands: the two halves of its phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    pub flow: Flow,
    pub tx: Tx,
}

impl Phase {
    #[inline]
    pub fn new(tx: Tx) -> Phase {
        Phase {
            flow: Flow::Synced,
            tx,
        }
    }

    /// A ReadyForQuery: its transaction status, and the end of any COPY.
    #[inline]
    pub fn on_ready(&mut self, tx: Tx) {
        self.tx = tx;
        self.flow.copy_ended();
    }

    /// Between requests and outside a transaction block, given that every
    /// answer expected from the server arrived (`settled`).
    #[inline]
    pub fn is_idle(&self, settled: bool) -> bool {
        settled && self.flow == Flow::Synced && self.tx.is_idle()
    }
}

/// The transaction status of the last ReadyForQuery.
///
/// Transitions (each at a ReadyForQuery): `Idle` → `Block` (BEGIN) →
/// `Failed` (an error inside the block) → `Idle` (COMMIT or ROLLBACK);
/// `Block` → `Idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tx {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    Block,
    /// `E`: in a failed transaction block (statements are rejected until
    /// it ends).
    Failed,
}

impl Tx {
    /// From a ReadyForQuery status byte. An unknown byte counts as a
    /// transaction block: the session then keeps its server connection.
    #[inline]
    pub fn from_status(status: u8) -> Tx {
        match status {
            b'I' => Tx::Idle,
            b'E' => Tx::Failed,
            _ => Tx::Block,
        }
    }

    #[inline]
    pub fn is_idle(self) -> bool {
        self == Tx::Idle
    }
}

/// Where the client's request stands.
///
/// Transitions:
/// - `Synced` → `Unsynced`: an extended-protocol message (Parse, Bind,
///   Describe, Execute, Close) went to the server;
/// - `Unsynced` → `Synced`: the client's Sync went to the server;
/// - `Synced` | `Unsynced` → `Skipping`: no server connection could be had
///   for the request (the client was told why);
/// - `Skipping` → `Synced`: the client's Sync, answered by pgstash;
/// - `Synced` | `Unsynced` → `Copying`: CopyInResponse, CopyOutResponse or
///   CopyBothResponse from the server;
/// - `Copying` → the flow it interrupted (`Synced`, or `Unsynced` if the
///   client sent extended messages without a Sync since): the COPY's
///   CommandComplete, an ErrorResponse or a ReadyForQuery;
/// - any → `Closing`: the server sent a FATAL error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Every request sent so far is complete (ended by a Sync, or a simple
    /// Query): nothing of the client's lives in the unnamed statement or
    /// portal beyond it.
    Synced,
    /// Extended-protocol messages went out since the last Sync.
    Unsynced,
    /// pgstash failed the request itself: client messages are dropped up to
    /// the next Sync.
    Skipping,
    /// A COPY runs.
    Copying(Copying),
    /// The server ended the session (FATAL): client messages are dropped
    /// until the server closes, then the session ends.
    Closing,
}

/// A running COPY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copying {
    /// COPY FROM STDIN started by an Execute, and the client has not sent
    /// CopyDone or CopyFail yet: Postgres ignores Syncs until then, so a
    /// Sync now expects no answer.
    pub syncs_ignored: bool,
    /// Whether extended messages went out without a Sync since the COPY
    /// began or before it (the flow to return to).
    unsynced: bool,
}

impl Flow {
    /// An extended-protocol message went to the server.
    #[inline]
    pub fn sent_extended(&mut self) {
        match self {
            Flow::Synced | Flow::Unsynced => *self = Flow::Unsynced,
            Flow::Copying(copy) => copy.unsynced = true,
            Flow::Skipping | Flow::Closing => {}
        }
    }

    /// The client's Sync went to the server, or pgstash answered it.
    #[inline]
    pub fn sent_sync(&mut self) {
        match self {
            Flow::Synced | Flow::Unsynced | Flow::Skipping => *self = Flow::Synced,
            Flow::Copying(copy) => copy.unsynced = false,
            Flow::Closing => {}
        }
    }

    /// No server connection could be had: skip to the client's Sync.
    #[inline]
    pub fn skip(&mut self) {
        if *self != Flow::Closing {
            *self = Flow::Skipping;
        }
    }

    /// The server started a COPY; `syncs_ignored` as in [`Copying`].
    #[inline]
    pub fn copy_started(&mut self, syncs_ignored: bool) {
        let unsynced = match *self {
            Flow::Unsynced => true,
            Flow::Copying(copy) => copy.unsynced,
            Flow::Synced | Flow::Skipping => false,
            Flow::Closing => return,
        };
        *self = Flow::Copying(Copying {
            syncs_ignored,
            unsynced,
        });
    }

    /// The client sent CopyDone or CopyFail.
    #[inline]
    pub fn client_copy_ended(&mut self) {
        if let Flow::Copying(copy) = self {
            copy.syncs_ignored = false;
        }
    }

    /// The server ended the COPY (CommandComplete, ErrorResponse or
    /// ReadyForQuery).
    #[inline]
    pub fn copy_ended(&mut self) {
        if let Flow::Copying(copy) = *self {
            *self = if copy.unsynced {
                Flow::Unsynced
            } else {
                Flow::Synced
            };
        }
    }

    /// The server sent a FATAL error.
    #[inline]
    pub fn close(&mut self) {
        *self = Flow::Closing;
    }

    /// A Sync now would be ignored by the server (see [`Copying`]).
    #[inline]
    pub fn syncs_ignored(&self) -> bool {
        matches!(self, Flow::Copying(c) if c.syncs_ignored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_copy_in_ignores_syncs_until_copy_done_and_returns_to_synced() {
        let mut flow = Flow::Synced;
        flow.sent_extended(); // Bind, Execute
        flow.sent_sync(); // the Sync pipelined behind them
        flow.copy_started(true);
        assert!(flow.syncs_ignored());
        flow.client_copy_ended();
        assert!(!flow.syncs_ignored() && matches!(flow, Flow::Copying(_)));
        flow.sent_sync();
        flow.copy_ended();
        assert_eq!(flow, Flow::Synced);
    }

    #[test]
    fn copy_inside_an_unsynced_request_returns_to_it() {
        let mut flow = Flow::Unsynced;
        flow.copy_started(false);
        flow.copy_ended();
        assert_eq!(flow, Flow::Unsynced);
    }

    #[test]
    fn skipping_ends_at_sync_and_closing_is_final() {
        let mut flow = Flow::Unsynced;
        flow.skip();
        flow.sent_extended();
        assert_eq!(flow, Flow::Skipping);
        flow.sent_sync();
        assert_eq!(flow, Flow::Synced);
        flow.close();
        for step in [Flow::sent_sync, Flow::sent_extended, Flow::skip] {
            step(&mut flow);
        }
        flow.copy_started(true);
        assert_eq!(flow, Flow::Closing);
    }

    #[test]
    fn status_bytes_map_to_transaction_states() {
        assert_eq!(Tx::from_status(b'I'), Tx::Idle);
        assert_eq!(Tx::from_status(b'T'), Tx::Block);
        assert_eq!(Tx::from_status(b'E'), Tx::Failed);
        assert_eq!(Tx::from_status(b'?'), Tx::Block);
    }
}
