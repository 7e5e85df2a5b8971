//! The messages XAPI generates for every class from its fields
//! (reference §1.1): get_record, get_all*, get_by_uuid, get_by_name_label,
//! get_<f>, set_<f>, add_to_/remove_from_ for maps, add_/remove_ for sets.

use crate::calls::{a_str, p, Registry, P};
use crate::db::{self, field_to_wire, to_wire, Read, Reader, RelIndex};
use crate::error::{ApiError, ApiResult};
use crate::query;
use crate::schema::{Class, Qual, Ty, CLASSES};
use std::collections::BTreeMap;
use xapi_wire::Value;

pub fn register(reg: &mut Registry) {
    for &c in CLASSES {
        let n = c.name;
        reg.read(
            &format!("{n}.get_record"),
            vec![p("self", P::Ref(n))],
            Box::new(move |r, a| get_record(r, c, a_str(a, 0))),
        );
        reg.read(
            &format!("{n}.get_all"),
            vec![],
            Box::new(move |r, _| {
                Ok(Value::Array(
                    r.t.scan(n).map(|(k, _)| Value::String(k.into())).collect(),
                ))
            }),
        );
        reg.read(
            &format!("{n}.get_all_records"),
            vec![],
            Box::new(move |r, _| Ok(all_records(r, c, &query::Expr::True))),
        );
        reg.read(
            &format!("{n}.get_all_records_where"),
            vec![p("expr", P::Str)],
            Box::new(move |r, a| Ok(all_records(r, c, &query::parse(a_str(a, 0))?))),
        );
        reg.read(
            &format!("{n}.get_all_where"),
            vec![p("expr", P::Str)],
            Box::new(move |r, a| {
                let e = query::parse(a_str(a, 0))?;
                Ok(Value::Array(
                    r.t.scan(n)
                        .filter(|(_, rec)| e.eval(rec))
                        .map(|(k, _)| Value::String(k.into()))
                        .collect(),
                ))
            }),
        );
        reg.read(
            &format!("{n}.get_by_uuid"),
            vec![p("uuid", P::Str)],
            Box::new(move |r, a| Ok(Value::String(r.by_uuid(n, a_str(a, 0))?))),
        );
        if c.by_name_label {
            reg.read(
                &format!("{n}.get_by_name_label"),
                vec![p("label", P::Str)],
                Box::new(move |r, a| {
                    let label = a_str(a, 0).to_string();
                    Ok(db::sset(
                        &r.find(n, &|rec| db::s(rec, "name_label") == label),
                    ))
                }),
            );
        }
        for fd in c.wire_fields() {
            let fname = fd.name;
            reg.read(
                &format!("{n}.get_{fname}"),
                vec![p("self", P::Ref(n))],
                Box::new(move |r, a| {
                    let rf = a_str(a, 0);
                    let rec = r.rec(n, rf)?;
                    Ok(field_to_wire(r.t, c, rf, rec, fname).unwrap_or(Value::Nil))
                }),
            );
            if fd.qual != Qual::Rw {
                continue;
            }
            reg.write(
                &format!("{n}.set_{fname}"),
                vec![p("self", P::Ref(n)), p("value", P::Field(&fd.ty))],
                Box::new(move |d, a| {
                    d.set(n, a_str(a, 0), fname, a[1].clone())?;
                    Ok(Value::Nil)
                }),
            );
            match fd.ty {
                Ty::Map(k, v) => {
                    reg.write(
                        &format!("{n}.add_to_{fname}"),
                        vec![
                            p("self", P::Ref(n)),
                            p("key", P::Field(k)),
                            p("value", P::Field(v)),
                        ],
                        Box::new(move |d, a| {
                            let rf = a_str(a, 0);
                            let key = a_str(a, 1).to_string();
                            let rec = d.rec(n, rf)?;
                            if db::m(rec, fname).contains_key(&key) {
                                let uuid = db::s(rec, "uuid").to_string();
                                return Err(ApiError::with(
                                    "MAP_DUPLICATE_KEY",
                                    vec![n.into(), fname.into(), uuid, key],
                                ));
                            }
                            d.update(n, rf, |rec| {
                                let mut m = db::m(rec, fname).clone();
                                m.insert(key, a[2].clone());
                                rec.insert(fname.into(), Value::Struct(m));
                            })?;
                            Ok(Value::Nil)
                        }),
                    );
                    reg.write(
                        &format!("{n}.remove_from_{fname}"),
                        vec![p("self", P::Ref(n)), p("key", P::Field(k))],
                        Box::new(move |d, a| {
                            d.set_map_key(n, a_str(a, 0), fname, a_str(a, 1), None)?;
                            Ok(Value::Nil)
                        }),
                    );
                }
                Ty::Set(inner) => {
                    reg.write(
                        &format!("{n}.add_{fname}"),
                        vec![p("self", P::Ref(n)), p("value", P::Field(inner))],
                        Box::new(move |d, a| {
                            d.update(n, a_str(a, 0), |rec| {
                                let mut s = db::set(rec, fname).to_vec();
                                if !s.contains(&a[1]) {
                                    s.push(a[1].clone());
                                }
                                rec.insert(fname.into(), Value::Array(s));
                            })?;
                            Ok(Value::Nil)
                        }),
                    );
                    reg.write(
                        &format!("{n}.remove_{fname}"),
                        vec![p("self", P::Ref(n)), p("value", P::Field(inner))],
                        Box::new(move |d, a| {
                            d.update(n, a_str(a, 0), |rec| {
                                let s: Vec<Value> = db::set(rec, fname)
                                    .iter()
                                    .filter(|x| **x != a[1])
                                    .cloned()
                                    .collect();
                                rec.insert(fname.into(), Value::Array(s));
                            })?;
                            Ok(Value::Nil)
                        }),
                    );
                }
                _ => {}
            }
        }
    }
}

