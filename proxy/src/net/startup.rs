//! The startup phase's packets, which have no type byte: SSLRequest,
//! GSSENCRequest, CancelRequest and StartupMessage.

use std::collections::BTreeMap;

use super::body::Body;
use super::frame::{FrameReader, NetError};
use super::stream::Stream;

/// Postgres refuses startup packets longer than this; so does pgstash.
pub const MAX_STARTUP_PACKET: usize = 10_000;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;

/// A packet a client may open a connection with.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Startup {
        major: u16,
        minor: u16,
        params: BTreeMap<String, String>,
    },
}

/// Reads one startup-phase packet (length, code, body).
pub async fn read_startup_packet(
    reader: &mut FrameReader,
    stream: &mut Stream,
) -> Result<StartupPacket, NetError> {
    loop {
        if let Some((packet, length)) = decode_startup_packet(reader.buffered())? {
            reader.advance(length);
            return Ok(packet);
        }
        reader.fill(stream).await?;
    }
}

/// The startup packet at the front of `buffered` and its length, or `None`
/// while it is incomplete. The declared length is checked before anything
/// waits for the body: below 8 or above [`MAX_STARTUP_PACKET`] (negative
/// included) is an error at once, so a client cannot make pgstash buffer a
/// packet it will refuse.
pub fn decode_startup_packet(buffered: &[u8]) -> Result<Option<(StartupPacket, usize)>, NetError> {
    let Some(header) = buffered.get(..4) else {
        return Ok(None);
    };
    let length = i32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if length < 8 || length as usize > MAX_STARTUP_PACKET {
        return Err(NetError::BadLength {
            tag: '\0',
            length: length.into(),
        });
    }
    let length = length as usize;
    match buffered.get(4..length) {
        Some(body) => Ok(Some((parse_startup_packet(body)?, length))),
        None => Ok(None),
    }
}

fn parse_startup_packet(data: &[u8]) -> Result<StartupPacket, NetError> {
    let mut body = Body::new(data, "startup");
    let code = body.i32()?;
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            let pid = body.i32()?;
            let secret = body.i32()?;
            Ok(StartupPacket::Cancel { pid, secret })
        }
        version => {
            let major = (version >> 16) as u16;
            let minor = (version & 0xffff) as u16;
            if major != 3 {
                return Err(NetError::Malformed {
                    what: "startup (unsupported protocol version)",
                });
            }
            let mut params = BTreeMap::new();
            loop {
                let key = body.string()?;
                if key.is_empty() {
                    break;
                }
                let value = body.string()?;
                params.insert(key.to_owned(), value.to_owned());
            }
            Ok(StartupPacket::Startup {
                major,
                minor,
                params,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_startup_message() {
        let mut data = 196608i32.to_be_bytes().to_vec();
        data.extend_from_slice(b"user\0app\0database\0shop\0\0");
        let StartupPacket::Startup {
            major,
            minor,
            params,
        } = parse_startup_packet(&data).unwrap()
        else {
            panic!("not a startup message");
        };
        assert_eq!((major, minor), (3, 0));
        assert_eq!(params["user"], "app");
        assert_eq!(params["database"], "shop");
    }

    #[test]
    fn parses_cancel_and_ssl_requests() {
        let mut data = CANCEL_REQUEST.to_be_bytes().to_vec();
        data.extend_from_slice(&7i32.to_be_bytes());
        data.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            parse_startup_packet(&data).unwrap(),
            StartupPacket::Cancel { pid: 7, secret: 9 }
        );
        assert_eq!(
            parse_startup_packet(&SSL_REQUEST.to_be_bytes()).unwrap(),
            StartupPacket::SslRequest
        );
    }

    /// A declared length out of range is refused before the body is
    /// awaited; a packet in range waits for its last byte.
    #[test]
    fn startup_lengths_are_checked_before_the_body_arrives() {
        for length in [i32::MIN, -1, 0, 7, 10_001, i32::MAX] {
            let mut data = length.to_be_bytes().to_vec();
            data.extend_from_slice(&196608i32.to_be_bytes());
            assert!(
                matches!(
                    decode_startup_packet(&data),
                    Err(NetError::BadLength { .. })
                ),
                "length {length}"
            );
        }
        let mut data = 16i32.to_be_bytes().to_vec();
        data.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
        data.extend_from_slice(&7i32.to_be_bytes());
        assert!(decode_startup_packet(&data).unwrap().is_none());
        data.extend_from_slice(&9i32.to_be_bytes());
        let (packet, length) = decode_startup_packet(&data).unwrap().unwrap();
        assert_eq!(packet, StartupPacket::Cancel { pid: 7, secret: 9 });
        assert_eq!(length, 16);
    }

    #[test]
    fn rejects_truncated_parameters_and_old_protocols() {
        let mut data = 196608i32.to_be_bytes().to_vec();
        data.extend_from_slice(b"user\0ap");
        assert!(parse_startup_packet(&data).is_err());
        assert!(parse_startup_packet(&131072i32.to_be_bytes()).is_err());
    }
}
