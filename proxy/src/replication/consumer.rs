//! One database's stream, followed into the invalidator: the tables each
//! committed transaction changed are invalidated as a write through
//! pgstash would be (`Source` `replication`), and heartbeats read back move
//! the database's proof on (`heartbeat.rs`). The position confirmed to
//! Postgres never passes what is recorded, so a persistent slot resumes
//! without losing an invalidation. A commit is recorded only once Postgres
//! shows its transaction visible (`visible.rs`): commits are held while
//! more of the stream is already waiting, then checked and recorded as one
//! batch. Any error ends the stream: the proof is
//! dropped (the cache fails closed for the database) and the consumer
//! starts over; a slot made anew means writes may have been missed, so the
//! whole cache is emptied before anything is proven again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use pgstash_rules::{TableRef, Writes};

use super::error::ReplicationError;
use super::heartbeat::{Beats, PREFIX};
use super::protocol::{self, Lsn, Output, Stream};
use super::stream::ReplicationStream;
use super::visible;
use crate::backend::connect::ConnectTarget;
use crate::backend::control;
use crate::cache::freshness::Proof;
use crate::cache::{Invalidator, Source};
use crate::config::ReplicationConfig;
use crate::observe::Metrics;

/// Where the replication stream's writes come from.
pub const SOURCE: Source = Source::new("replication");

/// How often the position is confirmed while the stream is quiet.
const CONFIRM_EVERY: Duration = Duration::from_secs(1);

/// Longest pause between attempts after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Consumer {
    pub target: ConnectTarget,
    pub config: ReplicationConfig,
    pub invalidator: Arc<Invalidator>,
    pub proof: Arc<Proof>,
    pub beats: Arc<Beats>,
    pub metrics: Arc<Metrics>,
    /// The slot in use, for the retained-bytes gauge.
    pub slot: Arc<std::sync::Mutex<Option<String>>>,
}

/// `pgstash_replication_leading` is 1 while one of these lives.
struct Leading(prometheus::IntGauge);

impl Leading {
    fn new(gauge: prometheus::IntGauge) -> Leading {
        gauge.set(1);
        Leading(gauge)
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        self.0.set(0);
    }
}

/// Commits held before they are recorded, at most this many at once.
const HOLD_MAX: usize = 1024;

/// A transaction being read.
#[derive(Default)]
struct Changes {
    /// From its Begin message.
    xid: Option<u32>,
    relations: HashSet<u32>,
    /// A relation's definition changed (a Relation message for one already
    /// known): catalog facts must be read again.
    ddl: bool,
}

/// Committed transactions read but not yet recorded: they wait until
/// Postgres shows them visible.
#[derive(Default)]
struct Held {
    /// Transactions with writes to record.
    xids: Vec<u32>,
    writes: Writes,
    /// Where the stream is once they are recorded.
    end: Lsn,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.xids.is_empty() && self.end == 0
    }
}

impl Consumer {
    /// Follows the stream, and sends heartbeats through it, for as long as
    /// the future runs.
    pub async fn run(&self) {
        let every = self.config.heartbeat_every();
        let gauge = self
            .metrics
            .replication_leading
            .with_label_values(&[self.target.database.as_str()]);
        // Reset when the future ends or is dropped (the lease was lost).
        let _leading = Leading::new(gauge);
        tokio::select! {
            _ = self.follow_forever() => {}
            _ = super::heartbeat::emit(self.target.clone(), self.beats.clone(), every) => {}
        }
    }

