//! SCRAM-SHA-256 (RFC 5802 and 7677, as Postgres speaks it) on both sides:
//! `server.rs` checks a client's login against a verifier and recovers the
//! client's ClientKey from its proof; `client.rs` logs in to Postgres with
//! a password or with such a ClientKey (pass-through: pgstash never knows
//! the password). This file holds the primitives both share.
//!
//! Why pgstash runs the exchange itself: the ClientKey is what makes
//! pass-through possible (`ClientProof XOR HMAC(StoredKey, AuthMessage)`),
//! and a SCRAM server library has no reason to hand it out.

pub mod client;
pub mod server;

use ring::{digest, hmac, pbkdf2};
use zeroize::Zeroize;

/// The mechanism name, and the only one pgstash offers or picks.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Iterations for verifiers pgstash makes itself, as Postgres' default
/// (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Why an exchange failed. The client is told only that its password was
/// wrong; the variants are for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("the nonce does not continue the exchange")]
    Nonce,
    #[error("the proof does not match the verifier")]
    WrongProof,
    #[error("the server's signature does not match (it does not know the verifier)")]
    WrongServerSignature,
    #[error("the server reported an error: {0}")]
    Server(String),
}

/// A SHA-256 sized secret, zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Key32(pub [u8; 32]);

impl Drop for Key32 {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Key32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key32(..)")
    }
}

impl Key32 {
    /// `bytes` as a key, if it is 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Key32> {
        <[u8; 32]>::try_from(bytes).ok().map(Key32)
    }
}

/// What logs in as a user over SCRAM without the password: the ClientKey
/// (to compute the ClientProof) and the ServerKey (to check the server),
/// valid for the salt and iteration count they were derived with.
#[derive(Clone, Debug)]
pub struct ClientKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub client_key: Key32,
    pub server_key: Key32,
}

impl ClientKeys {
    /// The keys a password gives for `salt` and `iterations` (the
    /// password is SASLprep-normalized first, as Postgres does; one that
    /// does not normalize is used as is, as libpq does).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ClientKeys {
        let normalized = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_owned());
        let mut salted = Key32([0; 32]);
        let rounds = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            rounds,
            salt,
            normalized.as_bytes(),
            &mut salted.0,
        );
        let mut normalized = normalized;
        normalized.zeroize();
        ClientKeys {
            salt: salt.to_vec(),
            iterations,
            client_key: hmac_sha256(&salted.0, b"Client Key"),
            server_key: hmac_sha256(&salted.0, b"Server Key"),
        }
    }
}

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Key32 {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    Key32::from_slice(tag.as_ref()).unwrap_or(Key32([0; 32]))
}

pub(crate) fn sha256(data: &[u8]) -> Key32 {
    Key32::from_slice(digest::digest(&digest::SHA256, data).as_ref()).unwrap_or(Key32([0; 32]))
}

pub(crate) fn xor(a: &Key32, b: &[u8; 32]) -> Key32 {
    let mut out = Key32([0; 32]);
    for (o, (x, y)) in out.0.iter_mut().zip(a.0.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// Equality in time that does not depend on where the inputs differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh nonce: 18 random bytes in base64, as Postgres makes them.
pub(crate) fn nonce() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 18]>())
}

/// The comma-separated `x=value` attributes of a SCRAM message, in order.
pub(crate) fn attributes(message: &str) -> impl Iterator<Item = (u8, &str)> + '_ {
    message.split(',').map(|part| match part.as_bytes() {
        [name, b'=', ..] => (*name, &part[2..]),
        _ => (0, part),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example: user "user", password "pencil", salt
    /// W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
    #[test]
    fn keys_from_a_password_match_rfc_7677() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = ClientKeys::from_password("pencil", &salt, 4096);
        let stored = sha256(&keys.client_key.0);
        // StoredKey and ServerKey of the same example, as Postgres stores them.
        assert_eq!(
            b64.encode(stored.0),
            "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        );
        assert_eq!(
            b64.encode(keys.server_key.0),
            "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }
}
