//! The one thing vif-xnet asks of xnetd, over its local unix socket: a
//! JSON-RPC call in a session of the local superuser.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;
use xapi_wire::jsonrpc::{self, Request, Version};
use xapi_wire::{MethodCall, Response, Value};

/// How long a call may take: xnetd answers once the agent has realized it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("xnetd at {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("xnetd: {0}")]
    Io(#[from] std::io::Error),
    #[error("xnetd: {0}")]
    Protocol(String),
    /// XenAPI's error code and parameters.
    #[error("{}", .0.join(" "))]
    Api(Vec<String>),
}

/// What the script needs of the API, so tests can stand in for xnetd.
pub trait Api {
    fn call(&mut self, method: &str, params: &BTreeMap<String, String>) -> Result<(), ClientError>;
}

pub struct Xnetd {
    s: UnixStream,
    session: Value,
    next: u64,
}

impl Xnetd {
    pub fn connect(path: &Path) -> Result<Xnetd, ClientError> {
        let s = UnixStream::connect(path)
            .map_err(|e| ClientError::Connect(path.display().to_string(), e))?;
        s.set_read_timeout(Some(CALL_TIMEOUT))?;
        s.set_write_timeout(Some(CALL_TIMEOUT))?;
        let mut x = Xnetd {
            s,
            session: Value::Nil,
            next: 1,
        };
        let s = |v: &str| Value::String(v.into());
        // On the unix socket root is the local superuser: no password.
        x.session = x.raw(
            "session.login_with_password",
            vec![s("root"), s(""), s("1.0"), s("vif-xnet")],
        )?;
        Ok(x)
    }

    fn raw(&mut self, method: &str, params: Vec<Value>) -> Result<Value, ClientError> {
        let req = Request {
            version: Version::V1,
            id: self.next.into(),
            call: MethodCall {
                method: method.into(),
                params,
            },
        };
        self.next += 1;
        let body = jsonrpc::encode_request(&req);
        self.s.write_all(&xapi_wire::http::post(
            "/jsonrpc",
            "application/json",
            &body,
        ))?;
        // One request at a time, so a fresh reader loses nothing.
        let body = xapi_wire::http::read_response(&mut BufReader::new(&self.s))?;
        match jsonrpc::parse_response(&body).map_err(|e| ClientError::Protocol(e.to_string()))? {
            Response::Success(v) => Ok(v),
            Response::Failure(e) => Err(ClientError::Api(e)),
        }
    }
}

impl Api for Xnetd {
    fn call(&mut self, method: &str, params: &BTreeMap<String, String>) -> Result<(), ClientError> {
        let map = params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let session = self.session.clone();
        self.raw(method, vec![session, Value::Struct(map)])
            .map(|_| ())
    }
}

impl Drop for Xnetd {
    fn drop(&mut self) {
        let session = self.session.clone();
        let _ = self.raw("session.logout", vec![session]);
    }
}
