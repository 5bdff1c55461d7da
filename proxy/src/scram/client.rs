//! The client side of a SCRAM-SHA-256 login: pgstash logging in to
//! Postgres. The keys are chosen once the server has named the salt and
//! iteration count of its verifier: a ClientKey a client proved at its own
//! login works when it was derived with that very salt (pass-through);
//! otherwise a password derives the keys.
//!
//! No channel binding (`n,,`), as libpq without `-PLUS` and as pgstash did
//! before it spoke SCRAM itself.

use base64::Engine;

use super::{attributes, hmac_sha256, nonce, same, sha256, xor, ClientKeys, Key32, ScramError};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const GS2_HEADER: &str = "n,,";

/// The exchange after the client-first-message.
#[derive(Debug)]
pub struct ClientFirst {
    nonce: String,
    bare: String,
}

impl Default for ClientFirst {
    fn default() -> Self {
        Self::new()
    }
}

/// What the server-first-message asks for.
#[derive(Debug)]
pub struct Challenge {
    pub salt: Vec<u8>,
    pub iterations: u32,
    nonce: String,
    server_first: String,
}

/// The exchange after the client-final-message: the signature the server
/// must send back.
#[derive(Debug)]
pub struct ClientFinal {
    server_signature: Key32,
}

impl ClientFirst {
    /// A new exchange. The user name is left empty: Postgres takes it from
    /// the StartupMessage.
    pub fn new() -> ClientFirst {
        let nonce = nonce();
        ClientFirst {
            bare: format!("n=,r={nonce}"),
            nonce,
        }
    }

    /// The client-first-message.
    pub fn message(&self) -> String {
        format!("{GS2_HEADER}{}", self.bare)
    }

    /// Reads the server-first-message.
    pub fn challenge(&self, server_first: &[u8]) -> Result<Challenge, ScramError> {
        let text =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut attrs = attributes(text);
        let nonce = match attrs.next() {
            Some((b'r', n)) if n.len() > self.nonce.len() && n.starts_with(&self.nonce) => n,
            Some((b'r', _)) => return Err(ScramError::Nonce),
            _ => return Err(ScramError::Malformed("no nonce")),
        };
        let salt = match attrs.next() {
            Some((b's', s)) => B64.decode(s).map_err(|_| ScramError::Malformed("salt"))?,
            _ => return Err(ScramError::Malformed("no salt")),
        };
        let iterations = match attrs.next() {
            Some((b'i', i)) => i
                .parse::<u32>()
                .ok()
                .filter(|i| *i > 0)
                .ok_or(ScramError::Malformed("iteration count"))?,
            _ => return Err(ScramError::Malformed("no iteration count")),
        };
        Ok(Challenge {
            salt,
            iterations,
            nonce: nonce.to_owned(),
            server_first: text.to_owned(),
        })
    }

    /// The client-final-message proving `keys` (derived for the
    /// challenge's salt and iterations).
    pub fn respond(self, challenge: &Challenge, keys: &ClientKeys) -> (String, ClientFinal) {
        let without_proof = format!("c={},r={}", B64.encode(GS2_HEADER), challenge.nonce);
        let auth_message = format!("{},{},{without_proof}", self.bare, challenge.server_first);
        let stored_key = sha256(&keys.client_key.0);
        let client_signature = hmac_sha256(&stored_key.0, auth_message.as_bytes());
        let proof = xor(&keys.client_key, &client_signature.0);
        let server_signature = hmac_sha256(&keys.server_key.0, auth_message.as_bytes());
        (
            format!("{without_proof},p={}", B64.encode(proof.0)),
            ClientFinal { server_signature },
        )
    }
}

impl ClientFinal {
    /// Checks the server-final-message: the server knew the verifier.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text =
            std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        match attributes(text).next() {
            Some((b'v', v)) => {
                let signature = B64
                    .decode(v)
                    .map_err(|_| ScramError::Malformed("signature"))?;
                if same(&signature, &self.server_signature.0) {
                    Ok(())
                } else {
                    Err(ScramError::WrongServerSignature)
                }
            }
            Some((b'e', e)) => Err(ScramError::Server(e.to_owned())),
            _ => Err(ScramError::Malformed("no verifier")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example from the client's side.
    #[test]
    fn the_rfc_7677_exchange_gives_its_proof_and_accepts_its_signature() {
        let client = ClientFirst {
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
        };
        let challenge = client
            .challenge(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            )
            .unwrap();
        let keys = ClientKeys::from_password("pencil", &challenge.salt, challenge.iterations);
        let (message, last) = client.respond(&challenge, &keys);
        assert_eq!(
            message,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            last.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Ok(())
        );
        assert_eq!(
            last.verify(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(ScramError::WrongServerSignature)
        );
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_the_clients_is_refused() {
        let client = ClientFirst::new();
        assert_eq!(
            client.challenge(b"r=other,s=AAAA,i=4096").unwrap_err(),
            ScramError::Nonce
        );
    }
}
