//! network: create, destroy, purposes, default locking mode (xapi_network.ml).

use crate::calls::{a_str, p, Registry, P};
use crate::db::{self, b, m, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use crate::schema::{self, NETWORK};
use xapi_wire::Value;

pub fn register(reg: &mut Registry) {
    reg.write(
        "network.create",
        vec![p("args", P::Ctor("network"))],
        Box::new(|d, a| {
            let args = match &a[0] {
                Value::Struct(m) => m.clone(),
                _ => db::Map::new(),
            };
            Ok(db::vs(create(d, args)?))
        }),
    );
    reg.write(
        "network.destroy",
        vec![p("self", P::Ref("network"))],
        Box::new(|d, a| destroy(d, a_str(a, 0)).map(|_| Value::Nil)),
    );
    reg.write(
        "network.add_purpose",
        vec![
            p("self", P::Ref("network")),
            p("value", P::Enum(schema::PURPOSES)),
        ],
        Box::new(|d, a| add_purpose(d, a_str(a, 0), a_str(a, 1)).map(|_| Value::Nil)),
    );
    reg.write(
        "network.remove_purpose",
        vec![
            p("self", P::Ref("network")),
            p("value", P::Enum(schema::PURPOSES)),
        ],
        Box::new(|d, a| {
            let v = a[1].clone();
            d.update("network", a_str(a, 0), |r| {
                let items: Vec<Value> = db::set(r, "purpose")
                    .iter()
                    .filter(|x| **x != v)
                    .cloned()
                    .collect();
                r.insert("purpose".into(), Value::Array(items));
            })?;
            Ok(Value::Nil)
        }),
    );
    reg.write(
        "network.set_default_locking_mode",
        vec![
            p("network", P::Ref("network")),
            p("value", P::Enum(schema::LOCKING_DEFAULT)),
        ],
        Box::new(|d, a| set_default_locking_mode(d, a_str(a, 0), a_str(a, 1)).map(|_| Value::Nil)),
    );
}

const RESERVED_PREFIXES: &[&str] = &["xen", "xapi", "vif", "tap", "eth"];

/// Bridge names must be valid Linux interface names too (XAPI checks length
/// and prefixes; xnet also refuses characters the kernel rejects).
fn bridge_name_ok(b: &str) -> bool {
    b.len() <= 15
        && !RESERVED_PREFIXES.iter().any(|p| b.starts_with(p))
        && b.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

pub fn create(d: &mut Db, mut args: db::Map) -> ApiResult<String> {
    let bridge = args
        .get("bridge")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let bridge = if bridge.is_empty() {
        choose_bridge_name(d)
    } else {
        if !d.pool_session && !bridge_name_ok(&bridge) {
            return Err(ApiError::invalid_value("bridge", &bridge));
        }
        if !d.find("network", &|r| s(r, "bridge") == bridge).is_empty() {
            return Err(ApiError::new("BRIDGE_NAME_EXISTS", &[&bridge]));
        }
        bridge
    };
    if matches!(args.get("MTU"), Some(Value::Int(x)) if *x <= 0) {
        args.insert("MTU".into(), Value::Int(1500));
    }
    args.insert("bridge".into(), db::vs(bridge));
    args.insert("default_locking_mode".into(), db::vs("unlocked"));
    args.insert("purpose".into(), Value::Array(vec![]));
    let fields: Vec<(&str, Value)> = args.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Ok(d.create(&NETWORK, fields))
}

/// `xapi<N>`: the smallest N whose name no network uses.
pub fn choose_bridge_name(d: &impl Read) -> String {
    let used: std::collections::HashSet<&str> = d
        .tables()
        .scan("network")
        .map(|(_, r)| s(r, "bridge"))
        .collect();
    (0..)
        .map(|n| format!("xapi{n}"))
        .find(|c| !used.contains(c.as_str()))
        .expect("unbounded")
}

pub fn destroy(d: &mut Db, net: &str) -> ApiResult<()> {
    let vifs = d.children("VIF", "network", net);
    let busy: Vec<String> = vifs
        .iter()
        .filter(|v| {
            d.tables()
                .get("VIF", v)
                .map(|r| b(r, "currently_attached") || b(r, "reserved"))
                .unwrap_or(false)
        })
        .cloned()
        .collect();
    if !busy.is_empty() {
        return Err(ApiError::with("NETWORK_CONTAINS_VIF", busy));
    }
    let pifs = d.children("PIF", "network", net);
    if !pifs.is_empty() {
        return Err(ApiError::with("NETWORK_CONTAINS_PIF", pifs));
    }
    if db::mget(
        d.rec("network", net)?,
        "other_config",
        "is_host_internal_management_network",
    ) == Some("true")
    {
        return Err(ApiError::new("CANNOT_DESTROY_SYSTEM_NETWORK", &[net]));
    }
    for v in vifs {
        crate::vif::destroy_record(d, &v)?;
    }
    // Hosts holding an internal bridge for it must drop it.
    for h in d.find("host", &|_| true) {
        d.touch_host(&h);
    }
    d.destroy("network", net)
}

pub fn add_purpose(d: &mut Db, net: &str, purpose: &str) -> ApiResult<()> {
    crate::helpers::assert_network_managed(d, net)?;
    let other = match purpose {
        "nbd" => "insecure_nbd",
        _ => "nbd",
    };
    let clash = d.find("network", &|r| {
        db::set_strs(r, "purpose").iter().any(|x| x == other)
    });
    if !clash.is_empty() {
        return Err(ApiError::new(
            "NETWORK_INCOMPATIBLE_PURPOSES",
            &[purpose, other],
        ));
    }
    d.update("network", net, |r| {
        let mut items = db::set(r, "purpose").to_vec();
        let v = db::vs(purpose);
        if !items.contains(&v) {
            items.push(v);
        }
        r.insert("purpose".into(), Value::Array(items));
    })
}

pub fn set_default_locking_mode(d: &mut Db, net: &str, mode: &str) -> ApiResult<()> {
    let attached = d.find("VIF", &|r| {
        s(r, "network") == net && b(r, "currently_attached")
    });
    if let Some(v) = attached.first() {
        return Err(ApiError::new("VIF_IN_USE", &[net, v]));
    }
    d.set("network", net, "default_locking_mode", db::vs(mode))
}

/// Bridge-config precedence of nm.ml: pool, then network, then PIF other_config.
pub fn merged_other_config(d: &impl Read, net: &str, pif: Option<&str>) -> db::Map {
    let mut out = db::Map::new();
    if let Some(pool) = d.pool() {
        if let Some(r) = d.tables().get("pool", &pool) {
            out.extend(m(r, "other_config").clone());
        }
    }
    if let Some(r) = d.tables().get("network", net) {
        out.extend(m(r, "other_config").clone());
    }
    if let Some(p) = pif.and_then(|p| d.tables().get("PIF", p)) {
        out.extend(m(p, "other_config").clone());
    }
    out
}
