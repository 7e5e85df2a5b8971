//! Checks and lookups shared by several classes (reference §3.1), and the
//! naming rules of §9.

use crate::db::{self, b, i, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn is_valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}
pub fn assert_mac(mac: &str) -> ApiResult<()> {
    if is_valid_mac(mac) {
        Ok(())
    } else {
        Err(ApiError::new("MAC_INVALID", &[mac]))
    }
}

pub fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    if !is_valid_mac(mac) {
        return None;
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(mac.split(':')) {
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}
pub fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn assert_ipv4(v: &str, field: &str) -> ApiResult<()> {
    v.parse::<Ipv4Addr>()
        .map(|_| ())
        .map_err(|_| ApiError::new("INVALID_IP_ADDRESS_SPECIFIED", &[field]))
}
pub fn assert_ipv6(v: &str, field: &str) -> ApiResult<()> {
    v.parse::<Ipv6Addr>()
        .map(|_| ())
        .map_err(|_| ApiError::new("INVALID_IP_ADDRESS_SPECIFIED", &[field]))
}
/// `<addr>/<len>` with a length that fits the address family.
pub fn parse_cidr(v: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = v.split_once('/')?;
    let addr: IpAddr = a.parse().ok()?;
    let len: u8 = l.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}
pub fn assert_cidr(v: &str, field: &str) -> ApiResult<()> {
    parse_cidr(v)
        .map(|_| ())
        .ok_or_else(|| ApiError::new("INVALID_CIDR_ADDRESS_SPECIFIED", &[field]))
}
/// Prefix length of a dotted netmask (`255.255.255.0` → 24); None if not contiguous.
pub fn netmask_prefix(mask: &str) -> Option<u8> {
    let m: Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(m);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}
pub fn prefix_netmask(len: u8) -> String {
    let bits = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    Ipv4Addr::from(bits).to_string()
}

pub fn assert_pif_managed(d: &impl Read, pif: &str) -> ApiResult<()> {
    if b(d.rec("PIF", pif)?, "managed") {
        Ok(())
    } else {
        Err(ApiError::new("PIF_UNMANAGED", &[pif]))
    }
}
pub fn assert_network_managed(d: &impl Read, net: &str) -> ApiResult<()> {
    if b(d.rec("network", net)?, "managed") {
        Ok(())
    } else {
        Err(ApiError::new("NETWORK_UNMANAGED", &[net]))
    }
}
/// The network has no PIF on `host` yet (first parameter is the host, as XAPI raises it).
pub fn assert_no_other_local_pifs(d: &impl Read, host: &str, net: &str) -> ApiResult<()> {
    let existing = d.find("PIF", &|r| s(r, "host") == host && s(r, "network") == net);
    match existing.first() {
        Some(p) => Err(ApiError::new("NETWORK_ALREADY_CONNECTED", &[host, p])),
        None => Ok(()),
    }
}
/// HA / redo-log protection; only applies to attached PIFs.
pub fn assert_no_protection(d: &impl Read, pif: Option<&str>) -> ApiResult<()> {
    if let Some(p) = pif {
        if !b(d.rec("PIF", p)?, "currently_attached") {
            return Ok(());
        }
    }
    if let Some(pool) = d.pool() {
        let pr = d.rec("pool", &pool)?;
        if b(pr, "ha_enabled") {
            return Err(ApiError::new("HA_IS_ENABLED", &[]));
        }
        if b(pr, "redo_log_enabled") {
            return Err(ApiError::new("REDO_LOG_IS_ENABLED", &[]));
        }
    }
    Ok(())
}
pub fn ha_enabled(d: &impl Read) -> bool {
    d.pool()
        .and_then(|p| d.tables().get("pool", &p).map(|r| b(r, "ha_enabled")))
        .unwrap_or(false)
}

/// XAPI's PIF topology types, tested in this order (get_pif_topo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PifKind {
    TunnelAccess,
    VlanUntagged,
    SriovLogical,
    BondMaster,
    Physical,
}
pub fn pif_kind(d: &impl Read, pif: &str) -> PifKind {
    if !d.children("tunnel", "access_PIF", pif).is_empty() {
        PifKind::TunnelAccess
    } else if d
        .tables()
        .get("PIF", pif)
        .map(|r| i(r, "VLAN") >= 0)
        .unwrap_or(false)
    {
        PifKind::VlanUntagged
    } else if !d.children("network_sriov", "logical_PIF", pif).is_empty() {
        PifKind::SriovLogical
    } else if !d.children("Bond", "master", pif).is_empty() {
        PifKind::BondMaster
    } else {
        PifKind::Physical
    }
}
/// Walks VLAN/tunnel/SR-IOV layers down to the physical or bond-master PIF.
pub fn root_pif(d: &impl Read, pif: &str) -> String {
    let mut cur = pif.to_string();
    for _ in 0..8 {
        match pif_kind(d, &cur) {
            PifKind::VlanUntagged => {
                let vlan = d
                    .tables()
                    .get("PIF", &cur)
                    .map(|r| s(r, "VLAN_master_of").to_string())
                    .unwrap_or_default();
                match d.tables().get("VLAN", &vlan) {
                    Some(v) => cur = s(v, "tagged_PIF").to_string(),
                    None => return cur,
                }
            }
            PifKind::TunnelAccess => {
                let t = d.children("tunnel", "access_PIF", &cur);
                match t.first().and_then(|t| d.tables().get("tunnel", t)) {
                    Some(tr) => cur = s(tr, "transport_PIF").to_string(),
                    None => return cur,
                }
            }
            PifKind::SriovLogical => {
                let t = d.children("network_sriov", "logical_PIF", &cur);
                match t.first().and_then(|t| d.tables().get("network_sriov", t)) {
                    Some(sr) => cur = s(sr, "physical_PIF").to_string(),
                    None => return cur,
                }
            }
            _ => return cur,
        }
    }
    cur
}
pub fn is_bond_slave(d: &impl Read, pif: &str) -> bool {
    d.tables()
        .get("PIF", pif)
        .map(|r| {
            let bond = s(r, "bond_slave_of");
            !db::is_null(bond) && d.exists("Bond", bond)
        })
        .unwrap_or(false)
}

