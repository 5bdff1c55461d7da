//! A new client connection up to its first ReadyForQuery: SSL/GSS
//! negotiation (TLS when configured), CancelRequest routing, the
//! StartupMessage, authentication, and the greeting with the parameters
//! Postgres reported for this client's settings. The whole of it runs under
//! `[client] login_timeout`, with messages capped at Postgres'
//! pre-authentication size until the client has authenticated.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::admission::Admitted;
use super::auth;
use super::error::FrontendError;
use super::session::{Login, Session};
use crate::backend::cancel::send_cancel;
use crate::backend::SessionParams;
use crate::config::{PoolMode, PRE_AUTH_MESSAGE_BYTES};
use crate::context::Context;
use crate::net::message::{self, Severity};
use crate::net::startup::{read_startup_packet, StartupPacket};
use crate::net::{FrameReader, NetError, Stream};

/// Serves one client connection from accept to close.
///
/// # Memory
/// This future is the client's task for its whole life, allocated once at
/// the size of its largest state (rounded up to tokio's 128-byte task
/// cells). Everything before the session — the wait for the first bytes,
/// the handshake, a refusal — runs in a box freed before the session
/// starts, so that an idle session's task holds the session's parked state
/// and little else (issue #20; see `session/park.rs`).
pub async fn serve_client(context: Arc<Context>, stream: Stream) {
    let login = Box::pin(log_in(context, stream));
    if let Some((admitted, session)) = login.await {
        session.run().await;
        // Counted against `max_client_conn` until the session has ended.
        drop(admitted);
    }
}

/// From accept to the first ReadyForQuery: the session and its place among
/// the open connections, or `None` when the connection ended (refused,
/// cancel request, failed login, timeout).
/// A connection that has sent nothing yet waits for readability before the
/// handshake's own box is taken.
async fn log_in(context: Arc<Context>, stream: Stream) -> Option<(Admitted, Box<Session>)> {
    let limits = context.config.load().client.clone();
    let admitted = Admitted::new(&context, limits.max_client_conn);
    // Until the client has authenticated, a message may not exceed what
    // Postgres accepts before authentication.
    let reader = FrameReader::frontend(PRE_AUTH_MESSAGE_BYTES);
    if admitted.over_limit {
        admitted.limit_hit("max_client_conn");
        let refusal = Box::pin(refuse_too_many(&context, stream, reader));
        let _ = tokio::time::timeout(limits.login_timeout, refusal).await;
        return None;
    }
    let deadline = tokio::time::Instant::now() + limits.login_timeout;
    let first = tokio::time::timeout_at(deadline, stream.first_bytes()).await;
    let peer = stream.peer();
    match first {
        Ok(Ok(())) => {
            // Pinned here, not moved into the timeout: on expiry the
            // connection is counted before it is closed (dropping `login`
            // closes it).
            let mut login = Box::pin(handshake(&context, stream, reader, peer.clone()));
            match tokio::time::timeout_at(deadline, &mut login).await {
                Ok(Ok(session)) => session.map(|session| (admitted, session)),
                Ok(Err(e)) => {
                    if matches!(e, FrontendError::Net(NetError::TooLarge { .. })) {
                        admitted.limit_hit("pre_auth_message");
                    }
                    tracing::debug!(%peer, error = %e, "client handshake ended");
                    None
                }
                Err(_) => {
                    login_timed_out(&admitted, &peer, limits.login_timeout);
                    drop(login);
                    None
                }
            }
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "client connection failed before its startup packet");
            None
        }
        Err(_) => {
            login_timed_out(&admitted, &peer, limits.login_timeout);
            drop(stream);
            None
        }
    }
}

/// As Postgres' authentication_timeout: the connection is closed (by the
/// caller, after this count).
fn login_timed_out(admitted: &Admitted, peer: &str, timeout: std::time::Duration) {
    admitted.limit_hit("login_timeout");
    tracing::debug!(%peer, ?timeout, "client did not log in in time");
}

/// Answers a client over `max_client_conn`: its startup packet is read (a
/// CancelRequest is routed) and it gets `53300`.
async fn refuse_too_many(context: &Arc<Context>, mut client: Stream, mut reader: FrameReader) {
    if let Ok(Some(_)) = read_startup(context, &mut client, &mut reader).await {
        let _: Result<(), _> = refuse(
            &mut client,
            "53300",
            "sorry, too many clients already (pgstash max_client_conn)",
        )
        .await;
    }
}

