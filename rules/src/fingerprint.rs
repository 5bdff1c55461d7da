//! Query fingerprints: the stable identity of a query *shape*.
//!
//! A fingerprint is the SHA-256 of a canonical form of the statement, built
//! from Postgres' own scanner (`pg_query::scan_tokens`):
//! - literals (`'abc'`, `42`, `1.5`, `B'01'`, `X'ff'`, `$$…$$`) become
//!   placeholders `$n`, numbered after the highest `$n` already in the text;
//! - comments vanish (so sqlcommenter's `/* traceparent=… */` and `-- …`
//!   do not split one query into many);
//! - whitespace is canonical (one space between every two tokens);
//! - keywords and identifiers are lower case as Postgres folds them, and
//!   needless quotes are dropped, so `Users`, `users` and `"users"` agree;
//! - trailing (and leading) semicolons are dropped.
//!
//! rules.toml and dashboards refer to fingerprints, so they must never
//! change silently: the canonical form is versioned ([`CANONICAL_VERSION`])
//! and golden tests pin a few hashes. `pg_query::fingerprint` is deliberately
//! not used: it is not SHA-256 and may change between `pg_query` releases.
//!
//! The same pass yields the literal values in order ([`Literal`]), which the
//! cache key needs (`WHERE id = 1` and `WHERE id = 2` share a fingerprint but
//! not a result), and a readable normalized text for logs.
//!
//! # Performance
//! Only the scanner runs, never the parser: fingerprinting is much cheaper
//! than analysis, and analyses are cached by fingerprint.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::str::FromStr;

use pg_query::protobuf::{KeywordKind, ScanToken, Token};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Prefix hashed before the canonical text; bump it (and the golden tests)
/// only on purpose, knowing every fingerprint in every rules.toml changes.
pub const CANONICAL_VERSION: &str = "pgstash-fingerprint-v1";

/// Errors of this module.
#[derive(Debug, Error)]
pub enum FingerprintError {
    /// Postgres' scanner rejected the text (e.g. an unterminated string).
    #[error("cannot scan SQL: {0}")]
    Scan(#[source] pg_query::Error),
    /// The scanner reported a token outside the text (never expected).
    #[error("scanner returned an invalid token span {start}..{end}")]
    BadSpan { start: i32, end: i32 },
    /// A fingerprint string is not 64 hexadecimal digits.
    #[error("{0:?} is not a fingerprint (64 hexadecimal digits)")]
    InvalidHex(String),
}

/// SHA-256 of a statement's canonical form. Displays as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

/// Eight bytes of a uniform digest are as good a hash input as all 32.
impl Hash for Fingerprint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// A map keyed by fingerprint, hashed with [`FingerprintHashing`].
pub type FingerprintMap<V> = HashMap<Fingerprint, V, FingerprintHashing>;

/// Hashing for maps keyed by [`Fingerprint`]: the key is already a SHA-256,
/// so one folded multiply with a per-process secret spreads it. SipHash over the
/// whole digest was ~3% of a pass-through query's CPU (the query digest
/// looks each query up). The secret keeps the buckets unpredictable to a
/// client that crafts many texts.
#[derive(Clone)]
pub struct FingerprintHashing {
    key: u64,
}

impl Default for FingerprintHashing {
    fn default() -> Self {
        FingerprintHashing {
            key: RandomState::new().hash_one(0u64) | 1,
        }
    }
}

impl BuildHasher for FingerprintHashing {
    type Hasher = FingerprintHasher;

