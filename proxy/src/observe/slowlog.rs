//! The slow-query log: one JSON object per line (see `logline` for the
//! line), to stderr or a file that is reopened on SIGHUP (so logrotate can
//! move it away).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pgstash_rules::Analysis;
use tokio::io::AsyncWriteExt;

use super::event::QueryEvent;
use super::logline::LineParts;
use super::nplusone::Burst;

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
    parts: LineParts,
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
            parts: LineParts::default(),
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

    /// Adds `event`'s line; it reaches the log at the next
    /// [`SlowLog::flush`]. `analysis` is its text's shape when the text
    /// parsed; `log_parameters` logs the text as sent.
    pub async fn write(
        &mut self,
        event: &QueryEvent,
        analysis: Option<&Arc<Analysis>>,
        log_parameters: bool,
    ) {
        if self.pending.len() > FLUSH_ABOVE {
            self.flush().await;
        }
        self.parts
            .write(&mut self.pending, event, analysis, log_parameters);
    }

    /// Adds the line of an N+1 burst (see `LineParts::write_burst`).
    pub async fn write_burst(&mut self, burst: &Burst) {
        if self.pending.len() > FLUSH_ABOVE {
            self.flush().await;
        }
        self.parts.write_burst(&mut self.pending, burst);
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
