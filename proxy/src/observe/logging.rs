//! The process log (`tracing`): text or JSON lines on stderr, coloured only
//! when stderr is a terminal. Writing it must never stop pgstash: lines go
//! through a bounded queue to a writer thread (a stuck reader drops lines,
//! it does not block a worker), and a failed write — a closed pipe, a full
//! disk — is counted (`pgstash_log_write_errors_total`), never reported by
//! printing (which would fail the same way) nor by panicking.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use crate::config::LogFormat;

/// Failed writes of log lines since the start.
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Lines the queue dropped because the writer was behind.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines that could not be written (dropped, or the write failed).
pub fn write_errors() -> u64 {
    let dropped = DROPPED.get().map_or(0, |c| c.dropped_lines() as u64);
    WRITE_ERRORS.load(Ordering::Relaxed) + dropped
}

/// Stderr that reports failure by counting it.
struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::io::stderr().write_all(buf) {
            Ok(()) => {}
            Err(_) => {
                WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Installs the process log; keep the guard for as long as lines should
/// be written (dropping it flushes what is queued, waiting at most 1 s).
pub fn init(format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .finish(QuietStderr);
    let _ = DROPPED.set(writer.error_counter());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // Already installed (a test process): keep that one.
    let _ = installed;
    guard
}
