//! Opening one of the store's own connections: TCP, TLS when the URL is
//! `rediss://` (pgstash's TLS client, as fred is given it), then the login
//! the URL asks for (`AUTH`, `SELECT`; else a `PING`), before the
//! connection is shared.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::super::wire::{self, Reply};
use super::Endpoint;

/// A connection, logged in.
pub enum Dialed {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Opens a connection to `endpoint` and logs in as its URL says.
pub async fn dial(endpoint: &Endpoint) -> io::Result<Dialed> {
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
    tcp.set_nodelay(true)?;
    match &endpoint.tls {
        None => {
            let mut tcp = tcp;
            login(&mut tcp, endpoint).await?;
            Ok(Dialed::Plain(tcp))
        }
        Some(config) => {
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            let mut tls = connector.connect(name, tcp).await?;
            login(&mut tls, endpoint).await?;
            Ok(Dialed::Tls(Box::new(tls)))
        }
    }
}

async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    endpoint: &Endpoint,
) -> io::Result<()> {
    if let Some(password) = &endpoint.password {
        match &endpoint.username {
            Some(user) => {
                let auth: [&[u8]; 3] = [b"AUTH", user.as_bytes(), password.as_bytes()];
                handshake(stream, &auth).await?
            }
            None => handshake(stream, &[b"AUTH", password.as_bytes()]).await?,
        }
    }
    if let Some(db) = endpoint.database {
        handshake(stream, &[b"SELECT", db.to_string().as_bytes()]).await?;
    }
    if endpoint.password.is_none() && endpoint.database.is_none() {
        // One reply before the connection is shared: what Redis says to a
        // client it will not serve (`maxclients`, protected mode) ends the
        // dial, not a caller's call.
        handshake(stream, &[b"PING"]).await?;
    }
    Ok(())
}

/// One command and its reply.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    args: &[&[u8]],
) -> io::Result<()> {
    let mut out = BytesMut::new();
    wire::encode(&mut out, args);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if let Some(reply) = wire::parse(&mut buf).map_err(io::Error::other)? {
            return match reply {
                Reply::Value(_) => Ok(()),
                Reply::Error(text) => Err(io::Error::other(format!(
                    "{}: {text}",
                    String::from_utf8_lossy(args[0])
                ))),
            };
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed by redis",
            ));
        }
    }
}
