//! pool.join across hosts. The joiner sends its own tables to the
//! coordinator in one extension call (`pool.xnet_join`); the coordinator runs
//! the pre-join checks and introduces the member in one transaction, so a
//! refused join changes nothing on either side. Afterwards the joiner is a
//! member: its role sits in `pool.conf` (XAPI's `master` / `slave:<address>`
//! format) and every call to it answers HOST_IS_SLAVE with the coordinator's
//! address.

use std::io::Write;
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

    /// Records the new role durably before it takes effect.
    fn set(&mut self, coordinator: Option<String>) -> Result<(), PoolError> {
        if let Some(path) = &self.conf {
            let io = |source| PoolError::Io {
                path: path.display().to_string(),
                source,
            };
            let tmp = path.with_extension("tmp");
            let text = match &coordinator {
                Some(a) => format!("slave:{a}\n"),
                None => "master\n".to_string(),
            };
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
        }
        self.coordinator = coordinator;
        Ok(())
    }
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
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .coordinator()
            .map(str::to_string)
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
        joined?;
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(Some(address.trim().to_string()))
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// The coordinator's side (`pool.xnet_join`): checks and introduces the
    /// joiner in one transaction; returns its host ref.
    pub(crate) fn introduce(&self, tables: &Value, force: bool) -> ApiResult<Value> {
        if self.coordinator().is_some() {
            return Err(ApiError::new(
                "HOST_IS_SLAVE",
                &[&self.coordinator().unwrap_or_default()],
            ));
        }
        let joiner = import(tables)?;
        let res = self.store.write(|t| {
            let mut tt = crate::tables::TxnTables(t);
            xnet_model::join::pre_join_checks(&joiner, &tt, force)?;
            let mut d = xnet_model::Db::new(&mut tt);
            xnet_model::join::introduce_member(&mut d, &joiner)
        });
        match res {
            Ok((host, _)) => Ok(Value::String(host)),
            Err(xnet_store::WriteError::Aborted(e)) => Err(e),
            Err(xnet_store::WriteError::Store(e)) => Err(ApiError::internal(format!("store: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
