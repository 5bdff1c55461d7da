//! The client's side of a session: its connection, the frames read from
//! it, and the answers waiting to be written to it.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::frontend::error::FrontendError;
use crate::net::{Frame, FrameReader, NetError, Stream};

/// Answers kept beyond this size are written out and the buffer is given
/// back, so an idle client does not pin a large buffer.
const SHRINK_ABOVE: usize = 64 * 1024;

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
