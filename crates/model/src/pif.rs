//! PIF calls (xapi_pif.ml, reference §2.1, §3.2).

use crate::calls::{a_bool, a_int, a_map, a_str, a_strs, opt, p, Registry, P};
use crate::db::{self, b, i, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use crate::helpers::{self as h, PifKind};
use crate::schema::{self, PIF};
use xapi_wire::Value;

pub fn register(reg: &mut Registry) {
    reg.write(
        "PIF.scan",
        vec![p("host", P::Ref("host"))],
        Box::new(|d, a| scan(d, a_str(a, 0)).map(|_| Value::Nil)),
    );
    reg.write(
        "PIF.introduce",
        vec![
            p("host", P::Ref("host")),
            p("MAC", P::Str),
            p("device", P::Str),
            opt("managed", P::Bool, Value::Bool(true)),
        ],
        Box::new(|d, a| {
            introduce(d, a_str(a, 0), a_str(a, 1), a_str(a, 2), a_bool(a, 3)).map(db::vs)
        }),
    );
    reg.write(
        "PIF.forget",
        vec![p("self", P::Ref("PIF"))],
        Box::new(|d, a| forget(d, a_str(a, 0)).map(|_| Value::Nil)),
    );
    reg.write(
        "PIF.plug",
        vec![p("self", P::Ref("PIF"))],
        Box::new(|d, a| plug(d, a_str(a, 0)).map(|_| Value::Nil)),
    );
    reg.write(
        "PIF.unplug",
        vec![p("self", P::Ref("PIF"))],
        Box::new(|d, a| unplug(d, a_str(a, 0)).map(|_| Value::Nil)),
    );
    reg.write(
        "PIF.reconfigure_ip",
        vec![
            p("self", P::Ref("PIF")),
            p("mode", P::Enum(schema::IP_MODES)),
            p("IP", P::Str),
            p("netmask", P::Str),
            p("gateway", P::Str),
            p("DNS", P::Str),
        ],
        Box::new(|d, a| {
            reconfigure_ip(
                d,
                a_str(a, 0),
                a_str(a, 1),
                a_str(a, 2),
                a_str(a, 3),
                a_str(a, 4),
                a_str(a, 5),
            )
            .map(|_| Value::Nil)
        }),
    );
    reg.write(
        "PIF.reconfigure_ipv6",
        vec![
            p("self", P::Ref("PIF")),
            p("mode", P::Enum(schema::IPV6_MODES)),
            p("IPv6", P::Str),
            p("gateway", P::Str),
            p("DNS", P::Str),
        ],
        Box::new(|d, a| {
            reconfigure_ipv6(
                d,
                a_str(a, 0),
                a_str(a, 1),
                a_str(a, 2),
                a_str(a, 3),
                a_str(a, 4),
            )
            .map(|_| Value::Nil)
        }),
    );
    reg.write(
        "PIF.set_primary_address_type",
        vec![
            p("self", P::Ref("PIF")),
            p("primary_address_type", P::Enum(schema::ADDRESS_TYPES)),
        ],
        Box::new(|d, a| {
            let pif = a_str(a, 0);
            h::assert_no_protection(d, None)?;
            if b(d.rec("PIF", pif)?, "management") {
                return Err(ApiError::new("PIF_IS_MANAGEMENT_INTERFACE", &[pif]));
            }
            d.set("PIF", pif, "primary_address_type", a[1].clone())?;
            Ok(Value::Nil)
        }),
    );
    reg.write(
        "PIF.set_property",
        vec![
            p("self", P::Ref("PIF")),
            p("name", P::Str),
            p("value", P::Str),
        ],
        Box::new(|d, a| set_property(d, a_str(a, 0), a_str(a, 1), a_str(a, 2)).map(|_| Value::Nil)),
    );
    reg.write(
        "PIF.set_disallow_unplug",
        vec![p("self", P::Ref("PIF")), p("value", P::Bool)],
        Box::new(|d, a| {
            d.set(
                "PIF",
                a_str(a, 0),
                "disallow_unplug",
                Value::Bool(a_bool(a, 1)),
            )?;
            Ok(Value::Nil)
        }),
    );
    reg.write(
        "PIF.db_introduce",
        vec![
            p("device", P::Str),
            p("network", P::Ref("network")),
            p("host", P::Ref("host")),
            p("MAC", P::Str),
            p("MTU", P::Int),
            p("VLAN", P::Int),
            p("physical", P::Bool),
            p("ip_configuration_mode", P::Enum(schema::IP_MODES)),
            p("IP", P::Str),
            p("netmask", P::Str),
            p("gateway", P::Str),
            p("DNS", P::Str),
            p("bond_slave_of", P::Str),
            p("VLAN_master_of", P::Str),
            p("management", P::Bool),
            p("other_config", P::StrMap),
            opt("disallow_unplug", P::Bool, Value::Bool(false)),
            opt(
                "ipv6_configuration_mode",
                P::Enum(schema::IPV6_MODES),
                db::vs("None"),
            ),
            opt("IPv6", P::StrSet, Value::Array(vec![])),
            opt("ipv6_gateway", P::Str, db::vs("")),
            opt(
                "primary_address_type",
                P::Enum(schema::ADDRESS_TYPES),
                db::vs("IPv4"),
            ),
            opt("managed", P::Bool, Value::Bool(true)),
            opt("properties", P::StrMap, Value::Struct(db::Map::new())),
        ],
        Box::new(|d, a| {
            let metrics = h::new_pif_metrics(d);
            let ipv6 = a_strs(a, 18);
            let r = d.create(
                &PIF,
                vec![
                    ("device", a[0].clone()),
                    ("network", a[1].clone()),
                    ("host", a[2].clone()),
                    ("MAC", a[3].clone()),
                    ("MTU", Value::Int(a_int(a, 4))),
                    ("VLAN", Value::Int(a_int(a, 5))),
                    ("physical", a[6].clone()),
                    ("ip_configuration_mode", a[7].clone()),
                    ("IP", a[8].clone()),
                    ("netmask", a[9].clone()),
                    ("gateway", a[10].clone()),
                    ("DNS", a[11].clone()),
                    ("VLAN_master_of", a[13].clone()),
                    ("management", a[14].clone()),
                    ("other_config", Value::Struct(a_map(a, 15))),
                    ("disallow_unplug", a[16].clone()),
                    ("ipv6_configuration_mode", a[17].clone()),
                    ("IPv6", db::sset(&ipv6)),
                    ("ipv6_gateway", a[19].clone()),
                    ("primary_address_type", a[20].clone()),
                    ("managed", a[21].clone()),
                    ("properties", a[22].clone()),
                    ("currently_attached", Value::Bool(false)),
                    ("metrics", db::vs(metrics)),
                ],
            );
            Ok(db::vs(r))
        }),
    );
    reg.write(
        "PIF.db_forget",
        vec![p("self", P::Ref("PIF"))],
        Box::new(|d, a| d.destroy("PIF", a_str(a, 0)).map(|_| Value::Nil)),
    );
    reg.write(
        "PIF.create_VLAN",
        vec![
            p("device", P::Str),
            p("network", P::Ref("network")),
            p("host", P::Ref("host")),
            p("VLAN", P::Int),
        ],
        Box::new(|d, a| {
            let (dev, host) = (a_str(a, 0).to_string(), a_str(a, 2).to_string());
            let tagged = d.find("PIF", &|r| {
                s(r, "host") == host && s(r, "device") == dev && i(r, "VLAN") < 0
            });
            let tagged = tagged
                .first()
                .ok_or_else(|| ApiError::invalid_value("device", &dev))?
                .clone();
            let vlan = crate::vlan::create(d, &tagged, a_int(a, 3), a_str(a, 1))?;
            Ok(db::vs(s(d.rec("VLAN", &vlan)?, "untagged_PIF")))
        }),
    );
    reg.write(
        "PIF.destroy",
        vec![p("self", P::Ref("PIF"))],
        Box::new(|d, a| {
            let pif = a_str(a, 0);
            if i(d.rec("PIF", pif)?, "VLAN") < 0 {
                return Err(ApiError::new("PIF_IS_PHYSICAL", &[]));
            }
            let vlan = s(d.rec("PIF", pif)?, "VLAN_master_of").to_string();
            crate::vlan::destroy(d, &vlan)?;
            Ok(Value::Nil)
        }),
    );
}

pub fn host_of(d: &impl Read, pif: &str) -> ApiResult<String> {
    Ok(s(d.rec("PIF", pif)?, "host").to_string())
}

/// `introduce_internal`: a physical PIF for a NIC, on the network of its bridge.
pub fn introduce_internal(
    d: &mut Db,
    host: &str,
    device: &str,
    mac: &str,
    managed: bool,
) -> ApiResult<String> {
    let position =
        db::mget(d.rec("host", host)?, "nic_positions", device).and_then(|p| p.parse().ok());
    let bridge = if managed {
        h::default_bridge(position, device)
    } else {
        String::new()
    };
    let net = match d
        .find("network", &|r| {
            !bridge.is_empty() && s(r, "bridge") == bridge
        })
        .first()
    {
        Some(n) => n.clone(),
        None => d.create(
            &schema::NETWORK,
            vec![
                (
                    "name_label",
                    db::vs(h::default_network_name(position, device)),
                ),
                ("bridge", db::vs(bridge.clone())),
                ("other_config", Value::Struct(db::Map::new())),
            ],
        ),
    };
    let mgmt_bridge = h::management_bridge(d, host);
    let is_mgmt = !bridge.is_empty() && bridge == mgmt_bridge;
    let metrics = h::new_pif_metrics(d);
    let r = d.create(
        &PIF,
        vec![
            ("device", db::vs(device)),
            ("network", db::vs(net)),
            ("host", db::vs(host)),
            ("MAC", db::vs(mac.to_lowercase())),
            ("MTU", Value::Int(1500)),
            ("VLAN", Value::Int(-1)),
            ("metrics", db::vs(metrics)),
            ("physical", Value::Bool(true)),
            ("currently_attached", Value::Bool(is_mgmt)),
            ("management", Value::Bool(is_mgmt)),
            ("managed", Value::Bool(managed)),
            ("properties", db::smap(&[("gro", "on")])),
        ],
    );
    if is_mgmt {
        d.touch_host(host);
    }
    Ok(r)
}

pub fn introduce(
    d: &mut Db,
    host: &str,
    mac: &str,
    device: &str,
    managed: bool,
) -> ApiResult<String> {
    let hr = d.rec("host", host)?;
    let mac = if mac.is_empty() {
        db::mget(hr, "nic_macs", device).unwrap_or("").to_string()
    } else {
        mac.to_lowercase()
    };
    h::assert_mac(&mac)?;
    let dup = d.find("PIF", &|r| {
        s(r, "host") == host && s(r, "device") == device && i(r, "VLAN") < 0
    });
    if !dup.is_empty() {
        return Err(ApiError::new("DUPLICATE_PIF_DEVICE_NAME", &[device]));
    }
    let known =
        db::mget(d.rec("host", host)?, "nic_macs", device).map(|m| m.eq_ignore_ascii_case(&mac));
    if known != Some(true) {
        return Err(ApiError::new(
            "COULD_NOT_FIND_NETWORK_INTERFACE_WITH_SPECIFIED_DEVICE_NAME_AND_MAC_ADDRESS",
            &[device, &mac],
        ));
    }
    introduce_internal(d, host, device, &mac, managed)
}

/// Refreshes the host's physical PIFs from the agent's NIC inventory and
/// introduces PIFs for NICs that have none. Vanished NICs keep their PIFs.
pub fn scan(d: &mut Db, host: &str) -> ApiResult<()> {
    let hr = d.rec("host", host)?.clone();
    let macs = db::m(&hr, "nic_macs").clone();
    let mut devices: Vec<(String, String)> = macs
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_lowercase()))
        .collect();
    devices.sort_by_key(|(dev, _)| device_order_key(dev));
    for (dev, mac) in devices {
        let existing = d.find("PIF", &|r| {
            s(r, "host") == host && b(r, "physical") && s(r, "device") == dev
        });
        match existing.first() {
            Some(p) => {
                if s(d.rec("PIF", p)?, "MAC") != mac && !mac.is_empty() {
                    d.set("PIF", p, "MAC", db::vs(mac))?;
                }
            }
            None => {
                if h::is_valid_mac(&mac) {
                    introduce_internal(d, host, &dev, &mac, true)?;
                }
            }
        }
    }
    h::update_management_flags(d, host)
}

