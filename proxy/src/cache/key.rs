//! Cache keys.
//!
//! A key has two parts. The *base* is a SHA-256 over everything that
//! determines a result apart from the data: database, role (unless the rule
//! is `shared`), the session's settings, the statement, its parameter
//! values/types/formats and the requested result formats. The *versions*
//! part is read from the store at lookup time: a global epoch and one
//! counter per table the statement reads. A write bumps its tables'
//! counters after it commits and before its client sees the
//! acknowledgement, so every later lookup computes a key no fill from
//! before the write could have used (guarantees G1 and G2).

use sha2::{Digest, Sha256};

use crate::backend::SessionParams;

/// The data-independent half of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyBase(pub [u8; 32]);

impl KeyBase {
    /// Appends the base as 64 lowercase hex digits (once per lookup: a
    /// table-driven encode into a stack buffer, not a char-by-char collect).
    pub fn push_hex(&self, out: &mut String) {
        let mut digits = [0u8; 64];
        if hex::encode_to_slice(self.0, &mut digits).is_ok() {
            if let Ok(digits) = std::str::from_utf8(&digits) {
                out.push_str(digits);
            }
        }
    }
}

/// Feeds fields into the base hash. Each field is length-prefixed, so no
/// two different field sequences hash the same bytes.
#[derive(Default, Clone)]
pub struct KeyBuilder {
    hasher: Sha256,
}

impl KeyBuilder {
    pub fn new(domain: &str) -> KeyBuilder {
        let mut builder = KeyBuilder {
            hasher: Sha256::new(),
        };
        builder.field(domain.as_bytes());
        builder
    }

    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.hasher.update((bytes.len() as u64).to_be_bytes());
        self.hasher.update(bytes);
        self
    }

    /// A field that may be absent (a NULL parameter), distinct from empty.
    pub fn optional(&mut self, bytes: Option<&[u8]>) -> &mut Self {
        match bytes {
            Some(b) => {
                self.hasher.update([1]);
                self.field(b)
            }
            None => {
                self.hasher.update([0]);
                self
            }
        }
    }

    pub fn finish(self) -> KeyBase {
        KeyBase(self.hasher.finalize().into())
    }
}

/// A session's part of its keys: database, role (unless the rule is
/// `shared`) and output-affecting settings (guarantee G5). Hashed once per
/// (domain, shared) and the hash state reused: it was a third of the
/// SHA-256 work of every lookup. Reset when the session's settings change.
#[derive(Default)]
pub struct KeyScope {
    memo: Option<(&'static str, bool, KeyBuilder)>,
}

/// Who a session is, for its keys.
pub struct Identity<'a> {
    pub database: &'a str,
    pub user: &'a str,
    pub settings: &'a SessionParams,
}

impl KeyScope {
    /// The key base of a request: the session's part, then the request's
    /// own fields.
    pub fn base(
        &mut self,
        domain: &'static str,
        shared: bool,
        who: &Identity<'_>,
        request: impl FnOnce(&mut KeyBuilder),
    ) -> KeyBase {
        let mut key = match &self.memo {
            Some((d, s, prefix)) if *d == domain && *s == shared => prefix.clone(),
            _ => {
                let prefix = prefix(domain, shared, who);
                self.memo = Some((domain, shared, prefix.clone()));
                prefix
            }
        };
        request(&mut key);
        key.finish()
    }

    /// Forgets the hashed prefix (the settings changed).
    pub fn reset(&mut self) {
        self.memo = None;
    }
}

/// The session's part of a key: database, role (unless `shared`), and
/// every setting but `application_name`.
fn prefix(domain: &str, shared: bool, who: &Identity<'_>) -> KeyBuilder {
    let mut key = KeyBuilder::new(domain);
    key.field(who.database.as_bytes());
    key.field(if shared { b"" } else { who.user.as_bytes() });
    for (name, value) in &who.settings.settings {
        if name != "application_name" {
            key.field(name.as_bytes()).field(value.as_bytes());
        }
    }
    key.field(b"--");
    key
}

/// A table as invalidation knows it: database and unqualified name,
/// lower-cased as Postgres folds unquoted names. Tables of the same name in
/// different schemas share a version, which can only over-invalidate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableKey(String);

impl TableKey {
    pub fn new(database: &str, table: &str) -> TableKey {
        TableKey(format!("{database}.{table}"))
    }

    /// The keys of `tables` of `database` (see `TableRef::invalidation_key`),
    /// sorted, each once.
    pub fn all(database: &str, tables: &[pgstash_rules::TableRef]) -> Vec<TableKey> {
        let mut keys: Vec<TableKey> = tables
            .iter()
            .map(|t| TableKey::new(database, t.invalidation_key()))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_form_is_the_64_lowercase_digits() {
        let base = KeyBase(std::array::from_fn(|i| (i * 37 + 5) as u8));
        let mut out = String::from("x:");
        base.push_hex(&mut out);
        assert_eq!(out, format!("x:{}", hex::encode(base.0)));
    }

    #[test]
    fn field_boundaries_matter() {
        let mut a = KeyBuilder::new("t");
        a.field(b"ab").field(b"c");
        let mut b = KeyBuilder::new("t");
        b.field(b"a").field(b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn null_differs_from_empty() {
        let mut a = KeyBuilder::new("t");
        a.optional(None);
        let mut b = KeyBuilder::new("t");
        b.optional(Some(b""));
        assert_ne!(a.finish(), b.finish());
    }
}
