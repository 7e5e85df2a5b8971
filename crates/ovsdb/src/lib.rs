//! An RFC 7047 OVSDB client over a unix or TCP socket: `transact` with a
//! bounded wait, answers to the server's `echo`, a `monitor` kept as a local
//! replica from update notifications, and reconnection (with the monitor
//! re-established) on the next call after the connection drops. Knows nothing
//! of xnet.

pub mod framing;

use serde_json::{json, Value};
use std::collections::BTreeMap;
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

trait Stream: Read + Write + Send {
    fn set_nonblocking(&self, nb: bool) -> std::io::Result<()>;
}
impl Stream for UnixStream {
    fn set_nonblocking(&self, nb: bool) -> std::io::Result<()> {
        UnixStream::set_nonblocking(self, nb)
    }
}
impl Stream for std::net::TcpStream {
    fn set_nonblocking(&self, nb: bool) -> std::io::Result<()> {
        std::net::TcpStream::set_nonblocking(self, nb)
    }
}

struct Conn {
    stream: Box<dyn Stream>,
    splitter: framing::Splitter,
}

/// The monitored tables as the server last told us: table → row uuid → row
/// (an object of the monitored columns).
#[derive(Debug, Default, Clone)]
pub struct Replica {
    pub tables: BTreeMap<String, BTreeMap<String, Value>>,
    /// Bumped by every applied update and by every re-synchronization.
    pub generation: u64,
}

impl Replica {
    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&String, &Value)> {
        self.tables.get(table).into_iter().flatten()
    }

    pub fn get(&self, table: &str, uuid: &str) -> Option<&Value> {
        self.tables.get(table)?.get(uuid)
    }

    /// Applies a `<table-updates>` object (monitor version 1).
    fn apply(&mut self, updates: &Value) -> Result<(), OvsdbError> {
        let bad = || OvsdbError::Protocol("malformed table-updates".into());
        for (table, rows) in updates.as_object().ok_or_else(bad)? {
            let t = self.tables.entry(table.clone()).or_default();
            for (uuid, u) in rows.as_object().ok_or_else(bad)? {
                match u.get("new") {
                    Some(new) if new.is_object() => {
                        t.insert(uuid.clone(), new.clone());
                    }
                    _ => {
                        t.remove(uuid);
                    }
                }
            }
        }
        self.generation += 1;
        Ok(())
    }
}

/// What to monitor: database and `<monitor-requests>`.
#[derive(Clone)]
struct MonitorSpec {
    db: String,
    requests: Value,
}

const MONITOR_ID: &str = "xnet-replica";

