//! Bond calls with XAPI's effects (xapi_bond.ml, reference §4): IP
//! configuration, management, VLANs, tunnels and VIFs move to the bond master
//! and back.

use crate::calls::{a_map, a_str, a_strs, opt, p, Registry, P};
use crate::db::{self, b, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use crate::helpers::{self as h, PifKind};
use crate::schema::{self, BOND, PIF};
use xapi_wire::Value;

pub fn register(reg: &mut Registry) {
    reg.write(
        "Bond.create",
        vec![
            p("network", P::Ref("network")),
            p("members", P::RefSet("PIF")),
            p("MAC", P::Str),
            opt("mode", P::Enum(schema::BOND_MODES), db::vs("balance-slb")),
            opt("properties", P::StrMap, Value::Struct(db::Map::new())),
        ],
        Box::new(|d, a| {
            let props = str_map(&a_map(a, 4));
            let bond = create(
                d,
                a_str(a, 0),
                &a_strs(a, 1),
                a_str(a, 2),
                a_str(a, 3),
                &props,
            )?;
            crate::join::copy_bond_to_members(d, &bond)?;
            Ok(db::vs(bond))
        }),
    );
    reg.write(
        "Bond.destroy",
        vec![p("self", P::Ref("Bond"))],
        Box::new(|d, a| destroy(d, a_str(a, 0)).map(|_| Value::Nil)),
    );
    reg.write(
        "Bond.set_mode",
        vec![
            p("self", P::Ref("Bond")),
            p("value", P::Enum(schema::BOND_MODES)),
        ],
        Box::new(|d, a| set_mode(d, a_str(a, 0), a_str(a, 1)).map(|_| Value::Nil)),
    );
    reg.write(
        "Bond.set_property",
        vec![
            p("self", P::Ref("Bond")),
            p("name", P::Str),
            p("value", P::Str),
        ],
        Box::new(|d, a| set_property(d, a_str(a, 0), a_str(a, 1), a_str(a, 2)).map(|_| Value::Nil)),
    );
}

fn str_map(m: &db::Map) -> Vec<(String, String)> {
    m.iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect()
}

/// Allowed properties per mode and the defaults each mode adds (§4.1).
fn requirements(
    mode: &str,
) -> &'static [(&'static str, &'static [&'static str], Option<&'static str>)] {
    match mode {
        "lacp" => &[
            (
                "hashing_algorithm",
                &["src_mac", "tcpudp_ports"],
                Some("tcpudp_ports"),
            ),
            ("lacp-time", &["fast", "slow"], Some("slow")),
            ("lacp-aggregation-key", &[], None),
            ("lacp-fallback-ab", &["true", "false"], Some("true")),
        ],
        _ => &[],
    }
}

fn check_property(mode: &str, k: &str, v: &str) -> ApiResult<()> {
    let bad = || ApiError::invalid_value("properties", &format!("{k} = {v}"));
    let (_, allowed, _) = requirements(mode)
        .iter()
        .find(|(name, _, _)| *name == k)
        .ok_or_else(bad)?;
    let ok = if allowed.is_empty() {
        v.parse::<i64>().is_ok()
    } else {
        allowed.contains(&v)
    };
    ok.then_some(()).ok_or_else(bad)
}

/// Validates `props` for `mode` and adds the mode's defaults.
fn effective_properties(mode: &str, props: &[(String, String)]) -> ApiResult<db::Map> {
    let mut out = db::Map::new();
    for (k, v) in props {
        check_property(mode, k, v)?;
        out.insert(k.clone(), db::vs(v.clone()));
    }
    for (k, _, def) in requirements(mode) {
        if let Some(def) = def {
            out.entry(k.to_string()).or_insert_with(|| db::vs(*def));
        }
    }
    Ok(out)
}

fn has_ip(d: &impl Read, pif: &str) -> bool {
    d.tables()
        .get("PIF", pif)
        .map(|r| {
            if s(r, "primary_address_type") == "IPv6" {
                s(r, "ipv6_configuration_mode") != "None"
            } else {
                s(r, "ip_configuration_mode") != "None"
            }
        })
        .unwrap_or(false)
}