/// Natural order of NIC names: eth2 before eth10.
pub fn device_order_key(dev: &str) -> (String, u64) {
    let split = dev.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    (dev[..split].to_string(), dev[split..].parse().unwrap_or(0))
}

pub fn forget(d: &mut Db, pif: &str) -> ApiResult<()> {
    let r = d.rec("PIF", pif)?.clone();
    if b(&r, "management") {
        return Err(ApiError::new("PIF_IS_MANAGEMENT_INTERFACE", &[pif]));
    }
    if h::is_bond_slave(d, pif) || !d.children("Bond", "master", pif).is_empty() {
        return Err(ApiError::new("PIF_ALREADY_BONDED", &[pif]));
    }
    if !d.children("VLAN", "tagged_PIF", pif).is_empty() || i(&r, "VLAN") >= 0 {
        return Err(ApiError::new("PIF_VLAN_STILL_EXISTS", &[pif]));
    }
    if !d.children("tunnel", "transport_PIF", pif).is_empty()
        || !d.children("tunnel", "access_PIF", pif).is_empty()
    {
        return Err(ApiError::new("PIF_TUNNEL_STILL_EXISTS", &[pif]));
    }
    h::assert_no_protection(d, Some(pif))?;
    if !d.children("network_sriov", "logical_PIF", pif).is_empty() {
        return Err(ApiError::new("CANNOT_FORGET_SRIOV_LOGICAL", &[pif]));
    }
    if !d.children("network_sriov", "physical_PIF", pif).is_empty() {
        return Err(ApiError::new("PIF_SRIOV_STILL_EXISTS", &[pif]));
    }
    if b(&r, "managed") {
        d.touch_host(s(&r, "host"));
    }
    let metrics = s(&r, "metrics").to_string();
    // Metrics may be shared by VLAN/tunnel PIFs; those are gone by now.
    if d.exists("PIF_metrics", &metrics)
        && d.find("PIF", &|x| s(x, "metrics") == metrics).len() == 1
    {
        d.destroy("PIF_metrics", &metrics)?;
    }
    d.destroy("PIF", pif)
}

