//! `xe vif-import-xl`: xl `vif=` strings (one, or a domain config's whole
//! list) as VIF.create records. Each VIF gets a network by its bridge; that
//! lookup and the creation happen in main.rs.

use std::collections::BTreeMap;
use xapi_wire::Value;
use xnet_xl::VifSpec;

/// libxl's bridge when a vif names none.
const DEFAULT_BRIDGE: &str = "xenbr0";

/// One VIF to create: its bridge, and its VIF.create fields except
/// `network` and `VM`.
#[derive(Debug, PartialEq)]
pub struct Planned {
    pub bridge: String,
    pub fields: BTreeMap<String, Value>,
}

fn sv(x: &str) -> Value {
    Value::String(x.into())
}
fn smap(pairs: &[(&str, String)]) -> Value {
    Value::Struct(pairs.iter().map(|(k, v)| (k.to_string(), sv(v))).collect())
}

/// Plans every spec, or says which one cannot be imported and why. Device
/// numbers are `devid=` or the position in the list, as xl assigns them.
pub fn plan(specs: &[VifSpec]) -> Result<Vec<Planned>, String> {
    let mut out: Vec<Planned> = vec![];
    for (n, v) in specs.iter().enumerate() {
        let which = format!("vif {n}");
        if let Some(b) = v
            .backend
            .as_deref()
            .filter(|b| !matches!(*b, "0" | "Domain-0"))
        {
            return Err(format!(
                "{which}: backend={b}: driver domains are not supported; xnet runs the backends in dom0"
            ));
        }
        if let Some(g) = &v.gatewaydev {
            return Err(format!(
                "{which}: gatewaydev={g} is for vif-route, which xnet does not run; attach the VIF to a network instead"
            ));
        }
        let device = v.devid.unwrap_or(n as u32).to_string();
        if out.iter().any(|p| p.fields["device"] == sv(&device)) {
            return Err(format!("{which}: device {device} is given twice"));
        }
        let mac = v
            .mac
            .map(|m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .unwrap_or_default();
        let mut other = vec![];
        if let Some(m) = v.mtu {
            other.push(("mtu", m.to_string()));
        }
        if let Some(name) = &v.vifname {
            other.push(("xnet-vifname", name.clone()));
        }
        let mut f = BTreeMap::new();
        f.insert("device".to_string(), sv(&device));
        f.insert("MAC".to_string(), sv(&mac));
        if let Some(m) = v.mtu {
            f.insert("MTU".to_string(), Value::Int(i64::from(m)));
        }
        f.insert("other_config".to_string(), smap(&other));
        let (kind, params) = match (v.rate_kib_per_sec(), v.rate) {
            (Some(kbps), Some(r)) => (
                "ratelimit",
                smap(&[
                    ("kbps", kbps.to_string()),
                    ("timeslice_us", r.interval_us.to_string()),
                ]),
            ),
            _ => ("", smap(&[])),
        };
        f.insert("qos_algorithm_type".to_string(), sv(kind));
        f.insert("qos_algorithm_params".to_string(), params);
        let strs = |v6: bool| {
            Value::Array(
                v.ip.iter()
                    .filter(|a| a.is_ipv6() == v6)
                    .map(|a| sv(&a.to_string()))
                    .collect(),
            )
        };
        let locking = if v.ip.is_empty() {
            "network_default"
        } else {
            "locked"
        };
        f.insert("locking_mode".to_string(), sv(locking));
        f.insert("ipv4_allowed".to_string(), strs(false));
        f.insert("ipv6_allowed".to_string(), strs(true));
        out.push(Planned {
            bridge: v.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.into()),
            fields: f,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xnet_xl::{parse_vif, parse_vif_setting};

    fn one(s: &str) -> Result<Planned, String> {
        plan(&[parse_vif(s).unwrap()]).map(|mut v| v.remove(0))
    }

    #[test]
    fn every_setting_lands_in_its_field() {
        let p = one("mac=00:16:3E:01:02:03,bridge=xenbr1,ip=10.0.0.5 fd00::5,rate=10Mb/s@20ms,mtu=9000,vifname=web-eth0,type=ioemu,model=e1000,script=vif-xnet").unwrap();
        assert_eq!(p.bridge, "xenbr1");
        let f = &p.fields;
        assert_eq!(f["device"], sv("0"));
        assert_eq!(f["MAC"], sv("00:16:3e:01:02:03"));
        assert_eq!(f["MTU"], Value::Int(9000));
        assert_eq!(f["locking_mode"], sv("locked"));
        assert_eq!(f["ipv4_allowed"], Value::Array(vec![sv("10.0.0.5")]));
        assert_eq!(f["ipv6_allowed"], Value::Array(vec![sv("fd00::5")]));
        assert_eq!(f["qos_algorithm_type"], sv("ratelimit"));
        // 10 Mb/s = 1,250,000 bytes/s = 1221 KiB/s (rounded up).
        assert_eq!(
            f["qos_algorithm_params"],
            smap(&[("kbps", "1221".into()), ("timeslice_us", "20000".into())])
        );
        assert_eq!(
            f["other_config"],
            smap(&[("mtu", "9000".into()), ("xnet-vifname", "web-eth0".into())])
        );
    }

    #[test]
    fn defaults_follow_xl() {
        let p = one("mac=00:16:3e:01:02:03").unwrap();
        assert_eq!(p.bridge, "xenbr0");
        assert_eq!(p.fields["locking_mode"], sv("network_default"));
        assert_eq!(p.fields["qos_algorithm_type"], sv(""));
        assert!(!p.fields.contains_key("MTU"));
        // No mac: the server derives one from the VM's seed.
        let specs =
            parse_vif_setting("vif = [ 'bridge=xenbr1', 'bridge=xenbr2', 'devid=5' ]").unwrap();
        let ps = plan(&specs).unwrap();
        let devs: Vec<_> = ps.iter().map(|p| p.fields["device"].clone()).collect();
        assert_eq!(devs, vec![sv("0"), sv("1"), sv("5")]);
        assert_eq!(ps[0].fields["MAC"], sv(""));
    }

    #[test]
    fn what_xnet_cannot_honour_is_refused() {
        assert!(one("backend=netdom")
            .unwrap_err()
            .contains("driver domains"));
        assert!(one("backend=0").is_ok());
        assert!(one("gatewaydev=eth0").unwrap_err().contains("vif-route"));
        let specs = parse_vif_setting("vif = [ 'devid=1', 'bridge=xenbr0' ]").unwrap();
        assert!(plan(&specs)
            .unwrap_err()
            .contains("device 1 is given twice"));
    }
}
