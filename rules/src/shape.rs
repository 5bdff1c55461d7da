//! A cheap pre-key for query texts that differ only in their literals.
//!
//! [`literal_mask`] replaces plain integer and string literals with a marker
//! in one byte pass, without Postgres' scanner. Two texts with the same mask
//! are byte-identical outside those literals, so they have the same
//! fingerprint, normalized text and statements: a consumer that needs only
//! those (the query digest, the slow-query log) can analyze a shape once and
//! reuse it for every text of the shape, e.g. `pgbench -M simple`, which
//! never sends the same text twice.
//!
//! The pass is conservative: whenever the scanner could read the text
//! differently from it (backslashes in strings, prefixed strings such as
//! `E'…'`, dollar quotes, numbers with a fraction, exponent or trailing
//! letters, unterminated quotes or comments), it gives up and returns
//! `None`; the caller then runs the full analysis.

/// Stands for one masked literal. A query text never contains NUL (the
/// protocol ends it with one), so the marker cannot be mistaken for text.
const MARK: char = '\0';

/// The bytes that start something the pass looks at: a quote, a digit, a
/// comment, a `$`.
const STARTS: [bool; 256] = {
    let mut starts = [false; 256];
    let mut b = 0;
    while b < 256 {
        starts[b] = matches!(b as u8, b'\'' | b'0'..=b'9' | b'"' | b'-' | b'/' | b'$');
        b += 1;
    }
    starts
};

/// The text with plain literals masked, or `None` when the text needs the
/// real scanner.
pub fn literal_mask(sql: &str) -> Option<String> {
    let mut out = String::with_capacity(sql.len());
    match literal_mask_into(sql, &mut out)? {
        true => Some(out),
        false => Some(sql.to_owned()),
    }
}

/// [`literal_mask`] into `out` (cleared first), for a caller that masks
/// text after text into one buffer. Returns whether a literal was masked;
/// when none was, `out` stays empty: the mask is `sql` itself.
///
/// # Performance
/// Bytes that can start nothing the pass looks at (a quote, a digit, a
/// comment, a `$`) are passed over one test each, and nothing is copied
/// until the first literal.
pub fn literal_mask_into(sql: &str, out: &mut String) -> Option<bool> {
    out.clear();
    let bytes = sql.as_bytes();
    if bytes.contains(&0) {
        return None;
    }
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !STARTS[usize::from(b)] {
            i += 1;
            continue;
        }
        let prev = i.checked_sub(1).map(|p| bytes[p]);
        match b {
            b'\'' => {
                if prev.is_some_and(|p| is_ident(p) || p == b'&') {
                    return None; // E'…', B'…', X'…', N'…', U&'…'
                }
                let end = string_end(bytes, i)?;
                out.push_str(&sql[copied..i]);
                out.push(MARK);
                out.push('s');
                copied = end;
                i = end;
            }
            b'0'..=b'9' if !prev.is_some_and(|p| is_ident(p) || p == b'.') => {
                let end = i + bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                if bytes.get(end).is_some_and(|&b| is_ident(b) || b == b'.') {
                    return None; // 1.5, 1e10, 0x1f, 1_000, 123abc
                }
                out.push_str(&sql[copied..i]);
                out.push(MARK);
                out.push('n');
                copied = end;
                i = end;
            }
            b'"' => i = quoted_identifier_end(bytes, i)?,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i += bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(bytes.len() - i);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = block_comment_end(bytes, i)?,
            b'$' if !prev.is_some_and(is_ident) => {
                // `$1` is a parameter; anything else may open a dollar quote.
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits == 0 {
                    return None;
                }
                i += 1 + digits;
            }
            _ => i += 1,
        }
    }
    if copied == 0 {
        // Nothing masked (a literal at the very start would have moved it).
        return Some(false);
    }
    out.push_str(&sql[copied..]);
    Some(true)
}

/// Bytes that continue an identifier (Postgres counts every non-ASCII byte).
fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The end (exclusive) of the string literal opening at `start`. `''` is a
/// quote inside the string; a backslash gives up (its meaning depends on
/// `standard_conforming_strings`).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match *bytes.get(i)? {
            b'\\' => return None,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