/// `assert_usable_for_management`.
pub fn assert_usable_for_management(d: &impl Read, pif: &str) -> ApiResult<()> {
    if is_bond_slave(d, pif) {
        return Err(ApiError::new("CANNOT_PLUG_BOND_SLAVE", &[pif]));
    }
    let r = d.rec("PIF", pif)?;
    if s(r, "primary_address_type") == "IPv6" {
        if s(r, "ipv6_configuration_mode") == "None" {
            return Err(ApiError::new("PIF_HAS_NO_V6_NETWORK_CONFIGURATION", &[pif]));
        }
    } else if s(r, "ip_configuration_mode") == "None" {
        return Err(ApiError::new("PIF_HAS_NO_NETWORK_CONFIGURATION", &[pif]));
    }
    Ok(())
}

/// Smallest free `<prefix><N>` device name among the host's PIFs (bond0, tunnel0…).
pub fn next_device(d: &impl Read, host: &str, prefix: &str) -> String {
    let used: Vec<String> = d
        .find("PIF", &|r| s(r, "host") == host)
        .iter()
        .filter_map(|p| d.tables().get("PIF", p).map(|r| s(r, "device").to_string()))
        .collect();
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|c| !used.contains(c))
        .expect("unbounded")
}

/// The metrics object of a new PIF: a fresh one, or a shared one.
pub fn new_pif_metrics(db: &mut Db) -> String {
    db.create(&crate::schema::PIF_METRICS, vec![])
}

/// Network names of §9.
pub fn default_network_name(position: Option<u32>, device: &str) -> String {
    match position {
        Some(p) => format!("Pool-wide network {p}"),
        None => format!("Pool-wide network associated with {device}"),
    }
}
pub fn default_bridge(position: Option<u32>, device: &str) -> String {
    match position {
        Some(p) => format!("xenbr{p}"),
        None => format!("br{device}"),
    }
}

/// XAPI's seed-derived VIF MAC (xapi_vif_helpers.ml gen_mac, reference §9).
/// The pool `other_config` key giving the OUI (first three bytes) of the MACs
/// xnet generates for VIFs, e.g. Xen's `00:16:3e`.
pub const MAC_PREFIX_KEY: &str = "xnet-mac-prefix";

