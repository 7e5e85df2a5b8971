//! A small HTTP/1.1 server for the XenAPI endpoints: XML-RPC at `POST /` and
//! `/RPC2`, JSON-RPC at `POST /jsonrpc`; keep-alive, bounded bodies and
//! headers, one thread per connection up to a cap.

use crate::{Api, Origin};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use xapi_wire::stream::Format;
use xapi_wire::{jsonrpc, xmlrpc, Response};

pub const MAX_BODY: usize = 16 << 20;
const MAX_HEADER: usize = 64 << 10;
const MAX_CONNECTIONS: usize = 512;
const IDLE: Duration = Duration::from_secs(120);

static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Serves plain HTTP on a unix socket (local tools; local superuser).
pub fn serve_unix(api: Arc<Api>, listener: UnixListener) {
    for conn in listener.incoming().flatten() {
        let api = Arc::clone(&api);
        spawn_conn(move || {
            let _ = conn.set_read_timeout(Some(IDLE));
            let w = conn.try_clone();
            if let Ok(w) = w {
                serve_conn(&api, BufReader::new(conn), w, Origin::Unix);
            }
        });
    }
}

/// Serves HTTPS (or plain HTTP when `tls` is None, for loopback only) on TCP.
pub fn serve_tcp(api: Arc<Api>, listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) {
    for conn in listener.incoming().flatten() {
        let api = Arc::clone(&api);
        let tls = tls.clone();
        spawn_conn(move || {
            let _ = conn.set_read_timeout(Some(IDLE));
            let _ = conn.set_nodelay(true);
            match tls {
                Some(cfg) => {
                    let Ok(sc) = rustls::ServerConnection::new(cfg) else {
                        return;
                    };
                    let stream = Shared::new(rustls::StreamOwned::new(sc, conn));
                    serve_conn(
                        &api,
                        BufReader::new(stream.clone()),
                        stream,
                        Origin::Network,
                    );
                }
                None => {
                    if let Ok(w) = conn.try_clone() {
                        serve_conn(&api, BufReader::new(conn), w, Origin::Network);
                    }
                }
            }
        });
    }
}

fn spawn_conn(f: impl FnOnce() + Send + 'static) {
    if OPEN.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        OPEN.fetch_sub(1, Ordering::SeqCst);
        return; // dropping the connection is the back-pressure
    }
    std::thread::spawn(move || {
        f();
        OPEN.fetch_sub(1, Ordering::SeqCst);
    });
}

/// A TLS stream shared by the reader and the writer halves of one connection
/// (requests and responses alternate, so the lock is never contended).
#[derive(Clone)]
struct Shared(Arc<std::sync::Mutex<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>>);
impl Shared {
    fn new(s: rustls::StreamOwned<rustls::ServerConnection, TcpStream>) -> Self {
        Shared(Arc::new(std::sync::Mutex::new(s)))
    }
}
impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.lock().expect("tls").read(buf)
    }
}
impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("tls").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().expect("tls").flush()
    }
}

pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

#[derive(Debug, PartialEq)]
pub enum HttpError {
    Closed,
    Bad(&'static str),
    TooLarge,
    LengthRequired,
}

/// Reads one request. Bodies need Content-Length (XenAPI clients send it).
pub fn read_request(r: &mut impl BufRead) -> Result<Request, HttpError> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take((MAX_HEADER - head.len().min(MAX_HEADER)) as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|_| HttpError::Closed)?;
        if n == 0 {
            return Err(if head.is_empty() {
                HttpError::Closed
            } else {
                HttpError::Bad("truncated header")
            });
        }
        if head.len() + line.len() > MAX_HEADER {
            return Err(HttpError::TooLarge);
        }
        if line == b"\r\n" || line == b"\n" {
            if head.is_empty() {
                continue; // tolerate stray blank lines between requests
            }
            break;
        }
        head.extend_from_slice(&line);
    }
    let text = std::str::from_utf8(&head).map_err(|_| HttpError::Bad("header is not UTF-8"))?;
    let mut lines = text.lines();
    let start = lines.next().ok_or(HttpError::Bad("no request line"))?;
    let mut parts = start.split_whitespace();
    let method = parts.next().ok_or(HttpError::Bad("no method"))?.to_string();
    let path = parts.next().ok_or(HttpError::Bad("no path"))?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.0");
    let mut length = None;
    let mut keep_alive = version == "HTTP/1.1";
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            return Err(HttpError::Bad("malformed header"));
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| HttpError::Bad("bad Content-Length"))?,
            );
        } else if k.eq_ignore_ascii_case("connection") {
            keep_alive = v.eq_ignore_ascii_case("keep-alive")
                || (keep_alive && !v.eq_ignore_ascii_case("close"));
        } else if k.eq_ignore_ascii_case("transfer-encoding") && !v.eq_ignore_ascii_case("identity")
        {
            return Err(HttpError::LengthRequired);
        }
    }
    let length = match (method.as_str(), length) {
        ("POST", None) => return Err(HttpError::LengthRequired),
        (_, l) => l.unwrap_or(0),
    };
    if length > MAX_BODY {
        return Err(HttpError::TooLarge);
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)
        .map_err(|_| HttpError::Bad("truncated body"))?;
    Ok(Request {
        method,
        path,
        body,
        keep_alive,
    })
}

