//! pool.join across hosts. The joiner sends its own tables to the
//! coordinator in one extension call (`pool.xnet_join`); the coordinator runs
//! the pre-join checks and introduces the member in one transaction, so a
//! refused join changes nothing on either side. Afterwards the joiner is a
//! member: its role sits in `pool.conf` (XAPI's `master` / `slave:<address>`
//! format) and every call to it answers HOST_IS_SLAVE with the coordinator's
//! address.

use std::path::{Path, PathBuf};
use xapi_wire::Value;
use xnet_model::{ApiError, ApiResult, MemTables, Record};
use xnet_store::View;

/// The classes a joiner sends: what the checks and the introduction read.
const JOIN_CLASSES: &[&str] = &[
    "pool",
    "host",
    "PIF",
    "PIF_metrics",
    "network",
    "VM",
    "Bond",
    "VLAN",
    "tunnel",
    "network_sriov",
];

/// This host's place in a pool, as persisted in `pool.conf`.
#[derive(Debug, Default)]
pub struct Membership {
    conf: Option<PathBuf>,
    coordinator: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: expected 'master' or 'slave:<address>', found {found:?}")]
    Conf { path: String, found: String },
}

impl Membership {
    /// Reads `path`; a missing file means a coordinator of its own pool.
    pub fn load(path: &Path) -> Result<Membership, PoolError> {
        let io = |source| PoolError::Io {
            path: path.display().to_string(),
            source,
        };
        let coordinator = match std::fs::read_to_string(path) {
            Ok(text) => match text.trim() {
                "master" => None,
                t => match t.strip_prefix("slave:").filter(|a| !a.is_empty()) {
                    Some(a) => Some(a.to_string()),
                    None => {
                        return Err(PoolError::Conf {
                            path: path.display().to_string(),
                            found: t.to_string(),
                        })
                    }
                },
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        Ok(Membership {
            conf: Some(path.to_path_buf()),
            coordinator,
        })
    }

    /// The coordinator's address when this host is a member.
    pub fn coordinator(&self) -> Option<&str> {
        self.coordinator.as_deref()
    }

    /// A file next to `pool.conf`.
    fn file(&self, name: &str) -> Option<PathBuf> {
        self.conf.as_ref().map(|p| p.with_file_name(name))
    }

    /// Records the new role durably before it takes effect.
    pub(crate) fn set(&mut self, coordinator: Option<String>) -> Result<(), PoolError> {
        if let Some(path) = &self.conf {
            let text = match &coordinator {
                Some(a) => format!("slave:{a}\n"),
                None => "master\n".to_string(),
            };
            write_private(path, &text)?;
        }
        self.coordinator = coordinator;
        Ok(())
    }

    /// The coordinator's pool secret (`pool-secret`), made on first use:
    /// what members log in with.
    pub fn secret(&self) -> Result<String, PoolError> {
        let Some(path) = self.file("pool-secret") else {
            return Err(PoolError::Conf {
                path: "pool-secret".into(),
                found: "no state directory".into(),
            });
        };
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(PoolError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        }
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).map_err(|e| PoolError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let s: String = b.iter().map(|x| format!("{x:02x}")).collect();
        write_private(&path, &format!("{s}\n"))?;
        Ok(s)
    }

    /// A member's pool secret and own host uuid, as saved at the join.
    pub fn member_identity(&self) -> Result<(String, String), PoolError> {
        let read = |name: &str| -> Result<String, PoolError> {
            let path = self.file(name).unwrap_or_else(|| PathBuf::from(name));
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|source| PoolError::Io {
                    path: path.display().to_string(),
                    source,
                })
        };
        Ok((read("pool-secret")?, read("host-uuid")?))
    }

    /// Becomes a coordinator of its own again (ejected): the role first,
    /// then the member's secret and uuid go.
    pub fn leave(&mut self) -> Result<(), PoolError> {
        self.set(None)?;
        for name in ["pool-secret", "host-uuid"] {
            if let Some(p) = self.file(name) {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(())
    }

    /// Becomes a member: the secret and own uuid first, the role last.
    fn join(&mut self, coordinator: &str, secret: &str, host_uuid: &str) -> Result<(), PoolError> {
        for (name, text) in [("pool-secret", secret), ("host-uuid", host_uuid)] {
            if let Some(p) = self.file(name) {
                write_private(&p, &format!("{text}\n"))?;
            }
        }
        self.set(Some(coordinator.to_string()))
    }
}

/// Writes a file readable by root only, atomically and durably.
fn write_private(path: &Path, text: &str) -> Result<(), PoolError> {
    crate::private_file::write(path, text).map_err(|source| PoolError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The join classes of a store view as `{class: {ref: record}}`.
pub fn export(v: &View<Record>) -> Value {
    Value::Struct(
        JOIN_CLASSES
            .iter()
            .map(|c| {
                let rows = v
                    .iter(c)
                    .map(|(r, rec)| (r.to_string(), Value::Struct(rec.clone())))
                    .collect();
                (c.to_string(), Value::Struct(rows))
            })
            .collect(),
    )
}

/// The inverse of [`export`], for the coordinator; anything malformed is
/// refused whole.
pub fn import(v: &Value) -> ApiResult<MemTables> {
    let bad = |why: &str| ApiError::new("FIELD_TYPE_ERROR", &[&format!("tables: {why}")]);
    let Value::Struct(classes) = v else {
        return Err(bad("not a struct"));
    };
    let mut t = MemTables::default();
    for (class, rows) in classes {
        if !JOIN_CLASSES.contains(&class.as_str()) {
            return Err(bad(&format!("unexpected class {class}")));
        }
        let Value::Struct(rows) = rows else {
            return Err(bad(&format!("{class} is not a struct")));
        };
        let table = t.tables.entry(class.clone()).or_default();
        for (r, rec) in rows {
            let Value::Struct(rec) = rec else {
                return Err(bad(&format!("{class} {r} is not a struct")));
            };
            table.insert(r.clone(), rec.clone());
        }
    }
    Ok(t)
}

impl crate::Api {
    /// The coordinator's address when this host is a pool member.
    pub fn coordinator(&self) -> Option<String> {
        crate::lock(&self.pool).coordinator().map(str::to_string)
    }

    /// Joins the pool of `address` (pool.join / pool.join_force, on the
    /// joiner).
    pub(crate) fn join(
        &self,
        address: &str,
        user: &str,
        password: &str,
        force: bool,
    ) -> ApiResult<()> {
        let failed = |why: String| ApiError::with("JOINING_HOST_CONNECTION_FAILED", vec![why]);
        let (host, port) = xapi_client::parse_address(address)
            .ok_or_else(|| ApiError::new("INVALID_VALUE", &["master_address", address]))?;
        let tables = self.store.read(export);
        let my_uuid = self.store.read(|v| {
            v.iter("pool")
                .next()
                .and_then(|(_, p)| v.get("host", xnet_model::db::s(p, "master")))
                .map(|h| xnet_model::db::s(h, "uuid").to_string())
                .unwrap_or_default()
        });
        let target = xapi_client::Target::Tcp {
            host,
            port,
            tls: true,
        };
        let mut c = xapi_client::Client::connect(&target).map_err(failed)?;
        let remote = |e: xapi_client::CallError| match e {
            xapi_client::CallError::Api(v) if !v.is_empty() => {
                ApiError::with(&v[0], v[1..].to_vec())
            }
            xapi_client::CallError::Api(_) => failed("empty error".into()),
            xapi_client::CallError::Transport(t) => failed(t),
        };
        let s = c
            .call(
                "session.login_with_password",
                vec![
                    Value::String(user.into()),
                    Value::String(password.into()),
                    Value::String("2.23".into()),
                    Value::String("xnet pool.join".into()),
                ],
            )
            .map_err(remote)?;
        let joined = c
            .call(
                "pool.xnet_join",
                vec![s.clone(), tables, Value::Bool(force)],
            )
            .map_err(remote);
        let _ = c.call("session.logout", vec![s]);
        let joined = joined?;
        let secret = joined
            .as_struct()
            .and_then(|m| m.get("secret"))
            .and_then(Value::as_str)
            .ok_or_else(|| failed("the coordinator sent no pool secret".into()))?;
        crate::lock(&self.pool)
            .join(address.trim(), secret, &my_uuid)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        // A member's xnetd starts over following the coordinator, as XAPI
        // restarts on a joined host.
        if let Some(restart) = &self.restart {
            let restart = std::sync::Arc::clone(restart);
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(300));
                restart();
            });
        }
        Ok(())
    }

    /// The coordinator's side of `host.xnet_report`: what a member's agent
    /// observed of its own host, `[[class, ref, record]]`, in one
    /// transaction; fields and records that are not the member's to report
    /// are ignored.
    pub(crate) fn member_report(&self, host: &str, changes: &Value) -> ApiResult<()> {
        use xnet_model::Read;
        let bad = || ApiError::new("FIELD_TYPE_ERROR", &["changes"]);
        let rows = changes.as_array().ok_or_else(bad)?;
        let mut parsed = vec![];
        for row in rows {
            match row.as_array() {
                Some([Value::String(c), Value::String(r), Value::Struct(rec)]) => {
                    parsed.push((c, r, rec))
                }
                _ => return Err(bad()),
            }
        }
        let res = self.store.write(|t| {
            let mut tt = crate::tables::TxnTables(t);
            let mut d = xnet_model::Db::new(&mut tt);
            d.rec("host", host)?;
            for (c, r, rec) in &parsed {
                if d.exists(c, r) {
                    xnet_model::report::apply(&mut d, host, c, r, rec)?;
                }
            }
            Ok::<_, ApiError>(())
        });
        crate::committed(res).map(|_| ())
    }

    /// The coordinator's side (`pool.xnet_join`): checks and introduces the
    /// joiner in one transaction; returns its host ref.
    pub(crate) fn introduce(&self, tables: &Value, force: bool) -> ApiResult<Value> {
        if let Some(c) = self.coordinator() {
            return Err(ApiError::new("HOST_IS_SLAVE", &[&c]));
        }
        let joiner = import(tables)?;
        let res = self.store.write(|t| {
            let mut tt = crate::tables::TxnTables(t);
            xnet_model::join::pre_join_checks(&joiner, &tt, force)?;
            let mut d = xnet_model::Db::new(&mut tt);
            xnet_model::join::introduce_member(&mut d, &joiner)
        });
        let secret = crate::lock(&self.pool)
            .secret()
            .map_err(|e| ApiError::internal(e.to_string()));
        let (host, _) = crate::committed(res)?;
        Ok(Value::Struct(
            [
                ("host".to_string(), Value::String(host)),
                ("secret".to_string(), Value::String(secret?)),
            ]
            .into_iter()
            .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> Record {
        [("name_label".to_string(), Value::String(name.into()))]
            .into_iter()
            .collect()
    }

    #[test]
    fn replication_sends_everything_then_changes_only() {
        let store = xnet_store::Store::in_memory(xnet_store::Options {
            volatile_tables: crate::volatile_tables(),
            ..xnet_store::Options::default()
        });
        let put = |c: &str, r: &str, n: &str| {
            store
                .write(|t| {
                    t.put(c, r, rec(n));
                    Ok::<_, ()>(())
                })
                .unwrap()
                .1
                .generation
        };
        put("network", "OpaqueRef:n1", "a");
        put("session", "OpaqueRef:s1", "mine");
        let changes = |v: &Value| {
            v.as_struct().unwrap()["changes"]
                .as_array()
                .unwrap()
                .to_vec()
        };
        let first = replicate(&store, &Members::default(), 0, std::time::Duration::ZERO);
        assert_eq!(first.as_struct().unwrap()["full"], Value::Bool(true));
        let c = changes(&first);
        assert_eq!(c.len(), 1, "sessions stay each host's own: {c:?}");
        let Value::Int(g) = first.as_struct().unwrap()["generation"] else {
            panic!()
        };
        put("network", "OpaqueRef:n2", "b");
        store
            .write(|t| {
                t.delete("network", "OpaqueRef:n1");
                Ok::<_, ()>(())
            })
            .unwrap();
        let next = replicate(
            &store,
            &Members::default(),
            g as u64,
            std::time::Duration::ZERO,
        );
        assert_eq!(next.as_struct().unwrap()["full"], Value::Bool(false));
        let c = changes(&next);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0].as_array().unwrap()[1],
            Value::String("OpaqueRef:n1".into())
        );
        assert_eq!(c[0].as_array().unwrap()[2], Value::String(String::new()));
        assert_eq!(c[1].as_array().unwrap()[2], Value::Struct(rec("b")));
        // Nothing new: an empty answer once the timeout passes.
        let Value::Int(g) = next.as_struct().unwrap()["generation"] else {
            panic!()
        };
        let t0 = std::time::Instant::now();
        let idle = replicate(
            &store,
            &Members::default(),
            g as u64,
            std::time::Duration::from_millis(50),
        );
        assert!(changes(&idle).is_empty() && t0.elapsed() >= std::time::Duration::from_millis(50));
    }

    #[test]
    fn awaited_hosts_by_generation() {
        let m = Members::default();
        // Nothing known yet: every member reports at once.
        assert!(m.awaited(3, 5).contains("*"));
        m.expect(4, &["h1".to_string()].into());
        m.expect(5, &["h2".to_string()].into());
        m.expect(6, &Default::default());
        assert_eq!(m.awaited(3, 6).len(), 2);
        assert_eq!(m.awaited(4, 6), ["h2".to_string()].into());
        assert!(m.awaited(5, 6).is_empty());
        assert!(m.awaited(6, 6).is_empty(), "nothing new, no panic");
        assert!(m.awaited(7, 6).is_empty());
        assert!(m.awaited(1, 6).contains("*"), "history before it is gone");
    }

    #[test]
    fn a_member_change_waits_for_its_report() {
        let m = std::sync::Arc::new(Members::default());
        m.report("h", 5, "");
        assert!(m.wait("h", 5).is_ok());
        let m2 = std::sync::Arc::clone(&m);
        let t = std::thread::spawn(move || m2.wait("h", 7));
        std::thread::sleep(std::time::Duration::from_millis(20));
        m.report("h", 7, "bridge refused");
        let e = t.join().unwrap().unwrap_err();
        assert_eq!(e.code, "PIF_CONFIGURATION_ERROR");
        // An older report never replaces a newer one.
        m.report("h", 6, "");
        assert!(m.wait("h", 7).is_err());
    }

    #[test]
    fn pool_conf() {
        let dir = std::env::temp_dir().join(format!("xnet-poolconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pool.conf");
        let mut m = Membership::load(&p).unwrap();
        assert_eq!(m.coordinator(), None);
        m.set(Some("10.0.0.1:8443".into())).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "slave:10.0.0.1:8443\n"
        );
        assert_eq!(
            Membership::load(&p).unwrap().coordinator(),
            Some("10.0.0.1:8443")
        );
        std::fs::write(&p, "coordinator\n").unwrap();
        assert!(matches!(Membership::load(&p), Err(PoolError::Conf { .. })));
        std::fs::write(&p, "master\n").unwrap();
        assert_eq!(Membership::load(&p).unwrap().coordinator(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Classes a member replicates: all but sessions and tasks, which are each
/// host's own.
pub(crate) fn replicated(class: &str) -> bool {
    xnet_model::schema::CLASSES
        .iter()
        .any(|c| c.name == class && !c.volatile)
}

/// On the coordinator (`pool.xnet_replicate`): the records changed after
/// `since` (every record when `since` is 0 or its history is gone), waiting
/// up to `timeout` for one. Whole stored records, internal fields included,
/// and the hosts whose report on these changes a call waits for:
/// `{generation, full, changes: [[class, ref, record or ""]], awaited}`.
pub fn replicate(
    store: &xnet_store::Store<Record>,
    members: &Members,
    since: u64,
    timeout: std::time::Duration,
) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let evs = if since == 0 {
            None
        } else {
            store.events_since(since).ok()
        };
        let full = evs.is_none();
        let keys: std::collections::BTreeSet<(String, String)> = evs
            .into_iter()
            .flatten()
            .filter(|e| replicated(&e.table))
            .map(|e| (e.table, e.key))
            .collect();
        let now = std::time::Instant::now();
        if full || !keys.is_empty() || now >= deadline {
            return store.read(|v| {
                let mut changes = vec![];
                let mut one = |c: &str, r: &str, rec: Option<&Record>| {
                    changes.push(Value::Array(vec![
                        Value::String(c.into()),
                        Value::String(r.into()),
                        rec.map_or(Value::String(String::new()), |x| Value::Struct(x.clone())),
                    ]))
                };
                if full {
                    for c in xnet_model::schema::CLASSES.iter().filter(|c| !c.volatile) {
                        for (r, rec) in v.iter(c.name) {
                            one(c.name, r, Some(rec));
                        }
                    }
                } else {
                    for (c, r) in &keys {
                        one(c, r, v.get(c, r));
                    }
                }
                let awaited = members
                    .awaited(since, v.generation())
                    .into_iter()
                    .map(Value::String)
                    .collect();
                Value::Struct(
                    [
                        ("generation".to_string(), Value::Int(v.generation() as i64)),
                        ("full".to_string(), Value::Bool(full)),
                        ("changes".to_string(), Value::Array(changes)),
                        ("awaited".to_string(), Value::Array(awaited)),
                    ]
                    .into_iter()
                    .collect(),
                )
            });
        }
        store.wait_newer(since.max(store.generation()), deadline - now);
    }
}

/// What members reported realizing, for the coordinator's realizer.
#[derive(Default)]
pub struct Members {
    /// host → (coordinator generation realized, error of that pass).
    reports: std::sync::Mutex<std::collections::HashMap<String, (u64, String)>>,
    cv: std::sync::Condvar,
    /// generation → hosts a call waits on for it (the latest few thousand):
    /// members report at once for these and lazily otherwise.
    awaited: std::sync::Mutex<std::collections::BTreeMap<u64, std::collections::BTreeSet<String>>>,
}

/// How many generations' awaited hosts the coordinator remembers; a member
/// further behind reports at once.
const AWAITED_KEPT: usize = 4096;

/// How long the coordinator waits for a member to realize a change.
const MEMBER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Members {
    pub fn report(&self, host: &str, generation: u64, error: &str) {
        let mut r = crate::lock(&self.reports);
        let e = r.entry(host.to_string()).or_insert((0, String::new()));
        if generation >= e.0 {
            *e = (generation, error.to_string());
        }
        self.cv.notify_all();
    }

    /// Records the hosts a call will wait on once `generation` commits.
    pub(crate) fn expect(&self, generation: u64, hosts: &std::collections::BTreeSet<String>) {
        let mut a = crate::lock(&self.awaited);
        a.insert(generation, hosts.clone());
        while a.len() > AWAITED_KEPT {
            a.pop_first();
        }
    }

    /// The hosts awaited for a generation in `(since, until]`. Each of them
    /// when that history is gone.
    fn awaited(&self, since: u64, until: u64) -> std::collections::BTreeSet<String> {
        if since >= until {
            return Default::default();
        }
        let a = crate::lock(&self.awaited);
        let known = a.first_key_value().is_some_and(|(g, _)| *g <= since + 1);
        if !known {
            return ["*".to_string()].into();
        }
        a.range(since + 1..=until)
            .flat_map(|(_, h)| h.iter().cloned())
            .collect()
    }

    fn wait(&self, host: &str, generation: u64) -> ApiResult<()> {
        let deadline = std::time::Instant::now() + MEMBER_TIMEOUT;
        let mut r = crate::lock(&self.reports);
        loop {
            if let Some((g, err)) = r.get(host) {
                if *g >= generation {
                    return match err.as_str() {
                        "" => Ok(()),
                        e => Err(ApiError::new("PIF_CONFIGURATION_ERROR", &["", e])),
                    };
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(ApiError::new("HOST_OFFLINE", &[host]));
            }
            r = self
                .cv
                .wait_timeout(r, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The coordinator's realizer: its own host through the local agent, a
/// member by waiting for that member's report.
pub struct PoolRealizer {
    pub local: std::sync::Arc<dyn crate::Realizer>,
    pub members: std::sync::Arc<Members>,
}

impl crate::Realizer for PoolRealizer {
    fn realize(&self, host: &str, generation: u64) -> ApiResult<()> {
        match self.local.realize(host, generation) {
            Err(e) if e.code == "HOST_OFFLINE" => self.members.wait(host, generation),
            r => r,
        }
    }
}
