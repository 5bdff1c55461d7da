//! One pass over a statement text that tells whether any of the scans a
//! transaction pooler runs on it ([`session_effects`], [`statement_reset`],
//! [`exclusive_databases`], [`executed_statements`]) can find anything in
//! it. Almost every text a client sends can show none of them; such a text
//! then costs this one pass instead of each scan's own.
//!
//! # Performance
//! One loop over the bytes, no UTF-8 check: each scan's byte-level test
//! (trigger words, `deallocate`/`discard`, the first letter of the text or
//! of a second statement) is made on the same pass. A text it does not
//! pass over goes through the scans as before, which decide.
//!
//! [`session_effects`]: crate::session_effects
//! [`statement_reset`]: crate::statement_reset
//! [`exclusive_databases`]: crate::exclusive_databases
//! [`executed_statements`]: crate::executed_statements

use crate::session::{is_trigger_word, may_be_trigger};

/// What one pass found in a text (see [`screen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screen {
    /// The first byte that is not ASCII whitespace.
    first: Option<u8>,
    /// A `;` followed by more than blanks and semicolons.
    more_statements: bool,
    /// A whole word without which no statement has a session effect.
    trigger_word: bool,
    /// `deallocate` or `discard` anywhere, in any case.
    reset_word: bool,
}

impl Screen {
    /// No scan can find anything in the text: no session effect, no
    /// prepared statement dropped or run by name, no database needed
    /// alone.
    #[inline]
    pub fn plain(&self) -> bool {
        !self.trigger_word && !self.reset_word && !self.may_start_with(b"dace")
    }

    /// [`may_start_with`](crate::starts::may_start_with) on the same text.
    fn may_start_with(&self, letters: &[u8]) -> bool {
        let Some(first) = self.first else {
            return false;
        };
        letters.contains(&(first | 0x20)) || matches!(first, b'-' | b'/') || self.more_statements
    }
}

/// What a byte is to the pass.
const BLANK: u8 = 1;
const WORD: u8 = 2;
const SEMICOLON: u8 = 3;
const OTHER: u8 = 0;

/// [`BLANK`], [`WORD`] (bytes that continue an SQL word, as the
/// session-effect prefilter reads them: every non-ASCII byte does),
/// [`SEMICOLON`] or [`OTHER`], by byte.
const CLASS: [u8; 256] = {
    let mut class = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        class[b] = if byte.is_ascii_whitespace() {
            BLANK
        } else if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80 {
            WORD
        } else if byte == b';' {
            SEMICOLON
        } else {
            OTHER
        };
        b += 1;
    }
    class
};

/// Whether `at` starts with `word`, ASCII case-insensitively.
fn starts_with(at: &[u8], word: &[u8]) -> bool {
    at.get(..word.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(word))
}

/// Reads `sql` once; see [`Screen::plain`].
pub fn screen(sql: &[u8]) -> Screen {
    let mut found = Screen {
        first: sql
            .iter()
            .copied()
            .find(|&b| CLASS[usize::from(b)] != BLANK),
        more_statements: false,
        trigger_word: false,
        reset_word: false,
    };
    let mut semicolon = false;
    let mut i = 0;
    while i < sql.len() {
        match CLASS[usize::from(sql[i])] {
            BLANK => {
                i += 1;
                continue;
            }
            SEMICOLON => {
                semicolon = true;
                i += 1;
                continue;
            }
            WORD => {}
            _ => {
                found.more_statements |= semicolon;
                i += 1;
                continue;
            }
        }
        found.more_statements |= semicolon;
        let start = i;
        let mut d = false;
        while i < sql.len() && CLASS[usize::from(sql[i])] == WORD {
            d |= sql[i] | 0x20 == b'd';
            i += 1;
        }
        let word = &sql[start..i];
        // Every `d` is inside a word: the reset words are looked for where
        // one stands, as `statement_reset` does.
        if d && !found.reset_word {
            found.reset_word = (0..word.len()).any(|at| {
                word[at] | 0x20 == b'd'
                    && (starts_with(&word[at..], b"deallocate")
                        || starts_with(&word[at..], b"discard"))
            });
        }
        found.trigger_word = found.trigger_word || may_be_trigger(word) && is_trigger_word(word);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{exclusive_databases, executed_statements, session_effects, statement_reset};

    /// Texts each scan finds something in, and texts none does.
    const TEXTS: &[&str] = &[
        "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
        "  select 1 ;  ;\n",
        "UPDATE t SET x = 1",
        "SET search_path = a",
        "select set_config('a', 'b', false)",
        "LISTEN chan",
        "PREPARE p AS SELECT 1",
        "CREATE TEMP TABLE t (a int)",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_try_advisory_lock_shared(1)",
        "SELECT pg_try_advisory_xact_lock(1)",
        "DEALLOCATE p",
        "deallocate prepare all",
        "DISCARD ALL",
        "DO $$BEGIN EXECUTE $q$DEALLOCATE x$q$; END$$",
        "SELECT 'xdiscardy'",
        "DROP DATABASE shop",
        "ALTER DATABASE a RENAME TO b",
        "CREATE DATABASE x TEMPLATE y",
        "EXECUTE s(1)",
        "SELECT 1; EXECUTE s",
        "SELECT ';' || x",
        "-- c\nSELECT 1",
        "/* c */ SELECT 1",
        "WITH a AS (SELECT 1) SELECT * FROM a",
        "INSERT INTO t VALUES (1)",
        "SELECT \u{a0}deallocate",
        "",
        "   ",
    ];

    #[test]
    fn a_plain_text_is_one_no_scan_finds_anything_in() {
        for sql in TEXTS {
            if !screen(sql.as_bytes()).plain() {
                continue;
            }
            assert!(!session_effects(sql).any(), "{sql:?}");
            assert_eq!(statement_reset(sql), None, "{sql:?}");
            assert!(exclusive_databases(sql).is_empty(), "{sql:?}");
            assert!(executed_statements(sql).is_empty(), "{sql:?}");
            assert!(!crate::starts::may_start_with(sql.as_bytes(), b"dace"));
        }
    }

    #[test]
    fn only_texts_without_trigger_words_or_other_statements_are_plain() {
        let plain: Vec<&str> = TEXTS
            .iter()
            .copied()
            .filter(|sql| screen(sql.as_bytes()).plain())
            .collect();
        assert_eq!(
            plain,
            [
                "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
                "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
                "  select 1 ;  ;\n",
                "SELECT pg_try_advisory_xact_lock(1)",
                "WITH a AS (SELECT 1) SELECT * FROM a",
                "INSERT INTO t VALUES (1)",
                "",
                "   ",
            ]
        );
    }
}