pub fn create(
    d: &mut Db,
    net: &str,
    members: &[String],
    mac: &str,
    mode: &str,
    props: &[(String, String)],
) -> ApiResult<String> {
    if members.is_empty() {
        return Err(ApiError::new("PIF_BOND_NEEDS_MORE_MEMBERS", &[]));
    }
    h::assert_network_managed(d, net)?;
    let host = s(d.rec("PIF", &members[0])?, "host").to_string();
    h::assert_no_other_local_pifs(d, &host, net)?;
    let sriov_net = d
        .children("PIF", "network", net)
        .iter()
        .any(|p| !d.children("network_sriov", "logical_PIF", p).is_empty());
    if sriov_net {
        return Err(ApiError::new("NETWORK_INCOMPATIBLE_WITH_BOND", &[net]));
    }
    if !mac.is_empty() {
        h::assert_mac(mac)?;
    }
    let properties = effective_properties(mode, props)?;
    let mut uniq: Vec<String> = vec![];
    for m in members {
        if !uniq.contains(m) {
            uniq.push(m.clone());
        }
    }
    let members = uniq;
    let primary = members
        .iter()
        .find(|m| {
            d.tables()
                .get("PIF", m)
                .map(|r| b(r, "management"))
                .unwrap_or(false)
        })
        .or_else(|| members.iter().find(|m| has_ip(d, m)))
        .unwrap_or(&members[0])
        .clone();
    let pr = d.rec("PIF", &primary)?.clone();
    let addr_type = s(&pr, "primary_address_type").to_string();
    for m in &members {
        if s(d.rec("PIF", m)?, "primary_address_type") != addr_type {
            return Err(ApiError::new("PIF_INCOMPATIBLE_PRIMARY_ADDRESS_TYPE", &[m]));
        }
    }
    for m in &members {
        h::assert_pif_managed(d, m)?;
        if h::is_bond_slave(d, m) {
            return Err(ApiError::new("PIF_ALREADY_BONDED", &[m]));
        }
        let mr = d.rec("PIF", m)?.clone();
        match h::pif_kind(d, m) {
            PifKind::VlanUntagged => {
                return Err(ApiError::new("PIF_VLAN_EXISTS", &[s(&mr, "device")]))
            }
            PifKind::TunnelAccess => return Err(ApiError::new("IS_TUNNEL_ACCESS_PIF", &[m])),
            PifKind::SriovLogical => return Err(ApiError::new("PIF_IS_SRIOV_LOGICAL", &[m])),
            _ => {}
        }
        if h::ha_enabled(d) && b(&mr, "management") {
            return Err(ApiError::new(
                "HA_CANNOT_CHANGE_BOND_STATUS_OF_MGMT_IFACE",
                &[],
            ));
        }
    }
    if members.iter().any(|m| {
        d.tables()
            .get("PIF", m)
            .map(|r| s(r, "host") != host)
            .unwrap_or(true)
    }) {
        return Err(ApiError::new("PIF_CANNOT_BOND_CROSS_HOST", &[]));
    }
    let pif_props = db::m(&pr, "properties").clone();
    for m in &members {
        if *db::m(d.rec("PIF", m)?, "properties") != pif_props {
            return Err(ApiError::new("INCOMPATIBLE_PIF_PROPERTIES", &[]));
        }
    }
    if members.iter().filter(|m| has_ip(d, m)).count() > 1 {
        return Err(ApiError::new("PIF_BOND_MORE_THAN_ONE_IP", &[]));
    }

    // --- effects ---
    let (bond_mac, auto) = if mac.is_empty() {
        (s(&pr, "MAC").to_string(), true)
    } else {
        (mac.to_lowercase(), false)
    };
    let device = h::next_device(d, &host, "bond");
    let metrics = h::new_pif_metrics(d);
    let net_mtu = db::i(d.rec("network", net)?, "MTU");
    let was_mgmt = b(&pr, "management");
    let master = d.create(
        &PIF,
        vec![
            ("device", db::vs(device)),
            ("network", db::vs(net)),
            ("host", db::vs(host.clone())),
            ("MAC", db::vs(bond_mac)),
            ("MTU", Value::Int(net_mtu)),
            ("VLAN", Value::Int(-1)),
            ("metrics", db::vs(metrics)),
            ("physical", Value::Bool(false)),
            ("currently_attached", Value::Bool(false)),
            ("managed", Value::Bool(true)),
            ("primary_address_type", db::vs(addr_type)),
            ("properties", Value::Struct(pif_props)),
            ("IPv6", Value::Array(vec![])),
        ],
    );
    let bond = d.create(
        &BOND,
        vec![
            ("master", db::vs(master.clone())),
            ("primary_slave", db::vs(primary.clone())),
            ("mode", db::vs(mode)),
            ("properties", Value::Struct(properties)),
            ("auto_update_mac", Value::Bool(auto)),
            ("other_config", Value::Struct(db::Map::new())),
        ],
    );
    for m in &members {
        d.set("PIF", m, "bond_slave_of", db::vs(bond.clone()))?;
    }
    move_ip_config(d, &primary, &master)?;
    let disallow = members.iter().any(|m| {
        d.tables()
            .get("PIF", m)
            .map(|r| b(r, "disallow_unplug"))
            .unwrap_or(false)
    });
    if disallow {
        for m in &members {
            d.set("PIF", m, "disallow_unplug", Value::Bool(false))?;
        }
        d.set("PIF", &master, "disallow_unplug", Value::Bool(true))?;
    }
    if was_mgmt {
        let bridge = s(d.rec("network", net)?, "bridge").to_string();
        d.set("host", &host, "management_bridge", db::vs(bridge))?;
        h::update_management_flags(d, &host)?;
    }
    // VLANs and tunnels on members move up to the master.
    for m in &members {
        for v in d.children("VLAN", "tagged_PIF", m) {
            move_vlan(d, &v, &master)?;
        }
        for t in d.children("tunnel", "transport_PIF", m) {
            crate::tunnel::move_to(d, &t, &master)?;
        }
    }
    // Local VIFs on the members' networks follow to the bond network.
    for m in &members {
        let mnet = s(d.rec("PIF", m)?, "network").to_string();
        move_local_vifs(d, &mnet, net, &host)?;
    }
    plug_master(d, &master)?;
    h::sync_host_address(d, &host)?;
    Ok(bond)
}

