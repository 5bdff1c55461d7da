//! What a SQL string does to *session* state.
//!
//! A transaction-pooling proxy hands a client a different server connection
//! for each transaction, so it must notice statements whose effect outlives
//! the transaction (`SET`, `LISTEN`, `PREPARE`, temp tables, session advisory
//! locks…) to replay them, pin the client to its connection, or turn caching
//! off (`SET ROLE`, see DESIGN.md G5).
//!
//! # Performance
//! [`session_effects`] runs on every query, so it first does a byte-level,
//! case-insensitive search for whole words that any such statement must
//! contain (`set`, `reset`, `discard`, `listen`, `prepare`, `declare`,
//! `temp`, `set_config`, the advisory lock functions…). Only when one is
//! present is the text parsed to decide precisely (so `UPDATE t SET x = 1`
//! costs a parse, `SELECT * FROM t WHERE id = 1` does not). [`EffectsCache`]
//! remembers the parsed verdicts by exact text, so a statement the client
//! sends again (every prepared `UPDATE … SET …`) is parsed once.

use quick_cache::sync::Cache;

use crate::tree::{self, Node, Value};

/// What a SQL string does to session state that a transaction-pooling proxy
/// must track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionEffects {
    /// `SET` (not `SET LOCAL`), `RESET`, `RESET ALL`, `DISCARD ALL`,
    /// `SET SESSION CHARACTERISTICS`, or a call to `set_config(…)` that is not
    /// provably transaction-local. Also true whenever `changes_role` is.
    pub changes_settings: bool,
    /// `SET ROLE`, `SET SESSION AUTHORIZATION`, `RESET ROLE`,
    /// `RESET SESSION AUTHORIZATION`, `DISCARD ALL`, or `set_config('role', …)`.
    pub changes_role: bool,
    /// `LISTEN channel`.
    pub listen: bool,
    /// Creates or uses an object that lives as long as the server session:
    /// `PREPARE name AS …`, `DECLARE … WITH HOLD`, `CREATE TEMP …`,
    /// `SELECT … INTO TEMP`, a `pg_temp.` reference, or a session-level
    /// advisory lock function (`pg_advisory_lock`, `pg_try_advisory_lock`…).
    pub uses_session_objects: bool,
}

impl SessionEffects {
    /// True when the string has any session effect at all.
    pub fn any(&self) -> bool {
        self.changes_settings || self.changes_role || self.listen || self.uses_session_objects
    }

    fn merge(&mut self, other: SessionEffects) {
        self.changes_settings |= other.changes_settings;
        self.changes_role |= other.changes_role;
        self.listen |= other.listen;
        self.uses_session_objects |= other.uses_session_objects;
    }
}

/// Words (matched whole, ASCII case-insensitively) without which a string
/// cannot have a session effect.
const SETTINGS_WORDS: &[&str] = &["set", "reset", "discard", "set_config"];
const LISTEN_WORDS: &[&str] = &["listen"];
const OBJECT_WORDS: &[&str] = &[
    "prepare",
    "declare",
    "temp",
    "temporary",
    "pg_temp",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];
/// Only consulted for strings that do not parse.
const ROLE_WORDS: &[&str] = &["role", "authorization"];

/// Session-level advisory lock functions (the `_xact_` variants are released
/// at transaction end and are harmless to a transaction pooler).
const ADVISORY_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// `CURSOR_OPT_HOLD` from Postgres' `parsenodes.h`.
const CURSOR_OPT_HOLD: i64 = 0x0020;

/// Reports what `sql` (one or more statements) does to session state.
///
/// Strings that do not parse are judged by the prefilter alone, erring
/// towards reporting an effect.
pub fn session_effects(sql: &str) -> SessionEffects {
    match prefilter(sql) {
        Some(words) => parsed_effects(sql, words),
        None => SessionEffects::default(),
    }
}

/// The trigger words found in `sql` (settings, listen, objects), or `None`
/// when there is none and so no session effect.
fn prefilter(sql: &str) -> Option<[bool; 3]> {
    let words = words_present(sql.as_bytes(), [SETTINGS_WORDS, LISTEN_WORDS, OBJECT_WORDS]);
    words.contains(&true).then_some(words)
}

/// The effects of `sql`, which the prefilter found `words` in: parsed, or
/// judged by the words when it does not parse.
fn parsed_effects(sql: &str, [settings, listen, objects]: [bool; 3]) -> SessionEffects {
    match tree::parse_statements(sql) {
        Ok(stmts) => {
            let mut effects = SessionEffects::default();
            for stmt in stmts.iter().filter_map(Value::as_node) {
                effects.merge(statement_effects(stmt));
            }
            effects
        }
        Err(_) => SessionEffects {
            changes_settings: settings,
            changes_role: settings && contains_any_word(sql.as_bytes(), ROLE_WORDS),
            listen,
            uses_session_objects: objects,
        },
    }
}

