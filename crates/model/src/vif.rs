//! VIF calls (xapi_vif.ml, xapi_vif_helpers.ml; reference §2.7, §3.2, §8).

use crate::calls::{a_str, a_strs, opt, p, Registry, P};
use crate::db::{self, b, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use crate::helpers as h;
use crate::schema::{self, VIF, VIF_METRICS};
use xapi_wire::Value;

pub fn register(reg: &mut Registry) {
    reg.write(
        "VIF.create",
        vec![p("args", P::Ctor("VIF"))],
        Box::new(|d, a| {
            let args = match &a[0] {
                Value::Struct(m) => m.clone(),
                _ => db::Map::new(),
            };
            create(d, args).map(db::vs)
        }),
    );
    reg.write(
        "VIF.destroy",
        vec![p("self", P::Ref("VIF"))],
        Box::new(|d, a| {
            let v = a_str(a, 0);
            let r = d.rec("VIF", v)?;
            if b(r, "currently_attached") && vm_running(d, s(r, "VM")) {
                return Err(ApiError::operation_not_allowed(
                    "VIF currently attached to a running VM",
                ));
            }
            destroy_record(d, v).map(|_| Value::Nil)
        }),
    );
    reg.write(
        "VIF.plug",
        vec![p("self", P::Ref("VIF"))],
        Box::new(|d, a| set_plugged(d, a_str(a, 0), true).map(|_| Value::Nil)),
    );
    for name in ["VIF.unplug", "VIF.unplug_force"] {
        reg.write(
            name,
            vec![p("self", P::Ref("VIF"))],
            Box::new(|d, a| set_plugged(d, a_str(a, 0), false).map(|_| Value::Nil)),
        );
    }
    reg.write(
        "VIF.move",
        vec![p("self", P::Ref("VIF")), p("network", P::Ref("network"))],
        Box::new(|d, a| {
            let (v, net) = (a_str(a, 0), a_str(a, 1));
            let r = d.rec("VIF", v)?.clone();
            if !db::set(&r, "trunks").is_empty() {
                let vlan_net = d.children("PIF", "network", net).iter().any(|p| {
                    d.tables()
                        .get("PIF", p)
                        .map(|x| db::i(x, "VLAN") >= 0)
                        .unwrap_or(false)
                });
                if vlan_net {
                    return Err(ApiError::new("NETWORK_INCOMPATIBLE_WITH_TRUNKS", &[net]));
                }
            }
            check_mac_free(d, s(&r, "MAC"), net, Some(v))?;
            d.set("VIF", v, "network", db::vs(net))?;
            touch_if_attached(d, v)?;
            Ok(Value::Nil)
        }),
    );
    reg.write(
        "VIF.set_locking_mode",
        vec![
            p("self", P::Ref("VIF")),
            p("value", P::Enum(schema::VIF_LOCKING)),
        ],
        Box::new(|d, a| {
            d.set("VIF", a_str(a, 0), "locking_mode", a[1].clone())?;
            touch_if_attached(d, a_str(a, 0))?;
            Ok(Value::Nil)
        }),
    );
    for fam in ["ipv4", "ipv6"] {
        let field: &'static str = if fam == "ipv4" {
            "ipv4_allowed"
        } else {
            "ipv6_allowed"
        };
        reg.write(
            &format!("VIF.set_{field}"),
            vec![p("self", P::Ref("VIF")), p("value", P::StrSet)],
            Box::new(move |d, a| {
                let vals = a_strs(a, 1);
                for v in &vals {
                    check_allowed(field, v)?;
                }
                d.set("VIF", a_str(a, 0), field, db::sset(&vals))?;
                touch_if_attached(d, a_str(a, 0))?;
                Ok(Value::Nil)
            }),
        );
        reg.write(
            &format!("VIF.add_{field}"),
            vec![p("self", P::Ref("VIF")), p("value", P::Str)],
            Box::new(move |d, a| {
                let v = a_str(a, 1).to_string();
                check_allowed(field, &v)?;
                d.update("VIF", a_str(a, 0), |r| {
                    let mut items = db::set(r, field).to_vec();
                    if !items.contains(&db::vs(v.clone())) {
                        items.push(db::vs(v));
                    }
                    r.insert(field.into(), Value::Array(items));
                })?;
                touch_if_attached(d, a_str(a, 0))?;
                Ok(Value::Nil)
            }),
        );
        reg.write(
            &format!("VIF.remove_{field}"),
            vec![p("self", P::Ref("VIF")), p("value", P::Str)],
            Box::new(move |d, a| {
                let v = db::vs(a_str(a, 1));
                d.update("VIF", a_str(a, 0), |r| {
                    let items: Vec<Value> = db::set(r, field)
                        .iter()
                        .filter(|x| **x != v)
                        .cloned()
                        .collect();
                    r.insert(field.into(), Value::Array(items));
                })?;
                touch_if_attached(d, a_str(a, 0))?;
                Ok(Value::Nil)
            }),
        );
    }
    reg.write(
        "VIF.configure_ipv4",
        vec![
            p("self", P::Ref("VIF")),
            p("mode", P::Enum(schema::VIF_IPV4_MODES)),
            opt("address", P::Str, db::vs("")),
            opt("gateway", P::Str, db::vs("")),
        ],
        Box::new(|d, a| {
            configure_ip(d, a_str(a, 0), a_str(a, 1), a_str(a, 2), a_str(a, 3), 4)
                .map(|_| Value::Nil)
        }),
    );
    reg.write(
        "VIF.configure_ipv6",
        vec![
            p("self", P::Ref("VIF")),
            p("mode", P::Enum(schema::VIF_IPV6_MODES)),
            opt("address", P::Str, db::vs("")),
            opt("gateway", P::Str, db::vs("")),
        ],
        Box::new(|d, a| {
            configure_ip(d, a_str(a, 0), a_str(a, 1), a_str(a, 2), a_str(a, 3), 6)
                .map(|_| Value::Nil)
        }),
    );
}

