//! The XenAPI server: sessions, RBAC, dispatch of every call to the model in
//! one store transaction, realization on the owning host before the reply,
//! `Async.` tasks and `event.from`. Transport lives in `http`.

pub mod events;
pub mod http;
pub mod member;
pub mod pool;
mod private_file;
pub mod tables;
pub mod tls;
pub mod users;

use std::sync::{Arc, Mutex};
use std::time::Duration;
use xapi_wire::stream::{Format, Writer};
use xapi_wire::{MethodCall, Response, Value};
use xnet_model::calls::{self, Handler};
use xnet_model::{db, ApiError, ApiResult, Db, Reader, Record};
use xnet_store::Store;

pub use users::{Role, Users};

/// Applies committed records on a host and reports the outcome. The agent
/// (local or on a pool member) implements it.
pub trait Realizer: Send + Sync {
    /// Returns once `host` has realized the store at `generation` or later.
    fn realize(&self, host: &str, generation: u64) -> Result<(), ApiError>;
}

/// How a request arrived: local tools on the unix socket get the local
/// superuser like xe on dom0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Unix,
    Network,
}

pub struct Api {
    pub store: Arc<Store<Record>>,
    pub users: Mutex<Users>,
    pub realizer: Arc<dyn Realizer>,
    pub events: events::Registrations,
    /// Coordinator or member (`pool.conf`).
    pub pool: Arc<Mutex<pool::Membership>>,
    /// What the members reported realizing (the coordinator's side).
    pub members: Arc<pool::Members>,
    /// Starts this server over (after becoming a member); none in tests.
    pub restart: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// The classes kept only in memory (XAPI's PersistNothing).
pub fn volatile_tables() -> Vec<String> {
    xnet_model::schema::CLASSES
        .iter()
        .filter(|c| c.volatile)
        .map(|c| c.name.to_string())
        .collect()
}

/// A mutex's guard; a panicked holder leaves plain data that stays usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A store write's outcome as an API result: the transaction's own error,
/// or the store's as an internal error.
pub(crate) fn committed<T>(
    r: Result<(T, xnet_store::Commit<Record>), xnet_store::WriteError<ApiError>>,
) -> ApiResult<(T, xnet_store::Commit<Record>)> {
    match r {
        Ok(x) => Ok(x),
        Err(xnet_store::WriteError::Aborted(e)) => Err(e),
        Err(xnet_store::WriteError::Store(e)) => Err(ApiError::internal(format!("store: {e}"))),
    }
}

/// MESSAGE_PARAMETER_COUNT_MISMATCH for `call`, expecting `n`.
fn count_mismatch(call: &str, n: usize, got: usize) -> ApiError {
    ApiError::with(
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        vec![call.to_string(), n.to_string(), got.to_string()],
    )
}

fn fail(e: ApiError) -> Response {
    Response::Failure(e.to_description())
}

impl Api {
    pub fn new(store: Arc<Store<Record>>, users: Users, realizer: Arc<dyn Realizer>) -> Arc<Api> {
        Api::build(store, users, realizer, Arc::default(), None, None)
    }

    /// A pool member's server (it answers HOST_IS_SLAVE with the address in
    /// `membership`, which its follower keeps current; `restart` starts it
    /// over when it leaves the pool).
    pub fn new_member(
        store: Arc<Store<Record>>,
        users: Users,
        realizer: Arc<dyn Realizer>,
        membership: Arc<Mutex<pool::Membership>>,
        restart: Option<Arc<dyn Fn() + Send + Sync>>,
    ) -> Arc<Api> {
        Api::build(store, users, realizer, membership, restart, None)
    }

    /// The coordinator's server: member calls wait on `members`.
    pub fn new_coordinator(
        store: Arc<Store<Record>>,
        users: Users,
        local: Arc<dyn Realizer>,
        membership: pool::Membership,
        restart: Option<Arc<dyn Fn() + Send + Sync>>,
    ) -> Arc<Api> {
        let members = Arc::new(pool::Members::default());
        let realizer = Arc::new(pool::PoolRealizer {
            local,
            members: Arc::clone(&members),
        });
        Api::build(
            store,
            users,
            realizer,
            Arc::new(Mutex::new(membership)),
            restart,
            Some(members),
        )
    }

