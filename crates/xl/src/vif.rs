//! One vifspec string: `key=value` items separated by commas.

use std::net::IpAddr;

use crate::{parse_rate, VifSpec, VifType, XlError};

/// libxl's devid is a C `int`; larger values cannot reach xenstore.
const MAX_DEVID: u32 = i32::MAX as u32;

/// Parses one vifspec, e.g. `mac=00:16:3e:01:02:03,bridge=xenbr0,script=vif-xnet`.
///
/// Items are trimmed and empty items skipped, so `''` is a valid all-defaults
/// vif (the doc's own example) and a trailing comma is harmless. Keys are
/// case-sensitive, as in xl.
pub fn parse_vif(spec: &str) -> Result<VifSpec, XlError> {
    let mut vif = VifSpec::default();
    let mut seen: Vec<&'static str> = Vec::new();

    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| XlError::MissingEquals(item.to_string()))?;
        let (key, value) = (key.trim(), value.trim());
        let key = canonical_key(key).ok_or_else(|| XlError::UnknownKey(key.to_string()))?;
        if value.is_empty() {
            return Err(XlError::EmptyValue(key.to_string()));
        }
        // `netdev` and `gatewaydev` share one canonical name, so giving both
        // is caught here as a duplicate too.
        if seen.contains(&key) {
            return Err(XlError::DuplicateKey(key.to_string()));
        }
        seen.push(key);

        match key {
            "mac" => vif.mac = Some(parse_mac(value)?),
            "bridge" => vif.bridge = Some(ifname("bridge", value)?),
            "gatewaydev" => vif.gatewaydev = Some(ifname("gatewaydev", value)?),
            "vifname" => vif.vifname = Some(ifname("vifname", value)?),
            "type" => {
                vif.kind = match value {
                    "vif" => VifType::Vif,
                    "ioemu" => VifType::Ioemu,
                    _ => return Err(XlError::BadType(value.to_string())),
                }
            }
            "model" => {
                let ok = value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !ok {
                    return Err(XlError::BadModel(value.to_string()));
                }
                vif.model = Some(value.to_string());
            }
            "script" => vif.script = Some(value.to_string()),
            "backend" => vif.backend = Some(value.to_string()),
            "ip" => {
                vif.ip = value
                    .split_whitespace()
                    .map(|a| a.parse().map_err(|_| XlError::BadIp(a.to_string())))
                    .collect::<Result<Vec<IpAddr>, _>>()?
            }
            "rate" => vif.rate = Some(parse_rate(value)?),
            "devid" => {
                let devid = decimal(value)
                    .filter(|&d| d <= u64::from(MAX_DEVID))
                    .ok_or_else(|| XlError::BadDevid(value.to_string()))?;
                vif.devid = Some(devid as u32);
            }
            "mtu" => {
                let mtu = decimal(value)
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or_else(|| XlError::BadMtu(value.to_string()))?;
                vif.mtu = Some(mtu as u32);
            }
            // xl accepts `accel` but only warns that it is unsupported; do the
            // same (minus the warning) so old configs still load.
            "accel" => {}
            _ => unreachable!("canonical_key returned an unhandled key"),
        }
    }
    Ok(vif)
}

/// Maps a key to the name it is stored and reported under; `None` if unknown.
fn canonical_key(key: &str) -> Option<&'static str> {
    const KEYS: [&str; 13] = [
        "mac",
        "bridge",
        "gatewaydev",
        "type",
        "model",
        "vifname",
        "script",
        "ip",
        "backend",
        "rate",
        "devid",
        "mtu",
        "accel",
    ];
    match key {
        // The doc: "netdev is a deprecated alias of this option".
        "netdev" => Some("gatewaydev"),
        _ => KEYS.iter().copied().find(|k| *k == key),
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`: six groups of two hex digits separated by
/// colons, as the doc specifies. (xl's own loop happens to take any separator
/// and one-digit groups; those are not part of the format and are rejected.)
/// Multicast addresses are rejected: a NIC cannot own one.
pub fn parse_mac(s: &str) -> Result<[u8; 6], XlError> {
    let bad = || XlError::BadMac(s.to_string());
    let mut mac = [0u8; 6];
    let mut groups = s.split(':');
    for byte in mac.iter_mut() {
        let g = groups.next().ok_or_else(bad)?;
        if g.len() != 2 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(g, 16).map_err(|_| bad())?;
    }
    if groups.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 {
        return Err(XlError::MulticastMac(s.to_string()));
    }
    Ok(mac)
}

/// Accepts a name the Linux kernel would accept for a network interface
/// (`dev_valid_name`): 1..=15 bytes (IFNAMSIZ less the NUL), not `.` or `..`,
/// and no `/`, `:` or whitespace.
fn ifname(key: &'static str, value: &str) -> Result<String, XlError> {
    let ok = (1..=15).contains(&value.len())
        && value != "."
        && value != ".."
        && !value
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(value.to_string())
    } else {
        Err(XlError::BadIfname {
            key,
            value: value.to_string(),
        })
    }
}

/// A plain decimal (no sign, no hex): `str::parse` alone would accept `+5`.
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