fn quoted_identifier_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match *bytes.get(i)? {
            b'"' if bytes.get(i + 1) == Some(&b'"') => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The end of a `/* … */` comment, which nests in Postgres.
fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    loop {
        match (bytes.get(i)?, bytes.get(i + 1)) {
            (b'/', Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::literal_mask;
    use crate::fingerprint::normalize;

    fn mask(sql: &str) -> Option<String> {
        literal_mask(sql)
    }

    #[test]
    fn texts_differing_in_plain_literals_share_a_mask() {
        let a = mask("SELECT abalance FROM pgbench_accounts WHERE aid = 12;").unwrap();
        let b = mask("SELECT abalance FROM pgbench_accounts WHERE aid = 987654;").unwrap();
        assert_eq!(a, b);
        let a = mask("select * from t where name = 'bob' and id in (1, 2)").unwrap();
        let b = mask("select * from t where name = 'it''s' and id in (30, 4)").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn structure_outside_literals_keeps_masks_apart() {
        let base = mask("select * from t where id = 1").unwrap();
        for other in [
            "select * from t where id = $1",
            "select * from t1 where id = 1",
            "select * from t where id = 1 -- 2",
            "select * from t where id = -1",
            "select * from t where id = 1 /* x */",
            "select * from \"t\" where id = 1",
        ] {
            assert_ne!(mask(other), Some(base.clone()), "{other}");
        }
    }

    #[test]
    fn texts_the_pass_cannot_read_for_sure_give_up() {
        for sql in [
            "select E'a\\'b'",
            "select 'a\\'",
            "select x'1f'",
            "select U&'d\\0061t'",
            "select $$a$$",
            "select $tag$a$tag$",
            "select 1.5",
            "select 1e10",
            "select 0x1f",
            "select 'unterminated",
            "select \"unterminated",
            "select 1 /* unterminated",
            "select 1 /* nested /* */ still open",
        ] {
            assert_eq!(mask(sql), None, "{sql}");
        }
    }

    #[test]
    fn masking_into_a_buffer_gives_the_same_mask() {
        let mut out = String::from("left over");
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12;",
            "select * from t where id = $1",
            "1",
            "'a' || 'b'",
            "select 1.5",
            "select 'a\0'",
        ] {
            let masked = super::literal_mask_into(sql, &mut out);
            let mask = match masked {
                Some(true) => Some(out.clone()),
                Some(false) => {
                    assert!(out.is_empty(), "{sql}");
                    Some(sql.to_owned())
                }
                None => None,
            };
            assert_eq!(mask, literal_mask(sql), "{sql}");
        }
    }

    #[test]
    fn literals_in_comments_and_identifiers_stay() {
        assert_eq!(
            mask("select t1.a, \"x'1\" from t1 -- it's 5\nwhere b = 2").unwrap(),
            "select t1.a, \"x'1\" from t1 -- it's 5\nwhere b = \0n"
        );
        assert_eq!(
            mask("select /* a /* 'b' */ 3 */ 4").unwrap(),
            "select /* a /* 'b' */ 3 */ \0n"
        );
    }

    /// The property the digest relies on: equal masks, equal shapes.
    #[test]
    fn equal_masks_mean_equal_fingerprints() {
        let groups: &[&[&str]] = &[
            &[
                "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
                "SELECT abalance FROM pgbench_accounts WHERE aid = 99999999999999999999;",
            ],
            &[
                "select 'a'\n'b' from t where x = 1",
                "select 'cc'\n'dd' from t where x = 22",
            ],
            &["select 'a' 'b'", "select 'c' 'd'"],
            &[
                "update t set v = 'x''y' where id = 3 and k = $1",
                "update t set v = '' where id = 40 and k = $1",
            ],
            &[
                "select a from t where b in (1,2,3)::int[] -- note\n and c = 'z'",
                "select a from t where b in (4,5,6)::int[] -- note\n and c = 'zz'",
            ],
        ];
        for group in groups {
            let masks: Vec<_> = group.iter().map(|s| mask(s).unwrap()).collect();
            assert!(masks.windows(2).all(|w| w[0] == w[1]), "{group:?}");
            let shapes: Vec<_> = group
                .iter()
                .map(|s| {
                    let n = normalize(s).unwrap();
                    (n.fingerprint, n.text)
                })
                .collect();
            assert!(shapes.windows(2).all(|w| w[0] == w[1]), "{group:?}");
        }
    }
}