pub fn plug(d: &mut Db, pif: &str) -> ApiResult<()> {
    h::assert_pif_managed(d, pif)?;
    match h::pif_kind(d, pif) {
        PifKind::TunnelAccess => {
            let t = d.children("tunnel", "access_PIF", pif);
            let transport = s(d.rec("tunnel", &t[0])?, "transport_PIF").to_string();
            if s(d.rec("PIF", &transport)?, "ip_configuration_mode") == "None" {
                return Err(ApiError::new("TRANSPORT_PIF_NOT_CONFIGURED", &[&transport]));
            }
            plug(d, &transport)?;
        }
        PifKind::SriovLogical => {
            let t = d.children("network_sriov", "logical_PIF", pif);
            let phys = s(d.rec("network_sriov", &t[0])?, "physical_PIF").to_string();
            set_attached(d, &phys, true)?;
        }
        _ => {}
    }
    if h::is_bond_slave(d, pif) && d.children("network_sriov", "physical_PIF", pif).is_empty() {
        return Err(ApiError::new("CANNOT_PLUG_BOND_SLAVE", &[pif]));
    }
    set_attached(d, pif, true)
}

pub fn set_attached(d: &mut Db, pif: &str, on: bool) -> ApiResult<()> {
    let host = host_of(d, pif)?;
    d.set("PIF", pif, "currently_attached", Value::Bool(on))?;
    d.touch_host(&host);
    Ok(())
}

