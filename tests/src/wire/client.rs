//! A raw protocol-3 client on a bare `TcpStream`.
//!
//! Unlike `tokio-postgres`, it sends exactly the messages a test asks for (in
//! any order, pipelined, malformed if wanted) and returns every backend message
//! with its original bytes, so tests can compare what pgstash relays with what
//! Postgres sends. Outgoing messages are queued with [`RawClient::push`] and
//! written by [`RawClient::send`], which is how pipelining is expressed.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::backend::BackendMessage;
use super::frontend::{password_message, startup_message, Frontend};

/// How long a read waits by default before giving up with [`WireError::Timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong talking to a server. Variants that happen
/// mid-read carry the messages received before the failure, so a test
/// failure shows how far the exchange got.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {after:?}; received so far: {received:#?}")]
    Timeout {
        after: Duration,
        received: Vec<BackendMessage>,
    },
    #[error("connection closed by the server; received so far: {received:#?}")]
    Closed { received: Vec<BackendMessage> },
    #[error("server sent an error during startup: {0:?}")]
    Startup(BackendMessage),
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
}

/// What to send in the StartupMessage and how to answer authentication.
#[derive(Debug, Clone, Default)]
pub struct Startup {
    pub user: String,
    pub database: String,
    /// Extra startup parameters (`application_name`, `TimeZone`, …).
    pub params: Vec<(String, String)>,
    /// Answer to cleartext, md5 and SCRAM-SHA-256 requests.
    pub password: Option<String>,
}

impl Startup {
    pub fn new(user: &str, database: &str) -> Startup {
        Startup {
            user: user.into(),
            database: database.into(),
            ..Startup::default()
        }
    }

    pub fn param(mut self, name: &str, value: &str) -> Startup {
        self.params.push((name.into(), value.into()));
        self
    }

    pub fn password(mut self, password: &str) -> Startup {
        self.password = Some(password.into());
        self
    }
}

/// How a connection ended in [`RawClient::read_to_end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The server closed the connection (EOF or reset).
    Closed,
    /// Still open when the timeout ran out.
    StillOpen,
}

/// A connection speaking raw protocol 3.
pub struct RawClient {
    stream: TcpStream,
    read_buf: BytesMut,
    out: BytesMut,
    /// Deadline of each `read_*` call.
    pub timeout: Duration,
    startup: Vec<BackendMessage>,
}

