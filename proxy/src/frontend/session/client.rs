//! The client's side of a session: its connection, the frames read from
//! it, and the answers waiting to be written to it.

use std::future::Future;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::frontend::error::FrontendError;
use crate::net::{Frame, FrameReader, NetError, Stream};

/// Answers kept beyond this size are written out and the buffer is given
/// back, so an idle client does not pin a large buffer.
const SHRINK_ABOVE: usize = 64 * 1024;

/// Answers kept beyond this size are given back when the session parks
/// (`park.rs`); a small buffer stays for the next answer.
const KEEP_PARKED: usize = 1024;

pub struct ClientConn {
    stream: Stream,
    reader: FrameReader,
    /// Answers for the client, written out by [`ClientConn::flush`].
    pub out: BytesMut,
}

impl ClientConn {
    #[inline]
    pub fn new(stream: Stream, mut reader: FrameReader) -> ClientConn {
        reader.keep_buffer();
        ClientConn {
            stream,
            reader,
            out: BytesMut::new(),
        }
    }

    /// The next whole message already read, if any.
    #[inline]
    pub fn next_frame(&mut self) -> Result<Option<Frame>, NetError> {
        self.reader.next_frame()
    }

    /// Reads more from the client.
    ///
    /// # Cancellation safety
    /// Bytes are appended to the buffer only on completion: a read that
    /// loses a `select!` loses nothing.
    pub async fn read(&mut self) -> Result<(), NetError> {
        self.reader.fill(&mut self.stream).await
    }

    /// Reads what the client sent once [`ClientConn::readable`] said so;
    /// `None` if the read would wait after all (a readiness left over
    /// from a read that filled its buffer, or TLS bytes that were not a
    /// whole record), so that the session parks again instead of waiting
    /// in its busy state.
    pub async fn read_ready(&mut self) -> Option<Result<(), NetError>> {
        let mut read = std::pin::pin!(self.read());
        std::future::poll_fn(|cx| match read.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    /// Whether the client has sent something, without a buffer (see
    /// `park.rs` and [`Stream::poll_readable`]).
    #[inline]
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<Result<(), NetError>> {
        self.stream.poll_readable(cx).map_err(NetError::from)
    }

    /// The session parks: the read buffer (the handshake's, or the last
    /// request's) is given back if empty, the output buffer if large.
    pub fn park(&mut self) {
        // Kept between the requests of a busy session (no allocation per
        // request), given back when it parks: an idle client holds no
        // read buffer (≤ 2 KiB per idle client, issue #20).
        self.reader.release_parked();
        if self.out.is_empty() && self.out.capacity() > KEEP_PARKED {
            self.out = BytesMut::new();
        }
    }

    /// Whether part of a next message is already read (the client is in
    /// the middle of sending more).
    #[inline]
    pub fn has_buffered(&self) -> bool {
        self.reader.has_buffered()
    }

    /// Writes the pending answers, unless `hold` (an acknowledgement waits
    /// for its invalidation: see `WritePath`).
    pub async fn flush(&mut self, hold: bool) -> Result<(), FrontendError> {
        if self.out.is_empty() || hold {
            return Ok(());
        }
        let result = self.stream.write_all(&self.out).await;
        self.out.clear();
        if self.out.capacity() > SHRINK_ABOVE {
            self.out = BytesMut::new();
        }
        result.map_err(|_| FrontendError::ClientGone)
    }

    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
