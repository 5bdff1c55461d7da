//! A server connection pgstash has already logged in, handed to
//! `tokio-postgres` (control connections) as if it were a fresh one.
//!
//! `tokio-postgres` logs in by itself, with a password only; pgstash's own
//! login (`connect.rs`) also passes a client's SCRAM key or md5 hash
//! through. So pgstash logs in, and this stream plays the start of the
//! conversation back: the StartupMessage `tokio-postgres` writes is
//! dropped (Postgres has had pgstash's), and its first reads return
//! AuthenticationOk and the greeting Postgres sent (ParameterStatus,
//! BackendKeyData, ReadyForQuery). Everything after is the connection's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::server::ServerConn;
use crate::net::message;
use crate::net::Stream;

/// A logged-in connection that replays its greeting.
#[derive(Debug)]
pub struct Greeted {
    stream: Stream,
    /// What the first reads return.
    greeting: BytesMut,
    /// Bytes of the StartupMessage still to drop: `None` until its length
    /// word has been written.
    startup_left: Option<usize>,
    /// The length word, as it arrives.
    length: Vec<u8>,
}

impl Greeted {
    /// `conn` at its first ReadyForQuery, with nothing buffered.
    pub fn new(conn: ServerConn) -> Greeted {
        let mut greeting = BytesMut::new();
        message::auth_ok(&mut greeting);
        for (name, value) in &conn.reported {
            message::parameter_status(&mut greeting, name, value);
        }
        message::backend_key_data(&mut greeting, conn.pid, conn.secret);
        message::ready_for_query(&mut greeting, conn.status);
        Greeted {
            stream: conn.stream,
            greeting,
            startup_left: None,
            length: Vec::with_capacity(4),
        }
    }

    /// Drops the StartupMessage's bytes at the start of `buf`; how many.
    fn drop_startup(&mut self, buf: &[u8]) -> usize {
        let mut used = 0;
        while self.startup_left.is_none() && used < buf.len() {
            self.length.push(buf[used]);
            used += 1;
            if self.length.len() == 4 {
                let word = [
                    self.length[0],
                    self.length[1],
                    self.length[2],
                    self.length[3],
                ];
                // The length counts itself.
                self.startup_left = Some((u32::from_be_bytes(word) as usize).saturating_sub(4));
            }
        }
        if let Some(left) = &mut self.startup_left {
            let take = (*left).min(buf.len() - used);
            *left -= take;
            used += take;
        }
        used
    }

    fn startup_dropped(&self) -> bool {
        self.startup_left == Some(0)
    }
}

impl AsyncRead for Greeted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.greeting.is_empty() {
            let n = this.greeting.len().min(buf.remaining());
            buf.put_slice(&this.greeting[..n]);
            this.greeting.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Greeted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.startup_dropped() {
            let dropped = this.drop_startup(buf);
            if dropped > 0 {
                return Poll::Ready(Ok(dropped));
            }
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