async fn handshake(
    context: &Arc<Context>,
    mut client: Stream,
    mut client_reader: FrameReader,
    client_address: String,
) -> Result<Option<Box<Session>>, FrontendError> {
    let Some((minor, params)) = read_startup(context, &mut client, &mut client_reader).await?
    else {
        return Ok(None);
    };
    let stream = &mut client;
    let reader = &mut client_reader;
    if context.config.load().tls.required && !matches!(stream, Stream::Tls(_)) {
        return refuse(stream, "28000", "pgstash requires TLS (sslmode=require)").await;
    }

    let unsupported: Vec<String> = params
        .keys()
        .filter(|k| k.starts_with("_pq_."))
        .cloned()
        .collect();
    if minor > 0 || !unsupported.is_empty() {
        let mut out = BytesMut::new();
        message::negotiate_protocol_version(&mut out, &unsupported);
        stream.write_all(&out).await.map_err(NetError::from)?;
    }
    let Some(user) = params.get("user").cloned() else {
        return refuse(
            stream,
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
        .await;
    };
    if params.contains_key("replication")
        && params.get("replication").map(String::as_str) != Some("false")
    {
        return refuse(
            stream,
            "0A000",
            "pgstash does not proxy replication connections",
        )
        .await;
    }
    let database = params
        .get("database")
        .cloned()
        .unwrap_or_else(|| user.clone());

    auth::authenticate(context, &user, &database, stream, reader).await?;
    reader.set_limit(context.config.load().max_message_bytes);

    let pool = context.pool(&database, &user);
    let settings = SessionParams::from_startup(&params);
    context.metrics.clients_waiting.inc();
    let acquired = pool.acquire().await;
    context.metrics.clients_waiting.dec();
    let mut server = match acquired {
        Ok(server) => server,
        Err(e) => {
            let _ = stream.write_all(&e.to_client(Severity::Fatal)).await;
            return Err(e.into());
        }
    };
    if let Some(sql) = settings.transition_sql(&server.applied) {
        if let Err(e) = server.run_internal(&sql).await {
            server.broken = true;
            let _ = stream.write_all(&e.to_client(Severity::Fatal)).await;
            return Err(e.into());
        }
        server.applied = settings.clone();
    }

    let mut out = BytesMut::with_capacity(512);
    message::auth_ok(&mut out);
    for (name, value) in &server.reported {
        message::parameter_status(&mut out, name, value);
    }
    // Session mode: the client's own server's pid (see `backend/cancel.rs`).
    let mode = context.config.load().pool.mode;
    let (key, slot) = match mode {
        PoolMode::Session => context.front.cancels.register_with_pid(server.pid),
        PoolMode::Transaction => context.front.cancels.register(),
    };
    message::backend_key_data(&mut out, key.0, key.1);
    message::ready_for_query(&mut out, b'I');
    if let Err(e) = stream.write_all(&out).await {
        context.front.cancels.unregister(key);
        return Err(NetError::from(e).into());
    }
    let held = (mode == PoolMode::Session).then_some(server);
    let login = Login {
        client,
        reader: client_reader,
        pool,
        user,
        database,
        settings,
        key,
        cancel: slot,
        server: held,
        mode,
        client_address,
    };
    Ok(Some(Box::new(Session::new(context.clone(), login))))
}

/// Reads startup packets until the StartupMessage: answers SSLRequest
/// (upgrading to TLS when configured) and GSSENCRequest, and routes a
/// CancelRequest (then there is no session: `None`).
async fn read_startup(
    context: &Arc<Context>,
    client: &mut Stream,
    reader: &mut FrameReader,
) -> Result<Option<(u16, BTreeMap<String, String>)>, FrontendError> {
    loop {
        let packet = match read_startup_packet(reader, client).await {
            Ok(packet) => packet,
            Err(NetError::Closed) => return Ok(None),
            Err(e) => {
                let text = format!("invalid startup packet: {e}");
                let _ = client
                    .write_all(&message::error_bytes(Severity::Fatal, "08P01", &text))
                    .await;
                return Err(e.into());
            }
        };
        match packet {
            StartupPacket::SslRequest => {
                let tls = context.front.tls.load_full();
                let Some(config) = tls.filter(|_| matches!(client, Stream::Tcp(_))) else {
                    client.write_all(b"N").await.map_err(NetError::from)?;
                    continue;
                };
                // Bytes sent before the handshake would be trusted as if they
                // had come over TLS: refuse them (as Postgres does).
                if reader.has_buffered() {
                    return refuse(
                        client,
                        "08P01",
                        "received unencrypted data after SSL request",
                    )
                    .await;
                }
                client.write_all(b"S").await.map_err(NetError::from)?;
                let placeholder =
                    Stream::Unix(tokio::net::UnixStream::pair().map_err(NetError::from)?.0);
                let Stream::Tcp(tcp) = std::mem::replace(client, placeholder) else {
                    return Ok(None);
                };
                match tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                    Ok(tls) => *client = Stream::Tls(Box::new(tls)),
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return Ok(None);
                    }
                }
            }
            StartupPacket::GssEncRequest => {
                client.write_all(b"N").await.map_err(NetError::from)?;
            }
            StartupPacket::Cancel { pid, secret } => {
                if let Some(target) = context.front.cancels.target((pid, secret)) {
                    let upstream = context.config.load().upstream.clone();
                    if let Err(e) = send_cancel(&upstream, target).await {
                        tracing::warn!(error = %e, "could not forward a cancel request");
                    }
                }
                return Ok(None);
            }
            StartupPacket::Startup { minor, params, .. } => return Ok(Some((minor, params))),
        }
    }
}

async fn refuse<T>(stream: &mut Stream, code: &str, text: &str) -> Result<T, FrontendError> {
    let _ = stream
        .write_all(&message::error_bytes(Severity::Fatal, code, text))
        .await;
    Err(FrontendError::Protocol(text.to_owned()))
}