pub fn get_record(r: &Reader, c: &Class, rf: &str) -> ApiResult<Value> {
    let rec = r.rec(c.name, rf)?;
    Ok(to_wire(r.t, c, rf, rec, &mut RelIndex::default()))
}

pub fn all_records(r: &Reader, c: &Class, e: &query::Expr) -> Value {
    let mut idx = RelIndex::default();
    let mut out = BTreeMap::new();
    for (k, rec) in r.t.scan(c.name) {
        if e.eval(rec) {
            out.insert(k.to_string(), to_wire(r.t, c, k, rec, &mut idx));
        }
    }
    Value::Struct(out)
}

/// The refs of `c` that `e` selects, in name order.
pub fn matching<'t>(t: &'t dyn crate::db::Tables, c: &Class, e: &query::Expr) -> Vec<&'t str> {
    t.scan(c.name)
        .filter(|(_, rec)| e.eval(rec))
        .map(|(k, _)| k)
        .collect()
}

/// The records `refs` of `c` as one struct written straight into its wire
/// form: the same bytes as encoding `all_records`' result, without building
/// the value tree.
pub fn records_into(
    t: &dyn crate::db::Tables,
    c: &Class,
    refs: &[&str],
    w: &mut xapi_wire::stream::Writer,
) {
    // A struct's members go out in name order.
    let mut fields: Vec<_> = c
        .fields
        .iter()
        .filter(|f| f.qual != Qual::Internal)
        .collect();
    fields.sort_by_key(|f| f.name);
    let mut idx = RelIndex::default();
    w.begin_struct();
    for &k in refs {
        let Some(rec) = t.get(c.name, k) else {
            continue;
        };
        w.key(k);
        w.begin_struct();
        // Fields and the record's keys are both in name order: walk them
        // together instead of looking each field up.
        let mut stored = rec.iter().peekable();
        for fd in &fields {
            w.key(fd.name);
            if let Some((rc, rf)) = fd.rel {
                w.strings(idx.get(t, rc, rf, k).iter().map(String::as_str));
            } else {
                while stored.next_if(|(n, _)| n.as_str() < fd.name).is_some() {}
                match stored.next_if(|(n, _)| n.as_str() == fd.name) {
                    Some((_, v)) => w.value(v),
                    None => w.value(&fd.zero_value()),
                }
            }
            w.end_member();
        }
        w.end_struct();
        w.end_member();
    }
    w.end_struct();
}
