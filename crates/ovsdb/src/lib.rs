//! An RFC 7047 OVSDB client over a unix or TCP socket: `transact` with a
//! bounded wait, answers to the server's `echo`, and reconnection on the next
//! call after the connection drops. Knows nothing of xnet.

pub mod framing;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("OVSDB I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("OVSDB protocol: {0}")]
    Protocol(String),
    #[error("OVSDB operation failed: {0}")]
    Op(String),
    #[error("bad address {0} (unix:PATH or tcp:HOST:PORT)")]
    Address(String),
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

struct Conn {
    stream: Box<dyn Stream>,
    splitter: framing::Splitter,
}

/// A client; calls from several threads are serialized on one connection.
pub struct Client {
    addr: String,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Client {
    pub fn new(addr: &str) -> Result<Client, OvsdbError> {
        if !addr.starts_with("unix:") && !addr.starts_with("tcp:") {
            return Err(OvsdbError::Address(addr.into()));
        }
        Ok(Client {
            addr: addr.to_string(),
            timeout: Duration::from_secs(10),
            conn: Mutex::new(None),
            next_id: 1.into(),
        })
    }

    /// Connects now (to fail early on a wrong address).
    pub fn connect(addr: &str) -> Result<Client, OvsdbError> {
        let c = Client::new(addr)?;
        c.echo()?;
        Ok(c)
    }

    fn open(&self) -> Result<Conn, OvsdbError> {
        let err = |source| OvsdbError::Connect {
            addr: self.addr.clone(),
            source,
        };
        let stream: Box<dyn Stream> = if let Some(p) = self.addr.strip_prefix("unix:") {
            let s = UnixStream::connect(p).map_err(err)?;
            s.set_read_timeout(Some(self.timeout))?;
            Box::new(s)
        } else {
            let a = &self.addr["tcp:".len()..];
            let s = std::net::TcpStream::connect(a).map_err(err)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_nodelay(true)?;
            Box::new(s)
        };
        Ok(Conn {
            stream,
            splitter: framing::Splitter::default(),
        })
    }

    /// One request/response exchange; a broken connection is dropped so the
    /// next call reconnects.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = exchange(guard.as_mut().expect("conn"), id, method, &params);
        if r.is_err() {
            *guard = None;
        }
        r
    }

    pub fn echo(&self) -> Result<(), OvsdbError> {
        self.call("echo", json!([])).map(|_| ())
    }

    /// Runs operations in one transaction; any failed operation fails it.
    pub fn transact(&self, db: &str, ops: Vec<Value>) -> Result<Vec<Value>, OvsdbError> {
        let mut params = vec![Value::String(db.into())];
        params.extend(ops);
        let r = self.call("transact", Value::Array(params))?;
        let results = r
            .as_array()
            .cloned()
            .ok_or_else(|| OvsdbError::Protocol("transact result is not an array".into()))?;
        for x in &results {
            if let Some(e) = x.get("error") {
                return Err(OvsdbError::Op(format!(
                    "{} {}",
                    e,
                    x.get("details").cloned().unwrap_or(Value::Null)
                )));
            }
        }
        Ok(results)
    }

    /// Rows of a table (all columns, with `_uuid`).
    pub fn select(&self, db: &str, table: &str) -> Result<Vec<Value>, OvsdbError> {
        let r = self.transact(
            db,
            vec![json!({"op": "select", "table": table, "where": []})],
        )?;
        Ok(r.first()
            .and_then(|x| x.get("rows"))
            .and_then(|x| x.as_array())
            .cloned()
            .unwrap_or_default())
    }
}

fn exchange(c: &mut Conn, id: u64, method: &str, params: &Value) -> Result<Value, OvsdbError> {
    let msg = json!({"method": method, "params": params, "id": id});
    c.stream.write_all(msg.to_string().as_bytes())?;
    let mut buf = [0u8; 65536];
    loop {
        while let Some(text) = c.splitter.next_message() {
            let v: Value =
                serde_json::from_slice(&text).map_err(|e| OvsdbError::Protocol(e.to_string()))?;
            // The server's keepalive: answer it, keep waiting for our reply.
            if v.get("method").and_then(|m| m.as_str()) == Some("echo") {
                let reply = json!({"result": v.get("params").cloned().unwrap_or(json!([])), "error": null, "id": v.get("id").cloned().unwrap_or(Value::Null)});
                c.stream.write_all(reply.to_string().as_bytes())?;
                continue;
            }
            if v.get("id").and_then(|x| x.as_u64()) != Some(id) {
                continue; // notifications or stale replies
            }
            if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
                return Err(OvsdbError::Protocol(e.to_string()));
            }
            return Ok(v.get("result").cloned().unwrap_or(Value::Null));
        }
        let n = c.stream.read(&mut buf)?;
        if n == 0 {
            return Err(OvsdbError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "OVSDB closed the connection",
            )));
        }
        c.splitter.push(&buf[..n]).map_err(OvsdbError::Protocol)?;
    }
}

/// Helpers for OVSDB atoms and sets.
pub mod atom {
    use serde_json::{json, Value};

    /// `["uuid", u]`
    pub fn uuid(u: &str) -> Value {
        json!(["uuid", u])
    }
    pub fn named(n: &str) -> Value {
        json!(["named-uuid", n])
    }
    pub fn set(items: Vec<Value>) -> Value {
        json!(["set", items])
    }
    pub fn map(pairs: &[(String, String)]) -> Value {
        json!([
            "map",
            pairs.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
        ])
    }
    /// Members of a set column (a single atom is a one-element set).
    pub fn set_items(v: &Value) -> Vec<Value> {
        match v.as_array() {
            Some(a) if a.first().and_then(|x| x.as_str()) == Some("set") => a
                .get(1)
                .and_then(|x| x.as_array())
                .cloned()
                .unwrap_or_default(),
            _ => vec![v.clone()],
        }
    }
    /// The uuid inside `["uuid", u]`.
    pub fn uuid_of(v: &Value) -> Option<String> {
        let a = v.as_array()?;
        (a.first()?.as_str()? == "uuid").then(|| a.get(1)?.as_str().map(str::to_string))?
    }
    pub fn map_pairs(v: &Value) -> Vec<(String, String)> {
        v.as_array()
            .and_then(|a| a.get(1))
            .and_then(|x| x.as_array())
            .map(|pairs| {
                pairs
                    .iter()
                    .filter_map(|p| Some((p.get(0)?.as_str()?.to_string(), scalar(p.get(1)?))))
                    .collect()
            })
            .unwrap_or_default()
    }
    /// A scalar atom as text (strings bare, others as JSON).
    pub fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}
