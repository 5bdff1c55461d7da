//! Client authentication: trust, md5 and SCRAM-SHA-256, against the users
//! of the configuration (resolved in `config/users.rs`) or, for a user it
//! does not list, the secret Postgres stores (`auth_query.rs`). A wrong
//! password, an unknown user and a user without a usable secret all get
//! Postgres' own error (`28P01 password authentication failed`), after an
//! exchange that looks the same (made-up SCRAM keys, a fresh md5 salt).
//!
//! The SCRAM exchange is pgstash's own (`scram/server.rs`): when the
//! verifier is Postgres' (from `auth_query`, or a configured
//! `scram_verifier` without a password), the ClientKey it recovers from
//! the client's proof is kept (`backend/passthrough.rs`) and logs pgstash
//! in upstream as that user. So does an md5 hash from `auth_query`. As in
//! Postgres, `md5` with a SCRAM verifier runs SCRAM, and `scram-sha-256`
//! with an md5 hash fails.

use bytes::BytesMut;
use pgwire::api::auth::md5pass::hash_md5_password;

use super::auth_query::Stored;
use super::error::FrontendError;
use crate::backend::passthrough::Proven;
use crate::config::{AuthMethod, ScramKeys};
use crate::context::Context;
use crate::net::body::Body;
use crate::net::message::{self, ftag, Severity};
use crate::net::{FrameReader, NetError, Stream};
use crate::scram::{self, MECHANISM};
use tokio::io::AsyncWriteExt;

/// What a client is checked against.
enum Known {
    /// A configured password (md5; SCRAM uses the keys derived from it).
    Password(String),
    /// A SCRAM verifier; `pass_through`: it is Postgres' own, and no
    /// password is configured, so the client's key logs in upstream.
    Verifier { keys: ScramKeys, pass_through: bool },
    /// Postgres' md5 hash, from `auth_query`.
    Md5(crate::backend::passthrough::Md5Hash),
    /// Nothing: the login fails whatever the client sends.
    Nothing,
}

/// Runs the authentication exchange with a client. On success nothing has
/// been written yet for AuthenticationOk (the caller sends it once the
/// upstream accepted the login too).
pub async fn authenticate(
    context: &Context,
    user: &str,
    database: &str,
    stream: &mut Stream,
    reader: &mut FrameReader,
) -> Result<(), FrontendError> {
    let directory = context.front.users.load_full();
    let method = directory.method();
    if method == AuthMethod::Trust {
        return Ok(());
    }
    let known = if directory.contains(user) {
        match (method, directory.password(user), directory.scram_keys(user)) {
            (AuthMethod::Md5, Some(password), _) => Known::Password(password.to_owned()),
            (_, password, Some(keys)) => Known::Verifier {
                keys: keys.clone(),
                pass_through: password.is_none(),
            },
            _ => Known::Nothing,
        }
    } else {
        looked_up(context, user, database, stream).await?
    };
    let pass_through = &context.front.pass_through;
    match (method, known) {
        (AuthMethod::Md5, Known::Password(password)) => {
            md5(stream, reader, user, |salt| {
                Some(hash_md5_password(user, &password, &salt))
            })
            .await
        }
        (AuthMethod::Md5, Known::Md5(hash)) => {
            md5(stream, reader, user, |salt| Some(hash.answer(salt))).await?;
            pass_through.remember(user, Proven::Md5(hash));
            Ok(())
        }
        (AuthMethod::Md5, Known::Nothing) => md5(stream, reader, user, |_| None).await,
        (
            _,
            Known::Verifier {
                keys,
                pass_through: keep,
            },
        ) => {
            let client_keys = scram_exchange(stream, reader, user, &keys).await?;
            if keep {
                pass_through.remember(user, Proven::Scram(client_keys));
            }
            Ok(())
        }
        (_, Known::Password(_) | Known::Md5(_) | Known::Nothing) => {
            scram_exchange(stream, reader, user, &scram::server::mock_verifier(user))
                .await
                .map(|_| ())
        }
    }
}

/// The secret `auth_query` finds for `user` (nothing when it is not
/// configured). A failed lookup ends the login with an error that names
/// no user.
async fn looked_up(
    context: &Context,
    user: &str,
    database: &str,
    stream: &mut Stream,
) -> Result<Known, FrontendError> {
    let config = context.config.load();
    if config.auth.auth_user.is_none() {
        return Ok(Known::Nothing);
    }
    let target = |database: &str, user: &str| context.connect_target(database, user);
    match context
        .front
        .auth_query
        .lookup(&config.auth, target, database, user)
        .await
    {
        Ok(Some(Stored::Scram(keys))) => Ok(Known::Verifier {
            keys,
            pass_through: true,
        }),
        Ok(Some(Stored::Md5(hash))) => Ok(Known::Md5(hash)),
        Ok(None) => Ok(Known::Nothing),
        Err(e) => {
            tracing::warn!(%user, %database, error = %e, "auth_query lookup failed");
            let text = "pgstash could not look up the password (auth_query failed; see its log)";
            let _ = stream
                .write_all(&message::error_bytes(Severity::Fatal, "08006", text))
                .await;
            Err(e.into())
        }
    }
}

