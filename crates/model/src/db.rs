//! Records and the view operations have of the store. The store is generic;
//! here a record is a map of wire field name → value, and `Db` offers the
//! typed helpers every operation uses inside its one transaction.

use crate::error::{ApiError, ApiResult};
use crate::schema::{self, Class, Qual};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use xapi_wire::Value;

pub type Record = BTreeMap<String, Value>;
pub type Map = BTreeMap<String, Value>;

/// Read access to the tables (implemented over the store's view and
/// transaction, and by `MemTables` for tests).
pub trait Tables {
    fn get(&self, class: &str, r: &str) -> Option<&Record>;
    fn scan<'s>(&'s self, class: &str) -> Box<dyn Iterator<Item = (&'s str, &'s Record)> + 's>;
}

pub trait TablesMut: Tables {
    fn put(&mut self, class: &str, r: &str, rec: Record);
    fn delete(&mut self, class: &str, r: &str) -> bool;
}

/// A plain in-memory table set (tests, tools).
#[derive(Default, Clone, Debug)]
pub struct MemTables {
    pub tables: BTreeMap<String, BTreeMap<String, Record>>,
}

impl Tables for MemTables {
    fn get(&self, class: &str, r: &str) -> Option<&Record> {
        self.tables.get(class)?.get(r)
    }
    fn scan<'s>(&'s self, class: &str) -> Box<dyn Iterator<Item = (&'s str, &'s Record)> + 's> {
        match self.tables.get(class) {
            Some(t) => Box::new(t.iter().map(|(k, v)| (k.as_str(), v))),
            None => Box::new(std::iter::empty()),
        }
    }
}
impl TablesMut for MemTables {
    fn put(&mut self, class: &str, r: &str, rec: Record) {
        self.tables
            .entry(class.to_string())
            .or_default()
            .insert(r.to_string(), rec);
    }
    fn delete(&mut self, class: &str, r: &str) -> bool {
        self.tables
            .get_mut(class)
            .map(|t| t.remove(r).is_some())
            .unwrap_or(false)
    }
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}
pub fn new_ref() -> String {
    format!("OpaqueRef:{}", new_uuid())
}

// ---- field access on a record; missing or mistyped fields read as empty ----

pub fn s<'r>(rec: &'r Record, f: &str) -> &'r str {
    match rec.get(f) {
        Some(Value::String(s)) | Some(Value::DateTime(s)) => s,
        _ => "",
    }
}
pub fn i(rec: &Record, f: &str) -> i64 {
    match rec.get(f) {
        Some(Value::Int(i)) => *i,
        _ => 0,
    }
}
pub fn b(rec: &Record, f: &str) -> bool {
    matches!(rec.get(f), Some(Value::Bool(true)))
}
static EMPTY_MAP: Map = BTreeMap::new();
pub fn m<'r>(rec: &'r Record, f: &str) -> &'r Map {
    match rec.get(f) {
        Some(Value::Struct(m)) => m,
        _ => &EMPTY_MAP,
    }
}
pub fn set<'r>(rec: &'r Record, f: &str) -> &'r [Value] {
    match rec.get(f) {
        Some(Value::Array(a)) => a,
        _ => &[],
    }
}
pub fn set_strs(rec: &Record, f: &str) -> Vec<String> {
    set(rec, f)
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}
pub fn mget<'r>(rec: &'r Record, f: &str, key: &str) -> Option<&'r str> {
    m(rec, f).get(key).and_then(|v| v.as_str())
}
pub fn is_null(r: &str) -> bool {
    r.is_empty() || r == crate::NULL_REF
}
pub fn smap(pairs: &[(&str, &str)]) -> Value {
    Value::Struct(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}
pub fn sset<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|s| Value::String(s.as_ref().to_string()))
            .collect(),
    )
}
pub fn vs(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// Read-side helpers shared by `Db` and read-only calls.
pub trait Read {
    fn tables(&self) -> &dyn Tables;

    fn rec(&self, class: &str, r: &str) -> ApiResult<&Record> {
        self.tables()
            .get(class, r)
            .ok_or_else(|| ApiError::handle_invalid(class, r))
    }
    fn exists(&self, class: &str, r: &str) -> bool {
        self.tables().get(class, r).is_some()
    }
    fn find(&self, class: &str, pred: &dyn Fn(&Record) -> bool) -> Vec<String> {
        self.tables()
            .scan(class)
            .filter(|(_, rec)| pred(rec))
            .map(|(k, _)| k.to_string())
            .collect()
    }
    /// Refs of `class` whose `field` equals `target` (XAPI's one-to-many relations).
    fn children(&self, class: &str, field: &str, target: &str) -> Vec<String> {
        self.find(class, &|rec| s(rec, field) == target)
    }
    fn uuid_of(&self, class: &str, r: &str) -> String {
        self.tables()
            .get(class, r)
            .map(|rec| s(rec, "uuid").to_string())
            .unwrap_or_default()
    }
    fn by_uuid(&self, class: &str, uuid: &str) -> ApiResult<String> {
        self.tables()
            .scan(class)
            .find(|(_, rec)| s(rec, "uuid") == uuid)
            .map(|(k, _)| k.to_string())
            .ok_or_else(|| ApiError::uuid_invalid(class, uuid))
    }
    /// The pool record (there is exactly one).
    fn pool(&self) -> Option<String> {
        self.tables()
            .scan("pool")
            .next()
            .map(|(k, _)| k.to_string())
    }
}

pub struct Reader<'a> {
    pub t: &'a dyn Tables,
}
impl Read for Reader<'_> {
    fn tables(&self) -> &dyn Tables {
        self.t
    }
}

