//! The dispatch table: every message xnet answers (generated accessors from
//! the schema plus the custom calls), with its parameters. Arguments are
//! decoded into typed, validated values here, before any operation runs.

use crate::db::{self, Db, Read, Reader};
use crate::error::{ApiError, ApiResult};
use crate::schema::{self, Class, Qual, Ty};
use std::collections::HashMap;
use std::sync::OnceLock;
use xapi_wire::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum P {
    /// A ref that must exist in the class (HANDLE_INVALID otherwise).
    Ref(&'static str),
    Str,
    Int,
    Float,
    Bool,
    Enum(&'static [&'static str]),
    StrSet,
    StrMap,
    RefSet(&'static str),
    /// A constructor record of this class.
    Ctor(&'static str),
    /// A value checked against a field type (set_<field>).
    Field(&'static Ty),
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: &'static str,
    pub kind: P,
    pub default: Option<Value>,
}

pub const fn p(name: &'static str, kind: P) -> Param {
    Param {
        name,
        kind,
        default: None,
    }
}
pub fn opt(name: &'static str, kind: P, default: Value) -> Param {
    Param {
        name,
        kind,
        default: Some(default),
    }
}

pub type ReadFn = Box<dyn Fn(&Reader, &[Value]) -> ApiResult<Value> + Send + Sync>;
pub type WriteFn = Box<dyn Fn(&mut Db, &[Value]) -> ApiResult<Value> + Send + Sync>;

pub enum Handler {
    Read(ReadFn),
    Write(WriteFn),
}

pub struct Call {
    pub name: String,
    pub params: Vec<Param>,
    pub handler: Handler,
    /// Has an `Async.` form.
    pub asyncable: bool,
}

impl Call {
    pub fn is_write(&self) -> bool {
        matches!(self.handler, Handler::Write(_))
    }
}

#[derive(Default)]
pub struct Registry {
    pub calls: HashMap<String, Call>,
}

impl Registry {
    pub fn read(&mut self, name: &str, params: Vec<Param>, f: ReadFn) {
        self.insert(name, params, Handler::Read(f), false);
    }
    pub fn write(&mut self, name: &str, params: Vec<Param>, f: WriteFn) {
        self.insert(name, params, Handler::Write(f), true);
    }
    /// A write without an Async form (XAPI flags excluding Async).
    pub fn write_sync(&mut self, name: &str, params: Vec<Param>, f: WriteFn) {
        self.insert(name, params, Handler::Write(f), false);
    }
    fn insert(&mut self, name: &str, params: Vec<Param>, handler: Handler, asyncable: bool) {
        self.calls.insert(
            name.to_string(),
            Call {
                name: name.to_string(),
                params,
                handler,
                asyncable,
            },
        );
    }
    /// Finds a call by wire name; `PIF_plug` is accepted as `PIF.plug`.
    pub fn lookup(&self, method: &str) -> Option<&Call> {
        if let Some(c) = self.calls.get(method) {
            return Some(c);
        }
        // <class>_<msg>: try each underscore as the separator (class names
        // such as PIF_metrics and network_sriov contain underscores).
        for (i, ch) in method.char_indices() {
            if ch == '_' {
                let dotted = format!("{}.{}", &method[..i], &method[i + 1..]);
                if let Some(c) = self.calls.get(&dotted) {
                    return Some(c);
                }
            }
        }
        None
    }
}

/// The full table, built once.
pub fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let mut r = Registry::default();
        crate::generic::register(&mut r);
        crate::network::register(&mut r);
        crate::pif::register(&mut r);
        crate::vlan::register(&mut r);
        crate::bond::register(&mut r);
        crate::tunnel::register(&mut r);
        crate::sriov::register(&mut r);
        crate::vif::register(&mut r);
        crate::vm::register(&mut r);
        crate::hotplug::register(&mut r);
        crate::host::register(&mut r);
        crate::pool::register(&mut r);
        r
    })
}

/// Checks the argument count and decodes every argument. `args` excludes the
/// session. Missing trailing arguments with defaults are filled in.
pub fn decode_args(t: &dyn db::Tables, call: &Call, args: &[Value]) -> ApiResult<Vec<Value>> {
    let required = call.params.iter().filter(|p| p.default.is_none()).count();
    if args.len() < required || args.len() > call.params.len() {
        return Err(ApiError::with(
            "MESSAGE_PARAMETER_COUNT_MISMATCH",
            vec![
                call.name.clone(),
                required.to_string(),
                args.len().to_string(),
            ],
        ));
    }
    let reader = Reader { t };
    let mut out = Vec::with_capacity(call.params.len());
    for (i, prm) in call.params.iter().enumerate() {
        let v = match args.get(i) {
            Some(v) => decode(&reader, prm.name, prm.kind, v)?,
            None => prm.default.clone().unwrap_or(Value::Nil),
        };
        out.push(v);
    }
    Ok(out)
}

fn type_error(name: &str) -> ApiError {
    ApiError::new("FIELD_TYPE_ERROR", &[name])
}

