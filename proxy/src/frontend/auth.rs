//! Client authentication: trust, md5 and SCRAM-SHA-256 against the users of
//! the configuration (resolved in `config/users.rs`). The SCRAM server
//! exchange is pgwire's; a wrong password gets Postgres' own error
//! (`28P01 password authentication failed`).

use bytes::BytesMut;
use pgwire::api::auth::md5pass::hash_md5_password;
use pgwire::api::auth::sasl::scram::{ScramSecret, ScramServerAuth, SCRAM_ITERATIONS};

use super::error::FrontendError;
use crate::config::{AuthMethod, ScramKeys, UserDirectory};
use crate::net::frame::Body;
use crate::net::message::{self, ftag, Severity};
use crate::net::{FrameReader, NetError, Stream};
use tokio::io::AsyncWriteExt;

/// Runs the authentication exchange with a client. On success nothing has
/// been written yet for AuthenticationOk (the caller sends it once the
/// upstream accepted the login too).
pub async fn authenticate(
    directory: &UserDirectory,
    user: &str,
    stream: &mut Stream,
    reader: &mut FrameReader,
) -> Result<(), FrontendError> {
    match directory.method() {
        AuthMethod::Trust => Ok(()),
        AuthMethod::Md5 => {
            let salt: [u8; 4] = rand::random();
            let mut out = BytesMut::new();
            message::auth_md5(&mut out, salt);
            stream
                .write_all(&out)
                .await
                .map_err(crate::net::NetError::from)?;
            let answer = read_password(stream, reader).await?;
            let expected = directory
                .password(user)
                .map(|p| hash_md5_password(user, p, &salt));
            match expected {
                Some(expected)
                    if expected.as_bytes() == answer.strip_suffix(&[0]).unwrap_or(&answer) =>
                {
                    Ok(())
                }
                _ => fail(stream, user).await,
            }
        }
        AuthMethod::ScramSha256 => {
            let mut out = BytesMut::new();
            message::auth_sasl(&mut out, &["SCRAM-SHA-256"]);
            stream
                .write_all(&out)
                .await
                .map_err(crate::net::NetError::from)?;
            let initial = read_password(stream, reader).await?;
            let (mechanism, data) = sasl_initial_response(&initial)?;
            if mechanism != "SCRAM-SHA-256" {
                return protocol_fail(stream, "28000", "unsupported SASL mechanism").await;
            }
            // An unknown user runs the exchange against made-up keys, so
            // that the answer does not tell which users exist.
            let keys = directory
                .scram_keys(user)
                .cloned()
                .unwrap_or_else(|| ScramKeys {
                    salt: rand::random::<[u8; 16]>().to_vec(),
                    iterations: SCRAM_ITERATIONS,
                    stored_key: rand::random::<[u8; 32]>().to_vec(),
                    server_key: rand::random::<[u8; 32]>().to_vec(),
                });
            let secret = ScramSecret::Verifier {
                salt: keys.salt,
                iterations: keys.iterations,
                stored_key: keys.stored_key,
                server_key: keys.server_key,
            };
            let server = ScramServerAuth::new();
            let Ok((server_first, waiting)) =
                server.on_client_first_message_with_secret(data, secret)
            else {
                return fail(stream, user).await;
            };
            let mut out = BytesMut::new();
            message::auth_sasl_continue(&mut out, server_first.as_bytes());
            stream
                .write_all(&out)
                .await
                .map_err(crate::net::NetError::from)?;
            let final_message = read_password(stream, reader).await?;
            match waiting.on_client_final_message(&final_message) {
                Ok(server_final) => {
                    let mut out = BytesMut::new();
                    message::auth_sasl_final(&mut out, server_final.as_bytes());
                    stream
                        .write_all(&out)
                        .await
                        .map_err(crate::net::NetError::from)?;
                    Ok(())
                }
                Err(_) => fail(stream, user).await,
            }
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
        Err(e) => return Err(e.into()),
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
