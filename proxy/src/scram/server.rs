//! The server side of a SCRAM-SHA-256 login: pgstash checking a client
//! against a verifier (salt, iterations, StoredKey, ServerKey). Besides
//! yes or no, a successful exchange yields the client's ClientKey,
//! recovered from its proof, which logs in upstream as that user
//! (pass-through, `client.rs`).
//!
//! Channel binding is not offered (pgstash advertises `SCRAM-SHA-256`
//! only): a client asking for it (`p=`) is refused, one saying it could
//! (`y`) is accepted, as Postgres does without `-PLUS`.

use std::sync::OnceLock;

use base64::Engine;

use super::{attributes, hmac_sha256, nonce, same, sha256, xor, ClientKeys, Key32, ScramError};
use crate::config::ScramKeys;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An exchange that has sent its server-first-message and waits for the
/// client's final message.
pub struct ServerFirst {
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

/// Prints no key.
impl std::fmt::Debug for ServerFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerFirst")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// Reads the client-first-message and answers it from `verifier`.
pub fn start(client_first: &[u8], verifier: &ScramKeys) -> Result<ServerFirst, ScramError> {
    let text = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or(ScramError::Malformed("no GS2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Malformed("GS2 flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(ScramError::Malformed("no GS2 header"))?;
    if !authzid.is_empty() {
        return Err(ScramError::Malformed("authorization identity"));
    }
    let mut attrs = attributes(bare);
    if !matches!(attrs.next(), Some((b'n', _))) {
        return Err(ScramError::Malformed("no user name attribute"));
    }
    let client_nonce = match attrs.next() {
        Some((b'r', n)) if !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b)) => n,
        _ => return Err(ScramError::Malformed("no nonce")),
    };
    if attrs.any(|(name, _)| name == b'm' || name == 0) {
        return Err(ScramError::Malformed("mandatory extension"));
    }
    let iterations =
        u32::try_from(verifier.iterations).map_err(|_| ScramError::Malformed("iteration count"))?;
    let nonce = format!("{client_nonce}{}", nonce());
    let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&verifier.salt));
    Ok(ServerFirst {
        gs2_header: text[..flag.len() + 1 + authzid.len() + 1].to_owned(),
        client_first_bare: bare.to_owned(),
        server_first,
        nonce,
        salt: verifier.salt.clone(),
        iterations,
        stored_key: verifier.stored_key.clone(),
        server_key: verifier.server_key.clone(),
    })
}

impl ServerFirst {
    /// The server-first-message to send.
    pub fn message(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final-message. On success: the server-final-message
    /// to send and the client's keys.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, ClientKeys), ScramError> {
        let text =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attrs = attributes(without_proof);
        match attrs.next() {
            Some((b'c', binding)) if binding == B64.encode(&self.gs2_header) => {}
            Some((b'c', _)) => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("no channel binding attribute")),
        }
        match attrs.next() {
            Some((b'r', nonce)) if nonce == self.nonce => {}
            _ => return Err(ScramError::Nonce),
        }
        let proof = B64
            .decode(proof)
            .ok()
            .and_then(|p| <[u8; 32]>::try_from(p).ok())
            .ok_or(ScramError::Malformed("proof"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let client_signature = hmac_sha256(&self.stored_key, auth_message.as_bytes());
        let client_key = xor(&client_signature, &proof);
        if !same(&sha256(&client_key.0).0, &self.stored_key) {
            return Err(ScramError::WrongProof);
        }
        let server_signature = hmac_sha256(&self.server_key, auth_message.as_bytes());
        let server_key = Key32::from_slice(&self.server_key).ok_or(ScramError::WrongProof)?;
        let keys = ClientKeys {
            salt: self.salt,
            iterations: self.iterations,
            client_key,
            server_key,
        };
        Ok((format!("v={}", B64.encode(server_signature.0)), keys))
    }
}

/// The made-up verifier an unknown user is checked against, so that the
/// exchange looks like a real one: the same salt for the same name every
/// time (a fresh salt per attempt would give unknown users away), no
/// proof that can match.
pub fn mock_verifier(user: &str) -> ScramKeys {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    let secret = SECRET.get_or_init(rand::random);
    let salt = hmac_sha256(secret, format!("salt {user}").as_bytes());
    ScramKeys {
        salt: salt.0[..16].to_vec(),
        iterations: super::DEFAULT_ITERATIONS as usize,
        stored_key: rand::random::<[u8; 32]>().to_vec(),
        server_key: rand::random::<[u8; 32]>().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange (user "user", password "pencil"), with
    /// the server nonce the RFC's server chose.
    fn rfc_verifier() -> ScramKeys {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = ClientKeys::from_password("pencil", &salt, 4096);
        ScramKeys {
            salt,
            iterations: 4096,
            stored_key: sha256(&keys.client_key.0).0.to_vec(),
            server_key: keys.server_key.0.to_vec(),
        }
    }

    fn rfc_exchange(proof: &str) -> Result<(String, ClientKeys), ScramError> {
        let mut first = start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &rfc_verifier()).unwrap();
        // Replace the random server nonce by the RFC's.
        first.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        first.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", first.nonce);
        first.finish(
            format!("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p={proof}")
                .as_bytes(),
        )
    }

    #[test]
    fn the_rfc_7677_proof_is_accepted_and_its_client_key_recovered() {
        let (server_final, keys) =
            rfc_exchange("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").unwrap();
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let expected = ClientKeys::from_password("pencil", &salt, 4096);
        assert_eq!(keys.client_key, expected.client_key);
        assert_eq!(keys.server_key, expected.server_key);
    }

    #[test]
    fn a_wrong_proof_or_nonce_or_binding_is_refused() {
        assert_eq!(
            rfc_exchange("AHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").unwrap_err(),
            ScramError::WrongProof
        );
        let first = start(b"n,,n=user,r=abc", &rfc_verifier()).unwrap();
        let other = format!("c=biws,r=abcX,p={}", B64.encode([0u8; 32]));
        assert_eq!(
            first.finish(other.as_bytes()).unwrap_err(),
            ScramError::Nonce
        );
        assert_eq!(
            start(b"p=tls-server-end-point,,n=,r=abc", &rfc_verifier()).unwrap_err(),
            ScramError::ChannelBinding
        );
    }

    #[test]
    fn an_unknown_user_gets_the_same_salt_every_time() {
        assert_eq!(mock_verifier("ghost").salt, mock_verifier("ghost").salt);
        assert_ne!(mock_verifier("ghost").salt, mock_verifier("other").salt);
    }
}
