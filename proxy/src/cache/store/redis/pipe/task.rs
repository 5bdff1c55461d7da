//! One connection's task: dial, serve until the connection fails, dial
//! again (backing off from 100 ms to 2 s). Serving is reading replies and
//! handing each to its caller in order, and writing what callers could
//! not: on a plain connection callers write themselves and the task only
//! finishes what a full socket left; on TLS the task does all the writing.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::oneshot;

use super::super::dirt::Marks;
use super::super::wire;
use super::dial::{dial, Dialed};
use super::{Endpoint, Shared, Writer};

/// The first pause before dialing again, doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long one dial (with TLS and the login) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Free room below which the read buffer grows before a read.
const READ_ROOM: usize = 4096;
const READ_GROWTH: usize = 16 * 1024;

pub struct Task {
    pub shared: Arc<Shared>,
    pub endpoint: Endpoint,
    pub marks: Marks,
}

/// A task dropped before its end (its runtime stopped: a worker's, at
/// shutdown) leaves its connection down, so that calls fail at once
/// rather than wait on replies no task will read.
impl Drop for Task {
    fn drop(&mut self) {
        self.shared.close_connection();
    }
}

impl Task {
    /// Runs until the pipes are dropped; `ready` is told at the first
    /// connection.
    pub async fn run(self, ready: oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut backoff = MIN_BACKOFF;
        let mut connected_before = false;
        // Said once per run of failed dials (a wrong password repeats).
        let mut told = false;
        while !self.shared.is_closed() {
            let dialed = match tokio::time::timeout(DIAL_TIMEOUT, dial(&self.endpoint)).await {
                Ok(Ok(dialed)) => dialed,
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {DIAL_TIMEOUT:?}"),
                    };
                    let (host, port) = (&self.endpoint.host, self.endpoint.port);
                    if !std::mem::replace(&mut told, true) {
                        tracing::warn!(%host, port, %error, "redis connection could not be opened; retrying");
                    } else {
                        tracing::debug!(%host, port, %error, "redis connection could not be opened");
                    }
                    self.pause(&mut backoff).await;
                    continue;
                }
            };
            told = false;
            if connected_before {
                // Redis may have restarted from an older snapshot.
                self.marks.connection("re-established");
            }
            connected_before = true;
            let mut answered = false;
            let error = match dialed {
                Dialed::Plain(tcp) => {
                    let (mut reader, writer) = tcp.into_split();
                    let writer = Arc::new(writer);
                    self.shared.open(Writer::Caller(writer.clone()));
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    self.serve_plain(&mut reader, &writer, &mut answered).await
                }
                Dialed::Tls(tls) => {
                    let (mut reader, mut writer) = tokio::io::split(*tls);
                    self.shared.open(Writer::Task);
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    self.serve_tls(&mut reader, &mut writer, &mut answered)
                        .await
                }
            };
            self.shared.close_connection();
            if self.shared.is_closed() {
                return;
            }
            tracing::debug!(error = %error, "redis connection failed");
            self.marks.connection("failed");
            // A connection that carried replies starts the backoff anew; one
            // accepted and closed at once (a Redis at `maxclients`, a proxy
            // with no backend) waits longer each time.
            if answered {
                backoff = MIN_BACKOFF;
            }
            self.pause(&mut backoff).await;
        }
    }

    async fn pause(&self, backoff: &mut Duration) {
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = self.shared.wake.notified() => {}
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }

    /// A plain connection: callers write; the task reads, and writes what
    /// a full socket left. Reads go through `AsyncRead`, which marks the
    /// socket drained after a read that did not fill the buffer: a
    /// `try_read` loop would make one more `recvfrom`, answered `EAGAIN`,
    /// after every reply. Returns the error that ended the connection.
    async fn serve_plain<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        writer: &OwnedWriteHalf,
        answered: &mut bool,
    ) -> io::Error {
        let mut buf = BytesMut::with_capacity(READ_GROWTH);
        loop {
            if self.shared.is_closed() {
                return io::Error::other("closed");
            }
            let pending = self.shared.has_output();
            reserve(&mut buf);
            let outcome = tokio::select! {
                read = reader.read_buf(&mut buf) => self.on_read(read, &mut buf, answered),
                writable = writer.writable(), if pending => {
                    writable.and_then(|_| self.shared.write_some(writer))
                }
                _ = self.shared.wake.notified() => Ok(()),
            };
            if let Err(e) = outcome {
                return e;
            }
        }
    }

    /// A TLS connection: callers queue, the task writes and reads.
    async fn serve_tls<R, W>(
        &self,
        reader: &mut R,
        writer: &mut W,
        answered: &mut bool,
    ) -> io::Error
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(READ_GROWTH);
        loop {
            if self.shared.is_closed() {
                return io::Error::other("closed");
            }
            let queued = self.shared.take_output();
            if !queued.is_empty() {
                // Redis reads whatever it is sent, so writing before the
                // next read cannot stall on replies left unread.
                let written = async {
                    writer.write_all(&queued).await?;
                    writer.flush().await
                };
                if let Err(e) = written.await {
                    return e;
                }
                continue;
            }
            reserve(&mut buf);
            let outcome = tokio::select! {
                read = reader.read_buf(&mut buf) => self.on_read(read, &mut buf, answered),
                _ = self.shared.wake.notified() => Ok(()),
            };
            if let Err(e) = outcome {
                return e;
            }
        }
    }

    fn on_read(
        &self,
        read: io::Result<usize>,
        buf: &mut BytesMut,
        answered: &mut bool,
    ) -> io::Result<()> {
        match read? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed by redis",
            )),
            _ => {
                *answered = true;
                self.answer(buf)
            }
        }
    }

    /// Hands every whole reply in `buf` to its caller, in order.
    fn answer(&self, buf: &mut BytesMut) -> io::Result<()> {
        while let Some(reply) = wire::parse(buf).map_err(io::Error::other)? {
            match self.shared.next_caller()? {
                // A caller that gave up (its timeout) is gone: fine.
                Some(caller) => {
                    let _ = caller.send(reply);
                }
                None => return Err(io::Error::other("a reply nobody asked for")),
            }
        }
        Ok(())
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_ROOM {
        buf.reserve(READ_GROWTH);
    }
}
