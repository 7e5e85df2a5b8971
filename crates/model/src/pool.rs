//! pool: pool-wide VLANs and management (xapi_pool.ml, reference §2.8, §2.3).

use crate::calls::{a_int, a_str, p, Registry, P};
use crate::db::{self, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use crate::helpers as h;
use xapi_wire::Value;

pub fn register(reg: &mut Registry) {
    reg.write(
        "pool.create_VLAN_from_PIF",
        vec![
            p("pif", P::Ref("PIF")),
            p("network", P::Ref("network")),
            p("VLAN", P::Int),
        ],
        Box::new(|d, a| {
            create_vlan_from_pif(d, a_str(a, 0), a_str(a, 1), a_int(a, 2)).map(|v| db::sset(&v))
        }),
    );
    reg.write(
        "pool.create_VLAN",
        vec![
            p("device", P::Str),
            p("network", P::Ref("network")),
            p("VLAN", P::Int),
        ],
        Box::new(|d, a| {
            let dev = a_str(a, 0).to_string();
            let mut out = vec![];
            for host in d.find("host", &|_| true) {
                let tagged = d.find("PIF", &|r| {
                    s(r, "host") == host && s(r, "device") == dev && db::i(r, "VLAN") < 0
                });
                let t = tagged
                    .first()
                    .ok_or_else(|| ApiError::invalid_value("device", &dev))?
                    .clone();
                let v = crate::vlan::create(d, &t, a_int(a, 2), a_str(a, 1))?;
                out.push(s(d.rec("VLAN", &v)?, "untagged_PIF").to_string());
            }
            Ok(db::sset(&out))
        }),
    );
    reg.write(
        "pool.management_reconfigure",
        vec![p("network", P::Ref("network"))],
        Box::new(|d, a| management_reconfigure(d, a_str(a, 0)).map(|_| Value::Nil)),
    );
    reg.write(
        "pool.set_igmp_snooping_enabled",
        vec![p("self", P::Ref("pool")), p("value", P::Bool)],
        Box::new(|d, a| {
            d.set("pool", a_str(a, 0), "igmp_snooping_enabled", a[1].clone())?;
            for host in d.find("host", &|_| true) {
                d.touch_host(&host);
            }
            Ok(Value::Nil)
        }),
    );
}

/// VLAN.create on every PIF of the pif's network (one per host); all or nothing.
pub fn create_vlan_from_pif(d: &mut Db, pif: &str, net: &str, tag: i64) -> ApiResult<Vec<String>> {
    let base_net = s(d.rec("PIF", pif)?, "network").to_string();
    let mut out = vec![];
    for tagged in d.children("PIF", "network", &base_net) {
        let v = crate::vlan::create(d, &tagged, tag, net)?;
        out.push(s(d.rec("VLAN", &v)?, "untagged_PIF").to_string());
    }
    Ok(out)
}

pub fn management_reconfigure(d: &mut Db, net: &str) -> ApiResult<()> {
    if h::ha_enabled(d) {
        return Err(ApiError::new("HA_IS_ENABLED", &[]));
    }
    let hosts = d.find("host", &|_| true);
    let mut pifs = vec![];
    for host in &hosts {
        let p = d.find("PIF", &|r| s(r, "host") == host && s(r, "network") == net);
        match p.first() {
            Some(p) => pifs.push(p.clone()),
            None => return Err(ApiError::new("PIF_NOT_PRESENT", &[host, net])),
        }
    }
    if let Some(first) = pifs.first() {
        let t = s(d.rec("PIF", first)?, "primary_address_type").to_string();
        for p in &pifs {
            if s(d.rec("PIF", p)?, "primary_address_type") != t {
                return Err(ApiError::new("PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE", &[p]));
            }
        }
    }
    for p in &pifs {
        h::assert_usable_for_management(d, p)?;
    }
    // Members first, the master last (XAPI's order).
    let master = crate::host::local_host(d).unwrap_or_default();
    let mut order: Vec<&String> = pifs
        .iter()
        .filter(|p| s(d.tables().get("PIF", p).unwrap(), "host") != master)
        .collect();
    order.extend(
        pifs.iter()
            .filter(|p| s(d.tables().get("PIF", p).unwrap(), "host") == master),
    );
    for p in order {
        crate::host::management_reconfigure(d, p)?;
    }
    Ok(())
}
