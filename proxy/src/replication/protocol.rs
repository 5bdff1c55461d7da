//! The messages of a logical replication stream, decoded as far as
//! invalidation needs: the streaming replication protocol's CopyData
//! payloads (XLogData, keepalive, the standby status update pgstash sends)
//! and, inside XLogData, the `pgoutput` messages (protocol version 1).
//!
//! A change (Insert, Update, Delete) is read only up to its relation's OID:
//! which table changed is what invalidation needs, never the row. A
//! message this decoder does not know is skipped, not an error: pgoutput
//! may add types (Origin, Type, streaming) that say nothing about which
//! tables a transaction wrote.

use bytes::{BufMut, BytesMut};

use crate::net::body::Body;
use crate::net::NetError;

/// A position in the write-ahead log.
pub type Lsn = u64;

/// What the server sent in one CopyData message.
#[derive(Debug, PartialEq, Eq)]
pub enum Stream<'a> {
    /// WAL data: one `pgoutput` message, and the end of the WAL the server
    /// has (for status updates).
    XLogData {
        start: Lsn,
        end: Lsn,
        message: &'a [u8],
    },
    /// A keepalive: the server's WAL end, and whether it wants a status
    /// update at once (else it drops the connection after
    /// `wal_sender_timeout`).
    Keepalive { end: Lsn, reply: bool },
    /// A payload of another kind (none is defined today).
    Other(u8),
}

/// One `pgoutput` message, as far as invalidation needs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// A transaction's changes follow; it commits at `final_lsn`. `xid`
    /// is its (32-bit) transaction id.
    Begin { final_lsn: Lsn, xid: u32 },
    /// The transaction's changes end; `end_lsn` is where the next one may
    /// start (the position to confirm once it is recorded).
    Commit { end_lsn: Lsn },
    /// A relation's name (sent before its first change in this stream, and
    /// again after its definition changed).
    Relation {
        oid: u32,
        namespace: &'a str,
        name: &'a str,
    },
    /// A row of `oid` was inserted, updated or deleted.
    Change { oid: u32 },
    /// These relations were truncated.
    Truncate { oids: Vec<u32> },
    /// A logical decoding message (`pg_logical_emit_message`).
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: &'a str,
        content: &'a [u8],
    },
    /// A type pgstash does not decode (Origin, Type…).
    Other(u8),
}

/// Decodes one CopyData payload of the replication stream.
pub fn decode_stream(payload: &[u8]) -> Result<Stream<'_>, NetError> {
    let mut body = Body::new(payload, "replication stream message");
    match body.u8()? {
        b'w' => {
            let start = body.i64()? as Lsn;
            let end = body.i64()? as Lsn;
            let _sent_at = body.i64()?;
            Ok(Stream::XLogData {
                start,
                end,
                message: body.rest(),
            })
        }
        b'k' => {
            let end = body.i64()? as Lsn;
            let _sent_at = body.i64()?;
            let reply = body.u8()? == 1;
            Ok(Stream::Keepalive { end, reply })
        }
        other => Ok(Stream::Other(other)),
    }
}

/// Decodes one `pgoutput` message (protocol version 1, no streaming).
pub fn decode_output(message: &[u8]) -> Result<Output<'_>, NetError> {
    let mut body = Body::new(message, "pgoutput message");
    match body.u8()? {
        b'B' => {
            let final_lsn = body.i64()? as Lsn;
            let _committed_at = body.i64()?;
            Ok(Output::Begin {
                final_lsn,
                xid: body.i32()? as u32,
            })
        }
        b'C' => {
            let _flags = body.u8()?;
            let _commit_lsn = body.i64()?;
            Ok(Output::Commit {
                end_lsn: body.i64()? as Lsn,
            })
        }
        b'R' => {
            let oid = body.i32()? as u32;
            let namespace = body.string()?;
            let name = body.string()?;
            Ok(Output::Relation {
                oid,
                namespace,
                name,
            })
        }
        b'I' | b'U' | b'D' => Ok(Output::Change {
            oid: body.i32()? as u32,
        }),
        b'T' => {
            let count = body.i32()?;
            let _options = body.u8()?;
            let count = usize::try_from(count).map_err(|_| NetError::Malformed {
                what: "pgoutput Truncate",
            })?;
            // Bounded by the message: four bytes per relation.
            let mut oids = Vec::with_capacity(count.min(message.len() / 4));
            for _ in 0..count {
                oids.push(body.i32()? as u32);
            }
            Ok(Output::Truncate { oids })
        }
        b'M' => {
            let transactional = body.u8()? & 1 == 1;
            let lsn = body.i64()? as Lsn;
            let prefix = body.string()?;
            let len = usize::try_from(body.i32()?).map_err(|_| NetError::Malformed {
                what: "pgoutput Message",
            })?;
            Ok(Output::Message {
                transactional,
                lsn,
                prefix,
                content: body.take(len)?,
            })
        }
        other => Ok(Output::Other(other)),
    }
}

