//! RESP2, as the store's own connections (`pipe/`) speak it: commands
//! encoded straight into the connection's output buffer, replies parsed
//! into fred's [`Value`] so the callers read them as they read fred's.
//!
//! Only what the store's calls need: a command is an array of bulk
//! strings; a reply is a simple string, an error, an integer, a bulk
//! string (or nil) or an array of those (or a nil array).

use bytes::{Buf, Bytes, BytesMut};
use fred::prelude::*;

/// Nesting deeper than this is not a reply of the store's scripts.
const MAX_DEPTH: usize = 8;

/// Redis' own bound on a bulk string (`proto-max-bulk-len`): a longer one
/// is a broken stream, not a reply to wait for.
const MAX_BULK: i64 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed reply from redis: {0}")]
    Malformed(&'static str),
}

/// A whole reply: a value, or the error Redis answered.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Value(Value),
    Error(String),
}

/// Appends `*<n>\r\n` then each of `args` as `$<len>\r\n<bytes>\r\n`.
pub fn encode(out: &mut BytesMut, args: &[&[u8]]) {
    let size: usize = args.iter().map(|a| a.len() + 16).sum();
    out.reserve(size + 16);
    header(out, b'*', args.len());
    for arg in args {
        header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn header(out: &mut BytesMut, kind: u8, n: usize) {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(&[kind]);
    out.extend_from_slice(digits.format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Takes the first whole reply off `buf`; `Ok(None)` while it is
/// incomplete (nothing is consumed then).
pub fn parse(buf: &mut BytesMut) -> Result<Option<Reply>, WireError> {
    let Some(end) = measure(buf, 0, 0)? else {
        return Ok(None);
    };
    let mut whole = buf.split_to(end).freeze();
    let reply = match whole.first() {
        Some(b'-') => {
            let text = line(&whole, 0).map(|(l, _)| l).unwrap_or_default();
            Reply::Error(String::from_utf8_lossy(&text[1..]).into_owned())
        }
        _ => Reply::Value(read(&mut whole)?),
    };
    Ok(Some(reply))
}

/// The line starting at `at` (without its CRLF) and where the next starts.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let cr = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..cr], at + cr + 2))
}

fn number(digits: &[u8]) -> Result<i64, WireError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(WireError::Malformed("not a number"))
}

/// Where the reply starting at `at` ends, if `buf` holds all of it.
fn measure(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::Malformed("nested too deep"));
    }
    let Some((head, next)) = line(buf, at) else {
        return Ok(None);
    };
    let (&kind, digits) = head
        .split_first()
        .ok_or(WireError::Malformed("empty line"))?;
    match kind {
        b'+' | b'-' | b':' => Ok(Some(next)),
        b'$' => {
            let len = number(digits)?;
            if len < 0 {
                return Ok(Some(next));
            }
            if len > MAX_BULK {
                return Err(WireError::Malformed("bulk string longer than redis allows"));
            }
            let end = next + len as usize + 2;
            match buf.get(end - 2..end) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some(end)),
                Some(_) => Err(WireError::Malformed("bulk string of another length")),
            }
        }
        b'*' => {
            let count = number(digits)?;
            let mut end = next;
            for _ in 0..count.max(0) {
                match measure(buf, end, depth + 1)? {
                    Some(e) => end = e,
                    None => return Ok(None),
                }
            }
            Ok(Some(end))
        }
        _ => Err(WireError::Malformed("unknown reply type")),
    }
}

/// Reads one value off the front of `buf`, which [`measure`] found whole.
fn read(buf: &mut Bytes) -> Result<Value, WireError> {
    let (head, next) = line(buf, 0).ok_or(WireError::Malformed("cut short"))?;
    let (kind, digits) = (head[0], Bytes::copy_from_slice(&head[1..]));
    buf.advance(next);
    match kind {
        b'+' => Ok(Value::String(
            String::from_utf8_lossy(&digits).into_owned().into(),
        )),
        // An error inside an array (scripts do not return them).
        b'-' => Ok(Value::Null),
        b':' => Ok(Value::Integer(number(&digits)?)),
        b'$' => {
            let len = number(&digits)?;
            if len < 0 {
                return Ok(Value::Null);
            }
            let value = buf.split_to(len as usize);
            buf.advance(2);
            Ok(Value::Bytes(value))
        }
        b'*' => {
            let count = number(&digits)?;
            if count < 0 {
                return Ok(Value::Null);
            }
            let mut values = Vec::with_capacity(count as usize);
            for _ in 0..count {
                values.push(read(buf)?);
            }
            Ok(Value::Array(values))
        }
        _ => Err(WireError::Malformed("unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(bytes: &[u8]) -> Option<Reply> {
        parse(&mut BytesMut::from(bytes)).unwrap()
    }

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        let mut out = BytesMut::new();
        encode(&mut out, &[b"EVALSHA", b"ab", b"", b"a\r\nb"]);
        assert_eq!(
            &out[..],
            b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$0\r\n\r\n$4\r\na\r\nb\r\n"
        );
    }

    #[test]
    fn a_lookup_reply_reads_as_fred_would_give_it() {
        let reply = parsed(b"*3\r\n$5\r\n1.2.3\r\n$4\r\nx\r\ny\r\n:4500\r\n").unwrap();
        assert_eq!(
            reply,
            Reply::Value(Value::Array(vec![
                Value::Bytes(Bytes::from_static(b"1.2.3")),
                Value::Bytes(Bytes::from_static(b"x\r\ny")),
                Value::Integer(4500),
            ]))
        );
        let miss = parsed(b"*3\r\n$1\r\n7\r\n$-1\r\n:0\r\n").unwrap();
        assert_eq!(
            miss,
            Reply::Value(Value::Array(vec![
                Value::Bytes(Bytes::from_static(b"7")),
                Value::Null,
                Value::Integer(0),
            ]))
        );
    }

    #[test]
    fn an_incomplete_reply_waits_and_consumes_nothing() {
        let whole = b"*2\r\n$5\r\nhello\r\n:12\r\n+OK\r\n";
        for cut in 0..whole.len() - 5 {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(parse(&mut buf).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
        let mut buf = BytesMut::from(&whole[..]);
        assert!(matches!(
            parse(&mut buf).unwrap(),
            Some(Reply::Value(Value::Array(_)))
        ));
        assert_eq!(
            parse(&mut buf).unwrap(),
            Some(Reply::Value(Value::String("OK".into())))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn an_error_reply_is_its_text() {
        assert_eq!(
            parsed(b"-NOSCRIPT No matching script\r\n"),
            Some(Reply::Error("NOSCRIPT No matching script".into()))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"?\r\n"[..],
            b"$x\r\n",
            b"*1\r\n!\r\n",
            b"\r\n",
            b"$3\r\nx\r\ny\r\n",
        ] {
            assert!(parse(&mut BytesMut::from(bad)).is_err(), "{bad:?}");
        }
        assert!(parse(&mut BytesMut::from(&b"$9223372036854775807\r\n"[..])).is_err());
        let deep = "*1\r\n".repeat(20) + ":1\r\n";
        assert!(parse(&mut BytesMut::from(deep.as_bytes())).is_err());
    }
}
