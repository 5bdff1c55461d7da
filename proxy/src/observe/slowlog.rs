//! The slow-query log: one JSON object per line, to stderr or a file that
//! is reopened on SIGHUP (so logrotate can move it away).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use super::record::QueryEvent;

/// One line of the log. Field names are part of the contract.
#[derive(Serialize)]
pub struct SlowLine<'a> {
    pub ts: String,
    pub duration_ms: f64,
    pub upstream_ms: f64,
    pub pool_wait_ms: f64,
    pub fingerprint: &'a str,
    pub query: &'a str,
    pub rows: u64,
    pub cache: &'a str,
    pub rule: Option<&'a str>,
    pub user: &'a str,
    pub database: &'a str,
    pub application_name: &'a str,
    pub client: &'a str,
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl<'a> SlowLine<'a> {
    pub fn new(event: &'a QueryEvent, fingerprint: &'a str, query: &'a str) -> SlowLine<'a> {
        SlowLine {
            ts: humantime::format_rfc3339_millis(event.at).to_string(),
            duration_ms: ms(event.duration),
            upstream_ms: ms(event.upstream),
            pool_wait_ms: ms(event.pool_wait),
            fingerprint,
            query,
            rows: event.rows,
            cache: event.path,
            rule: event.rule.as_deref(),
            user: &event.session.user,
            database: &event.session.database,
            application_name: &event.session.application_name,
            client: &event.session.client,
        }
    }
}

enum Sink {
    Stderr(tokio::io::Stderr),
    File(tokio::fs::File),
}

/// Where slow-query lines go.
///
/// # Performance
/// Lines are collected in memory and written together by [`SlowLog::flush`]
/// (the recorder flushes after each batch it drains): a tokio file write
/// is a hop to a blocking thread, too dear to pay per line when every
/// query is logged.
pub struct SlowLog {
    path: Option<PathBuf>,
    sink: Option<Sink>,
    reopen: Arc<AtomicBool>,
    pending: Vec<u8>,
}

/// Buffered lines beyond this are written before more are added.
const FLUSH_ABOVE: usize = 256 * 1024;

impl SlowLog {
    /// `reopen` is set on SIGHUP; the next line reopens the file.
    pub fn new(path: Option<PathBuf>, reopen: Arc<AtomicBool>) -> SlowLog {
        SlowLog {
            path,
            sink: None,
            reopen,
            pending: Vec::new(),
        }
    }

    async fn open(&mut self) -> Option<&mut Sink> {
        if self.sink.is_none() {
            self.sink = match &self.path {
                None => Some(Sink::Stderr(tokio::io::stderr())),
                Some(path) => match tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                {
                    Ok(file) => Some(Sink::File(file)),
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "cannot open the slow-query log");
                        None
                    }
                },
            };
        }
        self.sink.as_mut()
    }

    /// Adds a line; it reaches the log at the next [`SlowLog::flush`].
    pub async fn write(&mut self, line: &SlowLine<'_>) {
        if self.pending.len() > FLUSH_ABOVE {
            self.flush().await;
        }
        if serde_json::to_writer(&mut self.pending, line).is_ok() {
            self.pending.push(b'\n');
        }
    }

    /// Writes the lines added since the last flush.
    pub async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // A pending SIGHUP reopens the file before these lines.
        if self.reopen.swap(false, Ordering::SeqCst) {
            self.sink = None;
        }
        let text = std::mem::take(&mut self.pending);
        let result = match self.open().await {
            Some(Sink::Stderr(s)) => s.write_all(&text).await,
            Some(Sink::File(f)) => match f.write_all(&text).await {
                // A tokio file finishes writing in the background; flush
                // so that the lines are in the file when this returns.
                Ok(()) => f.flush().await,
                Err(e) => Err(e),
            },
            None => return,
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "slow-query log write failed");
            self.sink = None;
        }
        if self.pending.capacity() == 0 && text.capacity() <= FLUSH_ABOVE * 2 {
            self.pending = text;
            self.pending.clear();
        }
    }
}