    fn build(
        store: Arc<Store<Record>>,
        users: Users,
        realizer: Arc<dyn Realizer>,
        membership: Arc<Mutex<pool::Membership>>,
        restart: Option<Arc<dyn Fn() + Send + Sync>>,
        members: Option<Arc<pool::Members>>,
    ) -> Arc<Api> {
        Arc::new(Api {
            store,
            users: Mutex::new(users),
            realizer,
            events: events::Registrations::default(),
            pool: membership,
            members: members.unwrap_or_default(),
            restart,
        })
    }

    /// Handles one decoded call; never panics on bad input.
    pub fn handle(self: &Arc<Api>, call: MethodCall, origin: Origin) -> Response {
        match self.dispatch(&call.method, &call.params, origin) {
            Ok(v) => Response::Success(v),
            Err(e) => fail(e),
        }
    }

    /// `<class>.get_all_records[_where]` encoded straight from the store into
    /// `fmt` (the one result too large to build as a value first); `None`
    /// for every other call, and for malformed ones, which take the normal
    /// path and get its errors.
    pub fn handle_bulk(&self, call: &MethodCall, fmt: Format) -> Option<ApiResult<String>> {
        let (class, rest) = call.method.split_once('.')?;
        let class = xnet_model::schema::class(class)?;
        let expr = match (rest, call.params.as_slice()) {
            ("get_all_records", [_]) => xnet_model::query::Expr::True,
            ("get_all_records_where", [_, Value::String(e)]) => match xnet_model::query::parse(e) {
                Ok(e) => e,
                Err(_) => return None,
            },
            _ => return None,
        };
        let session = call.params[0].as_str()?;
        if let Err(e) = self.session_role(session) {
            return Some(Err(e));
        }
        Some(Ok(self.store.read(|v| {
            let t = tables::ViewTables(v);
            let refs = xnet_model::generic::matching(&t, class, &expr);
            // Large results are encoded in slices on every core.
            let threads = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .clamp(1, 4)
                .min(refs.len() / 1000 + 1);
            let encode = |slice: &[&str]| {
                // About 2.2 KB per record in XML.
                let mut w = Writer::new(fmt, 64 + slice.len() * 2304);
                xnet_model::generic::records_into(&tables::ViewTables(v), class, slice, &mut w);
                w.finish()
            };
            if threads == 1 {
                return encode(&refs);
            }
            let parts: Vec<String> = std::thread::scope(|s| {
                let hs: Vec<_> = refs
                    .chunks(refs.len().div_ceil(threads))
                    .map(|slice| s.spawn(move || encode(slice)))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("encoder thread"))
                    .collect()
            });
            xapi_wire::stream::merge_structs(fmt, &parts)
        })))
    }

    fn dispatch(
        self: &Arc<Api>,
        method: &str,
        params: &[Value],
        origin: Origin,
    ) -> ApiResult<Value> {
        // A member serves nothing itself: clients go to the coordinator.
        if let Some(c) = self.coordinator() {
            return Err(ApiError::new("HOST_IS_SLAVE", &[&c]));
        }
        match method {
            "session.login_with_password" | "session_login_with_password" => {
                return self.login(params, origin)
            }
            "system.listMethods" => return Ok(list_methods()),
            "session.slave_login" => return self.slave_login(params),
            _ => {}
        }
        let session = params
            .first()
            .and_then(|v| v.as_str())
            .ok_or_else(|| ApiError::new("SESSION_INVALID", &[""]))?
            .to_string();
        let role = self.session_role(&session)?;
        let args = &params[1..];
        let (is_async, name) = match method.strip_prefix("Async.") {
            Some(rest) => (true, rest),
            None => (false, method),
        };
        if let Some(v) = self.builtin(&session, role, name, args, is_async)? {
            return Ok(v);
        }
        let call = calls::registry()
            .lookup(name)
            .ok_or_else(|| ApiError::new("MESSAGE_METHOD_UNKNOWN", &[method]))?;
        if is_async && !call.asyncable {
            return Err(ApiError::new("MESSAGE_METHOD_UNKNOWN", &[method]));
        }
        if call.is_write() && role == Role::ReadOnly {
            return Err(ApiError::new(
                "RBAC_PERMISSION_DENIED",
                &[&call.name.to_lowercase(), "No permission in user session"],
            ));
        }
        if is_async {
            return Ok(db::vs(self.start_task(&session, &call.name, args.to_vec())));
        }
        self.run(&call.name, args)
    }

