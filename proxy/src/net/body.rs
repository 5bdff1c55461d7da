//! [`Body`]: a cursor over a message body, for the few fields pgstash
//! decodes. Every accessor fails with a [`NetError`] instead of panicking
//! on short or malformed input.

use super::frame::NetError;

/// A cursor over a message body, for the few fields pgstash decodes.
/// Every accessor fails instead of panicking on short or malformed input.
pub struct Body<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> Body<'a> {
    pub fn new(data: &'a [u8], what: &'static str) -> Body<'a> {
        Body { data, what }
    }

    fn malformed(&self) -> NetError {
        NetError::Malformed { what: self.what }
    }

    pub fn cstr(&mut self) -> Result<&'a [u8], NetError> {
        let end = self
            .data
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.malformed())?;
        let (s, rest) = self.data.split_at(end);
        self.data = &rest[1..];
        Ok(s)
    }

    pub fn string(&mut self) -> Result<&'a str, NetError> {
        let bytes = self.cstr()?;
        std::str::from_utf8(bytes).map_err(|_| self.malformed())
    }

    pub fn u8(&mut self) -> Result<u8, NetError> {
        let (b, rest) = self.data.split_first().ok_or_else(|| self.malformed())?;
        self.data = rest;
        Ok(*b)
    }

    pub fn i16(&mut self) -> Result<i16, NetError> {
        let bytes = self.take(2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, NetError> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn i64(&mut self) -> Result<i64, NetError> {
        let bytes = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(i64::from_be_bytes(word))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], NetError> {
        if self.data.len() < n {
            return Err(self.malformed());
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_accessors_fail_instead_of_panicking() {
        let mut b = Body::new(b"abc", "Parse");
        assert!(b.cstr().is_err());
        let mut b = Body::new(b"\x00", "Bind");
        assert!(b.i16().is_err());
    }
}
