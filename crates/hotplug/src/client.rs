//! The one thing vif-xnet asks of xnetd, over its local unix socket: a
//! JSON-RPC call in a session of the local superuser.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use xapi_client::{CallError, Client, Target};
use xapi_wire::Value;

/// How long a call may take: xnetd answers once the agent has realized it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket cannot be reached (the message names it).
    #[error("{0}")]
    Connect(String),
    #[error("xnetd: {0}")]
    Protocol(String),
    /// XenAPI's error code and parameters.
    #[error("{}", .0.join(" "))]
    Api(Vec<String>),
}

impl From<CallError> for ClientError {
    fn from(e: CallError) -> ClientError {
        match e {
            CallError::Api(v) => ClientError::Api(v),
            CallError::Transport(t) => ClientError::Protocol(t),
        }
    }
}

/// What the script needs of the API, so tests can stand in for xnetd.
pub trait Api {
    fn call(&mut self, method: &str, params: &BTreeMap<String, String>) -> Result<(), ClientError>;
}

pub struct Xnetd {
    c: Client,
    session: Value,
}

impl Xnetd {
    pub fn connect(path: &Path) -> Result<Xnetd, ClientError> {
        let target = Target::Unix(path.display().to_string());
        let mut c =
            Client::connect_timeout(&target, Some(CALL_TIMEOUT)).map_err(ClientError::Connect)?;
        let s = |v: &str| Value::String(v.into());
        // On the unix socket root is the local superuser: no password.
        let session = c.call(
            "session.login_with_password",
            vec![s("root"), s(""), s("1.0"), s("vif-xnet")],
        )?;
        Ok(Xnetd { c, session })
    }
}

impl Api for Xnetd {
    fn call(&mut self, method: &str, params: &BTreeMap<String, String>) -> Result<(), ClientError> {
        let map = params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let session = self.session.clone();
        self.c.call(method, vec![session, Value::Struct(map)])?;
        Ok(())
    }
}

impl Drop for Xnetd {
    fn drop(&mut self) {
        let session = self.session.clone();
        let _ = self.c.call("session.logout", vec![session]);
    }
}
