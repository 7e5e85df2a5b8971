//! A pool member's side: it follows the coordinator (the coordinator's
//! records replicated into the local store, what the local agent made of
//! them reported back) and reports what its agent observes of its own host.
//! Both run over their own authenticated connection, found at the address
//! in `pool.conf` or, when the coordinator moved its management, at any
//! address the replicated records give it.

use crate::lock;
use crate::pool::{replicated, Membership, PoolError};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xapi_wire::Value;
use xnet_model::{db, Record};
use xnet_store::Store;

type Shared<T> = Arc<Mutex<T>>;

/// One authenticated connection to the coordinator (`session.slave_login`).
struct Link {
    store: Arc<Store<Record>>,
    membership: Shared<Membership>,
    secret: String,
    host_uuid: String,
    /// The connection, its session, and the `pool.conf` address when it
    /// was made.
    conn: Option<(xapi_client::Client, Value, Option<String>)>,
}

/// The bound on each read and write to the coordinator (its long polls
/// answer within 5 s), after which a silent coordinator is looked for
/// again; connecting waits at most 5 s per address.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// `ip:port`, bracketed for IPv6.
fn address(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The coordinator's management address and its other addresses, as last
/// replicated: the pool master's `host.address`, then the IPs of its PIFs.
fn coordinator_addresses(store: &Store<Record>) -> Vec<String> {
    store.read(|v| {
        let Some(master) = v
            .iter("pool")
            .next()
            .map(|(_, p)| db::s(p, "master").to_string())
        else {
            return vec![];
        };
        let mut out: Vec<String> = v
            .get("host", &master)
            .map(|h| db::s(h, "address").to_string())
            .into_iter()
            .collect();
        let mut pifs: Vec<&Record> = v
            .iter("PIF")
            .map(|(_, p)| p)
            .filter(|p| db::s(p, "host") == master)
            .collect();
        pifs.sort_by_key(|p| !db::b(p, "management"));
        out.extend(pifs.iter().map(|p| db::s(p, "IP").to_string()));
        out.retain(|a| !a.is_empty());
        out.dedup();
        out
    })
}

impl Link {
    fn new(store: Arc<Store<Record>>, membership: Shared<Membership>) -> Result<Link, PoolError> {
        let (secret, host_uuid) = lock(&membership).member_identity()?;
        Ok(Link {
            store,
            membership,
            secret,
            host_uuid,
            conn: None,
        })
    }

    /// The address in `pool.conf` first, then the coordinator's others.
    fn candidates(&self) -> Vec<String> {
        let current = lock(&self.membership)
            .coordinator()
            .unwrap_or_default()
            .to_string();
        let port = xapi_client::parse_address(&current).map_or(443, |(_, p)| p);
        let mut out = vec![current];
        for ip in coordinator_addresses(&self.store) {
            let a = address(&ip, port);
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    fn login(&self, addr: &str) -> Result<(xapi_client::Client, Value), String> {
        let (host, port) =
            xapi_client::parse_address(addr).ok_or_else(|| format!("bad address {addr}"))?;
        let target = xapi_client::Target::Tcp {
            host,
            port,
            tls: true,
        };
        let mut c = xapi_client::Client::connect_timeout(&target, Some(IO_TIMEOUT))?;
        let s = c
            .call(
                "session.slave_login",
                vec![
                    Value::String(self.host_uuid.clone()),
                    Value::String(self.secret.clone()),
                ],
            )
            .map_err(|e| format!("{addr}: {e:?}"))?;
        Ok((c, s))
    }

    fn call(&mut self, method: &str, mut params: Vec<Value>) -> Result<Value, String> {
        // The coordinator moved (pool.conf follows it): go there now, the
        // old address may be gone without a word.
        let current = lock(&self.membership).coordinator().map(str::to_string);
        if self.conn.as_ref().is_some_and(|c| c.2 != current) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut errors = vec![];
            for a in self.candidates() {
                match self.login(&a) {
                    Ok((c, s)) => {
                        self.conn = Some((c, s, current.clone()));
                        break;
                    }
                    Err(e) => errors.push(e),
                }
            }
            if self.conn.is_none() {
                return Err(format!(
                    "the coordinator is unreachable: {}",
                    errors.join("; ")
                ));
            }
        }
        let (c, s, _) = self.conn.as_mut().expect("connected");
        params.insert(0, s.clone());
        let r = c.call(method, params).map_err(|e| format!("{e:?}"));
        if r.is_err() {
            self.conn = None;
        }
        r
    }
}

/// One replication applied by [`Follower::step`].
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// The local store's generation holding it.
    pub local: u64,
    /// The coordinator's generation it brings this member to.
    pub generation: u64,
    /// A call on the coordinator waits for this member's report of it;
    /// otherwise the report may come later.
    pub awaited: bool,
}

/// Follows the coordinator: replicates its records into the local store and
/// reports what the local agent realized.
pub struct Follower {
    link: Link,
    since: u64,
    /// Local generations this follower wrote (not the agent's observations).
    own: Shared<BTreeSet<u64>>,
    /// The coordinator's management address as last replicated.
    coordinator_ip: Option<String>,
}

impl Follower {
    pub fn new(
        store: Arc<Store<Record>>,
        membership: Shared<Membership>,
    ) -> Result<Follower, PoolError> {
        Ok(Follower {
            link: Link::new(store, membership)?,
            since: 0,
            own: Shared::default(),
            coordinator_ip: None,
        })
    }

    /// The coordinator generation replicated so far.
    pub fn since(&self) -> u64 {
        self.since
    }

    /// This member's host ref in the replicated records.
    pub fn host_ref(&self) -> Option<String> {
        let uuid = &self.link.host_uuid;
        self.link.store.read(|v| {
            v.iter("host")
                .find(|(_, r)| db::s(r, "uuid") == uuid)
                .map(|(k, _)| k.to_string())
        })
    }

    /// The reporter of this member's observations, on its own connection.
    pub fn reporter(&self) -> Result<Reporter, PoolError> {
        let link = Link::new(
            Arc::clone(&self.link.store),
            Arc::clone(&self.link.membership),
        )?;
        Ok(Reporter {
            seen: link.store.generation(),
            link,
            own: Arc::clone(&self.own),
        })
    }

    /// Waits up to `timeout` for the coordinator's next changes and applies
    /// them in one local transaction. Returns what arrived: (local
    /// generation, the coordinator's generation, whether a call on the
    /// coordinator waits for this member's report of it).
    pub fn step(&mut self, timeout: Duration) -> Result<Option<Step>, String> {
        let r = self.link.call(
            "pool.xnet_replicate",
            vec![
                Value::Int(self.since as i64),
                Value::Float(timeout.as_secs_f64()),
            ],
        )?;
        let bad = || "malformed replication answer".to_string();
        let m = r.as_struct().ok_or_else(bad)?;
        let generation = match m.get("generation") {
            Some(Value::Int(g)) => *g as u64,
            _ => return Err(bad()),
        };
        let full = matches!(m.get("full"), Some(Value::Bool(true)));
        let me = self.host_ref();
        let awaited = m.get("awaited").and_then(Value::as_array).is_none_or(|a| {
            a.iter()
                .any(|h| h.as_str() == Some("*") || h.as_str() == me.as_deref())
        });
        let changes = m.get("changes").and_then(Value::as_array).ok_or_else(bad)?;
        if changes.is_empty() && !full {
            self.since = generation;
            return Ok(None);
        }
        let mut rows = vec![];
        for c in changes {
            match c.as_array() {
                Some([Value::String(class), Value::String(r), rec]) if replicated(class) => {
                    rows.push((class.clone(), r.clone(), rec.as_struct().cloned()))
                }
                _ => return Err(bad()),
            }
        }
        let res = self.link.store.write(|t| {
            if full {
                let keep: BTreeSet<(&str, &str)> = rows
                    .iter()
                    .map(|(c, r, _)| (c.as_str(), r.as_str()))
                    .collect();
                for c in xnet_model::schema::CLASSES.iter().filter(|c| !c.volatile) {
                    let stale: Vec<String> = t
                        .iter(c.name)
                        .filter(|(r, _)| !keep.contains(&(c.name, *r)))
                        .map(|(r, _)| r.to_string())
                        .collect();
                    for r in stale {
                        t.delete(c.name, &r);
                    }
                }
            }
            for (class, r, rec) in &rows {
                match rec {
                    Some(rec) => t.put(class, r, rec.clone()),
                    None => {
                        t.delete(class, r);
                    }
                }
            }
            Ok::<_, ()>(())
        });
        let local = match res {
            Ok((_, commit)) => commit.generation,
            Err(e) => return Err(format!("applying the coordinator's records: {e:?}")),
        };
        lock(&self.own).insert(local);
        self.since = generation;
        self.follow_address();
        Ok(Some(Step {
            local,
            generation,
            awaited,
        }))
    }

    /// Moves `pool.conf` to the coordinator's management address when the
    /// records say it changed, so a coordinator that moved its management is
    /// found there (and clients sent there) from now on. The address first
    /// seen is left as joined: the join may have used a name.
    fn follow_address(&mut self) {
        let Some(ip) = coordinator_addresses(&self.link.store).into_iter().next() else {
            return;
        };
        let before = self.coordinator_ip.replace(ip.clone());
        if before.is_none_or(|b| b == ip) {
            return;
        }
        let mut m = lock(&self.link.membership);
        let current = m.coordinator().unwrap_or_default().to_string();
        let Some((host, port)) = xapi_client::parse_address(&current) else {
            return;
        };
        if host == ip {
            return;
        }
        let moved = address(&ip, port);
        match m.set(Some(moved.clone())) {
            Ok(()) => eprintln!("xnetd: the coordinator moved from {current} to {moved}"),
            Err(e) => eprintln!("xnetd: recording the coordinator's new address: {e}"),
        }
    }

    /// Tells the coordinator what the agent made of its generation.
    pub fn report(&mut self, host: &str, generation: u64, error: &str) -> Result<(), String> {
        self.link
            .call(
                "host.xnet_realized",
                vec![
                    Value::String(host.into()),
                    Value::Int(generation as i64),
                    Value::String(error.into()),
                ],
            )
            .map(|_| ())
    }
}

/// Carries the local agent's observations of this host (inventory, link
/// state, counters, leases) to the coordinator (`host.xnet_report`).
pub struct Reporter {
    link: Link,
    seen: u64,
    own: Shared<BTreeSet<u64>>,
}

impl Reporter {
    /// The agent's records changed after the last report, or every record
    /// of the reported classes when the change history is gone.
    fn changes(&mut self) -> Vec<Value> {
        let store = &self.link.store;
        let evs = store.events_since(self.seen).ok();
        let own = lock(&self.own).clone();
        let keys: Option<BTreeSet<(String, String)>> = evs.map(|evs| {
            evs.into_iter()
                .filter(|e| !own.contains(&e.generation))
                .filter(|e| xnet_model::report::reported_class(&e.table))
                .map(|e| (e.table, e.key))
                .collect()
        });
        store.read(|v| {
            self.seen = v.generation();
            let one = |c: &str, r: &str, rec: &Record| {
                Value::Array(vec![
                    Value::String(c.into()),
                    Value::String(r.into()),
                    Value::Struct(rec.clone()),
                ])
            };
            match keys {
                Some(keys) => keys
                    .iter()
                    .filter_map(|(c, r)| v.get(c, r).map(|rec| one(c, r, rec)))
                    .collect(),
                None => xnet_model::report::REPORTED
                    .iter()
                    .flat_map(|(c, _)| v.iter(c).map(|(r, rec)| one(c, r, rec)))
                    .collect(),
            }
        })
    }

    /// Reports until the process ends; a failed report is sent again.
    pub fn run(&mut self, host: &str) {
        let mut pending: Vec<Value> = vec![];
        loop {
            self.link
                .store
                .wait_newer(self.seen, Duration::from_secs(5));
            pending.extend(self.changes());
            lock(&self.own).retain(|g| *g > self.seen);
            if pending.is_empty() {
                continue;
            }
            let batch = Value::Array(std::mem::take(&mut pending));
            if let Err(e) = self.link.call(
                "host.xnet_report",
                vec![Value::String(host.into()), batch.clone()],
            ) {
                eprintln!("xnetd: reporting to the coordinator: {e}");
                if let Value::Array(b) = batch {
                    pending = b;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