/// Plugs a bond master; its slaves count as attached with it (nm.ml).
fn plug_master(d: &mut Db, master: &str) -> ApiResult<()> {
    crate::pif::set_attached(d, master, true)?;
    for bond in d.children("Bond", "master", master) {
        for sl in d.children("PIF", "bond_slave_of", &bond) {
            d.set("PIF", &sl, "currently_attached", Value::Bool(true))?;
        }
    }
    Ok(())
}

/// Moves the IPv4 configuration (mode, IP, netmask, gateway, DNS) from one
/// PIF to another and clears it on the source. IPv6 stays (move_configuration).
pub fn move_ip_config(d: &mut Db, from: &str, to: &str) -> ApiResult<()> {
    let fr = d.rec("PIF", from)?.clone();
    let keys = ["ip_configuration_mode", "IP", "netmask", "gateway", "DNS"];
    d.update("PIF", to, |r| {
        for k in keys {
            r.insert(k.into(), fr.get(k).cloned().unwrap_or_else(|| db::vs("")));
        }
    })?;
    d.update("PIF", from, |r| {
        r.insert("ip_configuration_mode".into(), db::vs("None"));
        for k in &keys[1..] {
            r.insert(k.to_string(), db::vs(""));
        }
    })
}

/// `move_vlan`: re-creates a VLAN on another tagged PIF, same tag and network,
/// carrying its IP configuration and management role.
fn move_vlan(d: &mut Db, vlan: &str, new_tagged: &str) -> ApiResult<()> {
    let vr = d.rec("VLAN", vlan)?.clone();
    let tag = db::i(&vr, "tag");
    let old = s(&vr, "untagged_PIF").to_string();
    let or = d.rec("PIF", &old)?.clone();
    let existing = d
        .children("VLAN", "tagged_PIF", new_tagged)
        .into_iter()
        .find(|v| {
            d.tables()
                .get("VLAN", v)
                .map(|r| db::i(r, "tag") == tag)
                .unwrap_or(false)
        });
    let host = s(&or, "host").to_string();
    if let Some(ex) = existing {
        // The master already carries this tag: VIFs go to that VLAN's network.
        let ex_net = s(
            d.rec("PIF", s(d.rec("VLAN", &ex)?, "untagged_PIF"))?,
            "network",
        )
        .to_string();
        move_local_vifs(d, s(&or, "network"), &ex_net, &host)?;
        d.destroy("VLAN", vlan)?;
        return d.destroy("PIF", &old);
    }
    let net = s(&or, "network").to_string();
    d.destroy("VLAN", vlan)?;
    d.destroy("PIF", &old)?;
    let nv = crate::vlan::create_internal(d, new_tagged, tag, &net)?;
    let np = s(d.rec("VLAN", &nv)?, "untagged_PIF").to_string();
    d.update("PIF", &np, |r| {
        for k in [
            "ip_configuration_mode",
            "IP",
            "netmask",
            "gateway",
            "DNS",
            "ipv6_configuration_mode",
            "IPv6",
            "ipv6_gateway",
            "management",
            "other_config",
            "disallow_unplug",
        ] {
            if let Some(v) = or.get(k) {
                r.insert(k.into(), v.clone());
            }
        }
    })?;
    if b(&or, "currently_attached") || b(&or, "management") {
        crate::pif::set_attached(d, &np, true)?;
    }
    Ok(())
}