/// The VIF_IN_USE check of PIF.unplug: an attached VIF of a running VM on this host.
pub fn assert_no_vif_in_use(d: &impl Read, net: &str, host: &str) -> ApiResult<()> {
    for v in d.children("VIF", "network", net) {
        let vr = d.rec("VIF", &v)?;
        if !b(vr, "currently_attached") {
            continue;
        }
        if let Some(vm) = d.tables().get("VM", s(vr, "VM")) {
            if s(vm, "resident_on") == host && s(vm, "power_state") == "Running" {
                return Err(ApiError::new("VIF_IN_USE", &[net, &v]));
            }
        }
    }
    Ok(())
}

pub fn unplug(d: &mut Db, pif: &str) -> ApiResult<()> {
    h::assert_pif_managed(d, pif)?;
    h::assert_no_protection(d, Some(pif))?;
    let r = d.rec("PIF", pif)?.clone();
    if b(&r, "management") {
        return Err(ApiError::new("PIF_IS_MANAGEMENT_INTERFACE", &[pif]));
    }
    assert_no_vif_in_use(d, s(&r, "network"), s(&r, "host"))?;
    if b(&r, "disallow_unplug") {
        return Err(ApiError::new("PIF_DOES_NOT_ALLOW_UNPLUG", &[pif]));
    }
    for t in d.children("tunnel", "transport_PIF", pif) {
        let access = s(d.rec("tunnel", &t)?, "access_PIF").to_string();
        set_attached(d, &access, false)?;
    }
    for sr in d.children("network_sriov", "physical_PIF", pif) {
        let logical = s(d.rec("network_sriov", &sr)?, "logical_PIF").to_string();
        set_attached(d, &logical, false)?;
    }
    set_attached(d, pif, false)
}

