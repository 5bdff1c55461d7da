//! Opening a server connection: the transport (`negotiate.rs`: TLS as
//! `sslmode` says), StartupMessage, authentication (trust, cleartext, md5,
//! SCRAM-SHA-256) and the greeting up to the first ReadyForQuery.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use super::error::BackendError;
use super::negotiate::{self, LoginError};
use super::params::SessionParams;
use super::server::{ServerConn, UPSTREAM_FRAME_LIMIT};
use crate::config::Upstream;
use crate::net::frame::Body;
use crate::net::message::{self, ftag, tag};
use crate::net::{FrameReader, Stream};

/// Who to log in as, and where.
#[derive(Debug, Clone)]
pub struct ConnectTarget {
    pub upstream: Upstream,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
}

/// Connects and logs in. The connection is at its first ReadyForQuery.
pub async fn connect(target: &ConnectTarget) -> Result<ServerConn, BackendError> {
    connect_with(target, &[]).await
}

/// [`connect`] with more startup parameters (e.g. `replication`).
pub async fn connect_with(
    target: &ConnectTarget,
    options: &[(&str, &str)],
) -> Result<ServerConn, BackendError> {
    negotiate::login(&target.upstream, |transport| {
        log_in(transport.stream, target, options)
    })
    .await
}

/// Logs in over `stream`. Postgres' refusal during authentication is
/// [`LoginError::Refused`] (another encryption may be tried); any error
/// after it ends the attempt.
async fn log_in(
    stream: Stream,
    target: &ConnectTarget,
    options: &[(&str, &str)],
) -> Result<ServerConn, LoginError> {
    let mut conn = ServerConn {
        stream,
        reader: FrameReader::new(UPSTREAM_FRAME_LIMIT),
        reported: BTreeMap::new(),
        pid: 0,
        secret: 0,
        user: target.user.clone(),
        prepared: HashSet::new(),
        applied: SessionParams::default(),
        status: b'I',
        broken: false,
        created: Instant::now(),
        last_used: Instant::now(),
    };
    conn.send(&startup_message(&target.user, &target.database, options))
        .await
        .map_err(LoginError::Failed)?;
    authenticate(&mut conn, target).await.map_err(|e| match e {
        BackendError::Server { .. } => LoginError::Refused(e),
        other => LoginError::Failed(other),
    })?;
    greeting(&mut conn).await.map_err(LoginError::Failed)?;
    Ok(conn)
}

/// ParameterStatus and BackendKeyData up to the first ReadyForQuery.
async fn greeting(conn: &mut ServerConn) -> Result<(), BackendError> {
    loop {
        let frame = conn.read_frame().await?;
        match frame.tag() {
            tag::PARAMETER_STATUS => {
                conn.note_parameter_status(frame.body());
            }
            tag::BACKEND_KEY_DATA => {
                let mut body = Body::new(frame.body(), "BackendKeyData");
                conn.pid = body.i32()?;
                conn.secret = body.i32()?;
            }
            tag::READY_FOR_QUERY => {
                conn.status = frame.body().first().copied().unwrap_or(b'I');
                return Ok(());
            }
            tag::ERROR_RESPONSE => return Err(BackendError::from_error_frame(frame.into_bytes())),
            tag::NOTICE_RESPONSE | b'v' => {}
            other => {
                return Err(BackendError::Unexpected {
                    tag: other as char,
                    during: "startup",
                })
            }
        }
    }
}