impl RawClient {
    /// Opens a TCP connection without sending anything.
    pub async fn connect_tcp(addr: SocketAddr) -> Result<RawClient, WireError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RawClient {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            out: BytesMut::new(),
            timeout: DEFAULT_TIMEOUT,
            startup: Vec::new(),
        })
    }

    /// Connects and logs in as `user` to `database` (trust authentication).
    pub async fn connect(
        addr: SocketAddr,
        user: &str,
        database: &str,
    ) -> Result<RawClient, WireError> {
        Self::connect_with(addr, Startup::new(user, database)).await
    }

    /// Connects, sends the StartupMessage, authenticates, and reads up to the
    /// first ReadyForQuery. The messages read are kept in [`Self::startup_messages`].
    pub async fn connect_with(addr: SocketAddr, startup: Startup) -> Result<RawClient, WireError> {
        let mut client = Self::connect_tcp(addr).await?;
        client.startup(&startup).await?;
        Ok(client)
    }

    /// Messages received between the StartupMessage and the first
    /// ReadyForQuery (Authentication*, ParameterStatus, BackendKeyData, …).
    pub fn startup_messages(&self) -> &[BackendMessage] {
        &self.startup
    }

    /// A ParameterStatus value reported during startup.
    pub fn parameter(&self, name: &str) -> Option<String> {
        self.startup
            .iter()
            .filter_map(BackendMessage::parameter_status)
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// (process id, secret key) from BackendKeyData.
    pub fn backend_key(&self) -> Option<(i32, i32)> {
        let m = self.startup.iter().find(|m| m.tag == b'K')?;
        let mut body = &m.body[..];
        (body.len() == 8).then(|| (body.get_i32(), body.get_i32()))
    }

    async fn authenticate(&mut self, startup: &Startup) -> Result<(), WireError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = self.read_message().await?;
            let password = || -> Result<&[u8], WireError> {
                startup
                    .password
                    .as_deref()
                    .map(str::as_bytes)
                    .ok_or_else(|| {
                        WireError::Protocol("server asked for a password; none given".into())
                    })
            };
            match msg.tag {
                b'E' => return Err(WireError::Startup(msg)),
                b'R' => {
                    let mut body = &msg.body[..];
                    if body.len() < 4 {
                        return Err(WireError::Protocol(format!(
                            "short Authentication message {msg:?}"
                        )));
                    }
                    let code = body.get_i32();
                    match code {
                        0 => {}
                        3 => {
                            let mut b = password()?.to_vec();
                            b.push(0);
                            self.send_bytes(&password_message(&b)).await?;
                        }
                        5 => {
                            let salt: [u8; 4] = body
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| {
                                    WireError::Protocol("md5 request without salt".into())
                                })?;
                            let mut b =
                                md5_hash(startup.user.as_bytes(), password()?, salt).into_bytes();
                            b.push(0);
                            self.send_bytes(&password_message(&b)).await?;
                        }
                        10 => {
                            let offered = String::from_utf8_lossy(body);
                            if !offered.split('\0').any(|m| m == SCRAM_SHA_256) {
                                return Err(WireError::Protocol(format!(
                                    "no SCRAM-SHA-256 in {offered:?}"
                                )));
                            }
                            let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
                            let mut b = BytesMut::new();
                            super::frontend::put_cstr(&mut b, SCRAM_SHA_256);
                            b.extend_from_slice(&(s.message().len() as i32).to_be_bytes());
                            b.extend_from_slice(s.message());
                            self.send_bytes(&password_message(&b)).await?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                WireError::Protocol("SASLContinue before SASL".into())
                            })?;
                            s.update(body)
                                .map_err(|e| WireError::Protocol(e.to_string()))?;
                            let reply = s.message().to_vec();
                            self.send_bytes(&password_message(&reply)).await?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                WireError::Protocol("SASLFinal before SASL".into())
                            })?;
                            s.finish(body)
                                .map_err(|e| WireError::Protocol(e.to_string()))?;
                        }
                        other => {
                            return Err(WireError::Protocol(format!(
                                "unsupported authentication request {other}"
                            )))
                        }
                    }
                    self.startup.push(msg);
                }
                b'Z' => {
                    self.startup.push(msg);
                    return Ok(());
                }
                _ => self.startup.push(msg),
            }
        }
    }

    /// Queues one message; nothing is written until [`Self::send`].
    pub fn push(&mut self, msg: &Frontend) -> &mut Self {
        msg.encode(&mut self.out);
        self
    }

    /// Queues several messages.
    pub fn push_all<'a>(&mut self, msgs: impl IntoIterator<Item = &'a Frontend>) -> &mut Self {
        for m in msgs {
            self.push(m);
        }
        self
    }

    /// Writes everything queued, in one write (a pipeline).
    pub async fn send(&mut self) -> Result<(), WireError> {
        let out = self.out.split();
        self.send_bytes(&out).await
    }

    /// Writes bytes immediately, bypassing the queue.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends a simple Query and reads up to its ReadyForQuery.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<BackendMessage>, WireError> {
        self.push(&Frontend::query(sql)).send().await?;
        self.read_until_ready(1).await
    }

    /// Reads one message, waiting at most `self.timeout`.
    pub async fn read_message(&mut self) -> Result<BackendMessage, WireError> {
        let deadline = Instant::now() + self.timeout;
        self.read_message_by(deadline).await
    }

    /// Reads messages until `n` ReadyForQuery have arrived (inclusive).
    pub async fn read_until_ready(&mut self, n: usize) -> Result<Vec<BackendMessage>, WireError> {
        let mut seen = 0;
        self.read_until(|m| {
            if m.is_ready() {
                seen += 1;
            }
            seen >= n
        })
        .await
    }

    /// Reads messages until one satisfies `stop` (inclusive).
    pub async fn read_until(
        &mut self,
        mut stop: impl FnMut(&BackendMessage) -> bool,
    ) -> Result<Vec<BackendMessage>, WireError> {
        let deadline = Instant::now() + self.timeout;
        let mut received = Vec::new();
        loop {
            match self.read_message_by(deadline).await {
                Ok(m) => {
                    let done = stop(&m);
                    received.push(m);
                    if done {
                        return Ok(received);
                    }
                }
                Err(WireError::Timeout { after, .. }) => {
                    return Err(WireError::Timeout { after, received })
                }
                Err(WireError::Closed { .. }) => return Err(WireError::Closed { received }),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until the server closes the connection or `wait` runs out.
    /// A reset counts as closed; whatever arrived before is returned.
    pub async fn read_to_end(&mut self, wait: Duration) -> (Vec<BackendMessage>, Ending) {
        let deadline = Instant::now() + wait;
        let mut received = Vec::new();
        loop {
            match self.read_message_by(deadline).await {
                Ok(m) => received.push(m),
                Err(WireError::Timeout { .. }) => return (received, Ending::StillOpen),
                Err(_) => return (received, Ending::Closed),
            }
        }
    }

    async fn read_message_by(&mut self, deadline: Instant) -> Result<BackendMessage, WireError> {
        loop {
            if let Some(m) = self.decode()? {
                return Ok(m);
            }
            let read =
                tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read_buf)).await;
            match read {
                Err(_) => {
                    return Err(WireError::Timeout {
                        after: self.timeout,
                        received: vec![],
                    })
                }
                Ok(Ok(0)) => return Err(WireError::Closed { received: vec![] }),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    fn decode(&mut self) -> Result<Option<BackendMessage>, WireError> {
        if self.read_buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.read_buf[0];
        let len = i32::from_be_bytes(self.read_buf[1..5].try_into().expect("4 bytes"));
        if len < 4 {
            return Err(WireError::Protocol(format!(
                "message '{}' with length {len}",
                tag as char
            )));
        }
        let total = 1 + len as usize;
        if self.read_buf.len() < total {
            self.read_buf.reserve(total - self.read_buf.len());
            return Ok(None);
        }
        let mut frame = self.read_buf.split_to(total);
        frame.advance(5);
        Ok(Some(BackendMessage::new(tag, frame.freeze())))
    }

    /// Reads one byte that is not a message (the answer to an SSLRequest).
    pub async fn read_byte(&mut self) -> Result<u8, WireError> {
        if !self.read_buf.is_empty() {
            return Ok(self.read_buf.split_to(1)[0]);
        }
        match tokio::time::timeout(self.timeout, self.stream.read_u8()).await {
            Err(_) => Err(WireError::Timeout {
                after: self.timeout,
                received: vec![],
            }),
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(WireError::Closed { received: vec![] })
            }
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Logs in on a connection opened with [`Self::connect_tcp`] (after an
    /// SSLRequest was declined, say).
    pub async fn startup(&mut self, startup: &Startup) -> Result<(), WireError> {
        let mut params = vec![
            ("user".to_owned(), startup.user.clone()),
            ("database".to_owned(), startup.database.clone()),
        ];
        params.extend(startup.params.iter().cloned());
        self.send_bytes(&startup_message(&params)).await?;
        self.authenticate(startup).await
    }

    /// Sends Terminate and closes the socket.
    pub async fn terminate(mut self) {
        let _ = self.push(&Frontend::Terminate).send().await;
        let _ = self.stream.shutdown().await;
    }
}

/// The text rows of all DataRows in `messages`.
pub fn text_rows(messages: &[BackendMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(BackendMessage::text_row)
        .collect()
}

/// The first ErrorResponse in `messages`, if any.
pub fn first_error(messages: &[BackendMessage]) -> Option<&BackendMessage> {
    messages.iter().find(|m| m.is_error())
}
