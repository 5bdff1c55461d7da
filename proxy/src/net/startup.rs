//! The startup phase's packets, which have no type byte: SSLRequest,
//! GSSENCRequest, CancelRequest and StartupMessage.

use std::collections::BTreeMap;

use super::frame::{Body, FrameReader, NetError};
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
        let buffered = reader.buffered();
        if buffered.len() >= 4 {
            let length = i32::from_be_bytes([buffered[0], buffered[1], buffered[2], buffered[3]]);
            if length < 8 || length as usize > MAX_STARTUP_PACKET {
                return Err(NetError::BadLength {
                    tag: '\0',
                    length: length.into(),
                });
            }
            let length = length as usize;
            if buffered.len() >= length {
                let packet = parse_startup_packet(&buffered[4..length]);
                reader.advance(length);
                return packet;
            }
        }
        reader.fill(stream).await?;
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

    #[test]
    fn rejects_truncated_parameters_and_old_protocols() {
        let mut data = 196608i32.to_be_bytes().to_vec();
        data.extend_from_slice(b"user\0ap");
        assert!(parse_startup_packet(&data).is_err());
        assert!(parse_startup_packet(&131072i32.to_be_bytes()).is_err());
    }
}