fn startup_message(user: &str, database: &str, options: &[(&str, &str)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(196608);
    let fixed = [("user", user), ("database", database)];
    for (k, v) in fixed.iter().chain(options) {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
    out
}

/// The authentication exchange; an ErrorResponse in it is returned as
/// [`BackendError::Server`].
async fn authenticate(conn: &mut ServerConn, target: &ConnectTarget) -> Result<(), BackendError> {
    let mut exchange = AuthExchange::new(&target.user, target.password.as_deref());
    loop {
        let frame = conn.read_frame().await?;
        match frame.tag() {
            tag::AUTHENTICATION => {}
            tag::ERROR_RESPONSE => return Err(BackendError::from_error_frame(frame.into_bytes())),
            other => {
                return Err(BackendError::Unexpected {
                    tag: other as char,
                    during: "authentication",
                })
            }
        }
        match exchange.answer(frame.body())? {
            AuthStep::Done => return Ok(()),
            AuthStep::Send(out) => conn.send(&out).await?,
            AuthStep::Wait => {}
        }
    }
}

/// What to do after an authentication request.
#[derive(Debug)]
pub(crate) enum AuthStep {
    /// AuthenticationOk: logged in.
    Done,
    /// Send this answer and wait for the next request.
    Send(BytesMut),
    /// Nothing to send (the server's SCRAM signature checked out); the next
    /// request follows.
    Wait,
}

/// The client side of the upstream login, one Authentication request at a
/// time: cleartext, md5 and SCRAM-SHA-256 (postgres-protocol's client).
/// Kept apart from the socket so that every request a server can send is
/// decoded here, and fuzzed as such (`crate::fuzzing`).
pub(crate) struct AuthExchange<'a> {
    user: &'a str,
    password: Option<&'a str>,
    scram: Option<ScramSha256>,
}

impl<'a> AuthExchange<'a> {
    pub(crate) fn new(user: &'a str, password: Option<&'a str>) -> AuthExchange<'a> {
        AuthExchange {
            user,
            password,
            scram: None,
        }
    }

    fn password(&self) -> Result<&'a str, BackendError> {
        self.password
            .ok_or_else(|| BackendError::NoPassword(self.user.to_owned()))
    }

    /// Answers one Authentication message body.
    pub(crate) fn answer(&mut self, body: &[u8]) -> Result<AuthStep, BackendError> {
        let mut body = Body::new(body, "Authentication");
        let mut out = BytesMut::new();
        match body.i32()? {
            0 => return Ok(AuthStep::Done),
            3 => {
                let mut pw = self.password()?.as_bytes().to_vec();
                pw.push(0);
                message::frontend(&mut out, ftag::PASSWORD, &pw);
            }
            5 => {
                let salt = body.take(4)?;
                let hash = md5_hash(
                    self.user.as_bytes(),
                    self.password()?.as_bytes(),
                    [salt[0], salt[1], salt[2], salt[3]],
                );
                let mut pw = hash.into_bytes();
                pw.push(0);
                message::frontend(&mut out, ftag::PASSWORD, &pw);
            }
            10 => {
                let mut offered = Vec::new();
                while let Ok(m) = body.string() {
                    if m.is_empty() {
                        break;
                    }
                    offered.push(m.to_owned());
                }
                if !offered.iter().any(|m| m == "SCRAM-SHA-256") {
                    return Err(BackendError::Scram(format!(
                        "server offers only {offered:?}"
                    )));
                }
                let client =
                    ScramSha256::new(self.password()?.as_bytes(), ChannelBinding::unsupported());
                let first = client.message().to_vec();
                let mut payload = BytesMut::new();
                payload.put_slice(b"SCRAM-SHA-256\0");
                payload.put_i32(first.len() as i32);
                payload.put_slice(&first);
                message::frontend(&mut out, ftag::PASSWORD, &payload);
                self.scram = Some(client);
            }
            11 => {
                let client = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| BackendError::Scram("SASLContinue before SASL".into()))?;
                client
                    .update(body.rest())
                    .map_err(|e| BackendError::Scram(e.to_string()))?;
                message::frontend(&mut out, ftag::PASSWORD, client.message());
            }
            12 => {
                let client = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| BackendError::Scram("SASLFinal before SASL".into()))?;
                client
                    .finish(body.rest())
                    .map_err(|e| BackendError::Scram(e.to_string()))?;
                return Ok(AuthStep::Wait);
            }
            other => return Err(BackendError::UnsupportedAuth(other)),
        }
        Ok(AuthStep::Send(out))
    }
}
