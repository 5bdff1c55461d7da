//! Which SQL texts drop a session's prepared statements, and how: a
//! transaction-pooling proxy maps `DEALLOCATE name`, `DEALLOCATE ALL` and
//! `DISCARD ALL` onto the client's own statements (which live on shared
//! server connections under other names), and must know when a text drops
//! server-side statements in a way it cannot map (a `DO` block, several
//! statements mixing them).
//!
//! # Performance
//! Runs on statement texts the client sends; a byte scan for the words
//! `deallocate` / `discard` comes first, and only texts containing one are
//! parsed.

use crate::tree::{self, Value};

/// What a SQL text does to the session's prepared statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementReset {
    /// The whole text is `DEALLOCATE [PREPARE] name`.
    Deallocate(String),
    /// The whole text is `DEALLOCATE [PREPARE] ALL`.
    DeallocateAll,
    /// The whole text is `DISCARD ALL`.
    DiscardAll,
    /// The text may drop prepared statements in some other way: a
    /// `DEALLOCATE` or `DISCARD ALL` among other statements, a `DO` block
    /// that mentions one, or a text that does not parse.
    Other,
}

/// How `sql` drops prepared statements, or `None` when it does not.
pub fn statement_reset(sql: &str) -> Option<StatementReset> {
    if !mentions_reset(sql.as_bytes()) {
        return None;
    }
    let Ok(statements) = tree::parse_statements(sql) else {
        return Some(StatementReset::Other);
    };
    let nodes: Vec<_> = statements.iter().filter_map(Value::as_node).collect();
    let mut found = None;
    for node in &nodes {
        let reset = match node.ty {
            "DeallocateStmt" if node.bool("isall") => StatementReset::DeallocateAll,
            "DeallocateStmt" => StatementReset::Deallocate(node.str("name").to_owned()),
            "DiscardStmt"
                if node.int("target") == pg_query::protobuf::DiscardMode::DiscardAll as i64 =>
            {
                StatementReset::DiscardAll
            }
            "DoStmt" => StatementReset::Other,
            _ => continue,
        };
        found = Some(reset);
    }
    match found {
        Some(reset) if nodes.len() == 1 => Some(reset),
        Some(_) => Some(StatementReset::Other),
        None => None,
    }
}

/// Whether `sql` contains `deallocate` or `discard` anywhere, in any case.
/// One pass that compares only where a `d` stands.
fn mentions_reset(bytes: &[u8]) -> bool {
    let starts_with = |at: &[u8], word: &[u8]| {
        at.get(..word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
    };
    (0..bytes.len()).any(|i| {
        bytes[i] | 0x20 == b'd' && {
            let at = &bytes[i..];
            starts_with(at, b"deallocate") || starts_with(at, b"discard")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_statement_resets_are_told_apart() {
        use StatementReset::*;
        let cases = [
            ("DEALLOCATE s1", Some(Deallocate("s1".into()))),
            (
                "deallocate prepare \"Mixed Case\";",
                Some(Deallocate("Mixed Case".into())),
            ),
            ("DEALLOCATE ALL", Some(DeallocateAll)),
            ("DEALLOCATE PREPARE ALL", Some(DeallocateAll)),
            ("discard all", Some(DiscardAll)),
            ("DISCARD PLANS", None),
            ("DISCARD TEMP", None),
            ("SELECT 1; DEALLOCATE s1", Some(Other)),
            ("DEALLOCATE ALL; DEALLOCATE s1", Some(Other)),
            ("DO $$ BEGIN EXECUTE 'DEALLOCATE ALL'; END $$", Some(Other)),
            ("DEALLOCATE", Some(Other)),
            ("SELECT * FROM discarded_items", None),
            ("SELECT 1", None),
        ];
        for (sql, expected) in cases {
            assert_eq!(statement_reset(sql), expected, "{sql}");
        }
    }
}
