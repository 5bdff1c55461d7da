//! Why a replication stream stopped. Every error ends the stream; the
//! consumer fails closed and starts over after a pause.

use crate::backend::BackendError;
use crate::cache::StoreError;
use crate::net::NetError;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Upstream(#[from] BackendError),
    #[error("replication stream: {0}")]
    Net(#[from] NetError),
    #[error("upstream sent an unexpected message {tag:?} during {during}")]
    Unexpected { tag: char, during: &'static str },
    #[error("control connection: {0}")]
    Control(#[from] tokio_postgres::Error),
    #[error("invalidation not recorded: {0}")]
    Store(#[from] StoreError),
    #[error("publication {0:?} does not exist (run `pgstash replication setup`)")]
    NoPublication(String),
    #[error("pg_current_snapshot() answered in an unknown format")]
    Snapshot,
    #[error(
        "a streamed commit did not become visible within 10 s (is pgstash a synchronous standby?)"
    )]
    NeverVisible,
    #[error("Postgres counts pgstash's replication connection (application_name 'pgstash') as a synchronous standby: commits would wait for pgstash. Name your standbys in synchronous_standby_names instead of '*'")]
    SynchronousStandby,
    #[error("replication slot {0:?} was lost (max_slot_wal_keep_size?) and dropped")]
    SlotLost(String),
}
