//! Framing of the regular (post-startup) protocol: a type byte, an `i32`
//! length that counts itself, then the body.
//!
//! A [`Frame`] keeps the message's original bytes so that forwarding it is a
//! copy of a slice, never a re-encoding. [`FrameReader`] enforces the size
//! limit before buffering a body, so a client cannot make pgstash allocate
//! more than `max_message_bytes` for one message.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::stream::Stream;

/// How much room is made in the read buffer before each read. Large enough
/// that a typical batch of small messages arrives in one system call.
const READ_CHUNK: usize = 16 * 1024;

/// The room of the first read into an empty buffer. Most requests and
/// answers are a few hundred bytes; an allocation this small comes from the
/// allocator's per-thread cache, where a 16 KiB one costs a trip through its
/// bins on every request (the profile showed ~8% of pass-through CPU in
/// malloc/free). A longer message continues with [`READ_CHUNK`] reads.
const FIRST_READ: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid message length {length} for message type {tag:?}")]
    BadLength { tag: char, length: i64 },
    #[error("message of {length} bytes exceeds the limit of {limit} bytes")]
    TooLarge { length: usize, limit: usize },
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
    #[error("invalid frontend message type {0}")]
    UnknownType(u8),
}

impl NetError {
    /// SQLSTATE to report to a client whose input caused this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            NetError::TooLarge { .. } => "08P01",
            NetError::BadLength { .. } | NetError::Malformed { .. } | NetError::UnknownType(_) => {
                "08P01"
            }
            NetError::Closed | NetError::Io(_) => "08006",
        }
    }
}

/// One complete protocol message: `tag`, length and body, as received.
#[derive(Debug, Clone)]
pub struct Frame {
    bytes: Bytes,
}

impl Frame {
    /// Wraps bytes that hold exactly one whole message (as built by `message.rs`).
    pub fn from_bytes(bytes: Bytes) -> Frame {
        Frame { bytes }
    }

    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The message body, after the type byte and the length.
    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }

    /// The whole message as it goes on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A whole message still in a reader's buffer (see [`FrameReader::peek`]).
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    bytes: &'a [u8],
}

impl<'a> FrameRef<'a> {
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    pub fn body(&self) -> &'a [u8] {
        &self.bytes[5..]
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// An owned copy, for keeping past the reader's next call.
    pub fn to_frame(&self) -> Frame {
        Frame::from_bytes(Bytes::copy_from_slice(self.bytes))
    }
}

/// Type bytes a client may send after startup.
pub const FRONTEND_TYPES: &[u8] = b"BCcdDEfFHPpQSX";

/// Buffers bytes from a stream and cuts them into frames.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    limit: usize,
    /// When set, frames of other types are rejected before their body is
    /// awaited (as Postgres does, so garbage fails fast).
    accept: Option<&'static [u8]>,
    /// Whether an emptied buffer is kept for the next read (server
    /// connections, logged-in clients) or given back (clients before
    /// their login, see [`fill`]).
    ///
    /// [`fill`]: FrameReader::fill
    keep_buffer: bool,
    /// The buffer grew past its first read: given back once emptied.
    grew: bool,
}

impl FrameReader {
    /// A reader for server connections: they are few (pooled) and busy, so
    /// the buffer stays, saving an allocation and a free per answer.
    pub fn new(limit: usize) -> FrameReader {
        FrameReader {
            buf: BytesMut::new(),
            limit,
            accept: None,
            keep_buffer: true,
            grew: false,
        }
    }

    /// A reader for client connections: only frontend message types, and
    /// no buffer held while idle until [`keep_buffer`] (a logged-in
    /// client's session calls it).
    ///
    /// [`keep_buffer`]: FrameReader::keep_buffer
    pub fn frontend(limit: usize) -> FrameReader {
        FrameReader {
            accept: Some(FRONTEND_TYPES),
            keep_buffer: false,
            ..FrameReader::new(limit)
        }
    }

    /// Keeps an emptied buffer for the next read unless a long message
    /// grew it, as server readers do: a logged-in client's session reads
    /// a request from it every transaction, and giving it back cost an
    /// allocation, a free and a shared-buffer header per request. An idle
    /// client then holds [`FIRST_READ`] bytes.
    pub fn keep_buffer(&mut self) {
        self.keep_buffer = true;
    }

