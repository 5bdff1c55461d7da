//! SQL `EXECUTE name [(arguments)]`: runs a prepared statement by name. A
//! transaction pooler prepares a client's protocol-level statements on
//! shared server connections under names of its own, so it rewrites the
//! name in such a text (asyncpg's suite prepares `foobar` with a Parse
//! message, then runs `EXECUTE foobar`); this finds the names and where
//! they stand in the text.
//!
//! # Performance
//! Runs on simple queries in transaction mode; only a text that may start
//! a statement with `EXECUTE` (its first letter, or a `;` in it) and
//! contains the word is parsed.

use std::ops::Range;

use pg_query::protobuf::Token;

use crate::tree::{self, Value};

/// The prepared statement a text runs, and where its name is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The statement's name (as Postgres reads it: unquoted names folded
    /// to lower case).
    pub name: String,
    /// The bytes of the name in the text (quotes included).
    pub at: Range<usize>,
}

/// The statements `sql` runs by name: one per top-level `EXECUTE`, in
/// order (empty when there is none, or when the text does not parse).
/// Whether `sql` may run a prepared statement by name (see
/// [`executed_statements`]); a test on its bytes, for callers that have not
/// decoded them yet.
pub fn may_execute(sql: &[u8]) -> bool {
    crate::starts::may_start_with(sql, b"e")
}

pub fn executed_statements(sql: &str) -> Vec<Executed> {
    if !may_execute(sql.as_bytes()) {
        return Vec::new();
    }
    if !mentions_execute(sql.as_bytes()) {
        return Vec::new();
    }
    let Ok(statements) = tree::parse_statements(sql) else {
        return Vec::new();
    };
    let names: Vec<&str> = statements
        .iter()
        .filter_map(Value::as_node)
        .filter(|stmt| stmt.ty == "ExecuteStmt")
        .map(|stmt| stmt.str("name"))
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let Ok(tokens) = crate::fingerprint::scan(sql) else {
        return Vec::new();
    };
    let words: Vec<_> = tokens
        .iter()
        .filter(|t| {
            !matches!(
                Token::try_from(t.token),
                Ok(Token::SqlComment | Token::CComment)
            )
        })
        .collect();
    // An EXECUTE that starts a statement, and the name after it.
    let mut found = Vec::new();
    for (i, pair) in words.windows(2).enumerate() {
        let starts = i == 0 || words[i - 1].token == Token::Ascii59 as i32;
        if !starts || pair[0].token != Token::Execute as i32 {
            continue;
        }
        let (Ok(start), Ok(end)) = (usize::try_from(pair[1].start), usize::try_from(pair[1].end))
        else {
            return Vec::new();
        };
        let Some(written) = sql.get(start..end) else {
            return Vec::new();
        };
        let name = match written.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => written.to_lowercase(),
        };
        found.push(Executed {
            name,
            at: start..end,
        });
    }
    // Each one must be what the parser read, or nothing is renamed.
    let same = found.len() == names.len() && found.iter().zip(&names).all(|(f, n)| f.name == *n);
    if same {
        found
    } else {
        Vec::new()
    }
}

/// Whether `sql` contains `execute` anywhere, in any case.
fn mentions_execute(bytes: &[u8]) -> bool {
    const WORD: &[u8] = b"execute";
    bytes
        .windows(WORD.len())
        .any(|w| w[0] | 0x20 == b'e' && w.eq_ignore_ascii_case(WORD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executed_names_and_where_they_are_written() {
        fn found(sql: &str) -> Vec<(String, &str)> {
            executed_statements(sql)
                .into_iter()
                .map(|e| (e.name, &sql[e.at]))
                .collect()
        }
        assert_eq!(found("EXECUTE foobar"), [("foobar".into(), "foobar")]);
        assert_eq!(
            found("  /* hi */ execute FooBar(1, 'x');"),
            [("foobar".into(), "FooBar")]
        );
        assert_eq!(
            found("EXECUTE \"Mixed \"\"Q\"\"\" (2)"),
            [("Mixed \"Q\"".into(), "\"Mixed \"\"Q\"\"\"")]
        );
        assert_eq!(
            found("BEGIN; EXECUTE a; SELECT 1; -- c\n EXECUTE b(1); COMMIT"),
            [("a".into(), "a"), ("b".into(), "b")]
        );
        assert_eq!(found("EXPLAIN EXECUTE foobar"), []);
        assert_eq!(found("SELECT 'EXECUTE foobar'"), []);
        assert_eq!(found("SELECT 1; SELECT 'x; EXECUTE y'"), []);
        assert_eq!(found("EXECUTE"), []);
    }
}
