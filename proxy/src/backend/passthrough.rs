//! The secrets clients proved at their login that let pgstash log in to
//! Postgres as them without knowing their password (pass-through): a
//! SCRAM ClientKey recovered from a client's proof, or the md5 hash an
//! `auth_query` returned and the client proved it knows.
//!
//! Held in memory only, one per user (the latest login's), zeroed when
//! replaced; never logged (the types print no secret). A pooled connection
//! opened at any later time reads the user's current secret here, so the
//! pool keeps working after the login that brought it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zeroize::Zeroize;

use crate::scram::ClientKeys;

/// A user's pass-through secret.
#[derive(Clone)]
pub enum Proven {
    /// SCRAM keys of Postgres' verifier (usable when its salt and
    /// iterations are the ones Postgres names).
    Scram(ClientKeys),
    /// Postgres' md5 hash (`md5` and 32 hex digits), which answers an md5
    /// challenge as the password would.
    Md5(Md5Hash),
}

impl std::fmt::Debug for Proven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proven::Scram(_) => f.write_str("Proven::Scram(..)"),
            Proven::Md5(_) => f.write_str("Proven::Md5(..)"),
        }
    }
}

/// Postgres' stored md5 hash of a password, zeroed when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Hash(String);

impl std::fmt::Debug for Md5Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Md5Hash(..)")
    }
}

impl Md5Hash {
    /// `text` when it has the form of an md5 hash (`md5` + 32 hex digits).
    pub fn parse(text: &str) -> Option<Md5Hash> {
        let hex = text.strip_prefix("md5")?;
        (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Md5Hash(text.to_owned()))
    }

    /// The answer to an md5 challenge with `salt`: what a client knowing
    /// the password sends (`md5` + md5(hash digits + salt)).
    pub fn answer(&self, salt: [u8; 4]) -> String {
        let mut input = self.0.as_bytes()[3..].to_vec();
        input.extend_from_slice(&salt);
        let answer = format!("md5{:x}", md5::compute(&input));
        input.zeroize();
        answer
    }
}

impl Drop for Md5Hash {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The pass-through secrets of every user that logged in, latest first.
#[derive(Default)]
pub struct PassThrough {
    users: Mutex<HashMap<String, Arc<Proven>>>,
}

impl std::fmt::Debug for PassThrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users = self.users.lock().map(|u| u.len()).unwrap_or(0);
        f.debug_struct("PassThrough")
            .field("users", &users)
            .finish()
    }
}

impl PassThrough {
    /// Keeps `proven` as `user`'s secret, replacing the previous one.
    pub fn remember(&self, user: &str, proven: Proven) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.insert(user.to_owned(), Arc::new(proven));
    }

    /// `user`'s secret, if a client proved one.
    pub fn get(&self, user: &str) -> Option<Arc<Proven>> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(user).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored hash answers a challenge exactly as the password does.
    #[test]
    fn an_md5_hash_answers_like_its_password() {
        let stored = format!("md5{:x}", md5::compute(b"secretalice"));
        let hash = Md5Hash::parse(&stored).unwrap();
        let salt = [1, 2, 3, 4];
        let by_password = postgres_protocol::authentication::md5_hash(b"alice", b"secret", salt);
        assert_eq!(hash.answer(salt), by_password);
        assert!(Md5Hash::parse("SCRAM-SHA-256$4096:abc").is_none());
    }
}