    fn build_hasher(&self) -> FingerprintHasher {
        FingerprintHasher(self.key)
    }
}

pub struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    /// Eight bytes at a time, the last word zero-padded. Whole words are
    /// read as fixed-size loads (a variable-length copy per word cost a
    /// `memcpy` call each, as much as SipHash on a cache key).
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut le = [0u8; 8];
            le.copy_from_slice(word);
            self.write_u64(u64::from_le_bytes(le));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut le = [0u8; 8];
            le[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(le));
        }
    }

    /// A folded multiply: every bit of the result, the low ones hash maps
    /// pick buckets by included, depends on every bit of the key and value.
    fn write_u64(&mut self, value: u64) {
        let product = u128::from(self.0 ^ value) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Accepts 64 hex digits in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| FingerprintError::InvalidHex(s.to_owned()))?;
        Ok(Fingerprint(out))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The lexical kind of a literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LiteralKind {
    /// `42`
    Integer,
    /// `1.5`, `1e10`, or an integer too large for `int4`.
    Numeric,
    /// `'abc'`, `E'a\n'`, `$$abc$$`.
    String,
    /// `U&'d\0061t'`
    UnicodeString,
    /// `B'0101'`
    BitString,
    /// `X'1f'`
    HexString,
}

/// A literal of the query text, in its source spelling (quotes and prefixes
/// included, so `'1'` and `1` differ).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Literal {
    pub kind: LiteralKind,
    pub text: String,
}

/// Everything one scan of a statement yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub fingerprint: Fingerprint,
    /// The query with literals replaced by `$n`, comments removed and
    /// whitespace collapsed; original case is kept. Safe to log.
    pub text: String,
    /// The literals the placeholders stand for, in order.
    pub literals: Vec<Literal>,
    /// The highest `$n` parameter written in the original text (0 if none).
    pub param_count: usize,
}

/// The tokens of `sql`.
///
/// `pg_query::scan_tokens` builds a slice from a null pointer when the text
/// has no tokens at all (an empty query, or only comments): undefined
/// behaviour on client input. `pg_query::scan` decodes the same tokens from
/// protobuf and is safe for that case.
pub(crate) fn scan(sql: &str) -> Result<Vec<ScanToken>, pg_query::Error> {
    pg_query::scan(sql).map(|result| result.tokens)
}

/// Fingerprints `sql`, extracting literals and normalized text on the way.
pub fn normalize(sql: &str) -> Result<Normalized, FingerprintError> {
    let tokens = scan(sql).map_err(FingerprintError::Scan)?;
    let mut toks = Vec::with_capacity(tokens.len());
    for t in &tokens {
        if matches!(
            Token::try_from(t.token),
            Ok(Token::SqlComment | Token::CComment)
        ) {
            continue;
        }
        toks.push((t, span(sql, t)?));
    }
    // Leading and trailing `;` do not change what runs.
    let is_semi = |t: &&(&ScanToken, &str)| t.1 == ";";
    let lead = toks.iter().take_while(is_semi).count();
    let trail = toks[lead..].iter().rev().take_while(is_semi).count();
    let toks = &toks[lead..toks.len() - trail];

    let param_count = toks
        .iter()
        .filter(|(t, _)| t.token == Token::Param as i32)
        .filter_map(|(_, text)| text.get(1..).and_then(|n| n.parse::<usize>().ok()))
        .max()
        .unwrap_or(0);

    let mut canonical = String::with_capacity(sql.len() + CANONICAL_VERSION.len() + 1);
    canonical.push_str(CANONICAL_VERSION);
    canonical.push('\n');
    let mut text = String::with_capacity(sql.len());
    let mut literals = Vec::new();
    let mut prev_end: Option<i32> = None;
    for (t, src) in toks {
        if let Some(end) = prev_end {
            canonical.push(' ');
            if t.start > end {
                text.push(' ');
            }
        }
        prev_end = Some(t.end);
        if let Some(kind) = literal_kind(t) {
            let placeholder = format!("${}", param_count + literals.len() + 1);
            canonical.push_str(&placeholder);
            text.push_str(&placeholder);
            literals.push(Literal {
                kind,
                text: (*src).to_owned(),
            });
            continue;
        }
        text.push_str(src);
        push_canonical(&mut canonical, t, src);
    }
    let fingerprint = Fingerprint(Sha256::digest(canonical.as_bytes()).into());
    Ok(Normalized {
        fingerprint,
        text,
        literals,
        param_count,
    })
}