/// [`session_effects`] with the verdicts that needed a parse remembered by
/// exact text (the result is a pure function of the text).
pub struct EffectsCache {
    parsed: Cache<String, SessionEffects>,
}

/// Texts longer than this (bytes) are not remembered.
const MAX_REMEMBERED_TEXT: usize = 16 * 1024;

impl EffectsCache {
    /// A cache of up to `capacity` texts.
    pub fn new(capacity: usize) -> EffectsCache {
        EffectsCache {
            parsed: Cache::new(capacity.max(1)),
        }
    }

    /// The same answer as [`session_effects`]`(sql)`.
    pub fn effects(&self, sql: &str) -> SessionEffects {
        let Some(words) = prefilter(sql) else {
            return SessionEffects::default();
        };
        if sql.len() > MAX_REMEMBERED_TEXT {
            return parsed_effects(sql, words);
        }
        if let Some(known) = self.parsed.get(sql) {
            return known;
        }
        let effects = parsed_effects(sql, words);
        self.parsed.insert(sql.to_owned(), effects);
        effects
    }
}

/// Effects of one parsed top-level statement.
fn statement_effects(stmt: &Node) -> SessionEffects {
    let mut fx = SessionEffects::default();
    match stmt.ty {
        "VariableSetStmt" => variable_set(stmt, &mut fx),
        "DiscardStmt" => {
            let all = stmt.int("target") == pg_query::protobuf::DiscardMode::DiscardAll as i64;
            fx.changes_settings = all;
            fx.changes_role = all;
        }
        "ListenStmt" => fx.listen = true,
        "PrepareStmt" => fx.uses_session_objects = true,
        "DeclareCursorStmt" => {
            fx.uses_session_objects = stmt.int("options") & CURSOR_OPT_HOLD != 0;
        }
        // The body is PL/pgSQL, opaque to the SQL parser: judge it by its words.
        "DoStmt" => {
            let body = do_body(stmt);
            let settings = contains_any_word(body.as_bytes(), SETTINGS_WORDS);
            fx.changes_settings = settings;
            fx.changes_role = settings && contains_any_word(body.as_bytes(), ROLE_WORDS);
            fx.listen = contains_any_word(body.as_bytes(), LISTEN_WORDS);
            fx.uses_session_objects = contains_any_word(body.as_bytes(), OBJECT_WORDS);
            return fx;
        }
        _ => {}
    }
    // Function calls and temp relations can appear anywhere in a statement.
    stmt.for_each_node(&mut |n| match n.ty {
        "FuncCall" => function_call(n, &mut fx),
        "RangeVar" => {
            fx.uses_session_objects |=
                n.str("relpersistence") == "t" || n.str("schemaname") == "pg_temp";
        }
        _ => {}
    });
    fx
}

fn variable_set(stmt: &Node, fx: &mut SessionEffects) {
    use pg_query::protobuf::VariableSetKind as K;
    if stmt.bool("is_local") {
        return;
    }
    let kind = stmt.int("kind");
    let name = stmt.str("name");
    // `SET TRANSACTION …` and `SET TRANSACTION SNAPSHOT` last one transaction.
    if kind == K::VarSetMulti as i64 && name.eq_ignore_ascii_case("transaction") {
        return;
    }
    fx.changes_settings = true;
    if kind == K::VarResetAll as i64 {
        return;
    }
    if name.eq_ignore_ascii_case("role") || name.eq_ignore_ascii_case("session_authorization") {
        fx.changes_role = true;
    }
}

fn function_call(call: &Node, fx: &mut SessionEffects) {
    let names = call.names("funcname");
    let Some(name) = names.last() else {
        return;
    };
    let schema_ok = names.len() == 1 || names.first() == Some(&"pg_catalog");
    if !schema_ok {
        return;
    }
    if ADVISORY_LOCKS.contains(name) {
        fx.uses_session_objects = true;
    } else if *name == "set_config" {
        let args: Vec<&Node> = call.nodes("args").collect();
        let is_local = args.get(2).and_then(|a| const_bool(a)).unwrap_or(false);
        if is_local {
            return;
        }
        fx.changes_settings = true;
        match args.first().and_then(|a| const_str(a)) {
            Some(setting) => {
                if setting.eq_ignore_ascii_case("role")
                    || setting.eq_ignore_ascii_case("session_authorization")
                {
                    fx.changes_role = true;
                }
            }
            // Not a literal: it may name the role.
            None => fx.changes_role = true,
        }
    }
}

