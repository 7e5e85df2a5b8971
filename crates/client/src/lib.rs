//! A XenAPI client: JSON-RPC calls over the local unix socket, or HTTPS
//! (or plain HTTP) to a host and port. Used by xe and by xnetd itself.

use std::io::{BufReader, Read, Write};
use std::sync::Arc;
use std::time::Duration;
use xapi_wire::jsonrpc::{self, Request, Version};
use xapi_wire::{MethodCall, Response, Value};

#[derive(Debug)]
pub enum CallError {
    /// The server answered with an XenAPI error: `[CODE, params…]`.
    Api(Vec<String>),
    /// Transport or protocol trouble.
    Transport(String),
}

/// `host` or `host:port` (443 when absent, XAPI's port).
pub fn parse_address(a: &str) -> Option<(String, u16)> {
    let a = a.trim();
    if a.is_empty() {
        return None;
    }
    if let Ok(sa) = a.parse::<std::net::SocketAddr>() {
        return Some((sa.ip().to_string(), sa.port()));
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_string(), p.parse().ok()?)),
        _ => Some((a.trim_matches(['[', ']']).to_string(), 443)),
    }
}

/// The longest wait for a TCP connection when a timeout is given.
const CONNECT_BOUND: Duration = Duration::from_secs(5);

pub enum Target {
    Unix(String),
    Tcp { host: String, port: u16, tls: bool },
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Accepts any server certificate, as xe does unless told otherwise.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);
impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub struct Client {
    stream: Box<dyn Stream>,
    reader_buf: Vec<u8>,
    next_id: u64,
}

impl Client {
    pub fn connect(t: &Target) -> Result<Client, String> {
        Client::connect_timeout(t, None)
    }

    /// As [`Client::connect`], with every read and write of the connection
    /// bounded by `timeout`, and connecting by at most 5 s of it.
    pub fn connect_timeout(t: &Target, timeout: Option<Duration>) -> Result<Client, String> {
        let bound = |e: std::io::Error| format!("Error: setting the connection's timeout: {e}");
        let stream: Box<dyn Stream> = match t {
            Target::Unix(p) => {
                let s = std::os::unix::net::UnixStream::connect(p)
                    .map_err(|e| format!("Error: Unable to connect to xnetd at {p}: {e}"))?;
                s.set_read_timeout(timeout).map_err(bound)?;
                s.set_write_timeout(timeout).map_err(bound)?;
                Box::new(s)
            }
            Target::Tcp { host, port, tls } => {
                let unreachable = |e: std::io::Error| {
                    format!("Error: Unable to contact server. Please check server and port settings. ({e})")
                };
                let s = match timeout {
                    // Connecting is bounded too, by at most CONNECT_BOUND.
                    Some(d) => {
                        let addrs =
                            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))
                                .map_err(unreachable)?;
                        let mut last = std::io::Error::other("no address");
                        let mut found = None;
                        for a in addrs {
                            match std::net::TcpStream::connect_timeout(&a, d.min(CONNECT_BOUND)) {
                                Ok(s) => {
                                    found = Some(s);
                                    break;
                                }
                                Err(e) => last = e,
                            }
                        }
                        found.ok_or(last).map_err(unreachable)?
                    }
                    None => {
                        std::net::TcpStream::connect((host.as_str(), *port)).map_err(unreachable)?
                    }
                };
                let _ = s.set_nodelay(true);
                s.set_read_timeout(timeout).map_err(bound)?;
                s.set_write_timeout(timeout).map_err(bound)?;
                if *tls {
                    #[allow(deprecated)] // ring without post-quantum groups, see xnet-api's tls.rs
                    let provider = Arc::new(rustls::crypto::ring::default_provider());
                    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                        .with_safe_default_protocol_versions()
                        .map_err(|e| e.to_string())?
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                        .with_no_client_auth();
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| e.to_string())?;
                    let conn = rustls::ClientConnection::new(Arc::new(cfg), name)
                        .map_err(|e| e.to_string())?;
                    Box::new(rustls::StreamOwned::new(conn, s))
                } else {
                    Box::new(s)
                }
            }
        };
        Ok(Client {
            stream,
            reader_buf: vec![],
            next_id: 1,
        })
    }

    pub fn call(&mut self, method: &str, params: Vec<Value>) -> Result<Value, CallError> {
        let req = Request {
            version: Version::V1,
            id: self.next_id.into(),
            call: MethodCall {
                method: method.into(),
                params,
            },
        };
        self.next_id += 1;
        let body = jsonrpc::encode_request(&req);
        let t = |e: std::io::Error| {
            CallError::Transport(format!("connection to the server failed: {e}"))
        };
        self.stream
            .write_all(&xapi_wire::http::post(
                "/jsonrpc",
                "application/json",
                &body,
            ))
            .map_err(t)?;
        self.stream.flush().map_err(t)?;
        let body = self.read_response().map_err(t)?;
        match jsonrpc::parse_response(&body).map_err(|e| CallError::Transport(e.to_string()))? {
            Response::Success(v) => Ok(v),
            Response::Failure(e) => Err(CallError::Api(e)),
        }
    }

    fn read_response(&mut self) -> std::io::Result<Vec<u8>> {
        let mut r = BufReader::new(ReadWith {
            s: &mut self.stream,
            pending: std::mem::take(&mut self.reader_buf),
        });
        let body = xapi_wire::http::read_response(&mut r)?;
        let rest = r.buffer().to_vec();
        drop(r);
        self.reader_buf = rest;
        Ok(body)
    }
}

/// A reader that first drains bytes left over from the previous response.
struct ReadWith<'a> {
    s: &'a mut Box<dyn Stream>,
    pending: Vec<u8>,
}
impl Read for ReadWith<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.pending.is_empty() {
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            return Ok(n);
        }
        self.s.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_address("10.0.0.1"), Some(("10.0.0.1".into(), 443)));
        assert_eq!(
            parse_address("10.0.0.1:8443"),
            Some(("10.0.0.1".into(), 8443))
        );
        assert_eq!(
            parse_address("pool.example"),
            Some(("pool.example".into(), 443))
        );
        assert_eq!(
            parse_address("[fd00::1]:444"),
            Some(("fd00::1".into(), 444))
        );
        assert_eq!(parse_address("fd00::1"), Some(("fd00::1".into(), 443)));
        assert_eq!(parse_address("h:x"), None);
        assert_eq!(parse_address(" "), None);
    }
}