/// Moves VIFs of VMs resident on `host` from one network to another.
fn move_local_vifs(d: &mut Db, from: &str, to: &str, host: &str) -> ApiResult<()> {
    if from == to {
        return Ok(());
    }
    for v in d.children("VIF", "network", from) {
        let vm = s(d.rec("VIF", &v)?, "VM").to_string();
        let local = d
            .tables()
            .get("VM", &vm)
            .map(|r| s(r, "resident_on") == host)
            .unwrap_or(false);
        if local {
            d.set("VIF", &v, "network", db::vs(to))?;
            d.touch_host(host);
        }
    }
    Ok(())
}

pub fn destroy(d: &mut Db, bond: &str) -> ApiResult<()> {
    let br = d.rec("Bond", bond)?.clone();
    let master = s(&br, "master").to_string();
    let mr = d.rec("PIF", &master)?.clone();
    if h::ha_enabled(d) && b(&mr, "management") {
        return Err(ApiError::new(
            "HA_CANNOT_CHANGE_BOND_STATUS_OF_MGMT_IFACE",
            &[],
        ));
    }
    let host = s(&mr, "host").to_string();
    let slaves = d.children("PIF", "bond_slave_of", bond);
    let mut primary = s(&br, "primary_slave").to_string();
    if !slaves.contains(&primary) {
        primary = slaves.first().cloned().unwrap_or_default();
    }
    for sl in &slaves {
        d.set("PIF", sl, "bond_slave_of", db::vs(crate::NULL_REF))?;
    }
    if !primary.is_empty() {
        move_ip_config(d, &master, &primary)?;
        for v in d.children("VLAN", "tagged_PIF", &master) {
            move_vlan(d, &v, &primary)?;
        }
        for t in d.children("tunnel", "transport_PIF", &master) {
            crate::tunnel::move_to(d, &t, &primary)?;
        }
        let pnet = s(d.rec("PIF", &primary)?, "network").to_string();
        move_local_vifs(d, s(&mr, "network"), &pnet, &host)?;
        if b(&mr, "disallow_unplug") {
            d.set("PIF", &primary, "disallow_unplug", Value::Bool(true))?;
        }
        if b(&mr, "management") {
            let bridge = s(d.rec("network", &pnet)?, "bridge").to_string();
            d.set("host", &host, "management_bridge", db::vs(bridge))?;
        }
    }
    if b(&mr, "currently_attached") || b(&mr, "management") {
        for sl in &slaves {
            crate::pif::set_attached(d, sl, true)?;
        }
    }
    d.touch_host(&host);
    let metrics = s(&mr, "metrics").to_string();
    d.destroy("Bond", bond)?;
    d.destroy("PIF", &master)?;
    if d.exists("PIF_metrics", &metrics) {
        d.destroy("PIF_metrics", &metrics)?;
    }
    h::update_management_flags(d, &host)?;
    h::sync_host_address(d, &host)
}

fn replug(d: &mut Db, bond: &str) -> ApiResult<()> {
    let master = s(d.rec("Bond", bond)?, "master").to_string();
    let host = s(d.rec("PIF", &master)?, "host").to_string();
    d.touch_host(&host);
    Ok(())
}

pub fn set_mode(d: &mut Db, bond: &str, mode: &str) -> ApiResult<()> {
    let br = d.rec("Bond", bond)?.clone();
    let kept: Vec<(String, String)> = str_map(db::m(&br, "properties"))
        .into_iter()
        .filter(|(k, v)| check_property(mode, k, v).is_ok())
        .collect();
    let props = effective_properties(mode, &kept)?;
    d.update("Bond", bond, |r| {
        r.insert("mode".into(), db::vs(mode));
        r.insert("properties".into(), Value::Struct(props));
    })?;
    replug(d, bond)
}

pub fn set_property(d: &mut Db, bond: &str, name: &str, value: &str) -> ApiResult<()> {
    let mode = s(d.rec("Bond", bond)?, "mode").to_string();
    check_property(&mode, name, value)?;
    d.set_map_key("Bond", bond, "properties", name, Some(value))?;
    replug(d, bond)
}
