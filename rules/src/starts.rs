//! A cheap test on a text's bytes that lets a statement scan pass over
//! almost every text without parsing it, or even checking its UTF-8: the
//! scans look for statements that start with a given keyword (`EXECUTE`,
//! `DROP`/`ALTER`/`CREATE DATABASE`), and a text can hold one only if its
//! first statement starts with that keyword's letter or a comment, or a
//! second statement follows a `;`.

/// Whether `sql` may hold a statement starting with one of `letters`
/// (lowercase ASCII): its first non-blank byte is one of them (in either
/// case) or starts a comment, or a `;` is followed by more than blanks and
/// semicolons. A `;` inside a literal makes it say yes: the scan after it
/// decides.
pub fn may_start_with(sql: &[u8], letters: &[u8]) -> bool {
    let Some(first) = sql.iter().find(|b| !b.is_ascii_whitespace()) else {
        return false;
    };
    if letters.contains(&(first | 0x20)) || matches!(first, b'-' | b'/') {
        return true;
    }
    // What ends the text — blanks, semicolons — ends its only statement.
    let end = sql
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != b';')
        .map_or(0, |i| i + 1);
    sql[..end].contains(&b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_text_that_may_start_a_statement_with_the_letters_passes() {
        for (sql, may) in [
            ("EXECUTE s(1)", true),
            ("  execute s", true),
            ("-- c\nEXECUTE s", true),
            ("/* c */ EXECUTE s", true),
            ("SELECT 1", false),
            ("SELECT 1;", false),
            ("SELECT 1 ;  ;\n", false),
            ("SELECT 1; EXECUTE s", true),
            ("SELECT ';' || x", true),
            ("", false),
            ("   ", false),
        ] {
            assert_eq!(may_start_with(sql.as_bytes(), b"e"), may, "{sql:?}");
        }
        assert!(may_start_with(b"DROP DATABASE x", b"dac"));
        assert!(!may_start_with(
            b"SELECT abalance FROM t WHERE aid = $1;",
            b"dac"
        ));
    }
}
