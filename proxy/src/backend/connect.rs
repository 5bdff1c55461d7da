//! Opening a server connection: the transport (`negotiate.rs`: TLS as
//! `sslmode` says), StartupMessage, authentication (trust, cleartext, md5,
//! SCRAM-SHA-256) and the greeting up to the first ReadyForQuery.
//!
//! The secret answering Postgres' challenge is the user's password from
//! `[[auth.users]]`; else what its clients proved at login
//! (`passthrough.rs`: a SCRAM ClientKey when Postgres' verifier has its
//! salt, an md5 hash); else the upstream URL's password (`context.rs`
//! builds the [`ConnectTarget`] so). Lacking all, the login fails with a
//! clear error, never with an empty password.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::md5_hash;

use super::error::BackendError;
use super::negotiate::{self, LoginError};
use super::params::SessionParams;
use super::passthrough::{PassThrough, Proven};
use super::server::{ServerConn, UPSTREAM_FRAME_LIMIT};
use crate::config::Upstream;
use crate::net::body::Body;
use crate::net::message::{self, ftag, tag};
use crate::net::{FrameReader, Stream};
use crate::scram::client::{Challenge, ClientFinal, ClientFirst};
use crate::scram::{ClientKeys, MECHANISM};

/// Who to log in as, and where.
#[derive(Debug, Clone)]
pub struct ConnectTarget {
    pub upstream: Upstream,
    pub database: String,
    pub user: String,
    pub password: Option<String>,
    /// Where the secrets clients proved are kept, for users pgstash logs
    /// in as by pass-through (none for its own logins).
    pub pass_through: Option<Arc<PassThrough>>,
}

impl ConnectTarget {
    /// What a client of this user proved, if anything.
    fn proven(&self) -> Option<Arc<Proven>> {
        self.pass_through.as_ref()?.get(&self.user)
    }

    /// The error for a challenge pgstash has no secret for.
    fn lacking(&self, asks: &'static str) -> BackendError {
        let Some(store) = &self.pass_through else {
            return BackendError::NoPassword(self.user.clone());
        };
        let lacks = match store.get(&self.user).as_deref() {
            None => "has no password for it, and no client has logged in as it yet to pass its key through",
            Some(Proven::Scram(_)) if asks == "SCRAM" => {
                "has no password for it, and the SCRAM verifier its clients log in against is not \
                 Postgres' (another salt or iteration count: copy it from pg_authid, or use auth_query)"
            }
            Some(Proven::Scram(_)) => "has only its SCRAM key, no password",
            Some(Proven::Md5(_)) => "has only its md5 hash, no password",
        };
        BackendError::NoSecret {
            user: self.user.clone(),
            asks,
            lacks,
        }
    }

    /// The SCRAM keys answering `challenge`.
    fn scram_keys(&self, challenge: &Challenge) -> Result<ClientKeys, BackendError> {
        if let Some(Proven::Scram(keys)) = self.proven().as_deref() {
            if keys.salt == challenge.salt && keys.iterations == challenge.iterations {
                return Ok(keys.clone());
            }
        }
        match &self.password {
            Some(password) => Ok(ClientKeys::from_password(
                password,
                &challenge.salt,
                challenge.iterations,
            )),
            None => Err(self.lacking("SCRAM")),
        }
    }

    /// The answer to an md5 challenge with `salt`.
    fn md5_answer(&self, salt: [u8; 4]) -> Result<String, BackendError> {
        if let Some(Proven::Md5(hash)) = self.proven().as_deref() {
            return Ok(hash.answer(salt));
        }
        match &self.password {
            Some(password) => Ok(md5_hash(self.user.as_bytes(), password.as_bytes(), salt)),
            None => Err(self.lacking("md5")),
        }
    }
}

/// Where a SASL exchange with Postgres stands.
enum Sasl {
    Started(ClientFirst),
    Answered(ClientFinal),
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
        prepared: Default::default(),
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
    let mut exchange = AuthExchange::new(target);
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
/// time: cleartext, md5 and SCRAM-SHA-256 (with the target's password or,
/// by pass-through, the keys a client proved). Kept apart from the socket
/// so that every request a server can send is decoded here, and fuzzed as
/// such (`crate::fuzzing`).
pub(crate) struct AuthExchange<'a> {
    target: &'a ConnectTarget,
    sasl: Option<Sasl>,
}

impl<'a> AuthExchange<'a> {
    pub(crate) fn new(target: &'a ConnectTarget) -> AuthExchange<'a> {
        AuthExchange { target, sasl: None }
    }

    /// Answers one Authentication message body.
    pub(crate) fn answer(&mut self, body: &[u8]) -> Result<AuthStep, BackendError> {
        let target = self.target;
        let mut body = Body::new(body, "Authentication");
        let mut out = BytesMut::new();
        match body.i32()? {
            0 => return Ok(AuthStep::Done),
            3 => {
                let password = target
                    .password
                    .as_deref()
                    .ok_or_else(|| target.lacking("a clear-text password"))?;
                let mut pw = password.as_bytes().to_vec();
                pw.push(0);
                message::frontend(&mut out, ftag::PASSWORD, &pw);
            }
            5 => {
                let salt = body.take(4)?;
                let mut pw = target
                    .md5_answer([salt[0], salt[1], salt[2], salt[3]])?
                    .into_bytes();
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
                if !offered.iter().any(|m| m == MECHANISM) {
                    return Err(BackendError::Scram(format!(
                        "server offers only {offered:?}"
                    )));
                }
                let client = ClientFirst::new();
                let first = client.message();
                let mut payload = BytesMut::new();
                payload.put_slice(MECHANISM.as_bytes());
                payload.put_u8(0);
                payload.put_i32(first.len() as i32);
                payload.put_slice(first.as_bytes());
                message::frontend(&mut out, ftag::PASSWORD, &payload);
                self.sasl = Some(Sasl::Started(client));
            }
            11 => {
                let Some(Sasl::Started(client)) = self.sasl.take() else {
                    return Err(BackendError::Scram("SASLContinue out of turn".into()));
                };
                let challenge = client
                    .challenge(body.rest())
                    .map_err(|e| BackendError::Scram(e.to_string()))?;
                let keys = target.scram_keys(&challenge)?;
                let (answer, last) = client.respond(&challenge, &keys);
                message::frontend(&mut out, ftag::PASSWORD, answer.as_bytes());
                self.sasl = Some(Sasl::Answered(last));
            }
            12 => {
                let Some(Sasl::Answered(last)) = self.sasl.take() else {
                    return Err(BackendError::Scram("SASLFinal out of turn".into()));
                };
                last.verify(body.rest())
                    .map_err(|e| BackendError::Scram(e.to_string()))?;
                return Ok(AuthStep::Wait);
            }
            other => return Err(BackendError::UnsupportedAuth(other)),
        }
        Ok(AuthStep::Send(out))
    }
}