/// A client; calls from several threads are serialized on one connection.
pub struct Client {
    addr: String,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
    next_id: std::sync::atomic::AtomicU64,
    monitor: Mutex<Option<MonitorSpec>>,
    replica: Mutex<Replica>,
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
            monitor: Mutex::new(None),
            replica: Mutex::new(Replica::default()),
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
        let mut c = Conn {
            stream,
            splitter: framing::Splitter::default(),
        };
        // A new connection starts the monitor afresh: its initial contents
        // replace whatever the replica held (rows deleted meanwhile go).
        let spec = self
            .monitor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(m) = spec {
            let id = self.next_id();
            let initial = exchange(
                &mut c,
                id,
                "monitor",
                &json!([m.db, MONITOR_ID, m.requests]),
                &self.replica,
            )?;
            let mut r = self.replica.lock().unwrap_or_else(|e| e.into_inner());
            let generation = r.generation + 1;
            *r = Replica::default();
            r.apply(&initial)?;
            r.generation = generation;
        }
        Ok(c)
    }

    fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// One request/response exchange; a broken connection is dropped so the
    /// next call reconnects.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, OvsdbError> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let id = self.next_id();
        let r = exchange(
            guard.as_mut().expect("conn"),
            id,
            method,
            &params,
            &self.replica,
        );
        if r.is_err() {
            *guard = None;
        }
        r
    }

    /// Keeps a replica of `requests` (`{table: {"columns": [...]}}`) in
    /// `db`, fed by the server's update notifications from now on and
    /// re-synchronized after every reconnect.
    pub fn monitor(&self, db: &str, requests: Value) -> Result<(), OvsdbError> {
        *self.monitor.lock().unwrap_or_else(|e| e.into_inner()) = Some(MonitorSpec {
            db: db.into(),
            requests,
        });
        // Reconnect so the monitor starts on a fresh connection.
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.poll()
    }

    /// Reads the notifications that have arrived (without waiting) and
    /// answers keepalives; reconnects if the connection is gone.
    pub fn poll(&self) -> Result<(), OvsdbError> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let r = drain(guard.as_mut().expect("conn"), &self.replica);
        if r.is_err() {
            *guard = None;
        }
        r
    }

    /// Reads the replica under its lock.
    pub fn replica<T>(&self, f: impl FnOnce(&Replica) -> T) -> T {
        f(&self.replica.lock().unwrap_or_else(|e| e.into_inner()))
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

/// Handles one message that is not the reply being waited for: answers
/// the server's keepalive, applies monitor updates, ignores the rest.
fn notification(c: &mut Conn, v: &Value, replica: &Mutex<Replica>) -> Result<(), OvsdbError> {
    match v.get("method").and_then(|m| m.as_str()) {
        Some("echo") => {
            let reply = json!({"result": v.get("params").cloned().unwrap_or(json!([])), "error": null, "id": v.get("id").cloned().unwrap_or(Value::Null)});
            c.stream.write_all(reply.to_string().as_bytes())?;
        }
        Some("update") => {
            let p = v.get("params").and_then(|p| p.as_array());
            if let Some([id, updates]) = p.map(|p| p.as_slice()) {
                if id == MONITOR_ID {
                    replica
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .apply(updates)?;
                }
            }
        }
        _ => {} // stale replies, other notifications
    }
    Ok(())
}

fn parse(text: &[u8]) -> Result<Value, OvsdbError> {
    serde_json::from_slice(text).map_err(|e| OvsdbError::Protocol(e.to_string()))
}

fn exchange(
    c: &mut Conn,
    id: u64,
    method: &str,
    params: &Value,
    replica: &Mutex<Replica>,
) -> Result<Value, OvsdbError> {
    let msg = json!({"method": method, "params": params, "id": id});
    c.stream.write_all(msg.to_string().as_bytes())?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        while let Some(text) = c.splitter.next_message() {
            let v = parse(&text)?;
            if v.get("id").and_then(|x| x.as_u64()) != Some(id) || v.get("method").is_some() {
                notification(c, &v, replica)?;
                continue;
            }
            if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
                return Err(OvsdbError::Protocol(e.to_string()));
            }
            return Ok(v.get("result").cloned().unwrap_or(Value::Null));
        }
        let n = c.stream.read(&mut buf)?;
        if n == 0 {
            return Err(closed());
        }
        c.splitter.push(&buf[..n]).map_err(OvsdbError::Protocol)?;
    }
}

fn closed() -> OvsdbError {
    OvsdbError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "OVSDB closed the connection",
    ))
}

/// Processes whatever has arrived, without blocking.
fn drain(c: &mut Conn, replica: &Mutex<Replica>) -> Result<(), OvsdbError> {
    let mut buf = vec![0u8; 1 << 16];
    c.stream.set_nonblocking(true)?;
    let read = loop {
        match c.stream.read(&mut buf) {
            Ok(0) => break Err(closed()),
            Ok(n) => {
                if let Err(e) = c.splitter.push(&buf[..n]) {
                    break Err(OvsdbError::Protocol(e));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e.into()),
        }
    };
    c.stream.set_nonblocking(false)?;
    read?;
    while let Some(text) = c.splitter.next_message() {
        let v = parse(&text)?;
        notification(c, &v, replica)?;
    }
    Ok(())
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
