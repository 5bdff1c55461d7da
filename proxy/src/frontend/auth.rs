//! Client authentication: trust, md5 and SCRAM-SHA-256 against the users of
//! the configuration. The SCRAM server exchange is pgwire's; a wrong password
//! gets Postgres' own error (`28P01 password authentication failed`).

use std::collections::HashMap;

use base64::Engine;
use bytes::BytesMut;
use pgwire::api::auth::md5pass::hash_md5_password;
use pgwire::api::auth::sasl::scram::{
    gen_salted_password, ScramSecret, ScramServerAuth, SCRAM_ITERATIONS,
};

use super::error::FrontendError;
use crate::config::{AuthConfig, AuthMethod, ConfigError};
use crate::net::frame::Body;
use crate::net::message::{self, ftag, Severity};
use crate::net::{FrameReader, Stream};
use tokio::io::AsyncWriteExt;

/// SCRAM keys of one user (as in `pg_authid.rolpassword`).
#[derive(Clone)]
struct ScramKeys {
    salt: Vec<u8>,
    iterations: usize,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct UserEntry {
    password: Option<String>,
    scram: Option<ScramKeys>,
}

/// The users clients may log in as, with credentials resolved once at load.
#[derive(Debug, Default)]
pub struct UserDirectory {
    method: AuthMethod,
    users: HashMap<String, UserEntry>,
}

impl UserDirectory {
    pub fn from_config(auth: &AuthConfig) -> Result<UserDirectory, ConfigError> {
        let mut users = HashMap::new();
        for user in &auth.users {
            let password = user.resolve_password()?;
            let scram = match (&user.scram_verifier, &password) {
                (Some(verifier), _) => {
                    Some(
                        parse_verifier(verifier).ok_or_else(|| ConfigError::Invalid {
                            key: "auth.users.scram_verifier",
                            reason: format!("user {:?}: not a SCRAM-SHA-256 verifier", user.name),
                        })?,
                    )
                }
                (None, Some(password)) if auth.method == AuthMethod::ScramSha256 => {
                    let salt: [u8; 16] = rand::random();
                    let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
                    match ScramSecret::verifier_from_salted_password(
                        salt.to_vec(),
                        salted,
                        SCRAM_ITERATIONS,
                    ) {
                        ScramSecret::Verifier {
                            salt,
                            iterations,
                            stored_key,
                            server_key,
                        } => Some(ScramKeys {
                            salt,
                            iterations,
                            stored_key,
                            server_key,
                        }),
                        ScramSecret::SaltedPassword { .. } => None,
                    }
                }
                _ => None,
            };
            users.insert(user.name.clone(), UserEntry { password, scram });
        }
        Ok(UserDirectory {
            method: auth.method,
            users,
        })
    }

    /// The password pgstash uses when it logs in upstream as `user`.
    pub fn upstream_password(&self, user: &str) -> Option<String> {
        self.users.get(user).and_then(|u| u.password.clone())
    }
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, base64 parts.
fn parse_verifier(text: &str) -> Option<ScramKeys> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let rest = text.strip_prefix("SCRAM-SHA-256$")?;
    let (iter_salt, keys) = rest.split_once('$')?;
    let (iterations, salt) = iter_salt.split_once(':')?;
    let (stored, server) = keys.split_once(':')?;
    Some(ScramKeys {
        salt: b64.decode(salt).ok()?,
        iterations: iterations.parse().ok()?,
        stored_key: b64.decode(stored).ok()?,
        server_key: b64.decode(server).ok()?,
    })
}

/// Runs the authentication exchange with a client. On success nothing has
/// been written yet for AuthenticationOk (the caller sends it once the
/// upstream accepted the login too).
pub async fn authenticate(
    directory: &UserDirectory,
    user: &str,
    stream: &mut Stream,
    reader: &mut FrameReader,
) -> Result<(), FrontendError> {
    let entry = directory.users.get(user);
    match directory.method {
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
            let expected = entry
                .and_then(|e| e.password.as_deref())
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
            let mut body = Body::new(&initial, "SASLInitialResponse");
            let mechanism = body.string()?;
            let len = body.i32()?;
            let data = if len < 0 {
                &[][..]
            } else {
                body.take(len as usize)?
            };
            if mechanism != "SCRAM-SHA-256" {
                return protocol_fail(stream, "28000", "unsupported SASL mechanism").await;
            }
            // An unknown user runs the exchange against made-up keys, so
            // that the answer does not tell which users exist.
            let keys = entry
                .and_then(|e| e.scram.clone())
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