/// A standby status update: everything up to `applied` is written,
/// flushed and applied (the slot may let go of WAL before it).
pub fn status_update(applied: Lsn, now_micros: i64, out: &mut BytesMut) {
    let mut payload = BytesMut::with_capacity(34);
    payload.put_u8(b'r');
    for lsn in [applied, applied, applied] {
        payload.put_u64(lsn);
    }
    payload.put_i64(now_micros);
    payload.put_u8(0);
    out.put_u8(b'd');
    out.put_i32(payload.len() as i32 + 4);
    out.put_slice(&payload);
}

/// `X/Y`, as Postgres prints an LSN.
pub fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xlog(message: &[u8]) -> Vec<u8> {
        let mut out = vec![b'w'];
        out.extend_from_slice(&10u64.to_be_bytes());
        out.extend_from_slice(&20u64.to_be_bytes());
        out.extend_from_slice(&0i64.to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    #[test]
    fn begin_carries_the_transaction_id() {
        let mut begin = vec![b'B'];
        begin.extend_from_slice(&0x0100_0000u64.to_be_bytes());
        begin.extend_from_slice(&0i64.to_be_bytes());
        begin.extend_from_slice(&0xfffe_0001u32.to_be_bytes());
        assert_eq!(
            decode_output(&begin).unwrap(),
            Output::Begin {
                final_lsn: 0x0100_0000,
                xid: 0xfffe_0001
            }
        );
        assert!(decode_output(&begin[..begin.len() - 1]).is_err());
    }

    #[test]
    fn xlog_data_and_keepalives_are_told_apart() {
        let payload = xlog(b"Bxyz");
        assert_eq!(
            decode_stream(&payload).unwrap(),
            Stream::XLogData {
                start: 10,
                end: 20,
                message: b"Bxyz"
            }
        );
        let mut k = vec![b'k'];
        k.extend_from_slice(&99u64.to_be_bytes());
        k.extend_from_slice(&0i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            decode_stream(&k).unwrap(),
            Stream::Keepalive {
                end: 99,
                reply: true
            }
        );
    }

    #[test]
    fn changes_name_their_relation_and_truncate_all_of_them() {
        let mut insert = vec![b'I'];
        insert.extend_from_slice(&16384i32.to_be_bytes());
        insert.extend_from_slice(b"N\0\x01t\0\0\0\x011");
        assert_eq!(
            decode_output(&insert).unwrap(),
            Output::Change { oid: 16384 }
        );
        let mut truncate = vec![b'T'];
        truncate.extend_from_slice(&2i32.to_be_bytes());
        truncate.push(0);
        truncate.extend_from_slice(&1i32.to_be_bytes());
        truncate.extend_from_slice(&2i32.to_be_bytes());
        assert_eq!(
            decode_output(&truncate).unwrap(),
            Output::Truncate { oids: vec![1, 2] }
        );
        let mut relation = vec![b'R'];
        relation.extend_from_slice(&7i32.to_be_bytes());
        relation.extend_from_slice(b"public\0users\0d\0\0");
        assert_eq!(
            decode_output(&relation).unwrap(),
            Output::Relation {
                oid: 7,
                namespace: "public",
                name: "users"
            }
        );
    }

    #[test]
    fn messages_carry_their_prefix_and_content() {
        let mut m = vec![b'M', 0];
        m.extend_from_slice(&5u64.to_be_bytes());
        m.extend_from_slice(b"pgstash\0");
        m.extend_from_slice(&3i32.to_be_bytes());
        m.extend_from_slice(b"abc");
        assert_eq!(
            decode_output(&m).unwrap(),
            Output::Message {
                transactional: false,
                lsn: 5,
                prefix: "pgstash",
                content: b"abc"
            }
        );
    }

    #[test]
    fn short_or_lying_messages_are_errors_not_panics() {
        for bad in [
            &b"I\0\0"[..],
            b"T\xff\xff\xff\xff\0",
            b"T\0\0\0\x09\0\0\0\0\x01",
            b"M\0\0\0\0\0\0\0\0\x05p\0\0\0\0\x09ab",
            b"Rx",
            b"",
        ] {
            assert!(decode_output(bad).is_err(), "{bad:?}");
        }
        assert!(decode_stream(b"w\0\0").is_err());
    }

    #[test]
    fn lsns_print_as_postgres_prints_them() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        let mut out = BytesMut::new();
        status_update(0x10, 0, &mut out);
        assert_eq!(out.len(), 1 + 4 + 34);
    }
}
