//! When a streamed commit can be acted on.
//!
//! Postgres sends a transaction's commit down the replication stream once
//! its WAL is flushed, which is a moment *before* the transaction becomes
//! visible to other sessions (its commit is written, then it leaves the
//! list of running transactions). Invalidating in that moment is too
//! early: a read that misses the cache right after the invalidation still
//! sees the old rows and fills the cache with them, under the version the
//! invalidation just made — stale until the next write. So the consumer
//! holds each commit until a fresh snapshot no longer counts its
//! transaction as running, and only then records the invalidation.
//!
//! The check is one query on the control connection for a batch of
//! commits; the window is microseconds, so the first answer almost always
//! finds every transaction visible.

use std::time::{Duration, Instant};

use super::error::ReplicationError;

/// Pause between snapshots while a transaction is still running.
const POLL: Duration = Duration::from_millis(1);

/// Longer than any commit takes to become visible: past it, something is
/// wrong and the stream starts over (failing closed meanwhile).
const GIVE_UP: Duration = Duration::from_secs(10);

/// The running transactions of a snapshot (`pg_current_snapshot()`).
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// First transaction id not yet assigned when the snapshot was taken
    /// (epoch-extended, `xid8`).
    xmax: u64,
    /// Transactions running when it was taken.
    running: Vec<u64>,
}

impl Snapshot {
    /// Parses `xmin:xmax:xip,xip,...`.
    pub fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.split(':');
        let _xmin: u64 = parts.next()?.parse().ok()?;
        let xmax: u64 = parts.next()?.parse().ok()?;
        let list = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let running = list
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        Some(Snapshot { xmax, running })
    }

    /// Whether the transaction `xid` (the 32-bit id pgoutput's Begin
    /// carries) had ended when the snapshot was taken. Its commit was just
    /// streamed, so it lies within 2^31 of `xmax` either way: its full id
    /// is the one of that distance. At or past `xmax` it had not ended
    /// (the newest transactions are not listed as running, they are past
    /// the last completed one).
    pub fn has_ended(&self, xid: u32) -> bool {
        // Modular distance from xmax, as Postgres compares xids.
        let offset = i64::from(xid.wrapping_sub(self.xmax as u32) as i32);
        let Some(full) = self.xmax.checked_add_signed(offset) else {
            return false;
        };
        full < self.xmax && !self.running.contains(&full)
    }
}

/// Waits until every transaction of `xids` is visible to new snapshots.
pub async fn wait_until_visible(
    control: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    xids: &[u32],
) -> Result<(), ReplicationError> {
    let started = Instant::now();
    loop {
        let row = control.query_one(statement, &[]).await?;
        let text: &str = row.try_get(0)?;
        let snapshot = Snapshot::parse(text).ok_or(ReplicationError::Snapshot)?;
        if xids.iter().all(|&xid| snapshot.has_ended(xid)) {
            return Ok(());
        }
        if started.elapsed() > GIVE_UP {
            return Err(ReplicationError::NeverVisible);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The query [`wait_until_visible`] runs.
pub const SNAPSHOT_SQL: &str = "SELECT pg_current_snapshot()::text";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_snapshots_with_and_without_running_transactions() {
        assert_eq!(
            Snapshot::parse("750:750:"),
            Some(Snapshot {
                xmax: 750,
                running: vec![]
            })
        );
        assert_eq!(
            Snapshot::parse("740:760:740,755"),
            Some(Snapshot {
                xmax: 760,
                running: vec![740, 755]
            })
        );
        assert_eq!(Snapshot::parse("740:760"), None);
        assert_eq!(Snapshot::parse("a:b:"), None);
        assert_eq!(Snapshot::parse("1:2:3:4"), None);
    }

    #[test]
    fn a_running_or_unassigned_transaction_has_not_ended() {
        let snapshot = Snapshot::parse("740:760:740,755").unwrap_or_else(|| unreachable!());
        assert!(snapshot.has_ended(741));
        assert!(!snapshot.has_ended(755), "running");
        assert!(!snapshot.has_ended(740), "running");
        assert!(snapshot.has_ended(759));
        // Committing but not yet completed: past the snapshot's xmax.
        assert!(!snapshot.has_ended(760));
        assert!(!snapshot.has_ended(761));
    }

    #[test]
    fn transaction_ids_across_an_epoch_boundary() {
        // xmax just past the wrap: epoch 1, low bits 5.
        let xmax = (1u64 << 32) + 5;
        let running = (1u64 << 32) - 3; // epoch 0's 0xffff_fffd
        let snapshot = Snapshot::parse(&format!("{running}:{xmax}:{running}"))
            .unwrap_or_else(|| unreachable!());
        assert!(!snapshot.has_ended(0xffff_fffd), "epoch 0, still running");
        assert!(snapshot.has_ended(0xffff_fffe), "epoch 0, ended");
        assert!(snapshot.has_ended(4), "epoch 1, ended");
        assert!(!snapshot.has_ended(5), "epoch 1, past xmax");
        // Past xmax in a later epoch must not be read as the epoch before.
        let later = Snapshot::parse(&format!("{0}:{0}:", (3u64 << 32) + 760))
            .unwrap_or_else(|| unreachable!());
        assert!(!later.has_ended(760));
        assert!(later.has_ended(759));
    }
}
