//! Splits a byte stream into OpenFlow messages by the length field of the
//! 8-byte header. Several messages may arrive in one read and one message may
//! arrive over several reads.

use crate::OfError;
use std::io::Read;

/// Size of `struct ofp_header`.
pub const HEADER_LEN: usize = 8;

/// One framed message: header fields plus the body after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMsg {
    pub version: u8,
    pub type_: u8,
    pub xid: u32,
    /// The bytes after the 8-byte header.
    pub body: Vec<u8>,
}

/// Accumulates received bytes and hands out complete messages.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, if the buffer holds one.
    pub fn next_message(&mut self) -> Result<Option<RawMsg>, OfError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize;
        if len < HEADER_LEN {
            return Err(OfError::Protocol(format!(
                "message length {len} shorter than the OpenFlow header"
            )));
        }
        if self.buf.len() < len {
            return Ok(None);
        }
        let msg = RawMsg {
            version: self.buf[0],
            type_: self.buf[1],
            xid: u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]),
            body: self.buf[HEADER_LEN..len].to_vec(),
        };
        self.buf.drain(..len);
        Ok(Some(msg))
    }
}

/// Reads from `r` until `framer` yields a complete message. A read timeout
/// on `r` surfaces as [`OfError::Timeout`], end of stream as an `Io` error of
/// kind `UnexpectedEof`.
pub fn read_message<R: Read>(r: &mut R, framer: &mut Framer) -> Result<RawMsg, OfError> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(m) = framer.next_message()? {
            return Ok(m);
        }
        let n = match r.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(OfError::from_io(e)),
        };
        if n == 0 {
            return Err(OfError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed ({} bytes of a partial message pending)",
                    framer.pending()
                ),
            )));
        }
        framer.push(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A reader that returns the given chunks, one per `read` call.
    struct Chunks(VecDeque<Vec<u8>>);

    impl Read for Chunks {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(c) => {
                    assert!(c.len() <= out.len());
                    out[..c.len()].copy_from_slice(&c);
                    Ok(c.len())
                }
            }
        }
    }

    fn msg(type_: u8, xid: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![4, type_];
        v.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        v.extend_from_slice(&xid.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn two_in_one_read_then_one_in_three_pieces() {
        let echo = msg(2, 7, b"ping");
        let barrier = msg(21, 8, &[]);
        let mut both = echo.clone();
        both.extend_from_slice(&barrier);

        let err = msg(1, 9, &[0, 5, 0, 3, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
        // Split inside the header and inside the body.
        let pieces = vec![err[..3].to_vec(), err[3..10].to_vec(), err[10..].to_vec()];

        let mut chunks = VecDeque::new();
        chunks.push_back(both);
        chunks.extend(pieces);
        let mut r = Chunks(chunks);
        let mut f = Framer::default();

        let a = read_message(&mut r, &mut f).unwrap();
        assert_eq!((a.version, a.type_, a.xid), (4, 2, 7));
        assert_eq!(a.body, b"ping");
        let b = read_message(&mut r, &mut f).unwrap();
        assert_eq!((b.type_, b.xid, b.body.len()), (21, 8, 0));
        assert_eq!(f.pending(), 0);
        let c = read_message(&mut r, &mut f).unwrap();
        assert_eq!((c.type_, c.xid), (1, 9));
        assert_eq!(c.body, &err[8..]);
        assert_eq!(f.pending(), 0);
        // Nothing left: end of stream.
        match read_message(&mut r, &mut f) {
            Err(OfError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
            other => panic!("expected EOF, got {other:?}"),
        }
    }

    #[test]
    fn framer_waits_for_whole_message_and_rejects_short_length() {
        let mut f = Framer::default();
        let m = msg(0, 1, &[1, 2, 3, 4, 5, 6, 7, 8]);
        for (i, b) in m.iter().enumerate() {
            assert_eq!(f.next_message().unwrap(), None, "byte {i}");
            f.push(&[*b]);
        }
        assert_eq!(f.next_message().unwrap().unwrap().body, &m[8..]);

        f.push(&[4, 0, 0, 4, 0, 0, 0, 1]);
        assert!(matches!(f.next_message(), Err(OfError::Protocol(_))));
    }
}
