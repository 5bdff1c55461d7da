//! Backend (server → client) messages: a type byte and the raw body.
//!
//! Bodies are kept as the exact bytes received, because the differential tests
//! compare them byte for byte; the accessors here only read them, for
//! assertions and for readable failure messages.

use std::fmt;

use bytes::Bytes;

/// One backend message as received.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendMessage {
    pub tag: u8,
    pub body: Bytes,
}

impl BackendMessage {
    pub fn new(tag: u8, body: impl Into<Bytes>) -> BackendMessage {
        BackendMessage {
            tag,
            body: body.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.tag == b'E'
    }

    pub fn is_ready(&self) -> bool {
        self.tag == b'Z'
    }

    /// The fields of an ErrorResponse or NoticeResponse, in order.
    pub fn fields(&self) -> Vec<(u8, String)> {
        let mut out = Vec::new();
        let mut rest = &self.body[..];
        while let Some((&code, tail)) = rest.split_first() {
            if code == 0 {
                break;
            }
            let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
            out.push((code, String::from_utf8_lossy(&tail[..end]).into_owned()));
            rest = tail.get(end + 1..).unwrap_or(&[]);
        }
        out
    }

    /// One field of an ErrorResponse / NoticeResponse (`b'C'` is the SQLSTATE).
    pub fn field(&self, code: u8) -> Option<String> {
        self.fields()
            .into_iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v)
    }

    /// The SQLSTATE of an ErrorResponse / NoticeResponse.
    pub fn sqlstate(&self) -> Option<String> {
        if self.tag == b'E' || self.tag == b'N' {
            self.field(b'C')
        } else {
            None
        }
    }

    /// The status byte of a ReadyForQuery (`I`, `T` or `E`).
    pub fn ready_status(&self) -> Option<u8> {
        (self.tag == b'Z')
            .then(|| self.body.first().copied())
            .flatten()
    }

    /// The tag of a CommandComplete (`SELECT 3`, `INSERT 0 1`…).
    pub fn command_tag(&self) -> Option<String> {
        (self.tag == b'C').then(|| cstr(&self.body))
    }

    /// The columns of a DataRow (`None` = NULL).
    pub fn data_row(&self) -> Option<Vec<Option<Bytes>>> {
        if self.tag != b'D' || self.body.len() < 2 {
            return None;
        }
        let n = i16::from_be_bytes([self.body[0], self.body[1]]);
        let mut at = 2;
        let mut cols = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes(self.body.get(at..at + 4)?.try_into().ok()?);
            at += 4;
            if len < 0 {
                cols.push(None);
            } else {
                let end = at + len as usize;
                cols.push(Some(self.body.slice(at..end.min(self.body.len()))));
                at = end;
            }
        }
        Some(cols)
    }

    /// The columns of a DataRow as text (lossy; for text-format results).
    pub fn text_row(&self) -> Option<Vec<Option<String>>> {
        self.data_row().map(|cols| {
            cols.into_iter()
                .map(|c| c.map(|b| String::from_utf8_lossy(&b).into_owned()))
                .collect()
        })
    }

    /// Name and value of a ParameterStatus.
    pub fn parameter_status(&self) -> Option<(String, String)> {
        if self.tag != b'S' {
            return None;
        }
        let name = cstr(&self.body);
        let value = cstr(&self.body[name.len() + 1..]);
        Some((name, value))
    }

    /// The human name of the message type.
    pub fn kind(&self) -> &'static str {
        match self.tag {
            b'R' => "Authentication",
            b'K' => "BackendKeyData",
            b'2' => "BindComplete",
            b'3' => "CloseComplete",
            b'C' => "CommandComplete",
            b'd' => "CopyData",
            b'c' => "CopyDone",
            b'G' => "CopyInResponse",
            b'H' => "CopyOutResponse",
            b'W' => "CopyBothResponse",
            b'D' => "DataRow",
            b'I' => "EmptyQueryResponse",
            b'E' => "ErrorResponse",
            b'V' => "FunctionCallResponse",
            b'v' => "NegotiateProtocolVersion",
            b'n' => "NoData",
            b'N' => "NoticeResponse",
            b'A' => "NotificationResponse",
            b't' => "ParameterDescription",
            b'S' => "ParameterStatus",
            b'1' => "ParseComplete",
            b's' => "PortalSuspended",
            b'Z' => "ReadyForQuery",
            b'T' => "RowDescription",
            _ => "Unknown",
        }
    }
}

impl fmt::Debug for BackendMessage {
    /// A readable rendering, used in assertion failures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}('{}')", self.kind(), self.tag as char)?;
        match self.tag {
            b'E' | b'N' => {
                let fields: Vec<String> = self
                    .fields()
                    .into_iter()
                    .map(|(c, v)| format!("{}={v:?}", c as char))
                    .collect();
                write!(f, " {{{}}}", fields.join(", "))
            }
            b'C' => write!(f, " {:?}", self.command_tag().unwrap_or_default()),
            b'Z' => write!(
                f,
                " {}",
                self.ready_status().map(|s| s as char).unwrap_or('?')
            ),
            b'S' => write!(f, " {:?}", self.parameter_status().unwrap_or_default()),
            _ if self.body.is_empty() => Ok(()),
            _ => write!(f, " {}", escape(&self.body, 200)),
        }
    }
}

/// Escapes bytes for display, cut at `max` bytes.
pub fn escape(bytes: &[u8], max: usize) -> String {
    let shown = &bytes[..bytes.len().min(max)];
    let mut s = String::from("b\"");
    for b in shown {
        match *b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(*b as char),
            other => s.push_str(&format!("\\x{other:02x}")),
        }
    }
    s.push('"');
    if bytes.len() > max {
        s.push_str(&format!("…({} bytes)", bytes.len()));
    }
    s
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