fn split_dns(dns: &str) -> (Vec<String>, Vec<String>) {
    let mut v4 = vec![];
    let mut v6 = vec![];
    for e in dns.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match e.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => v4.push(e.to_string()),
            Ok(std::net::IpAddr::V6(_)) => v6.push(e.to_string()),
            Err(_) => {} // XAPI drops invalid entries silently.
        }
    }
    (v4, v6)
}

pub fn reconfigure_ip(
    d: &mut Db,
    pif: &str,
    mode: &str,
    ip: &str,
    netmask: &str,
    gateway: &str,
    dns: &str,
) -> ApiResult<()> {
    h::assert_pif_managed(d, pif)?;
    let r = d.rec("PIF", pif)?.clone();
    let unchanged = s(&r, "ip_configuration_mode") == "Static"
        && mode == "Static"
        && s(&r, "IP") == ip
        && s(&r, "netmask") == netmask
        && s(&r, "gateway") == gateway;
    if !unchanged {
        h::assert_no_protection(d, Some(pif))?;
    }
    if mode == "Static" {
        h::assert_ipv4(ip, "IP")?;
        h::assert_ipv4(netmask, "netmask")?;
        if h::netmask_prefix(netmask).is_none() {
            return Err(ApiError::new("INVALID_IP_ADDRESS_SPECIFIED", &["netmask"]));
        }
    }
    for (v, f) in [(ip, "IP"), (netmask, "netmask"), (gateway, "gateway")] {
        if !v.is_empty() {
            h::assert_ipv4(v, f)?;
        }
    }
    if mode == "None" && b(&r, "management") && s(&r, "primary_address_type") == "IPv4" {
        return Err(ApiError::new("PIF_IS_MANAGEMENT_INTERFACE", &[pif]));
    }
    let (v4, _) = split_dns(dns);
    let (_, old6) = split_dns(s(&r, "DNS"));
    let new_dns = v4.into_iter().chain(old6).collect::<Vec<_>>().join(",");
    let (ip, netmask, gateway) = if mode == "Static" {
        (ip, netmask, gateway)
    } else {
        // DHCP fills these in from the lease; None clears them.
        ("", "", if mode == "None" { "" } else { gateway })
    };
    d.update("PIF", pif, |rec| {
        rec.insert("ip_configuration_mode".into(), db::vs(mode));
        rec.insert("IP".into(), db::vs(ip));
        rec.insert("netmask".into(), db::vs(netmask));
        rec.insert("gateway".into(), db::vs(gateway));
        rec.insert("DNS".into(), db::vs(new_dns));
    })?;
    let host = s(&r, "host").to_string();
    if b(&r, "currently_attached") {
        d.touch_host(&host);
    }
    h::sync_host_address(d, &host)
}