    async fn follow_forever(&self) {
        let database = self.target.database.clone();
        let mut backoff = Duration::from_millis(100);
        loop {
            self.proof.forget();
            let started = std::time::Instant::now();
            let result = self.follow().await;
            self.proof.forget();
            *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.metrics
                .replication_restarts
                .with_label_values(&[database.as_str()])
                .inc();
            if let Err(e) = result {
                tracing::warn!(%database, error = %e, "replication stream stopped; the cache serves this database upstream until it is back");
            }
            if started.elapsed() > BACKOFF_MAX * 2 {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn follow(&self) -> Result<(), ReplicationError> {
        let database = self.target.database.as_str();
        let control = control::connect(&self.target, "pgstash-replication").await?;
        // pgoutput reports a missing publication only at the first change.
        let publication = &self.config.publication;
        let exists = control
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[publication],
            )
            .await?;
        if exists.is_none() {
            return Err(ReplicationError::NoPublication(publication.clone()));
        }
        let mut stream = ReplicationStream::connect(&self.target).await?;
        let slot = stream
            .open_slot(&self.config.slot, self.config.temporary)
            .await?;
        if slot.created {
            // Writes before the slot were never streamed: nothing cached
            // before now can be trusted (for Redis, on every instance).
            self.invalidator.flush(SOURCE).await?;
        }
        match stream.start(&slot.name, &self.config.publication).await {
            Ok(()) => {}
            // 55000: the slot can no longer stream (it fell behind
            // max_slot_wal_keep_size and its WAL is gone). Drop it; the
            // next attempt makes a new one and empties the cache.
            Err(ReplicationError::Upstream(crate::backend::BackendError::Server {
                code,
                message,
                ..
            })) if code == "55000" && !slot.created => {
                tracing::error!(%database, slot = %slot.name, %message, "replication slot lost; making a new one (the cache is emptied)");
                let mut again = ReplicationStream::connect(&self.target).await?;
                again.drop_slot(&slot.name).await?;
                return Err(ReplicationError::SlotLost(slot.name));
            }
            Err(e) => return Err(e),
        }
        tracing::info!(%database, slot = %slot.name, temporary = self.config.temporary, "following the replication stream");
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(slot.name.clone());
        let snapshot = control.prepare(visible::SNAPSHOT_SQL).await?;
        let priority = control
            .prepare(
                "SELECT coalesce(max(sync_priority), 0) FROM pg_stat_replication WHERE pid = $1",
            )
            .await?;
        let walsender = stream.pid();
        let mut names: HashMap<u32, Vec<TableRef>> = HashMap::new();
        let mut changes: Option<Changes> = None;
        let mut held = Held::default();
        let mut applied: Lsn = 0;
        let mut confirmed: Lsn = 0;
        let mut tick = tokio::time::interval(CONFIRM_EVERY);
        loop {
            if !held.is_empty() && (!stream.has_waiting() || held.xids.len() >= HOLD_MAX) {
                let end = self
                    .release(database, &control, &snapshot, &mut held)
                    .await?;
                applied = applied.max(end);
            }
            let frame = tokio::select! {
                frame = stream.next() => frame?,
                _ = tick.tick() => {
                    if applied > confirmed {
                        stream.confirm(applied).await?;
                        tracing::trace!(%database, lsn = %protocol::format_lsn(applied), "confirmed");
                        confirmed = applied;
                    }
                    // A synchronous standby's commits wait for its
                    // confirmation, and pgstash confirms a commit only
                    // once it is visible: they would wait on each other.
                    let row = control.query_one(&priority, &[&walsender]).await?;
                    if row.try_get::<_, i32>(0)? > 0 {
                        return Err(ReplicationError::SynchronousStandby);
                    }
                    continue;
                }
            };
            let (message, end) = match protocol::decode_stream(frame.body())? {
                Stream::XLogData { message, end, .. } => (message, end),
                Stream::Keepalive { end, reply } => {
                    // Nothing is in flight between transactions: all the
                    // server has is read once the keepalive is.
                    if changes.is_none() && held.is_empty() {
                        applied = applied.max(end);
                    }
                    if reply {
                        stream.confirm(applied).await?;
                        confirmed = applied;
                    }
                    continue;
                }
                Stream::Other(_) => continue,
            };
            let _ = end;
            match protocol::decode_output(message)? {
                Output::Begin { xid, .. } => {
                    changes = Some(Changes {
                        xid: Some(xid),
                        ..Changes::default()
                    })
                }
                Output::Relation {
                    oid,
                    namespace,
                    name,
                } => {
                    self.event("relation");
                    let mut tables = vec![TableRef::new(Some(namespace), name)];
                    tables.extend(control::partition_ancestors(&control, oid).await?);
                    let known = names.insert(oid, tables).is_some();
                    let tx = changes.get_or_insert_with(Changes::default);
                    tx.relations.insert(oid);
                    tx.ddl |= known;
                }
                Output::Change { oid } => {
                    self.event("change");
                    changes
                        .get_or_insert_with(Changes::default)
                        .relations
                        .insert(oid);
                }
                Output::Truncate { oids } => {
                    self.event("truncate");
                    changes
                        .get_or_insert_with(Changes::default)
                        .relations
                        .extend(oids);
                }
                Output::Commit { end_lsn } => {
                    self.event("commit");
                    if let Some(tx) = changes.take() {
                        let xid = tx.xid;
                        let writes = writes_of(&names, tx);
                        if !writes.tables.is_empty() || writes.all || writes.ddl {
                            held.xids.extend(xid);
                            held.writes.merge(writes);
                        }
                    }
                    held.end = held.end.max(end_lsn);
                }
                Output::Message {
                    transactional: false,
                    lsn,
                    prefix,
                    content,
                } if prefix == PREFIX => {
                    // Everything committed before the heartbeat is
                    // recorded before it proves anything.
                    if !held.is_empty() {
                        let end = self
                            .release(database, &control, &snapshot, &mut held)
                            .await?;
                        applied = applied.max(end);
                    }
                    if let Some(sent) = self.beats.read_back(content) {
                        self.event("heartbeat");
                        self.proof.prove(sent);
                    }
                    if changes.is_none() {
                        applied = applied.max(lsn);
                    }
                }
                Output::Message { .. } | Output::Other(_) => {}
            }
        }
    }

    /// Records the held commits once Postgres shows them visible; returns
    /// the position they reach.
    async fn release(
        &self,
        database: &str,
        control: &tokio_postgres::Client,
        snapshot: &tokio_postgres::Statement,
        held: &mut Held,
    ) -> Result<Lsn, ReplicationError> {
        let batch = std::mem::take(held);
        if !batch.xids.is_empty() {
            visible::wait_until_visible(control, snapshot, &batch.xids).await?;
            self.invalidator
                .record(SOURCE, database, &batch.writes)
                .await?;
        }
        Ok(batch.end)
    }

    fn event(&self, kind: &str) {
        self.metrics
            .replication_events
            .with_label_values(&[kind])
            .inc();
    }
}

/// The tables one committed transaction changed.
fn writes_of(names: &HashMap<u32, Vec<TableRef>>, tx: Changes) -> Writes {
    let mut writes = Writes {
        ddl: tx.ddl,
        ..Writes::default()
    };
    for oid in &tx.relations {
        match names.get(oid) {
            Some(tables) => writes.merge(Writes {
                tables: tables.clone(),
                ..Writes::default()
            }),
            // pgoutput names a relation before its first change; one it
            // did not name is a protocol surprise: invalidate everything.
            None => writes.all = true,
        }
    }
    writes
}
