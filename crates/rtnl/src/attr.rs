//! Netlink attribute (struct nlattr) encoding and a bounds-checked decoder.

use crate::RtnlError;

const NLA_HDRLEN: usize = 4;
/// NLA_F_NESTED | NLA_F_NET_BYTEORDER: flag bits, not part of the type.
const NLA_TYPE_MASK: u16 = 0x3fff;
pub(crate) const NLA_F_NESTED: u16 = 0x8000;

pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterates `(type, payload)` over a buffer of attributes. Yields one error and then
/// stops if an attribute's length is inconsistent with the buffer.
pub(crate) struct Attrs<'a> {
    buf: &'a [u8],
}

pub(crate) fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), RtnlError>;

    fn next(&mut self) -> Option<Self::Item> {
        // Trailing bytes shorter than a header are padding.
        if self.buf.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([self.buf[0], self.buf[1]]) as usize;
        let ty = u16::from_ne_bytes([self.buf[2], self.buf[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.buf.len() {
            let e = RtnlError::Parse(format!(
                "attribute type {ty} length {len} with {} bytes left",
                self.buf.len()
            ));
            self.buf = &[];
            return Some(Err(e));
        }
        let payload = &self.buf[NLA_HDRLEN..len];
        let next = align4(len).min(self.buf.len());
        self.buf = &self.buf[next..];
        Some(Ok((ty, payload)))
    }
}

pub(crate) fn put(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = NLA_HDRLEN + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

pub(crate) fn put_u32(buf: &mut Vec<u8>, ty: u16, v: u32) {
    put(buf, ty, &v.to_ne_bytes());
}

/// NUL-terminated string attribute.
pub(crate) fn put_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut d = s.as_bytes().to_vec();
    d.push(0);
    put(buf, ty, &d);
}

/// Starts a nested attribute; returns the offset to pass to `nest_end`.
pub(crate) fn nest_start(buf: &mut Vec<u8>, ty: u16) -> usize {
    let start = buf.len();
    put(buf, ty | NLA_F_NESTED, &[]);
    start
}

pub(crate) fn nest_end(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

pub(crate) fn get_u32(what: &str, d: &[u8]) -> Result<u32, RtnlError> {
    let b: [u8; 4] = d
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| RtnlError::Parse(format!("{what}: {} bytes, want 4", d.len())))?;
    Ok(u32::from_ne_bytes(b))
}

pub(crate) fn get_u8(what: &str, d: &[u8]) -> Result<u8, RtnlError> {
    d.first()
        .copied()
        .ok_or_else(|| RtnlError::Parse(format!("{what}: empty")))
}

/// A string attribute up to its first NUL (the kernel always adds one; be lenient).
pub(crate) fn get_str(what: &str, d: &[u8]) -> Result<String, RtnlError> {
    let end = d.iter().position(|&b| b == 0).unwrap_or(d.len());
    String::from_utf8(d[..end].to_vec()).map_err(|_| RtnlError::Parse(format!("{what}: not UTF-8")))
}

pub(crate) fn get_u64_at(d: &[u8], i: usize) -> u64 {
    d.get(i * 8..i * 8 + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_ne_bytes)
        .unwrap_or(0)
}
