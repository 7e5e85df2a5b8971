//! What a pool member's agent observes of its own host (NIC inventory, link
//! state, counters, DHCP leases), carried to the coordinator's records. A
//! member may only report fields its agent writes, and only on records of
//! its own host; everything else in a report is ignored.

use crate::db::{b, s, Db, Read, Record};
use crate::error::ApiResult;

/// The classes an agent writes and, per class, the fields it owns.
pub const REPORTED: &[(&str, &[&str])] = &[
    ("host", &["nic_macs", "nic_positions"]),
    (
        "PIF_metrics",
        &[
            "carrier",
            "speed",
            "duplex",
            "device_name",
            "io_read_kbs",
            "io_write_kbs",
            "last_updated",
            "other_config",
        ],
    ),
    (
        "VIF_metrics",
        &[
            "io_read_kbs",
            "io_write_kbs",
            "last_updated",
            "other_config",
        ],
    ),
    ("Bond", &["links_up"]),
    // Leases: only while the coordinator's record says DHCP.
    ("PIF", &["IP", "netmask", "gateway", "DNS"]),
];

/// The fields `host`'s agent may report for record `r` of `class`, or none
/// when the record is not that host's.
fn owned(d: &Db, host: &str, class: &str, r: &str) -> Option<&'static [&'static str]> {
    let fields = REPORTED.iter().find(|(c, _)| *c == class)?.1;
    let t = d.tables();
    let pif_here = |p: &Record| s(p, "host") == host;
    let mine = match class {
        "host" => r == host,
        "PIF" => t
            .get("PIF", r)
            .is_some_and(|p| pif_here(p) && s(p, "ip_configuration_mode") == "DHCP"),
        "PIF_metrics" => t
            .scan("PIF")
            .any(|(_, p)| pif_here(p) && s(p, "metrics") == r),
        "Bond" => t
            .get("Bond", r)
            .and_then(|x| t.get("PIF", s(x, "master")))
            .is_some_and(pif_here),
        "VIF_metrics" => t.scan("VIF").any(|(_, v)| {
            s(v, "metrics") == r
                && t.get("VM", s(v, "VM"))
                    .is_some_and(|vm| s(vm, "resident_on") == host)
        }),
        _ => false,
    };
    mine.then_some(fields)
}

/// Applies one reported record of `host`: its owned fields replace the
/// coordinator's. Returns whether anything changed.
pub fn apply(d: &mut Db, host: &str, class: &str, r: &str, rec: &Record) -> ApiResult<bool> {
    let Some(fields) = owned(d, host, class, r) else {
        return Ok(false);
    };
    let current = d.rec(class, r)?.clone();
    let changed: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| rec.get(*f).is_some_and(|v| current.get(*f) != Some(v)))
        .collect();
    if changed.is_empty() {
        return Ok(false);
    }
    d.update(class, r, |x| {
        for f in &changed {
            x.insert(f.to_string(), rec[*f].clone());
        }
    })?;
    if class == "PIF" && b(&current, "management") {
        crate::helpers::sync_host_address(d, host)?;
    }
    Ok(true)
}

/// Whether a member's agent writes `class` at all.
pub fn reported_class(class: &str) -> bool {
    REPORTED.iter().any(|(c, _)| *c == class)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{self, MemTables};
    use xapi_wire::Value;

    fn rec(kv: &[(&str, Value)]) -> Record {
        kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn only_the_members_own_fields_of_its_own_records() {
        let mut t = MemTables::default();
        let mut d = Db::new(&mut t);
        for (p, h, m, mode) in [
            ("OpaqueRef:p1", "OpaqueRef:h1", "OpaqueRef:m1", "DHCP"),
            ("OpaqueRef:p2", "OpaqueRef:h2", "OpaqueRef:m2", "Static"),
        ] {
            d.put(
                "PIF",
                p,
                rec(&[
                    ("host", db::vs(h)),
                    ("metrics", db::vs(m)),
                    ("ip_configuration_mode", db::vs(mode)),
                    ("IP", db::vs("10.0.0.9")),
                ]),
            );
            d.put("PIF_metrics", m, rec(&[("carrier", Value::Bool(false))]));
        }
        let up = rec(&[("carrier", Value::Bool(true)), ("uuid", db::vs("forged"))]);
        assert!(apply(&mut d, "OpaqueRef:h1", "PIF_metrics", "OpaqueRef:m1", &up).unwrap());
        let m1 = d
            .tables()
            .get("PIF_metrics", "OpaqueRef:m1")
            .unwrap()
            .clone();
        assert_eq!(m1["carrier"], Value::Bool(true));
        assert!(!m1.contains_key("uuid"), "only owned fields are taken");
        // Another host's metrics, a static PIF's IP: ignored.
        assert!(!apply(&mut d, "OpaqueRef:h1", "PIF_metrics", "OpaqueRef:m2", &up).unwrap());
        let lease = rec(&[("IP", db::vs("10.0.0.50"))]);
        assert!(apply(&mut d, "OpaqueRef:h1", "PIF", "OpaqueRef:p1", &lease).unwrap());
        assert!(!apply(&mut d, "OpaqueRef:h2", "PIF", "OpaqueRef:p2", &lease).unwrap());
        assert_eq!(
            s(d.tables().get("PIF", "OpaqueRef:p2").unwrap(), "IP"),
            "10.0.0.9"
        );
    }
}
