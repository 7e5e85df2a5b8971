//! JSON-RPC calls to xnetd: plain HTTP on the local unix socket, or HTTPS
//! (or `--nossl` HTTP) to `-s host -p port`.

use std::io::{BufReader, Read, Write};
use std::sync::Arc;
use xapi_wire::jsonrpc::{self, Request, Version};
use xapi_wire::{MethodCall, Response, Value};

#[derive(Debug)]
pub enum CallError {
    /// The server answered with an XenAPI error: `[CODE, params…]`.
    Api(Vec<String>),
    /// Transport or protocol trouble.
    Transport(String),
}

pub enum Target {
    Unix(String),
    Tcp { host: String, port: u16, tls: bool },
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

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
        let stream: Box<dyn Stream> = match t {
            Target::Unix(p) => Box::new(
                std::os::unix::net::UnixStream::connect(p)
                    .map_err(|e| format!("Error: Unable to connect to xnetd at {p}: {e}"))?,
            ),
            Target::Tcp { host, port, tls } => {
                let s = std::net::TcpStream::connect((host.as_str(), *port))
                    .map_err(|e| format!("Error: Unable to contact server. Please check server and port settings. ({e})"))?;
                let _ = s.set_nodelay(true);
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