/// The fingerprint of `sql`.
pub fn fingerprint(sql: &str) -> Result<Fingerprint, FingerprintError> {
    normalize(sql).map(|n| n.fingerprint)
}

/// The literal values of `sql`, in order. Two texts with the same
/// fingerprint compute the same result only if their literal lists are
/// equal (and, for the extended protocol, their bound parameters too: keep
/// literals and parameters as separate, length-delimited parts of a key).
pub fn literal_values(sql: &str) -> Result<Vec<Literal>, FingerprintError> {
    normalize(sql).map(|n| n.literals)
}

/// True for the special date/time inputs (`'now'`, `'today'`, `'tomorrow'`,
/// `'yesterday'`) whose value depends on when they are evaluated. A literal
/// or bound parameter with such a value makes a read time-dependent even
/// when no function is called (`WHERE created_at > 'now'`).
pub fn is_time_sensitive_input(value: &str) -> bool {
    let v = value.trim().trim_matches('\'').trim();
    ["now", "today", "tomorrow", "yesterday"]
        .iter()
        .any(|w| v.eq_ignore_ascii_case(w))
}

/// Appends the canonical spelling of a non-literal token.
///
/// Keywords and unquoted identifiers are written bare in lower case (as
/// Postgres folds them), so a word that becomes a keyword in a later Postgres
/// release keeps its fingerprint. A quoted identifier is written bare when
/// that means the same identifier (`"users"` = `users`), i.e. when it is a
/// lower-case plain name that is not a keyword; otherwise it keeps its quotes
/// (`"Users"`, `"select"`).
fn push_canonical(out: &mut String, t: &ScanToken, src: &str) {
    let unquoted_ident = t.token == Token::Ident as i32 && !src.starts_with('"');
    if unquoted_ident || t.keyword_kind != KeywordKind::NoKeyword as i32 {
        out.push_str(&src.to_ascii_lowercase());
        return;
    }
    if t.token == Token::Ident as i32 {
        if let Some(inner) = src.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            if is_plain_lowercase_name(inner) && !is_keyword(inner) {
                out.push_str(inner);
                return;
            }
        }
    }
    out.push_str(src);
}

/// `[a-z_][a-z0-9_$]*`: a name that needs no quotes unless it is a keyword.
fn is_plain_lowercase_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'$'))
}

/// True when `word` is an SQL keyword of any category, per the scanner's
/// token list (`SELECT`, or `BEGIN_P` for keywords clashing with C names).
fn is_keyword(word: &str) -> bool {
    let upper = word.to_ascii_uppercase();
    let keyword =
        |name: &str| Token::from_str_name(name).is_some_and(|t| t as i32 >= Token::AbortP as i32);
    keyword(&upper) || keyword(&format!("{upper}_P"))
}

fn literal_kind(t: &ScanToken) -> Option<LiteralKind> {
    match Token::try_from(t.token).ok()? {
        Token::Iconst => Some(LiteralKind::Integer),
        Token::Fconst => Some(LiteralKind::Numeric),
        Token::Sconst => Some(LiteralKind::String),
        Token::Usconst => Some(LiteralKind::UnicodeString),
        Token::Bconst => Some(LiteralKind::BitString),
        Token::Xconst => Some(LiteralKind::HexString),
        _ => None,
    }
}

fn span<'a>(sql: &'a str, t: &ScanToken) -> Result<&'a str, FingerprintError> {
    let bad = || FingerprintError::BadSpan {
        start: t.start,
        end: t.end,
    };
    let start = usize::try_from(t.start).map_err(|_| bad())?;
    let end = usize::try_from(t.end).map_err(|_| bad())?;
    sql.get(start..end).ok_or_else(bad)
}

#[cfg(test)]
#[path = "fingerprint_tests.rs"]
mod tests;