    /// Runs a registered call: reads under a shared view, writes in one
    /// transaction followed by realization on every touched host.
    pub fn run(&self, name: &str, args: &[Value]) -> ApiResult<Value> {
        let call = calls::registry()
            .lookup(name)
            .ok_or_else(|| ApiError::new("MESSAGE_METHOD_UNKNOWN", &[name]))?;
        match &call.handler {
            Handler::Read(f) => self.store.read(|v| {
                let t = tables::ViewTables(v);
                let args = calls::decode_args(&t, call, args)?;
                f(&Reader { t: &t }, &args)
            }),
            Handler::Write(f) => {
                let res = self.store.write(|txn| {
                    let next = txn.generation() + 1;
                    let mut t = tables::TxnTables(txn);
                    let args = calls::decode_args(&t, call, args)?;
                    let mut d = Db::new(&mut t);
                    let v = f(&mut d, &args)?;
                    // Told before the commit wakes the members, so the
                    // replication carrying it says whose report is awaited.
                    self.members.expect(next, &d.realize);
                    Ok::<_, ApiError>((v, d.realize))
                });
                let ((value, hosts), commit) = committed(res)?;
                // Members first, the coordinator last, as XAPI orders pool
                // changes: members still reach it while they realize.
                let master = self.store.read(|v| {
                    v.iter("pool")
                        .next()
                        .map(|(_, p)| db::s(p, "master").to_string())
                });
                let mut hosts: Vec<String> = hosts.into_iter().collect();
                hosts.sort_by_key(|h| Some(h) == master.as_ref());
                for h in &hosts {
                    if let Err(e) = self.realizer.realize(h, commit.generation) {
                        self.compensate(&commit, &hosts);
                        for h in &hosts {
                            let _ = self.realizer.realize(h, self.store.generation());
                        }
                        return Err(e);
                    }
                }
                Ok(value)
            }
        }
    }

    /// Undoes a committed transaction whose realization failed: every record
    /// still as the transaction left it goes back to its previous state.
    fn compensate(&self, commit: &xnet_store::Commit<Record>, hosts: &[String]) {
        let _ = self.store.write(|txn| {
            self.members
                .expect(txn.generation() + 1, &hosts.iter().cloned().collect());
            for ch in commit.changes.iter().rev() {
                if txn.get(&ch.table, &ch.key) != ch.after.as_ref() {
                    continue;
                }
                match &ch.before {
                    Some(r) => txn.put(&ch.table, &ch.key, r.clone()),
                    None => {
                        txn.delete(&ch.table, &ch.key);
                    }
                }
            }
            Ok::<_, ()>(())
        });
    }

    fn login(&self, params: &[Value], origin: Origin) -> ApiResult<Value> {
        if params.len() < 2 || params.len() > 4 {
            return Err(count_mismatch(
                "session.login_with_password",
                2,
                params.len(),
            ));
        }
        let uname = params[0].as_str().unwrap_or("");
        let pwd = params[1].as_str().unwrap_or("");
        let originator = params.get(3).and_then(|v| v.as_str()).unwrap_or("");
        let (role, local) = if origin == Origin::Unix && uname == "root" {
            (Role::PoolAdmin, true)
        } else {
            match self.users.lock().expect("users").check(uname, pwd) {
                Some(r) => (r, false),
                None => {
                    return Err(ApiError::new(
                        "SESSION_AUTHENTICATION_FAILED",
                        &[uname, "Authentication failure"],
                    ))
                }
            }
        };
        self.new_session(role, local, uname, originator)
    }

