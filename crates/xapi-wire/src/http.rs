//! The HTTP/1.1 framing XenAPI clients need around a call: one POST with a
//! Content-Length body, and reading one response's body back. Generic over
//! any reader, so keep-alive connections of every kind share it.

use std::io::{self, BufRead};

/// A complete POST request for `path` (e.g. `/jsonrpc`, `/RPC2`).
pub fn post(path: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one response: its headers, then exactly Content-Length bytes of
/// body, leaving whatever follows in `r` for the next response.
pub fn read_response(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut len = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            }
        }
    }
    let len = len.ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "response has no Content-Length")
    })?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_to_back_responses_are_split_by_length() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes";
        let mut r = io::BufReader::new(&wire[..]);
        assert_eq!(read_response(&mut r).unwrap(), b"ok");
        assert_eq!(read_response(&mut r).unwrap(), b"yes");
        assert_eq!(
            read_response(&mut r).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut r = io::BufReader::new(&b"HTTP/1.1 200 OK\r\n\r\n"[..]);
        assert_eq!(
            read_response(&mut r).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn post_carries_its_length() {
        let req = String::from_utf8(post("/jsonrpc", "application/json", "{}")).unwrap();
        assert!(req.starts_with("POST /jsonrpc HTTP/1.1\r\n"));
        assert!(req.ends_with("Content-Length: 2\r\n\r\n{}"));
    }
}