/// The value of a boolean constant (`true`, `'on'`, `'t'`…), if `n` is one.
fn const_bool(n: &Node) -> Option<bool> {
    let val = const_value(n)?;
    match val.ty {
        "Boolean" => Some(val.bool("boolval")),
        "String" => match val.str("sval").to_ascii_lowercase().as_str() {
            "t" | "true" | "on" | "yes" | "y" | "1" => Some(true),
            "f" | "false" | "off" | "no" | "n" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The value of a string constant, if `n` is one.
fn const_str(n: &Node) -> Option<&str> {
    let val = const_value(n)?;
    (val.ty == "String").then(|| val.str("sval"))
}

/// The value node of an `AConst`, looking through a cast (`'x'::text`).
fn const_value(n: &Node) -> Option<&Node> {
    match n.ty {
        "AConst" => n.node("val"),
        "TypeCast" => n.node("arg").and_then(const_value),
        _ => None,
    }
}

/// The source text of a `DO` block (its `as` argument).
fn do_body(stmt: &Node) -> String {
    let mut body = String::new();
    stmt.for_each_node(&mut |n| {
        if n.ty == "String" {
            body.push_str(n.str("sval"));
            body.push(' ');
        }
    });
    body
}

/// True when `haystack` contains one of `words` as a whole word, ASCII
/// case-insensitively.
fn contains_any_word(haystack: &[u8], words: &[&str]) -> bool {
    let [found] = words_present(haystack, [words]);
    found
}

/// For each list of words, whether `haystack` contains one of them as a
/// whole word, ASCII case-insensitively, in a single pass. A word boundary
/// is any byte that cannot continue an SQL identifier.
fn words_present<const N: usize>(haystack: &[u8], lists: [&[&str]; N]) -> [bool; N] {
    const LONGEST: usize = 32;
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    // The letters the listed words begin with: most words of a statement
    // begin with none of them and are passed over after one test.
    let firsts = lists
        .iter()
        .flat_map(|list| list.iter())
        .filter_map(|w| w.as_bytes().first())
        .fold(0u32, |set, &b| set | first_letter(b));
    let mut found = [false; N];
    let mut start = 0;
    while start < haystack.len() {
        // Skip to the start of the next word.
        if !is_ident(haystack[start]) {
            start += 1;
            continue;
        }
        let mut end = start;
        while end < haystack.len() && is_ident(haystack[end]) {
            end += 1;
        }
        let word = &haystack[start..end];
        if word.len() <= LONGEST && firsts & first_letter(word[0]) != 0 {
            for (hit, list) in found.iter_mut().zip(lists) {
                *hit |= list.iter().any(|w| w.as_bytes().eq_ignore_ascii_case(word));
            }
        }
        start = end;
    }
    found
}

/// Whether `word` (a whole word) is one without which a string cannot have
/// a session effect: what [`session_effects`]' prefilter looks for.
pub(crate) fn is_trigger_word(word: &[u8]) -> bool {
    const LONGEST: usize = 32;
    word.len() <= LONGEST
        && [SETTINGS_WORDS, LISTEN_WORDS, OBJECT_WORDS]
            .iter()
            .any(|list| list.iter().any(|w| w.as_bytes().eq_ignore_ascii_case(word)))
}

/// By [`first_letter`], a bit per length of the trigger words with that
/// first letter: most words of a text fail this test, without a compare.
const TRIGGER_LENGTHS: [u32; 27] = {
    let lists = [SETTINGS_WORDS, LISTEN_WORDS, OBJECT_WORDS];
    let mut lengths = [0u32; 27];
    let mut l = 0;
    while l < lists.len() {
        let mut w = 0;
        while w < lists[l].len() {
            let word = lists[l][w].as_bytes();
            lengths[first_letter(word[0]).trailing_zeros() as usize] |= 1 << word.len();
            w += 1;
        }
        l += 1;
    }
    lengths
};

/// Whether `word` (not empty) has the first letter and the length of a
/// trigger word (see [`is_trigger_word`]).
#[inline]
pub(crate) fn may_be_trigger(word: &[u8]) -> bool {
    word.len() < 32
        && TRIGGER_LENGTHS[first_letter(word[0]).trailing_zeros() as usize] & (1 << word.len()) != 0
}

/// A bit per ASCII letter (either case), one more for anything else.
pub(crate) const fn first_letter(b: u8) -> u32 {
    let lower = b | 0x20;
    if lower.is_ascii_lowercase() {
        1 << (lower - b'a')
    } else {
        1 << 26
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