/// Parses a MAC prefix: three hex octets, the first one unicast.
pub fn parse_mac_prefix(v: &str) -> Option<[u8; 3]> {
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let mut out = [0u8; 3];
    for (o, p) in out.iter_mut().zip(&parts) {
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    (out[0] & 0x01 == 0).then_some(out)
}

/// The pool's MAC prefix, if set; a malformed one is INVALID_VALUE where it
/// is used (the generic map setters take any string).
pub fn mac_prefix(d: &impl Read) -> ApiResult<Option<[u8; 3]>> {
    let Some(pool) = d.find("pool", &|_| true).into_iter().next() else {
        return Ok(None);
    };
    match db::mget(d.rec("pool", &pool)?, "other_config", MAC_PREFIX_KEY) {
        None => Ok(None),
        Some(v) => parse_mac_prefix(v).map(Some).ok_or_else(|| {
            ApiError::invalid_value(&format!("pool.other_config:{MAC_PREFIX_KEY}"), v)
        }),
    }
}

/// A generated MAC with the prefix in place of its first three bytes.
pub fn with_mac_prefix(mac: &str, prefix: Option<[u8; 3]>) -> String {
    match (parse_mac(mac), prefix) {
        (Some(mut m), Some(p)) => {
            m[..3].copy_from_slice(&p);
            format_mac(m)
        }
        _ => mac.to_string(),
    }
}

pub fn gen_mac(device: u32, seed: &str) -> String {
    use md5::{Digest, Md5};
    let mut h: Vec<u8> = seed.as_bytes().to_vec();
    for _ in 0..(2 * device as u64 + 1) {
        h = Md5::digest(&h).to_vec();
    }
    let h2 = Md5::digest(&h).to_vec();
    let mut m = [h[0], h[1], h[2], h[3], h2[1], h2[2]];
    m[0] = (m[0] | 0x02) & !0x01;
    format_mac(m)
}

/// Management-related host state kept beside the records (XAPI's inventory).
pub fn management_bridge(d: &impl Read, host: &str) -> String {
    d.tables()
        .get("host", host)
        .map(|r| s(r, "management_bridge").to_string())
        .unwrap_or_default()
}

/// Recomputes `PIF.management` for every PIF of the host from the management
/// bridge (XAPI: bridge == inventory MANAGEMENT_INTERFACE, non-VLAN check by network).
pub fn update_management_flags(db: &mut Db, host: &str) -> ApiResult<()> {
    let bridge = management_bridge(db, host);
    for p in db.children("PIF", "host", host) {
        let net = s(db.rec("PIF", &p)?, "network").to_string();
        let nb = db
            .tables()
            .get("network", &net)
            .map(|r| s(r, "bridge").to_string())
            .unwrap_or_default();
        let want = !bridge.is_empty() && nb == bridge;
        if b(db.rec("PIF", &p)?, "management") != want {
            db.set("PIF", &p, "management", want.into())?;
        }
    }
    Ok(())
}

/// The host address follows the management PIF's IP.
pub fn sync_host_address(db: &mut Db, host: &str) -> ApiResult<()> {
    let mgmt = db.find("PIF", &|r| s(r, "host") == host && b(r, "management"));
    if let Some(p) = mgmt.first() {
        let r = db.rec("PIF", p)?;
        let ip = if s(r, "primary_address_type") == "IPv6" {
            db::set_strs(r, "IPv6")
                .first()
                .map(|c| c.split('/').next().unwrap_or("").to_string())
                .unwrap_or_default()
        } else {
            s(r, "IP").to_string()
        };
        if !ip.is_empty() && s(db.rec("host", host)?, "address") != ip {
            db.set("host", host, "address", ip.into())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn macs_and_masks() {
        assert!(is_valid_mac("00:16:3E:aa:bb:cc"));
        assert!(!is_valid_mac("00:16:3e:aa:bb"));
        assert!(!is_valid_mac("00:16:3e:aa:bb:cg"));
        assert_eq!(netmask_prefix("255.255.255.0"), Some(24));
        assert_eq!(netmask_prefix("255.0.255.0"), None);
        assert_eq!(prefix_netmask(20), "255.255.240.0");
        assert!(parse_cidr("10.0.0.1/33").is_none());
        assert!(parse_cidr("fd00::1/64").is_some());
    }
    #[test]
    fn seed_mac_is_local_unicast_and_stable() {
        let a = gen_mac(0, "c0ffee00-0000-4000-8000-000000000000");
        let b = gen_mac(0, "c0ffee00-0000-4000-8000-000000000000");
        let c = gen_mac(1, "c0ffee00-0000-4000-8000-000000000000");
        assert_eq!(a, b);
        assert_ne!(a, c);
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02);
    }
}