fn decode(r: &Reader, name: &str, kind: P, v: &Value) -> ApiResult<Value> {
    match kind {
        P::Ref(class) => {
            let s = v.as_str().ok_or_else(|| type_error(name))?;
            if !r.exists(class, s) {
                return Err(ApiError::handle_invalid(class, s));
            }
            Ok(Value::String(s.to_string()))
        }
        P::RefSet(class) => {
            let items = v.as_array().ok_or_else(|| type_error(name))?;
            let mut out = vec![];
            for it in items {
                out.push(decode(r, name, P::Ref(class), it)?);
            }
            Ok(Value::Array(out))
        }
        P::Ctor(class) => decode_ctor(r, schema::class(class).expect("class"), v),
        P::Field(ty) => decode_ty(name, ty, v),
        P::Str => decode_ty(name, &Ty::Str, v),
        P::Int => decode_ty(name, &Ty::Int, v),
        P::Float => decode_ty(name, &Ty::Float, v),
        P::Bool => decode_ty(name, &Ty::Bool, v),
        P::Enum(vals) => decode_ty(name, &Ty::Enum(vals), v),
        P::StrSet => decode_ty(name, &Ty::Set(&Ty::Str), v),
        P::StrMap => decode_ty(name, &Ty::Map(&Ty::Str, &Ty::Str), v),
    }
}

/// Decodes a value of a schema type. XAPI's XML-RPC writes ints as untyped
/// strings, so ints, floats and bools are also accepted in string form.
pub fn decode_ty(name: &str, ty: &Ty, v: &Value) -> ApiResult<Value> {
    Ok(match ty {
        Ty::Str | Ty::Ref(_) => match v {
            Value::String(s) => Value::String(s.clone()),
            Value::Nil => Value::String(String::new()),
            _ => return Err(type_error(name)),
        },
        Ty::DateTime => match v {
            Value::String(s) | Value::DateTime(s) => Value::DateTime(s.clone()),
            _ => return Err(type_error(name)),
        },
        Ty::Int => match v {
            Value::Int(i) => Value::Int(*i),
            Value::String(s) => Value::Int(s.trim().parse().map_err(|_| type_error(name))?),
            _ => return Err(type_error(name)),
        },
        Ty::Float => match v {
            Value::Float(x) => Value::Float(*x),
            Value::Int(i) => Value::Float(*i as f64),
            Value::String(s) => Value::Float(s.trim().parse().map_err(|_| type_error(name))?),
            _ => return Err(type_error(name)),
        },
        Ty::Bool => match v {
            Value::Bool(b) => Value::Bool(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            Value::Int(i) => Value::Bool(*i != 0),
            _ => return Err(type_error(name)),
        },
        Ty::Enum(vals) => {
            let s = v.as_str().ok_or_else(|| type_error(name))?;
            // Enum names are case-insensitive on input, as XAPI's *_of_string.
            match vals.iter().find(|x| x.eq_ignore_ascii_case(s)) {
                Some(x) => Value::String(x.to_string()),
                None => return Err(ApiError::invalid_value(name, s)),
            }
        }
        Ty::Set(inner) => {
            let items = v.as_array().ok_or_else(|| type_error(name))?;
            let mut out: Vec<Value> = vec![];
            for it in items {
                let d = decode_ty(name, inner, it)?;
                if !out.contains(&d) {
                    out.push(d);
                }
            }
            Value::Array(out)
        }
        Ty::Map(k, val) => {
            let m = match v {
                Value::Struct(m) => m,
                _ => return Err(type_error(name)),
            };
            let mut out = db::Map::new();
            for (key, x) in m {
                let kk = decode_ty(name, k, &Value::String(key.clone()))?;
                let kk = kk.as_str().unwrap_or_default().to_string();
                out.insert(kk, decode_ty(name, val, x)?);
            }
            Value::Struct(out)
        }
    })
}

/// Decodes a constructor struct: every RW or StaticRO field; fields with a
/// default may be omitted, a missing required one is XAPI's INTERNAL_ERROR.
fn decode_ctor(r: &Reader, class: &Class, v: &Value) -> ApiResult<Value> {
    let m = match v {
        Value::Struct(m) => m,
        _ => return Err(type_error("args")),
    };
    let mut out = db::Map::new();
    for fd in class.fields {
        if !matches!(fd.qual, Qual::Rw | Qual::RoC) || fd.rel.is_some() {
            continue;
        }
        match m.get(fd.name) {
            Some(x) => {
                let d = decode_ty(fd.name, &fd.ty, x)?;
                if let (Ty::Ref(cls), Some(s)) = (fd.ty, d.as_str()) {
                    if !r.exists(cls, s) {
                        return Err(ApiError::handle_invalid(cls, s));
                    }
                }
                out.insert(fd.name.to_string(), d);
            }
            None => match fd.default_value() {
                Some(d) => {
                    out.insert(fd.name.to_string(), d);
                }
                None => {
                    return Err(ApiError::internal(format!(
                        "Server_error(FIELD_NOT_FOUND, [ {} ])",
                        fd.name
                    )))
                }
            },
        }
    }
    Ok(Value::Struct(out))
}

// ---- argument accessors for handlers (arguments are already validated) ----

pub fn a_str(args: &[Value], i: usize) -> &str {
    args.get(i).and_then(|v| v.as_str()).unwrap_or("")
}
pub fn a_int(args: &[Value], i: usize) -> i64 {
    match args.get(i) {
        Some(Value::Int(x)) => *x,
        _ => 0,
    }
}
pub fn a_bool(args: &[Value], i: usize) -> bool {
    matches!(args.get(i), Some(Value::Bool(true)))
}
pub fn a_map(args: &[Value], i: usize) -> db::Map {
    match args.get(i) {
        Some(Value::Struct(m)) => m.clone(),
        _ => db::Map::new(),
    }
}
pub fn a_strs(args: &[Value], i: usize) -> Vec<String> {
    match args.get(i) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}