fn respond(
    w: &mut impl Write,
    status: &str,
    ctype: &str,
    body: &[u8],
    keep_alive: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

fn serve_conn(api: &Arc<Api>, mut r: impl BufRead, mut w: impl Write, origin: Origin) {
    loop {
        let req = match read_request(&mut r) {
            Ok(req) => req,
            Err(HttpError::Closed) => return,
            Err(HttpError::TooLarge) => {
                let _ = respond(
                    &mut w,
                    "413 Payload Too Large",
                    "text/plain",
                    b"request too large\n",
                    false,
                );
                return;
            }
            Err(HttpError::LengthRequired) => {
                let _ = respond(
                    &mut w,
                    "411 Length Required",
                    "text/plain",
                    b"Content-Length required\n",
                    false,
                );
                return;
            }
            Err(HttpError::Bad(why)) => {
                let _ = respond(
                    &mut w,
                    "400 Bad Request",
                    "text/plain",
                    format!("{why}\n").as_bytes(),
                    false,
                );
                return;
            }
        };
        let (status, ctype, body) = route(api, &req, origin);
        if respond(&mut w, status, ctype, body.as_bytes(), req.keep_alive).is_err()
            || !req.keep_alive
        {
            return;
        }
    }
}

/// Dispatches one request to its endpoint; protocol errors are answered in
/// the endpoint's own format, so clients always get a decodable reply.
pub fn route(
    api: &Arc<Api>,
    req: &Request,
    origin: Origin,
) -> (&'static str, &'static str, String) {
    let path = req.path.split('?').next().unwrap_or("");
    match (req.method.as_str(), path) {
        ("POST", "/" | "/RPC2") => {
            let body = match xmlrpc::parse_call(&req.body) {
                Ok(call) => match api.handle_bulk(&call, Format::Xml) {
                    Some(Ok(v)) => xmlrpc::encode_success_raw(&v),
                    Some(Err(e)) => xmlrpc::encode_response(&Response::Failure(e.to_description())),
                    None => xmlrpc::encode_response(&api.handle(call, origin)),
                },
                Err(e) => xmlrpc::encode_fault(-32700, &e.to_string()),
            };
            ("200 OK", "text/xml", body)
        }
        ("POST", "/jsonrpc") => {
            let body = match jsonrpc::parse_request(&req.body) {
                Ok(rq) => match api.handle_bulk(&rq.call, Format::Json) {
                    Some(Ok(v)) => jsonrpc::encode_success_raw(rq.version, &rq.id, &v),
                    Some(Err(e)) => jsonrpc::encode_response(
                        rq.version,
                        &rq.id,
                        &Response::Failure(e.to_description()),
                    ),
                    None => {
                        jsonrpc::encode_response(rq.version, &rq.id, &api.handle(rq.call, origin))
                    }
                },
                Err(e) => jsonrpc::encode_error(
                    jsonrpc::Version::V2,
                    &serde_json::Value::Null,
                    -32700,
                    &e.to_string(),
                ),
            };
            ("200 OK", "application/json", body)
        }
        ("GET", "/") => (
            "200 OK",
            "text/plain",
            "xnet XenAPI server: POST / or /RPC2 (XML-RPC), /jsonrpc (JSON-RPC)\n".into(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".into()),
    }
}

/// Connects to a local unix socket (used by the CLI's tests and tools).
pub fn connect_unix(path: &std::path::Path) -> std::io::Result<UnixStream> {
    UnixStream::connect(path)
}