    /// `session.slave_login(host, secret)`: a pool member's session, with
    /// the pool secret. The host is named by uuid or ref.
    fn slave_login(&self, params: &[Value]) -> ApiResult<Value> {
        let [Value::String(host), Value::String(secret)] = params else {
            return Err(count_mismatch("session.slave_login", 2, params.len()));
        };
        let mine = crate::lock(&self.pool)
            .secret()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let known = self.store.read(|v| {
            v.get("host", host).is_some() || v.iter("host").any(|(_, r)| db::s(r, "uuid") == host)
        });
        // Compared whole, without an early exit, and only for known hosts.
        let same = mine.len() == secret.len()
            && mine
                .bytes()
                .zip(secret.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0;
        if !(known && same) {
            return Err(ApiError::new(
                "SESSION_AUTHENTICATION_FAILED",
                &[host, "Authentication failure"],
            ));
        }
        self.new_session(Role::PoolAdmin, false, "", &format!("pool member {host}"))
    }

    fn new_session(
        &self,
        role: Role,
        local: bool,
        uname: &str,
        originator: &str,
    ) -> ApiResult<Value> {
        let now = xnet_model::now_datetime();
        let perms: Vec<&str> = match role {
            Role::PoolAdmin => vec!["pool-admin"],
            Role::ReadOnly => vec!["read-only"],
        };
        let r = self.store.write(|txn| {
            let mut t = tables::TxnTables(txn);
            let mut d = Db::new(&mut t);
            let host = xnet_model::host::local_host(&d).unwrap_or_default();
            let pool = xnet_model::Read::pool(&d).unwrap_or_default();
            let _ = pool;
            Ok::<_, ApiError>(d.create(
                &xnet_model::schema::SESSION,
                vec![
                    ("this_host", db::vs(host)),
                    ("last_active", Value::DateTime(now.clone())),
                    ("validation_time", Value::DateTime(now.clone())),
                    ("is_local_superuser", Value::Bool(local)),
                    ("auth_user_name", db::vs(uname)),
                    ("originator", db::vs(originator)),
                    ("rbac_permissions", db::sset(&perms)),
                ],
            ))
        });
        match r {
            Ok((r, _)) => Ok(db::vs(r)),
            Err(_) => Err(ApiError::internal("cannot create session")),
        }
    }

    fn session_role(&self, session: &str) -> ApiResult<Role> {
        self.store.read(|v| match v.get("session", session) {
            Some(rec) => {
                let ro = db::set_strs(rec, "rbac_permissions")
                    .iter()
                    .any(|p| p == "read-only");
                Ok(if ro { Role::ReadOnly } else { Role::PoolAdmin })
            }
            None => Err(ApiError::new("SESSION_INVALID", &[session])),
        })
    }

    /// Calls that need the session or block: session, event and task calls.
    fn builtin(
        self: &Arc<Api>,
        session: &str,
        role: Role,
        name: &str,
        args: &[Value],
        is_async: bool,
    ) -> ApiResult<Option<Value>> {
        let name = name.replacen('_', ".", usize::from(!name.contains('.')));
        let count = |n: usize| -> ApiResult<()> {
            if args.len() == n {
                Ok(())
            } else {
                Err(count_mismatch(&name, n, args.len()))
            }
        };
        let arg = |i: usize| {
            args.get(i)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        if is_async && BUILTINS.contains(&name.as_str()) {
            return Err(ApiError::new(
                "MESSAGE_METHOD_UNKNOWN",
                &[&format!("Async.{name}")],
            ));
        }
        let v = match name.as_str() {
            "session.logout" | "session.local_logout" => {
                count(0)?;
                self.events.unregister_all(session);
                let s = session.to_string();
                let _ = self.store.write(|t| {
                    t.delete("session", &s);
                    Ok::<_, ()>(())
                });
                Value::Nil
            }
            "session.get_all_subject_identifiers" => Value::Array(vec![]),
            "event.from" => {
                count(3)?;
                let classes = strings(&args[0])
                    .ok_or_else(|| ApiError::new("FIELD_TYPE_ERROR", &["classes"]))?;
                let timeout = match &args[2] {
                    Value::Float(x) => *x,
                    Value::Int(i) => *i as f64,
                    Value::String(s) => s.parse().unwrap_or(0.0),
                    _ => 0.0,
                };
                let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
                events::event_from(&self.store, &classes, &arg(1), timeout)?
            }
            "event.register" => {
                count(1)?;
                let classes = strings(&args[0])
                    .ok_or_else(|| ApiError::new("FIELD_TYPE_ERROR", &["classes"]))?;
                self.events
                    .register(session, classes, self.store.generation())?;
                Value::Nil
            }
            "event.unregister" => {
                count(1)?;
                let classes = strings(&args[0]).unwrap_or_default();
                self.events.unregister(session, &classes);
                Value::Nil
            }
            "event.next" => {
                count(0)?;
                self.events.next(&self.store, session)?
            }
            "event.get_current_id" => {
                count(0)?;
                Value::Int(self.store.generation() as i64)
            }
            "event.inject" => {
                count(2)?;
                admin(role, "event.inject")?;
                events::inject(&self.store, &arg(0), &arg(1))?
            }
            "pool.join" | "pool.join_force" => {
                count(3)?;
                admin(role, &name)?;
                self.join(&arg(0), &arg(1), &arg(2), name == "pool.join_force")?;
                Value::Nil
            }
            "pool.eject" => {
                count(1)?;
                admin(role, &name)?;
                let host = arg(0);
                let r = self.store.write(|t| {
                    let mut tt = tables::TxnTables(t);
                    xnet_model::join::eject_member(&mut Db::new(&mut tt), &host)
                });
                committed(r)?;
                Value::Nil
            }
            "pool.xnet_replicate" => {
                count(2)?;
                admin(role, &name)?;
                let since = match &args[0] {
                    Value::Int(g) if *g >= 0 => *g as u64,
                    _ => return Err(ApiError::new("FIELD_TYPE_ERROR", &["since"])),
                };
                let timeout = match &args[1] {
                    Value::Float(f) => *f,
                    Value::Int(i) => *i as f64,
                    _ => return Err(ApiError::new("FIELD_TYPE_ERROR", &["timeout"])),
                };
                pool::replicate(
                    &self.store,
                    &self.members,
                    since,
                    Duration::from_secs_f64(timeout.clamp(0.0, 60.0)),
                )
            }
            "host.xnet_realized" => {
                count(3)?;
                admin(role, &name)?;
                let generation = match &args[1] {
                    Value::Int(g) if *g >= 0 => *g as u64,
                    _ => return Err(ApiError::new("FIELD_TYPE_ERROR", &["generation"])),
                };
                self.members.report(&arg(0), generation, &arg(2));
                Value::Nil
            }
            "host.xnet_report" => {
                count(2)?;
                admin(role, &name)?;
                self.member_report(&arg(0), &args[1])?;
                Value::Nil
            }
            "pool.xnet_join" => {
                count(2)?;
                admin(role, &name)?;
                self.introduce(&args[0], matches!(args[1], Value::Bool(true)))?
            }
            "task.cancel" => {
                count(1)?;
                let t = arg(0);
                self.store.read(|v| {
                    v.get("task", &t)
                        .map(|_| ())
                        .ok_or_else(|| ApiError::handle_invalid("task", &t))
                })?;
                return Err(ApiError::new(
                    "OPERATION_NOT_ALLOWED",
                    &["This task cannot be cancelled"],
                ));
            }
            "task.destroy" => {
                count(1)?;
                let t = arg(0);
                let r = self.store.write(|txn| {
                    if txn.delete("task", &t) {
                        Ok(())
                    } else {
                        Err(ApiError::handle_invalid("task", &t))
                    }
                });
                match r {
                    Ok(_) => Value::Nil,
                    Err(xnet_store::WriteError::Aborted(e)) => return Err(e),
                    Err(e) => return Err(ApiError::internal(format!("{e:?}"))),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(v))
    }

    /// `Async.<call>`: a task record, the call on a worker thread, the
    /// result (XML-RPC encoded, as XAPI stores it) or the error on the task.
    fn start_task(self: &Arc<Api>, session: &str, name: &str, args: Vec<Value>) -> String {
        let now = xnet_model::now_datetime();
        let label = format!("Async.{name}");
        let r = self.store.write(|txn| {
            let mut t = tables::TxnTables(txn);
            let mut d = Db::new(&mut t);
            let host = xnet_model::host::local_host(&d).unwrap_or_default();
            Ok::<_, ApiError>(d.create(
                &xnet_model::schema::TASK,
                vec![
                    ("name_label", db::vs(label.clone())),
                    ("created", Value::DateTime(now.clone())),
                    ("status", db::vs("pending")),
                    ("resident_on", db::vs(host)),
                    ("session", db::vs(session)),
                    ("allowed_operations", db::sset(&["cancel"])),
                ],
            ))
        });
        let task = r.map(|(t, _)| t).unwrap_or_default();
        let api = Arc::clone(self);
        let (t2, name) = (task.clone(), name.to_string());
        std::thread::spawn(move || {
            let out = api.run(&name, &args);
            let finished = xnet_model::now_datetime();
            let _ = api.store.write(|txn| {
                let Some(mut rec) = txn.get("task", &t2).cloned() else {
                    return Ok::<_, ()>(());
                };
                rec.insert("progress".into(), Value::Float(1.0));
                rec.insert("finished".into(), Value::DateTime(finished.clone()));
                rec.insert("allowed_operations".into(), Value::Array(vec![]));
                match &out {
                    Ok(v) => {
                        rec.insert("status".into(), db::vs("success"));
                        rec.insert("result".into(), db::vs(xapi_wire::xmlrpc::encode_value(v)));
                    }
                    Err(e) => {
                        rec.insert("status".into(), db::vs("failure"));
                        rec.insert("error_info".into(), db::sset(&e.to_description()));
                    }
                }
                txn.put("task", &t2, rec);
                Ok(())
            });
        });
        task
    }
}

/// Calls answered by `Api::builtin`; none has an Async form.
const BUILTINS: &[&str] = &[
    "session.logout",
    "session.local_logout",
    "session.get_all_subject_identifiers",
    "event.from",
    "event.register",
    "event.unregister",
    "event.next",
    "event.get_current_id",
    "event.inject",
    "task.cancel",
    "task.destroy",
    "pool.join",
    "pool.join_force",
    "pool.xnet_join",
    "pool.eject",
    "pool.xnet_replicate",
    "host.xnet_realized",
    "host.xnet_report",
    "session.slave_login",
];

/// Calls that change the pool need more than a read-only session.
fn admin(role: Role, call: &str) -> ApiResult<()> {
    if role == Role::ReadOnly {
        return Err(ApiError::new(
            "RBAC_PERMISSION_DENIED",
            &[call, "No permission in user session"],
        ));
    }
    Ok(())
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

fn list_methods() -> Value {
    let mut names: Vec<String> = calls::registry().calls.keys().cloned().collect();
    names.push("session.login_with_password".into());
    names.extend(BUILTINS.iter().map(|s| s.to_string()));
    names.sort();
    db::sset(&names)
}

/// A realizer for a store with no agent behind it (tools, tests of the API
/// alone): it refuses, so nothing claims work that was not done.
pub struct NoAgent;
impl Realizer for NoAgent {
    fn realize(&self, host: &str, _generation: u64) -> Result<(), ApiError> {
        Err(ApiError::new("HOST_OFFLINE", &[host]))
    }
}