/// One operation's transaction. Records which hosts must realize the result
/// before the call may return.
pub struct Db<'a> {
    pub t: &'a mut dyn TablesMut,
    pub realize: BTreeSet<String>,
    /// The calling session is pool-internal (skips some user-input checks).
    pub pool_session: bool,
}

impl Read for Db<'_> {
    fn tables(&self) -> &dyn Tables {
        &*self.t
    }
}

impl<'a> Db<'a> {
    pub fn new(t: &'a mut dyn TablesMut) -> Self {
        Db {
            t,
            realize: BTreeSet::new(),
            pool_session: false,
        }
    }

    /// Marks a host whose agent must apply this transaction before the call returns.
    pub fn touch_host(&mut self, host: &str) {
        if !is_null(host) {
            self.realize.insert(host.to_string());
        }
    }

    pub fn put(&mut self, class: &str, r: &str, rec: Record) {
        self.t.put(class, r, rec)
    }

    /// Changes fields of an existing record.
    pub fn update(&mut self, class: &str, r: &str, f: impl FnOnce(&mut Record)) -> ApiResult<()> {
        let mut rec = self.rec(class, r)?.clone();
        f(&mut rec);
        self.t.put(class, r, rec);
        Ok(())
    }
    pub fn set(&mut self, class: &str, r: &str, field: &str, v: Value) -> ApiResult<()> {
        self.update(class, r, |rec| {
            rec.insert(field.to_string(), v);
        })
    }
    pub fn set_map_key(
        &mut self,
        class: &str,
        r: &str,
        field: &str,
        key: &str,
        val: Option<&str>,
    ) -> ApiResult<()> {
        self.update(class, r, |rec| {
            let mut map = m(rec, field).clone();
            match val {
                Some(v) => {
                    map.insert(key.to_string(), vs(v));
                }
                None => {
                    map.remove(key);
                }
            }
            rec.insert(field.to_string(), Value::Struct(map));
        })
    }

    /// Creates a record of `class` from the given fields, filling the rest with
    /// defaults (or zero values) and a fresh uuid. Returns the new ref.
    pub fn create(&mut self, class: &Class, fields: Vec<(&str, Value)>) -> String {
        let r = new_ref();
        let mut rec = Record::new();
        for fd in class.fields.iter().filter(|f| f.rel.is_none()) {
            rec.insert(fd.name.to_string(), fd.zero_value());
        }
        rec.insert("uuid".into(), vs(new_uuid()));
        for (k, v) in fields {
            rec.insert(k.to_string(), v);
        }
        self.t.put(class.name, &r, rec);
        r
    }
    pub fn destroy(&mut self, class: &str, r: &str) -> ApiResult<()> {
        if self.t.delete(class, r) {
            Ok(())
        } else {
            Err(ApiError::handle_invalid(class, r))
        }
    }
}

/// The wire form of a record: its non-internal fields plus derived sets.
/// `index` caches relations for bulk reads (get_all_records).
pub fn to_wire(
    t: &dyn Tables,
    class: &Class,
    r: &str,
    rec: &Record,
    index: &mut RelIndex,
) -> Value {
    let mut out = BTreeMap::new();
    for fd in class.fields {
        if fd.qual == Qual::Internal {
            continue;
        }
        let v = match fd.rel {
            Some((c, f)) => Value::Array(
                index
                    .get(t, c, f, r)
                    .iter()
                    .map(|x| Value::String(x.clone()))
                    .collect(),
            ),
            None => rec.get(fd.name).cloned().unwrap_or_else(|| fd.zero_value()),
        };
        out.insert(fd.name.to_string(), v);
    }
    Value::Struct(out)
}

/// Inverse indexes of one-to-many relations, built once per bulk read.
#[derive(Default)]
pub struct RelIndex {
    built: HashMap<(String, String), HashMap<String, Vec<String>>>,
}
impl RelIndex {
    pub fn get(&mut self, t: &dyn Tables, class: &str, field: &str, target: &str) -> &[String] {
        let idx = self
            .built
            .entry((class.to_string(), field.to_string()))
            .or_insert_with(|| {
                let mut m: HashMap<String, Vec<String>> = HashMap::new();
                for (k, rec) in t.scan(class) {
                    m.entry(s(rec, field).to_string())
                        .or_default()
                        .push(k.to_string());
                }
                m
            });
        idx.get(target).map(|v| v.as_slice()).unwrap_or(&[])
    }
}

/// The wire value of one field of a record (get_<field>).
pub fn field_to_wire(
    t: &dyn Tables,
    class: &Class,
    r: &str,
    rec: &Record,
    field: &str,
) -> Option<Value> {
    let fd = class.field(field)?;
    if fd.qual == Qual::Internal {
        return None;
    }
    Some(match fd.rel {
        Some((c, f)) => Value::Array(
            t.scan(c)
                .filter(|(_, x)| s(x, f) == r)
                .map(|(k, _)| Value::String(k.to_string()))
                .collect(),
        ),
        None => rec.get(fd.name).cloned().unwrap_or_else(|| fd.zero_value()),
    })
}

pub fn class_of(name: &str) -> ApiResult<&'static Class> {
    schema::class(name).ok_or_else(|| ApiError::new("MESSAGE_METHOD_UNKNOWN", &[name]))
}