pub(crate) fn check_allowed(field: &str, v: &str) -> ApiResult<()> {
    let ip_ok = v.parse::<std::net::IpAddr>().is_ok() || h::parse_cidr(v).is_some();
    let fam_ok = if field == "ipv4_allowed" {
        !v.contains(':')
    } else {
        v.contains(':')
    };
    if ip_ok && fam_ok {
        Ok(())
    } else {
        Err(ApiError::new("INVALID_IP_ADDRESS_SPECIFIED", &[field]))
    }
}

/// Two VIFs with one MAC on one network confuse every switch on it: an
/// xnet check (XAPI has none), `MAC_ALREADY_IN_USE [mac, network, other VIF]`.
pub(crate) fn check_mac_free(
    d: &impl Read,
    mac: &str,
    net: &str,
    this: Option<&str>,
) -> ApiResult<()> {
    let other = d.find("VIF", &|r| {
        s(r, "network") == net && s(r, "MAC").eq_ignore_ascii_case(mac)
    });
    match other.into_iter().find(|o| Some(o.as_str()) != this) {
        Some(o) if !mac.is_empty() => Err(ApiError::new("MAC_ALREADY_IN_USE", &[mac, net, &o])),
        _ => Ok(()),
    }
}

fn vm_running(d: &impl Read, vm: &str) -> bool {
    d.tables()
        .get("VM", vm)
        .map(|r| s(r, "power_state") == "Running")
        .unwrap_or(false)
}

fn touch_if_attached(d: &mut Db, v: &str) -> ApiResult<()> {
    let r = d.rec("VIF", v)?;
    if b(r, "currently_attached") {
        let host = d
            .tables()
            .get("VM", s(r, "VM"))
            .map(|vm| s(vm, "resident_on").to_string())
            .unwrap_or_default();
        d.touch_host(&host);
    }
    Ok(())
}

pub fn create(d: &mut Db, mut args: db::Map) -> ApiResult<String> {
    let get = |a: &db::Map, k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let device = get(&args, "device");
    let vm = get(&args, "VM");
    let net = get(&args, "network");
    let mut mac = get(&args, "MAC").to_lowercase();
    let devno: u32 = match device.parse() {
        Ok(n) if device.chars().all(|c| c.is_ascii_digit()) => n,
        _ => return Err(ApiError::new("INVALID_DEVICE", &[&device])),
    };
    let vmr = d.rec("VM", &vm)?.clone();
    let mut autogen = false;
    if mac.is_empty() {
        if let Some(seed) = db::mget(&vmr, "other_config", "mac_seed") {
            mac = h::with_mac_prefix(&h::gen_mac(devno, seed), h::mac_prefix(d)?);
            autogen = true;
        }
    }
    if !mac.is_empty() || !autogen {
        h::assert_mac(&mac)?;
    }
    let trunks = !db::set(&db::Record::from_iter(args.clone()), "trunks").is_empty();
    if trunks {
        let vlan_net = d.children("PIF", "network", &net).iter().any(|p| {
            d.tables()
                .get("PIF", p)
                .map(|x| db::i(x, "VLAN") >= 0)
                .unwrap_or(false)
        });
        if vlan_net {
            return Err(ApiError::new("NETWORK_INCOMPATIBLE_WITH_TRUNKS", &[&net]));
        }
    }
    let taken = d.find("VIF", &|r| {
        s(r, "VM") == vm && s(r, "device").parse::<u32>().ok() == Some(devno)
    });
    if !taken.is_empty() {
        return Err(ApiError::new("DEVICE_ALREADY_EXISTS", &[&device]));
    }
    for v in ["ipv4_allowed", "ipv6_allowed"] {
        for x in db::set_strs(&db::Record::from_iter(args.clone()), v) {
            check_allowed(v, &x)?;
        }
    }
    // After XAPI's own checks.
    check_mac_free(d, &mac, &net, None)?;
    if s(&vmr, "power_state") != "Suspended" {
        args.insert("currently_attached".into(), Value::Bool(false));
    }
    let metrics = d.create(&VIF_METRICS, vec![]);
    args.insert("MAC".into(), db::vs(mac));
    args.insert("MAC_autogenerated".into(), Value::Bool(autogen));
    args.insert("metrics".into(), db::vs(metrics));
    args.insert("qos_supported_algorithms".into(), db::sset(&["ratelimit"]));
    let fields: Vec<(&str, Value)> = args.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    Ok(d.create(&VIF, fields))
}