pub fn reconfigure_ipv6(
    d: &mut Db,
    pif: &str,
    mode: &str,
    ipv6: &str,
    gateway: &str,
    dns: &str,
) -> ApiResult<()> {
    h::assert_pif_managed(d, pif)?;
    h::assert_no_protection(d, Some(pif))?;
    // Static needs an address; any address given must be a CIDR.
    if mode == "Static" || !ipv6.is_empty() {
        h::assert_cidr(ipv6, "IPv6")?;
    }
    if !gateway.is_empty() {
        h::assert_ipv6(gateway, "gateway")?;
    }
    let r = d.rec("PIF", pif)?.clone();
    if mode == "None" && b(&r, "management") && s(&r, "primary_address_type") == "IPv6" {
        return Err(ApiError::new("PIF_IS_MANAGEMENT_INTERFACE", &[pif]));
    }
    let (_, v6) = split_dns(dns);
    let (old4, _) = split_dns(s(&r, "DNS"));
    let new_dns = old4.into_iter().chain(v6).collect::<Vec<_>>().join(",");
    let addrs: Vec<&str> = if ipv6.is_empty() { vec![] } else { vec![ipv6] };
    d.update("PIF", pif, |rec| {
        rec.insert("ipv6_configuration_mode".into(), db::vs(mode));
        rec.insert("IPv6".into(), db::sset(&addrs));
        rec.insert("ipv6_gateway".into(), db::vs(gateway));
        rec.insert("DNS".into(), db::vs(new_dns));
    })?;
    let host = s(&r, "host").to_string();
    if b(&r, "currently_attached") {
        d.touch_host(&host);
    }
    h::sync_host_address(d, &host)
}

pub fn set_property(d: &mut Db, pif: &str, name: &str, value: &str) -> ApiResult<()> {
    if name != "gro" || !["on", "off"].contains(&value) {
        return Err(ApiError::invalid_value(
            "properties",
            &format!("{name} = {value}"),
        ));
    }
    let kind = h::pif_kind(d, pif);
    if !matches!(kind, PifKind::BondMaster | PifKind::Physical) || h::is_bond_slave(d, pif) {
        return Err(ApiError::new("CANNOT_CHANGE_PIF_PROPERTIES", &[pif]));
    }
    let mut targets = vec![pif.to_string()];
    for bond in d.children("Bond", "master", pif) {
        targets.extend(d.children("PIF", "bond_slave_of", &bond));
    }
    for t in &targets {
        d.set_map_key("PIF", t, "properties", name, Some(value))?;
    }
    if b(d.rec("PIF", pif)?, "currently_attached") {
        let host = host_of(d, pif)?;
        d.touch_host(&host);
    }
    Ok(())
}
