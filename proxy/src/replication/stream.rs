//! The replication connection of one database: logged in like any server
//! connection (`backend/connect.rs`) with `replication=database`, it runs
//! the replication commands (create a slot, start streaming) and then
//! carries the stream as CopyData messages both ways.

use bytes::BytesMut;

use super::error::ReplicationError;
use super::protocol::{self, Lsn};
use crate::backend::connect::{connect_with, ConnectTarget};
use crate::backend::ServerConn;
use crate::net::message::tag;
use crate::net::Frame;

/// How the replication connection shows in `pg_stat_replication`.
pub const APPLICATION_NAME: &str = "pgstash";

/// A replication connection.
pub struct ReplicationStream {
    conn: ServerConn,
}

/// Where a slot starts.
pub struct Slot {
    pub name: String,
    /// The slot was made now: writes before it were never streamed to
    /// pgstash (a gap, unless nothing was cached before).
    pub created: bool,
}

impl ReplicationStream {
    pub async fn connect(target: &ConnectTarget) -> Result<ReplicationStream, ReplicationError> {
        let conn = connect_with(
            target,
            &[
                ("replication", "database"),
                ("application_name", APPLICATION_NAME),
            ],
        )
        .await?;
        Ok(ReplicationStream { conn })
    }

    /// A temporary slot (`temporary`), gone with this connection, or the
    /// persistent slot `name`, made if it does not exist.
    pub async fn open_slot(
        &mut self,
        name: &str,
        temporary: bool,
    ) -> Result<Slot, ReplicationError> {
        if temporary {
            let name = format!("{name}_{:016x}", rand::random::<u64>());
            let sql = format!(
                "CREATE_REPLICATION_SLOT {name} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT"
            );
            self.conn.run_internal(&sql).await?;
            return Ok(Slot {
                name,
                created: true,
            });
        }
        let sql = format!("CREATE_REPLICATION_SLOT {name} LOGICAL pgoutput NOEXPORT_SNAPSHOT");
        match self.conn.run_internal(&sql).await {
            Ok(_) => Ok(Slot {
                name: name.to_owned(),
                created: true,
            }),
            // 42710 duplicate_object: resume the slot as it is.
            Err(crate::backend::BackendError::Server { code, .. }) if code == "42710" => Ok(Slot {
                name: name.to_owned(),
                created: false,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Drops the persistent slot `name`.
    pub async fn drop_slot(&mut self, name: &str) -> Result<(), ReplicationError> {
        self.conn
            .run_internal(&format!("DROP_REPLICATION_SLOT {name}"))
            .await?;
        Ok(())
    }

    /// Starts streaming `slot` from where it was confirmed, with the
    /// publication's changes and logical decoding messages.
    pub async fn start(&mut self, slot: &str, publication: &str) -> Result<(), ReplicationError> {
        let sql = format!(
            "START_REPLICATION SLOT {slot} LOGICAL 0/0 (proto_version '1', publication_names '\"{publication}\"', messages 'true')"
        );
        let mut out = BytesMut::new();
        crate::net::message::query(&mut out, &sql);
        self.conn.send(&out).await?;
        loop {
            let frame = self.conn.read_frame().await?;
            match frame.tag() {
                tag::COPY_BOTH_RESPONSE => return Ok(()),
                tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS => {}
                tag::ERROR_RESPONSE => {
                    return Err(
                        crate::backend::BackendError::from_error_frame(frame.into_bytes()).into(),
                    )
                }
                other => {
                    return Err(ReplicationError::Unexpected {
                        tag: other as char,
                        during: "START_REPLICATION",
                    })
                }
            }
        }
    }

    /// The next message of the stream: a CopyData payload.
    ///
    /// # Cancellation safety
    /// Safe: bytes are buffered as they arrive and a whole message is taken
    /// only when complete.
    pub async fn next(&mut self) -> Result<Frame, ReplicationError> {
        loop {
            let frame = self.conn.read_frame().await?;
            match frame.tag() {
                tag::COPY_DATA => return Ok(frame),
                tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS => {}
                tag::ERROR_RESPONSE => {
                    return Err(
                        crate::backend::BackendError::from_error_frame(frame.into_bytes()).into(),
                    )
                }
                other => {
                    return Err(ReplicationError::Unexpected {
                        tag: other as char,
                        during: "streaming",
                    })
                }
            }
        }
    }

    /// The walsender's process id.
    pub fn pid(&self) -> i32 {
        self.conn.pid
    }

    /// Whether a whole message is already read and waiting: [`next`] would
    /// answer without waiting for the network.
    ///
    /// [`next`]: ReplicationStream::next
    pub fn has_waiting(&mut self) -> bool {
        // A malformed frame counts as waiting: `next` reports it.
        self.conn.reader.peek().map_or(true, |f| f.is_some())
    }

    /// Tells the server everything up to `applied` is done with: it may
    /// let go of the WAL before it.
    pub async fn confirm(&mut self, applied: Lsn) -> Result<(), ReplicationError> {
        let mut out = BytesMut::with_capacity(40);
        protocol::status_update(applied, postgres_micros_now(), &mut out);
        self.conn.send(&out).await?;
        Ok(())
    }
}

/// Microseconds since 2000-01-01, Postgres' epoch.
fn postgres_micros_now() -> i64 {
    const POSTGRES_EPOCH_UNIX_SECS: u64 = 946_684_800;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let since = now.saturating_sub(std::time::Duration::from_secs(POSTGRES_EPOCH_UNIX_SECS));
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}
