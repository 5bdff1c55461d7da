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
pub struct SlowLog {
    path: Option<PathBuf>,
    sink: Option<Sink>,
    reopen: Arc<AtomicBool>,
}

impl SlowLog {
    /// `reopen` is set on SIGHUP; the next line reopens the file.
    pub fn new(path: Option<PathBuf>, reopen: Arc<AtomicBool>) -> SlowLog {
        SlowLog {
            path,
            sink: None,
            reopen,
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

    pub async fn write(&mut self, line: &SlowLine<'_>) {
        // A pending SIGHUP reopens the file before this line.
        if self.reopen.swap(false, Ordering::SeqCst) {
            self.sink = None;
        }
        let Ok(mut text) = serde_json::to_vec(line) else {
            return;
        };
        text.push(b'\n');
        let result = match self.open().await {
            Some(Sink::Stderr(s)) => s.write_all(&text).await,
            Some(Sink::File(f)) => f.write_all(&text).await,
            None => return,
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "slow-query log write failed");
            self.sink = None;
        }
    }
}