    /// Changes the largest message accepted (raised once a client has
    /// authenticated).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Reads more bytes from `stream`. Returns [`NetError::Closed`] on EOF.
    ///
    /// # Cancellation safety
    /// Safe to use in `select!`: bytes are only ever appended to the buffer
    /// by the completed read, so a cancelled call loses nothing.
    pub async fn fill(&mut self, stream: &mut Stream) -> Result<(), NetError> {
        if self.release_emptied() {
            // Nothing pending: wait for data before taking a buffer, so an
            // idle connection holds none.
            stream.readable().await?;
        }
        if self.buf.is_empty() {
            self.reserve(FIRST_READ);
        } else if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.reserve(READ_CHUNK);
        }
        match stream.read_buf(&mut self.buf).await? {
            0 => Err(NetError::Closed),
            _ => Ok(()),
        }
    }

    /// Gives the buffer back if it is empty and this reader does not keep
    /// an emptied one (client readers); whether it did. Always replaced:
    /// `capacity()` counts only the room after the consumed bytes, so a
    /// fully consumed buffer shows 0 while its whole allocation is still
    /// held (and a reserve reclaims it).
    pub fn release_emptied(&mut self) -> bool {
        if !self.buf.is_empty() || self.keeps_emptied_buffer() {
            return false;
        }
        self.buf = BytesMut::new();
        self.grew = false;
        true
    }

    /// Gives the buffer back if it is empty, whether or not this reader
    /// keeps an emptied one while busy: a parked session holds none (its
    /// next request takes a new one; see `frontend/session/park.rs`).
    pub fn release_parked(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.grew = false;
        }
    }

    /// Makes room, noting when the buffer grows past a first read's size.
    fn reserve(&mut self, additional: usize) {
        self.buf.reserve(additional);
        self.grew |= self.buf.capacity() > FIRST_READ;
    }

    /// Whether [`fill`] keeps the buffer once it is empty: a server
    /// reader's buffer that never grew past its first read.
    ///
    /// [`fill`]: FrameReader::fill
    fn keeps_emptied_buffer(&self) -> bool {
        self.keep_buffer && !self.grew
    }

    /// Takes the next complete frame out of the buffer, if there is one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, NetError> {
        let Some(total) = self.peek_frame()? else {
            return Ok(None);
        };
        Ok(Some(Frame {
            bytes: self.buf.split_to(total).freeze(),
        }))
    }

    /// The next complete frame, left in the buffer until [`consume`]d.
    ///
    /// # Performance
    /// The relay of server answers reads every message this way: copying a
    /// message on from the buffer costs less than cutting it out as shared
    /// [`Bytes`] (an atomic reference count per message).
    ///
    /// [`consume`]: FrameReader::consume
    pub fn peek(&mut self) -> Result<Option<FrameRef<'_>>, NetError> {
        Ok(self.peek_frame()?.map(|total| FrameRef {
            bytes: &self.buf[..total],
        }))
    }

    /// Drops the frame [`peek`](FrameReader::peek) returned.
    pub fn consume(&mut self, frame_len: usize) {
        self.buf.advance(frame_len);
    }

    /// The length of the next complete frame in the buffer, if there is one.
    fn peek_frame(&mut self) -> Result<Option<usize>, NetError> {
        let Some(&tag) = self.buf.first() else {
            return Ok(None);
        };
        if self.accept.is_some_and(|accept| !accept.contains(&tag)) {
            return Err(NetError::UnknownType(tag));
        }
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let length = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if length < 4 {
            return Err(NetError::BadLength {
                tag: tag as char,
                length: length.into(),
            });
        }
        let total = length as usize + 1;
        if total > self.limit {
            return Err(NetError::TooLarge {
                length: total,
                limit: self.limit,
            });
        }
        if self.buf.len() < total {
            self.reserve(total - self.buf.len());
            return Ok(None);
        }
        Ok(Some(total))
    }

    /// True when bytes are buffered that no frame has consumed yet.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Hands the buffered bytes to someone else (e.g. after startup, when the
    /// connection moves on with bytes the client already pipelined).
    pub fn take_buffered(&mut self) -> BytesMut {
        self.buf.split()
    }

    /// Puts bytes back at the front, as if they had been read now.
    pub fn prepend(&mut self, mut bytes: BytesMut) {
        bytes.unsplit(self.buf.split());
        self.buf = bytes;
    }

    /// Reads exactly one frame, waiting for more bytes as needed.
    pub async fn read_frame(&mut self, stream: &mut Stream) -> Result<Frame, NetError> {
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(frame);
            }
            self.fill(stream).await?;
        }
    }

    /// Discards `n` bytes (used after peeking at a startup packet).
    pub fn advance(&mut self, n: usize) {
        self.buf.advance(n);
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Appends bytes as if a [`fill`](FrameReader::fill) had read them:
    /// the fuzz targets' way in (`crate::fuzzing`), no socket needed.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader_with(bytes: &[u8], limit: usize) -> FrameReader {
        let mut r = FrameReader::new(limit);
        r.buf.extend_from_slice(bytes);
        r
    }

    #[test]
    fn cuts_complete_frames_and_waits_for_partial_ones() {
        let mut r = reader_with(b"Q\0\0\0\x0dselect 1\0S\0\0", 1024);
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!(f.tag(), b'Q');
        assert_eq!(f.body(), b"select 1\0");
        assert!(r.next_frame().unwrap().is_none());
        assert!(r.has_buffered());
    }

    #[test]
    fn rejects_lengths_below_four() {
        let mut r = reader_with(b"Q\0\0\0\x02", 1024);
        assert!(matches!(r.next_frame(), Err(NetError::BadLength { .. })));
        let mut r = reader_with(b"Q\xff\xff\xff\xff", 1024);
        assert!(matches!(r.next_frame(), Err(NetError::BadLength { .. })));
    }

    #[test]
    fn rejects_messages_over_the_limit_before_buffering_them() {
        let mut r = reader_with(b"Q\x00\x10\x00\x00", 1024);
        assert!(matches!(r.next_frame(), Err(NetError::TooLarge { .. })));
    }

    /// Server readers (and logged-in clients') keep an emptied buffer for
    /// the next answer unless a long answer grew it; client readers before
    /// the login never keep one (silent connections hold no buffer; a huge
    /// row is not pinned to a pooled connection).
    #[tokio::test]
    async fn emptied_buffers_are_kept_only_by_server_readers_and_only_small() {
        use tokio::io::AsyncWriteExt;
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let mut stream = Stream::Unix(a);
        let message = |len: usize| {
            let mut m = vec![b'D'];
            m.extend_from_slice(&(len as u32 + 4).to_be_bytes());
            m.resize(len + 5, b'x');
            m
        };
        async fn read_one(r: &mut FrameReader, stream: &mut Stream) -> usize {
            loop {
                if let Some(f) = r.peek().unwrap() {
                    let n = f.len();
                    r.consume(n);
                    return n;
                }
                r.fill(stream).await.unwrap();
            }
        }
        let mut server = FrameReader::new(1 << 30);
        let mut client = FrameReader::frontend(1 << 30);
        client.accept = None;
        let mut session = FrameReader::frontend(1 << 30);
        session.accept = None;
        session.keep_buffer();
        for (r, is_server) in [
            (&mut server, true),
            (&mut client, false),
            (&mut session, true),
        ] {
            b.write_all(&message(100)).await.unwrap();
            assert_eq!(read_one(r, &mut stream).await, 105);
            assert_eq!(r.keeps_emptied_buffer(), is_server, "after a short answer");
            b.write_all(&message(200_000)).await.unwrap();
            assert_eq!(read_one(r, &mut stream).await, 200_005);
            assert!(!r.keeps_emptied_buffer(), "after a long answer");
            b.write_all(&message(10)).await.unwrap();
            assert_eq!(read_one(r, &mut stream).await, 15);
            assert!(
                r.buf.capacity() <= FIRST_READ,
                "the grown buffer was given back: {} (server {is_server})",
                r.buf.capacity()
            );
            assert_eq!(r.keeps_emptied_buffer(), is_server, "short again");
        }
    }
}
