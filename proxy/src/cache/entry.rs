//! A cache entry: the frames of one answer (RowDescription, DataRows,
//! CommandComplete) exactly as Postgres sent them, so a hit is one copy
//! into the client's buffer. This module reads what the query log needs
//! out of an entry without decoding the rows.

/// Rows reported by a CommandComplete tag ("SELECT 5", "INSERT 0 1", …).
pub fn rows_in_tag(body: &[u8]) -> u64 {
    let tag = body.split(|b| *b == 0).next().unwrap_or_default();
    tag.rsplit(|b| *b == b' ')
        .next()
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Rows of an entry: its CommandComplete's count, found by walking the
/// frame headers only.
pub fn rows(entry: &[u8]) -> u64 {
    let mut rest = entry;
    let mut rows = 0;
    while rest.len() >= 5 {
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]).max(4) as usize;
        let Some(frame) = rest.get(..len + 1) else {
            break;
        };
        if frame[0] == crate::net::message::tag::COMMAND_COMPLETE {
            rows = rows_in_tag(&frame[5..]);
        }
        rest = &rest[len + 1..];
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_from_the_last_word_of_the_tag() {
        assert_eq!(rows_in_tag(b"SELECT 5\0"), 5);
        assert_eq!(rows_in_tag(b"INSERT 0 12\0"), 12);
        assert_eq!(rows_in_tag(b"BEGIN\0"), 0);
    }

    #[test]
    fn rows_of_an_entry_skip_the_data_rows() {
        let mut entry = Vec::new();
        for (tag, body) in [
            (b'T', &b"\0\0"[..]),
            (b'D', b"\0\x01\0\0\0\x015"),
            (b'C', b"SELECT 1\0"),
        ] {
            entry.push(tag);
            entry.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
            entry.extend_from_slice(body);
        }
        assert_eq!(rows(&entry), 1);
        assert_eq!(
            rows(&entry[..entry.len() - 2]),
            0,
            "a cut entry counts nothing"
        );
    }
}