/// Deletes a VIF and its metrics (network.destroy, VM.destroy, VIF.destroy).
pub fn destroy_record(d: &mut Db, v: &str) -> ApiResult<()> {
    let r = d.rec("VIF", v)?.clone();
    let metrics = s(&r, "metrics").to_string();
    if d.exists("VIF_metrics", &metrics) {
        d.destroy("VIF_metrics", &metrics)?;
    }
    if b(&r, "currently_attached") {
        touch_if_attached(d, v)?;
    }
    d.destroy("VIF", v)
}

/// VIF.plug / unplug, gated as XAPI's valid_operations.
pub fn set_plugged(d: &mut Db, v: &str, plug: bool) -> ApiResult<()> {
    let r = d.rec("VIF", v)?.clone();
    let vm = s(&r, "VM").to_string();
    let vmr = d.rec("VM", &vm)?.clone();
    if plug && b(&vmr, "is_control_domain") {
        return Err(ApiError::operation_not_allowed(
            "Control domain does not support hotplug",
        ));
    }
    let state = s(&vmr, "power_state");
    if state != "Running" {
        return Err(ApiError::new(
            "VM_BAD_POWER_STATE",
            &[&vm, "running", &state.to_lowercase()],
        ));
    }
    let attached = b(&r, "currently_attached") || b(&r, "reserved");
    if plug && attached {
        return Err(ApiError::new("DEVICE_ALREADY_ATTACHED", &[v]));
    }
    if !plug && !attached {
        return Err(ApiError::new("DEVICE_ALREADY_DETACHED", &[v]));
    }
    d.set("VIF", v, "currently_attached", Value::Bool(plug))?;
    d.touch_host(s(&vmr, "resident_on"));
    Ok(())
}

fn effective_locking(d: &impl Read, v: &str) -> ApiResult<String> {
    let r = d.rec("VIF", v)?;
    let mode = s(r, "locking_mode");
    if mode == "network_default" {
        Ok(s(d.rec("network", s(r, "network"))?, "default_locking_mode").to_string())
    } else {
        Ok(mode.to_string())
    }
}

fn configure_ip(
    d: &mut Db,
    v: &str,
    mode: &str,
    address: &str,
    gateway: &str,
    fam: u8,
) -> ApiResult<()> {
    let pre = if fam == 4 { "ipv4" } else { "ipv6" };
    if mode == "Static" {
        match h::parse_cidr(address) {
            Some((a, _)) if (fam == 4) == a.is_ipv4() => {}
            _ => {
                return Err(ApiError::new(
                    "INVALID_CIDR_ADDRESS_SPECIFIED",
                    &["address"],
                ))
            }
        }
        if !gateway.is_empty() {
            if fam == 4 {
                h::assert_ipv4(gateway, "gateway")?;
            } else {
                h::assert_ipv6(gateway, "gateway")?;
            }
        }
        if effective_locking(d, v)? == "locked" {
            let ip = address.split('/').next().unwrap_or("");
            let allowed = db::set_strs(d.rec("VIF", v)?, &format!("{pre}_allowed"));
            if !allowed.iter().any(|a| a == ip || a == address) {
                return Err(ApiError::new(
                    "ADDRESS_VIOLATES_LOCKING_CONSTRAINT",
                    &[address],
                ));
            }
        }
    }
    let (addrs, gw) = if mode == "Static" {
        (vec![address], gateway)
    } else {
        (vec![], "")
    };
    d.update("VIF", v, |r| {
        r.insert(format!("{pre}_configuration_mode"), db::vs(mode));
        r.insert(format!("{pre}_addresses"), db::sset(&addrs));
        r.insert(format!("{pre}_gateway"), db::vs(gw));
    })
}
