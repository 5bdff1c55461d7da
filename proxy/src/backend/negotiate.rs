//! The transport to the upstream Postgres, encrypted as its `sslmode` says
//! and negotiated the way libpq (17) does: every upstream connection comes
//! through here (pooled server connections, the replication stream,
//! control connections, cancel requests, the readiness probe).
//!
//! A TCP connection makes the attempts `SslMode::attempts` lists, in order:
//! - TLS with `sslnegotiation=postgres`: SSLRequest, then one byte. `S`:
//!   the handshake (exactly one byte was read, so nothing a man in the
//!   middle sent in plain text can pass for the server's). `N`: the next
//!   attempt goes on over the same connection when it is plain (`prefer`),
//!   otherwise "server does not support SSL, but SSL was required". `E` or
//!   anything else: an error, never a fallback;
//! - TLS with `sslnegotiation=direct`: the handshake at once, and Postgres
//!   must have picked ALPN `postgresql`;
//! - plain: nothing to negotiate.
//!
//! A failed handshake, and a login Postgres refuses during authentication
//! (say `no pg_hba.conf entry … no encryption` under `allow`), move on to
//! the next attempt on a new connection, as libpq's `CONNECTION_FAILED`
//! does; a refusal after authentication (the database does not exist) does
//! not. A Unix socket is always plain, whatever the mode (as in libpq).

use std::future::Future;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::error::BackendError;
use crate::config::{Encryption, SslNegotiation, Upstream, UpstreamHost, ALPN_POSTGRESQL};
use crate::net::Stream;

/// SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// An open transport to Postgres.
#[derive(Debug)]
pub struct Transport {
    pub stream: Stream,
    pub encryption: Encryption,
    /// Postgres already spoke on it: it answered the SSLRequest or finished
    /// a TLS handshake (a plain attempt has exchanged nothing yet).
    pub answered: bool,
}

/// Why a login over a transport failed.
#[derive(Debug)]
pub enum LoginError {
    /// Postgres refused during authentication: libpq tries the next
    /// attempt its sslmode allows.
    Refused(BackendError),
    /// Anything else ends the connection attempt.
    Failed(BackendError),
}

/// The attempts left for one connection.
#[derive(Debug)]
struct Attempts {
    left: &'static [Encryption],
}

impl Attempts {
    fn new(upstream: &Upstream) -> Attempts {
        Attempts {
            left: match upstream.host {
                UpstreamHost::Unix(_) => &[Encryption::Plain],
                UpstreamHost::Tcp(_) => upstream.tls.mode.attempts(),
            },
        }
    }

    fn next(&mut self) -> Option<Encryption> {
        let (first, rest) = self.left.split_first()?;
        self.left = rest;
        Some(*first)
    }

    fn more(&self) -> bool {
        !self.left.is_empty()
    }
}

/// Opens a transport (the first attempt that gets one), without logging in.
pub async fn open_stream(upstream: &Upstream) -> Result<Transport, BackendError> {
    open(upstream, &mut Attempts::new(upstream)).await
}

/// Opens a transport and runs `login` over it; when Postgres refuses the
/// login during authentication, the next attempt the sslmode allows.
pub async fn login<T, F, Fut>(upstream: &Upstream, mut login: F) -> Result<T, BackendError>
where
    F: FnMut(Transport) -> Fut,
    Fut: Future<Output = Result<T, LoginError>>,
{
    let mut attempts = Attempts::new(upstream);
    loop {
        let transport = open(upstream, &mut attempts).await?;
        let encryption = transport.encryption;
        match login(transport).await {
            Ok(done) => return Ok(done),
            Err(LoginError::Refused(e)) if attempts.more() => {
                tracing::debug!(upstream = %upstream.display, ?encryption, error = %e, "login refused; trying the next encryption sslmode allows");
            }
            Err(LoginError::Refused(e) | LoginError::Failed(e)) => return Err(e),
        }
    }
}

async fn open(upstream: &Upstream, attempts: &mut Attempts) -> Result<Transport, BackendError> {
    let host = match &upstream.host {
        UpstreamHost::Tcp(host) => host,
        UpstreamHost::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{}", upstream.port));
            attempts.next();
            return Ok(Transport {
                stream: Stream::Unix(UnixStream::connect(path).await?),
                encryption: Encryption::Plain,
                answered: false,
            });
        }
    };
    loop {
        let Some(encryption) = attempts.next() else {
            return Err(BackendError::Tls("no encryption left to try".into()));
        };
        let tcp = TcpStream::connect((host.as_str(), upstream.port)).await?;
        tcp.set_nodelay(true)?;
        if encryption == Encryption::Plain {
            return Ok(Transport {
                stream: Stream::Tcp(tcp),
                encryption,
                answered: false,
            });
        }
        match tls(upstream, host, tcp).await {
            Ok(stream) => {
                return Ok(Transport {
                    stream,
                    encryption,
                    answered: true,
                })
            }
            Err(Tls::Declined(tcp)) if attempts.left.first() == Some(&Encryption::Plain) => {
                attempts.next();
                return Ok(Transport {
                    stream: Stream::Tcp(tcp),
                    encryption: Encryption::Plain,
                    answered: true,
                });
            }
            Err(Tls::Declined(_)) => {
                return Err(BackendError::Tls(
                    "server does not support SSL, but SSL was required".into(),
                ))
            }
            Err(Tls::Handshake(e)) if attempts.more() => {
                tracing::debug!(upstream = %upstream.display, error = %e, "TLS failed; trying the next encryption sslmode allows");
            }
            Err(Tls::Handshake(e) | Tls::Failed(e)) => return Err(e),
        }
    }
}

/// How a TLS attempt ended, when it did not end encrypted.
enum Tls {
    /// Postgres answered the SSLRequest `N`: the connection is still good.
    Declined(TcpStream),
    /// The handshake failed (a new connection may try plain).
    Handshake(BackendError),
    Failed(BackendError),
}

async fn tls(upstream: &Upstream, host: &str, mut tcp: TcpStream) -> Result<Stream, Tls> {
    let Some(config) = upstream.tls.client_config() else {
        return Err(Tls::Failed(BackendError::Tls(
            "TLS is disabled (sslmode=disable)".into(),
        )));
    };
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        Tls::Failed(BackendError::Tls(format!(
            "{host:?} is not a name TLS can check: {e}"
        )))
    })?;
    let direct = upstream.tls.negotiation == SslNegotiation::Direct;
    if !direct {
        let io = |e: std::io::Error| Tls::Failed(e.into());
        tcp.write_all(&SSL_REQUEST).await.map_err(io)?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(io)?;
        match answer[0] {
            b'S' => {}
            b'N' => return Err(Tls::Declined(tcp)),
            b'E' => {
                return Err(Tls::Failed(BackendError::Tls(
                    "server sent an error response during SSL exchange".into(),
                )))
            }
            other => {
                return Err(Tls::Failed(BackendError::Tls(format!(
                    "received invalid response to SSL negotiation: {:?}",
                    other as char
                ))))
            }
        }
    }
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| Tls::Handshake(BackendError::Tls(format!("handshake with {host}: {e}"))))?;
    if direct && stream.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        return Err(Tls::Handshake(BackendError::Tls(
            "direct SSL connection was established without ALPN protocol negotiation extension"
                .into(),
        )));
    }
    Ok(Stream::UpstreamTls(Box::new(stream)))
}
