//! One type for the transports pgstash speaks on: TCP and Unix sockets, and
//! TLS over TCP in both directions (clients to pgstash, pgstash to Postgres).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::{client, server};

/// A connected socket, client-side or upstream.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A client connection after SSLRequest.
    Tls(Box<server::TlsStream<TcpStream>>),
    /// An upstream connection that negotiated TLS.
    UpstreamTls(Box<client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Reads whatever is already buffered in the kernel without waiting.
    ///
    /// Used to check that an idle pooled connection is still healthy: a
    /// server that closed it has left an error message or an EOF behind.
    /// On a TLS connection the socket is only peeked (the bytes are
    /// rustls'): any record there, an alert or an encrypted error, is news.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read(buf),
            Stream::Unix(s) => s.try_read(buf),
            Stream::UpstreamTls(s) => {
                let mut peeked = [MaybeUninit::<u8>::uninit(); 1];
                socket2::SockRef::from(s.get_ref().0).peek(&mut peeked)
            }
            // Client connections are never probed.
            Stream::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Waits until the socket has something to read, without a buffer
    /// (see [`Stream::poll_readable`]).
    ///
    /// # Cancellation safety
    /// Safe: readiness is not consumed by a cancelled wait.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_readable(cx)).await
    }

    /// Whether the socket has something to read, without a buffer. A
    /// client's TLS stream looks at its socket only when rustls holds no
    /// decrypted bytes (`wants_read`); an upstream TLS stream is always
    /// ready. Polled, not awaited: the waiting takes no room in the
    /// caller's future (the one reader's waker slot of the socket), which
    /// is what an idle session's task is made of (`session/park.rs`).
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            Stream::Tls(s) => {
                let (tcp, tls) = s.get_ref();
                if tls.wants_read() {
                    tcp.poll_read_ready(cx)
                } else {
                    Poll::Ready(Ok(()))
                }
            }
            Stream::UpstreamTls(_) => Poll::Ready(Ok(())),
        }
    }

    /// Waits until the peer has sent something or closed, checked with a
    /// one-byte peek: a fresh socket's first readiness may come before
    /// any byte (seen right after accept), and a connection that sends
    /// nothing must wait here, not in a handshake's state. One system call
    /// more than [`Stream::readable`]: for a connection's first bytes only.
    ///
    /// # Cancellation safety
    /// Safe: nothing is consumed.
    pub async fn first_bytes(&self) -> io::Result<()> {
        // Polled by hand: an awaited peek's state (~240 bytes) would be
        // part of every silent connection's.
        std::future::poll_fn(|cx| self.poll_first_bytes(cx)).await
    }

    fn poll_first_bytes(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Tcp(s) => {
                let mut byte = [MaybeUninit::<u8>::uninit(); 1];
                let mut peeked = ReadBuf::uninit(&mut byte);
                s.poll_peek(cx, &mut peeked).map_ok(|_| ())
            }
            Stream::Unix(s) => loop {
                std::task::ready!(s.poll_read_ready(cx))?;
                let peeked = s.try_io(tokio::io::Interest::READABLE, || {
                    let mut byte = [MaybeUninit::<u8>::uninit(); 1];
                    socket2::SockRef::from(s).peek(&mut byte)
                });
                match peeked {
                    Ok(_) => return Poll::Ready(Ok(())),
                    // Readiness cleared: polled again, the socket registers
                    // the waker.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Stream::Tls(_) | Stream::UpstreamTls(_) => self.poll_readable(cx),
        }
    }

    /// A printable peer address for logs.
    pub fn peer(&self) -> String {
        match self {
            Stream::Tcp(s) => s
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "unknown".into()),
            Stream::Unix(_) => "unix".into(),
            Stream::Tls(s) => s
                .get_ref()
                .0
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "unknown".into()),
            Stream::UpstreamTls(s) => s
                .get_ref()
                .0
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "unknown".into()),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::UpstreamTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::UpstreamTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::UpstreamTls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::UpstreamTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::UpstreamTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