/// An md5 challenge; `expected` gives the right answer for the salt
/// (`None`: no answer is right).
async fn md5(
    stream: &mut Stream,
    reader: &mut FrameReader,
    user: &str,
    expected: impl FnOnce([u8; 4]) -> Option<String>,
) -> Result<(), FrontendError> {
    let salt: [u8; 4] = rand::random();
    let mut out = BytesMut::new();
    message::auth_md5(&mut out, salt);
    stream
        .write_all(&out)
        .await
        .map_err(crate::net::NetError::from)?;
    let answer = read_password(stream, reader).await?;
    let answer = answer.strip_suffix(&[0]).unwrap_or(&answer);
    match expected(salt) {
        Some(expected) if scram::same(expected.as_bytes(), answer) => Ok(()),
        _ => fail(stream, user).await,
    }
}

/// A SCRAM-SHA-256 exchange against `verifier`; the client's keys when
/// its proof matches.
async fn scram_exchange(
    stream: &mut Stream,
    reader: &mut FrameReader,
    user: &str,
    verifier: &ScramKeys,
) -> Result<scram::ClientKeys, FrontendError> {
    let mut out = BytesMut::new();
    message::auth_sasl(&mut out, &[MECHANISM]);
    stream
        .write_all(&out)
        .await
        .map_err(crate::net::NetError::from)?;
    let initial = read_password(stream, reader).await?;
    let (mechanism, data) = sasl_initial_response(&initial)?;
    if mechanism != MECHANISM {
        return protocol_fail(stream, "28000", "unsupported SASL mechanism").await;
    }
    let Ok(waiting) = scram::server::start(data, verifier) else {
        return fail(stream, user).await;
    };
    let mut out = BytesMut::new();
    message::auth_sasl_continue(&mut out, waiting.message().as_bytes());
    stream
        .write_all(&out)
        .await
        .map_err(crate::net::NetError::from)?;
    let final_message = read_password(stream, reader).await?;
    match waiting.finish(&final_message) {
        Ok((server_final, keys)) => {
            let mut out = BytesMut::new();
            message::auth_sasl_final(&mut out, server_final.as_bytes());
            stream
                .write_all(&out)
                .await
                .map_err(crate::net::NetError::from)?;
            Ok(keys)
        }
        Err(e) => {
            tracing::debug!(%user, error = %e, "SCRAM login refused");
            fail(stream, user).await
        }
    }
}

/// The mechanism and client-first-message of a SASLInitialResponse body.
/// The declared length of the data must fit in the body (-1: no data, as
/// Postgres reads it); a longer one, or another negative one, is a
/// protocol error.
pub(crate) fn sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), NetError> {
    let mut body = Body::new(body, "SASLInitialResponse");
    let mechanism = body.string()?;
    let data = match body.i32()? {
        -1 => &[][..],
        len if len < 0 => {
            return Err(NetError::Malformed {
                what: "SASLInitialResponse",
            })
        }
        len => body.take(len as usize)?,
    };
    Ok((mechanism, data))
}

async fn read_password(
    stream: &mut Stream,
    reader: &mut FrameReader,
) -> Result<Vec<u8>, FrontendError> {
    let frame = match reader.read_frame(stream).await {
        Ok(frame) => frame,
        Err(crate::net::NetError::Closed) => return Err(FrontendError::ClientGone),
        Err(e) => {
            let text = format!("invalid authentication message: {e}");
            let _ = stream
                .write_all(&message::error_bytes(Severity::Fatal, e.sqlstate(), &text))
                .await;
            return Err(e.into());
        }
    };
    if frame.tag() != ftag::PASSWORD {
        return protocol_fail(
            stream,
            "08P01",
            &format!(
                "expected a password response, got message type {:?}",
                frame.tag() as char
            ),
        )
        .await;
    }
    Ok(frame.body().to_vec())
}

async fn fail<T>(stream: &mut Stream, user: &str) -> Result<T, FrontendError> {
    let text = format!("password authentication failed for user \"{user}\"");
    let _ = stream
        .write_all(&message::error_bytes(Severity::Fatal, "28P01", &text))
        .await;
    Err(FrontendError::AuthFailed(user.to_owned()))
}

async fn protocol_fail<T>(stream: &mut Stream, code: &str, text: &str) -> Result<T, FrontendError> {
    let _ = stream
        .write_all(&message::error_bytes(Severity::Fatal, code, text))
        .await;
    Err(FrontendError::Protocol(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initial(length: i32, data: &[u8]) -> Vec<u8> {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&length.to_be_bytes());
        body.extend_from_slice(data);
        body
    }

    #[test]
    fn sasl_initial_response_lengths_must_fit_the_message() {
        let body = initial(5, b"n,,n=");
        let (mechanism, data) = sasl_initial_response(&body).unwrap();
        assert_eq!((mechanism, data), ("SCRAM-SHA-256", &b"n,,n="[..]));
        assert_eq!(sasl_initial_response(&initial(-1, b"")).unwrap().1, b"");
        for length in [i32::MAX, 6, -2, i32::MIN] {
            assert!(
                sasl_initial_response(&initial(length, b"n,,n=")).is_err(),
                "length {length}"
            );
        }
    }
}
