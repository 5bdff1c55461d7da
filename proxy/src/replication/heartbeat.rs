//! Heartbeats through the stream, the proof that it is current.
//!
//! Every `heartbeat` interval the emitter notes the time `t` and writes a
//! non-transactional logical decoding message (`pg_logical_emit_message`)
//! into the database's WAL. Postgres streams changes in commit order and
//! the message after every commit before it, so when the consumer reads the
//! message back — having recorded the invalidations of everything it read
//! before — every write acknowledged before `t` is invalidated: the proof
//! moves to `t`. A heartbeat that is late (stream slow, down, or the
//! emitter's connection gone) lets the proof age past `max_lag`, and the
//! cache stops answering for the database until one arrives.
//!
//! Messages carry this instance's id: several pgstash instances may follow
//! one database, and each slot sees every instance's heartbeats.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::ReplicationError;
use crate::backend::connect::ConnectTarget;
use crate::backend::control;

/// The prefix of pgstash's logical decoding messages.
pub const PREFIX: &str = "pgstash_heartbeat";

/// Heartbeats sent and not yet read back.
const KEPT: usize = 4096;

/// The heartbeats one instance sent to one database.
pub struct Beats {
    instance: String,
    next: AtomicU64,
    sent: Mutex<VecDeque<(u64, Instant)>>,
}

impl Beats {
    pub fn new(instance: &str) -> Beats {
        Beats {
            instance: instance.to_owned(),
            next: AtomicU64::new(1),
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// The content of a new heartbeat, noted as sent now.
    fn send(&self) -> String {
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        if sent.len() >= KEPT {
            sent.pop_front();
        }
        sent.push_back((seq, Instant::now()));
        format!("{}:{seq}", self.instance)
    }

    /// When the heartbeat with `content` was sent, if it is this
    /// instance's; earlier ones are forgotten (they prove less).
    pub fn read_back(&self, content: &[u8]) -> Option<Instant> {
        let text = std::str::from_utf8(content).ok()?;
        let (instance, seq) = text.rsplit_once(':')?;
        if instance != self.instance {
            return None;
        }
        let seq: u64 = seq.parse().ok()?;
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        while sent.front().is_some_and(|(s, _)| *s < seq) {
            sent.pop_front();
        }
        match sent.front() {
            Some((s, at)) if *s == seq => Some(*at),
            _ => None,
        }
    }
}

/// Sends heartbeats to `target`'s database for as long as the task runs,
/// reconnecting after a failure.
pub async fn emit(target: ConnectTarget, beats: std::sync::Arc<Beats>, every: Duration) {
    loop {
        if let Err(e) = emit_on_one_connection(&target, &beats, every).await {
            tracing::warn!(database = %target.database, error = %e, "replication heartbeat stopped; retrying");
        }
        tokio::time::sleep(every.max(Duration::from_millis(100))).await;
    }
}

async fn emit_on_one_connection(
    target: &ConnectTarget,
    beats: &Beats,
    every: Duration,
) -> Result<(), ReplicationError> {
    let client = control::connect(target, "pgstash-heartbeat").await?;
    let statement = client
        .prepare("SELECT pg_logical_emit_message(false, $1, $2)::text")
        .await?;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let content = beats.send();
        client.query_one(&statement, &[&PREFIX, &content]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_instances_heartbeats_are_read_back_and_each_once() {
        let beats = Beats::new("a1");
        let first = beats.send();
        let second = beats.send();
        assert!(beats.read_back(b"other:1").is_none());
        assert!(beats.read_back(b"garbage").is_none());
        assert!(beats.read_back(second.as_bytes()).is_some());
        // The first was overtaken: it proves less and is gone.
        assert!(beats.read_back(first.as_bytes()).is_none());
        assert!(beats.read_back(second.as_bytes()).is_some());
    }
}
