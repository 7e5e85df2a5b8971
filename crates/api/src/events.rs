//! `event.from` (tokens, `*`/class/`class/ref` subscriptions, blocking with a
//! timeout) and the legacy register/next/unregister interface.

use crate::tables::ViewTables;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xapi_wire::Value;
use xnet_model::db::{self, RelIndex};
use xnet_model::{schema, ApiError, ApiResult, Record};
use xnet_store::{Op, Store};

/// A parsed subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Sub {
    All,
    Class(&'static str),
    Object(&'static str, String),
}

pub fn parse_subs(subs: &[String]) -> ApiResult<Vec<Sub>> {
    subs.iter()
        .map(|s| {
            if s == "*" {
                return Ok(Sub::All);
            }
            let (c, r) = match s.split_once('/') {
                Some((c, r)) => (c, Some(r)),
                None => (s.as_str(), None),
            };
            let class = schema::class_ci(c)
                .ok_or_else(|| ApiError::new("EVENT_SUBSCRIPTION_PARSE_FAILURE", &[s]))?;
            Ok(match r {
                Some(r) => Sub::Object(class.name, r.to_string()),
                None => Sub::Class(class.name),
            })
        })
        .collect()
}

fn matches(subs: &[Sub], class: &str, r: &str) -> bool {
    subs.iter().any(|s| match s {
        Sub::All => true,
        Sub::Class(c) => *c == class,
        Sub::Object(c, x) => *c == class && x == r,
    })
}

pub fn token_of(generation: u64) -> String {
    format!("{generation:020},{:020}", 0)
}

pub fn parse_token(t: &str) -> ApiResult<u64> {
    if t.is_empty() {
        return Ok(0);
    }
    let first = t.split(',').next().unwrap_or("");
    first
        .trim()
        .parse()
        .map_err(|_| ApiError::new("EVENT_FROM_TOKEN_PARSE_FAILURE", &[t]))
}

struct Pending {
    op: &'static str,
    generation: u64,
}

/// Collects the events after `since` matching `subs`, one per object with
/// its final state. Returns None when none match.
fn collect(store: &Store<Record>, subs: &[Sub], since: u64) -> (Vec<Value>, u64) {
    let mut per: BTreeMap<(String, String), Pending> = BTreeMap::new();
    let resync = match store.events_since(since) {
        Ok(evs) => {
            for e in evs {
                if !matches(subs, &e.table, &e.key) {
                    continue;
                }
                let key = (e.table.clone(), e.key.clone());
                let op = match (&e.op, per.get(&key).map(|p| p.op)) {
                    (Op::Del, Some("add")) => {
                        per.remove(&key);
                        continue;
                    }
                    (Op::Del, _) => "del",
                    (Op::Add, _) => "add",
                    (Op::Mod, Some("add")) => "add",
                    (Op::Mod, _) => "mod",
                };
                per.insert(
                    key,
                    Pending {
                        op,
                        generation: e.generation,
                    },
                );
            }
            false
        }
        Err(_) => true,
    };
    store.read(|v| {
        let t = ViewTables(v);
        let mut out = vec![];
        let mut idx = RelIndex::default();
        let mut push = |class: &str, r: &str, op: &str, generation: u64, snap: Option<&Record>| {
            let cls = schema::class(class).expect("class");
            let mut ev = BTreeMap::new();
            ev.insert("id".to_string(), Value::Int(generation as i64));
            ev.insert("timestamp".to_string(), db::vs("0.0"));
            ev.insert("class".to_string(), db::vs(class.to_lowercase()));
            ev.insert("operation".to_string(), db::vs(op));
            ev.insert("ref".to_string(), db::vs(r));
            if let Some(rec) = snap {
                ev.insert(
                    "snapshot".to_string(),
                    db::to_wire(&t, cls, r, rec, &mut idx),
                );
            }
            out.push(Value::Struct(ev));
        };
        if resync {
            // History is gone: every current object counts as added.
            for c in schema::CLASSES {
                for (k, rec) in v.iter(c.name) {
                    if matches(subs, c.name, k) {
                        push(c.name, k, "add", v.generation(), Some(rec));
                    }
                }
            }
        } else {
            for ((class, r), p) in &per {
                match v.get(class, r) {
                    Some(rec) if p.op != "del" => push(class, r, p.op, p.generation, Some(rec)),
                    Some(_) => {}
                    None => push(class, r, "del", p.generation, None),
                }
            }
        }
        (out, v.generation())
    })
}

fn valid_ref_counts(store: &Store<Record>, subs: &[Sub]) -> Value {
    store.read(|v| {
        let mut m = BTreeMap::new();
        for c in schema::CLASSES {
            if subs.iter().any(|s| match s {
                Sub::All => true,
                Sub::Class(x) | Sub::Object(x, _) => *x == c.name,
            }) {
                m.insert(
                    c.name.to_lowercase(),
                    Value::Int(v.iter(c.name).count() as i64),
                );
            }
        }
        Value::Struct(m)
    })
}

pub fn event_from(
    store: &Store<Record>,
    classes: &[String],
    token: &str,
    timeout: Duration,
) -> ApiResult<Value> {
    let subs = parse_subs(classes)?;
    let mut since = parse_token(token)?;
    let deadline = Instant::now() + timeout;
    let (events, generation) = if since == 0 {
        collect_initial(store, &subs)
    } else {
        loop {
            let (evs, generation) = collect(store, &subs, since);
            let now = Instant::now();
            if !evs.is_empty() || now >= deadline {
                break (evs, generation);
            }
            since = generation;
            store.wait_newer(since, deadline - now);
        }
    };
    let mut out = BTreeMap::new();
    out.insert("events".to_string(), Value::Array(events));
    out.insert(
        "valid_ref_counts".to_string(),
        valid_ref_counts(store, &subs),
    );
    out.insert("token".to_string(), db::vs(token_of(generation)));
    Ok(Value::Struct(out))
}

/// Token "": every current object as an `add`.
fn collect_initial(store: &Store<Record>, subs: &[Sub]) -> (Vec<Value>, u64) {
    store.read(|v| {
        let t = ViewTables(v);
        let mut idx = RelIndex::default();
        let mut out = vec![];
        for c in schema::CLASSES {
            for (k, rec) in v.iter(c.name) {
                if !matches(subs, c.name, k) {
                    continue;
                }
                let mut ev = BTreeMap::new();
                ev.insert("id".to_string(), Value::Int(v.generation() as i64));
                ev.insert("timestamp".to_string(), db::vs("0.0"));
                ev.insert("class".to_string(), db::vs(c.name.to_lowercase()));
                ev.insert("operation".to_string(), db::vs("add"));
                ev.insert("ref".to_string(), db::vs(k));
                ev.insert("snapshot".to_string(), db::to_wire(&t, c, k, rec, &mut idx));
                out.push(Value::Struct(ev));
            }
        }
        (out, v.generation())
    })
}

/// `event.inject(class, ref)`: a `mod` event for the object; returns a token.
pub fn inject(store: &Store<Record>, class: &str, r: &str) -> ApiResult<Value> {
    let cls = schema::class_ci(class)
        .ok_or_else(|| ApiError::new("EVENT_SUBSCRIPTION_PARSE_FAILURE", &[class]))?;
    let res = store.write(|t| {
        let rec = t
            .get(cls.name, r)
            .cloned()
            .ok_or_else(|| ApiError::handle_invalid(cls.name, r))?;
        t.put(cls.name, r, rec);
        Ok::<_, ApiError>(())
    });
    match res {
        Ok((_, c)) => Ok(db::vs(token_of(c.generation))),
        Err(xnet_store::WriteError::Aborted(e)) => Err(e),
        Err(e) => Err(ApiError::internal(format!("{e:?}"))),
    }
}

/// Legacy registrations: per session, the classes and the last generation seen.
#[derive(Default)]
pub struct Registrations {
    by_session: Mutex<HashMap<String, (Vec<String>, u64)>>,
}

impl Registrations {
    pub fn register(&self, session: &str, classes: Vec<String>, generation: u64) -> ApiResult<()> {
        parse_subs(&classes)?;
        let mut m = self.by_session.lock().expect("events");
        let e = m.entry(session.to_string()).or_insert((vec![], generation));
        for c in classes {
            if !e.0.contains(&c) {
                e.0.push(c);
            }
        }
        Ok(())
    }
    pub fn unregister(&self, session: &str, classes: &[String]) {
        let mut m = self.by_session.lock().expect("events");
        if let Some(e) = m.get_mut(session) {
            e.0.retain(|c| !classes.contains(c));
            if e.0.is_empty() {
                m.remove(session);
            }
        }
    }
    pub fn unregister_all(&self, session: &str) {
        self.by_session.lock().expect("events").remove(session);
    }
    /// Blocks until events arrive for the session's classes.
    pub fn next(&self, store: &Store<Record>, session: &str) -> ApiResult<Value> {
        let (classes, since) = self
            .by_session
            .lock()
            .expect("events")
            .get(session)
            .cloned()
            .ok_or_else(|| ApiError::new("SESSION_NOT_REGISTERED", &[session]))?;
        let subs = parse_subs(&classes)?;
        let mut since = since;
        loop {
            if store.events_since(since).is_err() {
                return Err(ApiError::new("EVENTS_LOST", &[]));
            }
            let (evs, generation) = collect(store, &subs, since);
            if !evs.is_empty() {
                if let Some(e) = self.by_session.lock().expect("events").get_mut(session) {
                    e.1 = generation;
                }
                return Ok(Value::Array(evs));
            }
            since = generation;
            store.wait_newer(since, Duration::from_secs(30));
            if !self
                .by_session
                .lock()
                .expect("events")
                .contains_key(session)
            {
                return Err(ApiError::new("SESSION_NOT_REGISTERED", &[session]));
            }
        }
    }
}
