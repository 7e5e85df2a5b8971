//! host: management interface calls (xapi_host.ml, reference §2.8) and the
//! NIC inventory the host's agent reports.

use crate::calls::{a_str, p, Registry, P};
use crate::db::{self, b, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use crate::helpers as h;
use xapi_wire::Value;

pub fn register(reg: &mut Registry) {
    reg.write(
        "host.management_reconfigure",
        vec![p("pif", P::Ref("PIF"))],
        Box::new(|d, a| management_reconfigure(d, a_str(a, 0)).map(|_| Value::Nil)),
    );
    reg.write_sync(
        "host.management_disable",
        vec![],
        Box::new(|d, _| {
            if h::ha_enabled(d) {
                return Err(ApiError::new("HA_IS_ENABLED", &[]));
            }
            // The local host: the pool master when called on the coordinator.
            let host = local_host(d)?;
            d.set("host", &host, "management_bridge", db::vs(""))?;
            h::update_management_flags(d, &host)?;
            d.touch_host(&host);
            Ok(Value::Nil)
        }),
    );
    reg.read(
        "host.get_management_interface",
        vec![p("host", P::Ref("host"))],
        Box::new(|r, a| {
            let host = a_str(a, 0);
            let m = r.find("PIF", &|x| s(x, "host") == host && b(x, "management"));
            Ok(db::vs(
                m.first().cloned().unwrap_or_else(|| crate::NULL_REF.into()),
            ))
        }),
    );
    reg.write(
        "host.local_management_reconfigure",
        vec![p("interface", P::Str)],
        Box::new(|_, _| Err(ApiError::new("NOT_IN_EMERGENCY_MODE", &[]))),
    );
}

/// The host this xnetd serves as coordinator: the pool master.
pub fn local_host(d: &impl Read) -> ApiResult<String> {
    let pool = d
        .pool()
        .ok_or_else(|| ApiError::internal("no pool record"))?;
    Ok(s(d.rec("pool", &pool)?, "master").to_string())
}

pub fn management_reconfigure(d: &mut Db, pif: &str) -> ApiResult<()> {
    if h::ha_enabled(d) {
        return Err(ApiError::new("HA_IS_ENABLED", &[]));
    }
    let pr = d.rec("PIF", pif)?.clone();
    if b(&pr, "managed") {
        h::assert_usable_for_management(d, pif)?;
    }
    if b(&pr, "management") {
        return Ok(());
    }
    let host = s(&pr, "host").to_string();
    let bridge = s(d.rec("network", s(&pr, "network"))?, "bridge").to_string();
    crate::pif::set_attached(d, pif, true)?;
    d.set("host", &host, "management_bridge", db::vs(bridge))?;
    h::update_management_flags(d, &host)?;
    h::sync_host_address(d, &host)
}

/// One NIC as the agent sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Nic {
    pub device: String,
    pub mac: String,
    pub position: u32,
    pub carrier: bool,
    pub speed_mbps: i64,
    pub duplex_full: bool,
    pub driver: String,
}

/// Stores the agent's NIC inventory and refreshes PIF_metrics of physical PIFs.
pub fn set_inventory(d: &mut Db, host: &str, nics: &[Nic]) -> ApiResult<()> {
    let macs: db::Map = nics
        .iter()
        .map(|n| (n.device.clone(), db::vs(n.mac.clone())))
        .collect();
    let pos: db::Map = nics
        .iter()
        .map(|n| (n.device.clone(), db::vs(n.position.to_string())))
        .collect();
    let hr = d.rec("host", host)?;
    if *db::m(hr, "nic_macs") != macs || *db::m(hr, "nic_positions") != pos {
        d.update("host", host, |r| {
            r.insert("nic_macs".into(), Value::Struct(macs));
            r.insert("nic_positions".into(), Value::Struct(pos));
        })?;
    }
    for n in nics {
        let pifs = d.find("PIF", &|r| {
            s(r, "host") == host && b(r, "physical") && s(r, "device") == n.device
        });
        for p in pifs {
            let metrics = s(d.rec("PIF", &p)?, "metrics").to_string();
            let Some(mr) = d.tables().get("PIF_metrics", &metrics).cloned() else {
                continue;
            };
            let changed = b(&mr, "carrier") != n.carrier
                || db::i(&mr, "speed") != n.speed_mbps
                || b(&mr, "duplex") != n.duplex_full
                || s(&mr, "device_name") != n.driver;
            if changed {
                d.update("PIF_metrics", &metrics, |r| {
                    r.insert("carrier".into(), Value::Bool(n.carrier));
                    r.insert("speed".into(), Value::Int(n.speed_mbps));
                    r.insert("duplex".into(), Value::Bool(n.duplex_full));
                    r.insert("device_name".into(), db::vs(n.driver.clone()));
                    r.insert(
                        "last_updated".into(),
                        Value::DateTime(crate::now_datetime()),
                    );
                })?;
            }
        }
    }
    // Bond.links_up: members whose NIC has carrier (bonds detect by carrier).
    let carrier: std::collections::BTreeMap<&str, bool> = nics
        .iter()
        .map(|n| (n.device.as_str(), n.carrier))
        .collect();
    for bond in d.find("Bond", &|_| true) {
        let master = s(d.rec("Bond", &bond)?, "master").to_string();
        let here = d.tables().get("PIF", &master).map(|r| s(r, "host")) == Some(host);
        if here {
            let up = d
                .children("PIF", "bond_slave_of", &bond)
                .iter()
                .filter_map(|p| d.tables().get("PIF", p))
                .filter(|r| carrier.get(s(r, "device")) == Some(&true))
                .count() as i64;
            if db::i(d.rec("Bond", &bond)?, "links_up") != up {
                d.update("Bond", &bond, |r| {
                    r.insert("links_up".into(), Value::Int(up));
                })?;
            }
        }
    }
    Ok(())
}
