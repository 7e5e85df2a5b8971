//! This host's records → its desired configuration, XAPI's way (reference
//! §5.1): a bridge per network with an attached PIF here, NIC and bond ports,
//! VLANs as fake bridges, internal bridges for local VIFs, IP settings,
//! routes and DNS. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use xnet_model::db::{self, b, i, m, mget, s};
use xnet_model::helpers::{self as h, PifKind};
use xnet_model::{Read, Reader, Record, Tables};
pub use xnet_rtnl::ethtool::{Duplex, LinkRequest, Offload};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Iface {
    pub name: String,
    /// "" (system) or "internal".
    pub kind: String,
    pub mtu: Option<i64>,
    pub other_config: BTreeMap<String, String>,
    /// A VIF's `xs-vif-uuid`, `xs-vm-uuid`, `xs-network-uuid` and
    /// `attached-mac`, on the Interface as XAPI's vif script sets them.
    pub external_ids: BTreeMap<String, String>,
    /// Kernel-datapath rate limit of what enters OVS here (kbit/s, kbit);
    /// 0 = none.
    pub ingress_policing_rate: i64,
    pub ingress_policing_burst: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Port {
    pub name: String,
    pub interfaces: Vec<Iface>,
    pub tag: Option<i64>,
    pub fake_bridge: bool,
    pub bond_mode: Option<String>,
    pub lacp: Option<String>,
    pub bond_updelay: i64,
    pub bond_downdelay: i64,
    pub mac: Option<String>,
    pub other_config: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bridge {
    pub name: String,
    pub ports: BTreeMap<String, Port>,
    pub other_config: BTreeMap<String, String>,
    pub external_ids: BTreeMap<String, String>,
}

/// An address and prefix on a device.
pub type Cidr = (IpAddr, u8);

#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub dst: IpAddr,
    pub prefix: u8,
    pub gateway: IpAddr,
    pub dev: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    pub bridges: BTreeMap<String, Bridge>,
    /// Devices to bring up (NICs in use, bridge devices).
    pub up: Vec<String>,
    /// Addresses per bridge device, for every xnet bridge (empty = none).
    pub addrs: BTreeMap<String, Vec<Cidr>>,
    pub routes: Vec<RouteSpec>,
    pub resolv: Option<String>,
    /// PIF → why it cannot be realized.
    pub errors: BTreeMap<String, String>,
    /// Bridge devices that run a DHCP client, with their PIF.
    pub dhcp: BTreeMap<String, String>,
    /// NIC offloads from PIF `other_config:ethtool-<offload>=on|off`.
    pub ethtool: BTreeMap<String, Vec<(Offload, bool)>>,
    /// Bridge devices that take IPv6 router advertisements and SLAAC
    /// (`ipv6_configuration_mode` Autoconf or DHCP); every other xnet device
    /// has both off, so guests' RAs cannot configure dom0.
    pub autoconf: BTreeSet<String>,
    /// Bridge devices in IPv6 DHCP mode, with their PIF.
    pub dhcp6: BTreeMap<String, String>,
    /// NIC speed, duplex and autonegotiation (`ethtool -s`), where asked.
    pub link: BTreeMap<String, LinkRequest>,
    /// VIF backend devices in a bridge: MAC fe:ff:ff:ff:ff:ff and ARP off,
    /// as Xen's vif scripts leave them.
    pub backends: BTreeSet<String>,
    /// Locking and rate-limit rule sets of the attached VIFs' ports.
    pub vifs: Vec<crate::flows::VifSpec>,
    /// Backend devices of attached VIFs that do not exist yet, by name,
    /// with what the bridge gets once they appear: the agent's fast path.
    pub pending: BTreeMap<String, Pending>,
}

/// What one backend device adds to an existing bridge when it appears.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub bridge: String,
    pub port: Port,
    pub spec: crate::flows::VifSpec,
    pub ethtool: Vec<(Offload, bool)>,
}

/// A PIF's `ethtool-speed`, `-duplex`, `-autoneg` and `-advertise` keys, as
/// xcp-networkd reads them; an invalid value is ignored (XAPI logs it).
pub fn link_request(pif: &Record) -> Option<LinkRequest> {
    let key = |k: &str| mget(pif, "other_config", k);
    let req = LinkRequest {
        speed_mbps: key("ethtool-speed")
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0),
        duplex: match key("ethtool-duplex") {
            Some("half") => Some(Duplex::Half),
            Some("full") => Some(Duplex::Full),
            _ => None,
        },
        autoneg: match key("ethtool-autoneg") {
            Some("on" | "true") => Some(true),
            Some("off" | "false") => Some(false),
            _ => None,
        },
        advertise: key("ethtool-advertise")
            .and_then(|v| v.strip_prefix("0x"))
            .and_then(|h| u64::from_str_radix(h, 16).ok()),
    };
    (req != LinkRequest::default()).then_some(req)
}

/// The offload settings of a PIF's `ethtool-*` keys, as xcp-networkd reads
/// them (`on`/`true`, `off`/`false`); other keys and values are ignored.
pub fn ethtool_settings(pif: &Record) -> Vec<(Offload, bool)> {
    let mut out = vec![];
    for (k, v) in m(pif, "other_config") {
        let Some(name) = k.strip_prefix("ethtool-") else {
            continue;
        };
        let feature = match name {
            "tx" => Offload::Tx,
            "rx" => Offload::Rx,
            "sg" => Offload::Sg,
            "tso" => Offload::Tso,
            "gso" => Offload::Gso,
            "gro" => Offload::Gro,
            "lro" => Offload::Lro,
            "ufo" => Offload::Ufo,
            _ => continue,
        };
        match v.as_str().unwrap_or("") {
            "on" | "true" => out.push((feature, true)),
            "off" | "false" => out.push((feature, false)),
            _ => {}
        }
    }
    out
}

fn map_of(rec: &Record, f: &str) -> BTreeMap<String, String> {
    m(rec, f)
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect()
}

/// PIF `other_config:mtu` if it parses, else the network MTU (nm.ml determine_mtu).
fn mtu(pif: &Record, net: &Record) -> i64 {
    mget(pif, "other_config", "mtu")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| i(net, "MTU"))
}

/// The bond options of §4.1 for OVS.
fn bond_port(d: &Reader, bond: &str, master: &Record, slaves: &[Record], mtu: i64) -> Port {
    let br = d.tables().get("Bond", bond).cloned().unwrap_or_default();
    let mode = s(&br, "mode").to_string();
    let props = map_of(&br, "properties");
    let mut p = Port {
        name: s(master, "device").to_string(),
        interfaces: slaves
            .iter()
            .map(|sl| Iface {
                name: s(sl, "device").into(),
                mtu: Some(mtu),
                ..Default::default()
            })
            .collect(),
        mac: Some(s(master, "MAC").to_string()),
        bond_updelay: 31000,
        bond_downdelay: 200,
        ..Default::default()
    };
    let mut oc = BTreeMap::new();
    oc.insert("bond-miimon-interval".to_string(), "100".to_string());
    oc.insert("bond-detect-mode".to_string(), "carrier".to_string());
    if mode == "lacp" {
        p.lacp = Some("active".into());
        let hash = props
            .get("hashing_algorithm")
            .map(String::as_str)
            .unwrap_or("tcpudp_ports");
        p.bond_mode = Some(
            if hash == "src_mac" {
                "balance-slb"
            } else {
                "balance-tcp"
            }
            .into(),
        );
        for k in ["lacp-time", "lacp-fallback-ab"] {
            if let Some(v) = props.get(k) {
                oc.insert(k.to_string(), v.clone());
            }
        }
        if let Some(key) = props.get("lacp-aggregation-key") {
            for ifc in &mut p.interfaces {
                ifc.other_config
                    .insert("lacp-aggregation-key".into(), key.clone());
            }
        }
    } else {
        p.lacp = Some("off".into());
        p.bond_mode = Some(mode);
        oc.insert("bond-rebalance-interval".to_string(), "1800000".to_string());
    }
    // Master other_config `bond-<k>=<v>` overrides (how XAPI users tune delays).
    for (k, v) in map_of(master, "other_config") {
        if let Some(key) = k.strip_prefix("bond-") {
            match key {
                "updelay" => p.bond_updelay = v.parse().unwrap_or(p.bond_updelay),
                "downdelay" => p.bond_downdelay = v.parse().unwrap_or(p.bond_downdelay),
                "miimon" => {
                    oc.insert("bond-miimon-interval".into(), v);
                }
                "mode" => p.bond_mode = Some(v),
                _ => {
                    oc.insert(k.clone(), v);
                }
            }
        }
    }
    p.other_config = oc;
    p
}

/// A port with one system interface of the same name.
fn plain_port(dev: &str, mtu: i64) -> Port {
    Port {
        name: dev.to_string(),
        interfaces: vec![Iface {
            name: dev.to_string(),
            mtu: Some(mtu),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn new_bridge(name: &str, net_uuids: &str, datapath_mac: Option<&str>) -> Bridge {
    let mut b = Bridge {
        name: name.to_string(),
        ..Default::default()
    };
    b.external_ids.insert("xnet-managed".into(), "true".into());
    b.external_ids
        .insert("xs-network-uuids".into(), net_uuids.into());
    b.other_config
        .insert("mac-table-size".into(), "10000".into());
    if let Some(mac) = datapath_mac {
        b.other_config.insert("hwaddr".into(), mac.into());
    }
    b.ports.insert(
        name.to_string(),
        Port {
            name: name.to_string(),
            interfaces: vec![Iface {
                name: name.into(),
                kind: "internal".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    b
}

/// Static routes of network `other_config:static-routes` (`net/len/gw,…`); a
/// parse failure drops them all, as XAPI does.
pub fn static_routes(text: &str, dev: &str) -> Vec<RouteSpec> {
    let mut out = vec![];
    for item in text.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let parts: Vec<&str> = item.split('/').collect();
        let parsed = (|| {
            let [net, len, gw] = parts.as_slice() else {
                return None;
            };
            Some(RouteSpec {
                dst: net.parse().ok()?,
                prefix: len.parse().ok()?,
                gateway: gw.parse().ok()?,
                dev: dev.into(),
            })
        })();
        match parsed {
            Some(r) => out.push(r),
            None => return vec![],
        }
    }
    out
}

/// The bridge of a physical, bond-master or tunnel-access PIF.
fn real_bridge(d: &Reader, pref: &str, pif: &Record, out: &mut Desired) {
    let t = d.t;
    let nr = t
        .get("network", s(pif, "network"))
        .cloned()
        .unwrap_or_default();
    let bridge = s(&nr, "bridge").to_string();
    let kind = h::pif_kind(d, pref);
    if bridge.is_empty()
        || h::is_bond_slave(d, pref)
        || kind == PifKind::VlanUntagged
        || kind == PifKind::SriovLogical
    {
        return;
    }
    let mut br = new_bridge(&bridge, s(&nr, "uuid"), Some(s(pif, "MAC")));
    let mtu = mtu(pif, &nr);
    if let Some(p) = br.ports.get_mut(&bridge) {
        p.interfaces[0].mtu = Some(mtu);
    }
    match kind {
        PifKind::Physical => {
            let dev = s(pif, "device").to_string();
            br.ports.insert(dev.clone(), plain_port(&dev, mtu));
            out.ethtool.insert(dev.clone(), ethtool_settings(pif));
            if let Some(l) = link_request(pif) {
                out.link.insert(dev.clone(), l);
            }
            out.up.push(dev);
        }
        PifKind::BondMaster => {
            let bond = d
                .children("Bond", "master", pref)
                .first()
                .cloned()
                .unwrap_or_default();
            let mut slaves: Vec<Record> = d
                .children("PIF", "bond_slave_of", &bond)
                .iter()
                .filter_map(|x| t.get("PIF", x).cloned())
                .collect();
            slaves.sort_by_key(|r| xnet_model::pif::device_order_key(s(r, "device")));
            // The bond master's ethtool keys apply to every member.
            for sl in &slaves {
                out.up.push(s(sl, "device").to_string());
                out.ethtool
                    .insert(s(sl, "device").to_string(), ethtool_settings(pif));
                // Speed and duplex are each member's own (its PIF's keys).
                if let Some(l) = link_request(sl) {
                    out.link.insert(s(sl, "device").to_string(), l);
                }
            }
            let port = if slaves.len() == 1 {
                // "Sometimes a Bond is not actually a bond": one member is a plain port.
                let dev = s(&slaves[0], "device").to_string();
                plain_port(&dev, mtu)
            } else {
                bond_port(d, &bond, pif, &slaves, mtu)
            };
            br.ports.insert(port.name.clone(), port);
        }
        _ => {} // tunnel access: a port-less bridge
    }
    out.up.push(bridge.clone());
    out.bridges.insert(bridge, br);
}

/// A PIF's IPv6 settings on its bridge device `dev`: static addresses, or
/// router advertisements for Autoconf and DHCP.
fn ipv6(pref: &str, pif: &Record, dev: &str, out: &mut Desired) {
    match s(pif, "ipv6_configuration_mode") {
        "Static" => {
            for a in db::set_strs(pif, "IPv6") {
                let parsed = a.split_once('/').and_then(|(ip, len)| {
                    let ip: std::net::Ipv6Addr = ip.parse().ok()?;
                    let len: u8 = len.parse().ok().filter(|l| *l <= 128)?;
                    Some((IpAddr::V6(ip), len))
                });
                match parsed {
                    Some(c) => out.addrs.entry(dev.to_string()).or_default().push(c),
                    None => {
                        out.errors
                            .insert(pref.to_string(), format!("bad IPv6 address {a:?}"));
                    }
                }
            }
        }
        "Autoconf" => {
            out.autoconf.insert(dev.to_string());
        }
        "DHCP" => {
            // The RA's managed flag sends hosts to DHCPv6; the agent runs
            // (or reports the lack of) the client.
            out.autoconf.insert(dev.to_string());
            out.dhcp6.insert(dev.to_string(), pref.to_string());
        }
        _ => {}
    }
}

/// The device that carries a PIF's IP configuration: its network's bridge.
pub fn compile(
    t: &dyn Tables,
    host: &str,
    existing_links: &[String],
    leases: &BTreeMap<String, crate::dhcp::Lease>,
) -> Desired {
    let d = Reader { t };
    let mut out = Desired::default();
    let existing: std::collections::HashSet<&str> =
        existing_links.iter().map(String::as_str).collect();
    let pifs: Vec<(String, Record)> = t
        .scan("PIF")
        .filter(|(_, r)| s(r, "host") == host && b(r, "managed") && b(r, "currently_attached"))
        .map(|(k, r)| (k.to_string(), r.clone()))
        .collect();
    let net = |n: &str| t.get("network", n).cloned().unwrap_or_default();
    let mut gateway: Option<(String, String)> = None;
    let mut gateway6: Option<(String, String)> = None;
    let mut resolv = None;
    // Real bridges first (physical, bond, tunnel); VLANs hang off them.
    for (pref, pif) in &pifs {
        real_bridge(&d, pref, pif, &mut out);
    }
    // VLANs: fake bridges on the parent network's bridge.
    for (pref, pif) in &pifs {
        if h::pif_kind(&d, pref) != PifKind::VlanUntagged {
            continue;
        }
        let nr = net(s(pif, "network"));
        let vlan = t
            .get("VLAN", s(pif, "VLAN_master_of"))
            .cloned()
            .unwrap_or_default();
        let tagged = t
            .get("PIF", s(&vlan, "tagged_PIF"))
            .cloned()
            .unwrap_or_default();
        let parent_net = net(s(&tagged, "network"));
        let parent = s(&parent_net, "bridge").to_string();
        let vbr = s(&nr, "bridge").to_string();
        // Plugging a VLAN brings its parent up (networkd builds parents recursively).
        if !out.bridges.contains_key(&parent) && !h::is_bond_slave(&d, s(&vlan, "tagged_PIF")) {
            real_bridge(&d, s(&vlan, "tagged_PIF"), &tagged, &mut out);
        }
        let Some(pb) = out.bridges.get_mut(&parent) else {
            out.errors.insert(
                pref.clone(),
                format!("VLAN parent bridge {parent} is not plugged"),
            );
            continue;
        };
        let ids = format!("{};{}", s(&nr, "uuid"), s(&parent_net, "uuid"));
        let mut ext = BTreeMap::new();
        ext.insert("xnet-managed".to_string(), "true".to_string());
        ext.insert("xs-network-uuids".to_string(), ids);
        pb.ports.insert(
            vbr.clone(),
            Port {
                name: vbr.clone(),
                interfaces: vec![Iface {
                    name: vbr.clone(),
                    kind: "internal".into(),
                    mtu: Some(mtu(pif, &nr)),
                    ..Default::default()
                }],
                tag: Some(i(pif, "VLAN")),
                fake_bridge: true,
                external_ids: ext,
                ..Default::default()
            },
        );
        out.up.push(vbr);
    }
    // VIFs of running VMs resident here: ports for the backend devices
    // that exist, the others pending until they appear.
    let mut absent_devs = vec![];
    for (vref, vif) in t.scan("VIF") {
        if !b(vif, "currently_attached") {
            continue;
        }
        let Some(vm) = t.get("VM", s(vif, "VM")) else {
            continue;
        };
        if s(vm, "resident_on") != host
            || s(vm, "power_state") != "Running"
            || b(vm, "is_control_domain")
        {
            continue;
        }
        // PV backends are vif<domid>.<devid>; emulated NICs tap<domid>.<devid>
        // (an HVM guest has both until its PV driver takes over).
        let (present, absent): (Vec<String>, Vec<String>) =
            xnet_model::hotplug::backend_devices(i(vm, "domid"), vif)
                .into_iter()
                .partition(|d| existing.contains(d.as_str()));
        let nr = net(s(vif, "network"));
        // A disabled VIF passes nothing: its port is not added (§8).
        let Some(locking) = crate::flows::effective_locking(vif, &nr) else {
            continue;
        };
        let nb = s(&nr, "bridge").to_string();
        // A VLAN network's VIFs sit on the parent bridge with the tag.
        let fake = out.bridges.values().find_map(|br| {
            br.ports
                .get(&nb)
                .filter(|p| p.fake_bridge)
                .map(|p| (br.name.clone(), p.tag))
        });
        let (target, tag) = match fake {
            Some((parent, tag)) => (parent, tag),
            None => {
                if !out.bridges.contains_key(&nb) && !nb.is_empty() && !present.is_empty() {
                    // An internal network: a port-less bridge of its own.
                    out.bridges
                        .insert(nb.clone(), new_bridge(&nb, s(&nr, "uuid"), None));
                    out.up.push(nb.clone());
                }
                (nb.clone(), None)
            }
        };
        let mut ext = BTreeMap::new();
        ext.insert("xs-vif-uuid".to_string(), s(vif, "uuid").to_string());
        ext.insert("xs-vm-uuid".to_string(), s(vm, "uuid").to_string());
        ext.insert("xs-network-uuid".to_string(), s(&nr, "uuid").to_string());
        ext.insert("attached-mac".to_string(), s(vif, "MAC").to_string());
        let vmtu = mget(vif, "other_config", "mtu")
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| i(&nr, "MTU"));
        let port_of = |dev: &str| {
            let mut port = Port {
                tag,
                ..plain_port(dev, vmtu)
            };
            port.interfaces[0].external_ids = ext.clone();
            port
        };
        for dev in absent {
            absent_devs.push((
                dev.clone(),
                Pending {
                    bridge: target.clone(),
                    port: port_of(&dev),
                    spec: crate::flows::VifSpec::new(vref, vif, &target, &dev, locking.clone()),
                    ethtool: ethtool_settings(vif),
                },
            ));
        }
        let Some(br) = out.bridges.get_mut(&target) else {
            continue;
        };
        for dev in present {
            out.vifs.push(crate::flows::VifSpec::new(
                vref,
                vif,
                &target,
                &dev,
                locking.clone(),
            ));
            br.ports.insert(dev.clone(), port_of(&dev));
            out.backends.insert(dev.clone());
            // VIF other_config:ethtool-* (xenopsd's vif_udev_keys).
            out.ethtool.insert(dev.clone(), ethtool_settings(vif));
            out.up.push(dev);
        }
    }
    // Only onto bridges that exist (an internal network's comes with the
    // first device present, whichever VIF it belongs to).
    out.pending = absent_devs
        .into_iter()
        .filter(|(_, p)| out.bridges.contains_key(&p.bridge))
        .collect();
    // IP configuration on bridge devices.
    for name in out.bridges.keys().cloned().collect::<Vec<_>>() {
        out.addrs.insert(name.clone(), vec![]);
        for p in out.bridges[&name].ports.values().filter(|p| p.fake_bridge) {
            out.addrs.insert(p.name.clone(), vec![]);
        }
    }
    for (pref, pif) in &pifs {
        let nr = net(s(pif, "network"));
        let dev = s(&nr, "bridge").to_string();
        if !out.addrs.contains_key(&dev) {
            continue;
        }
        let is_gw =
            b(pif, "management") || mget(pif, "other_config", "defaultroute") == Some("true");
        ipv6(pref, pif, &dev, &mut out);
        let gw6 = s(pif, "ipv6_gateway");
        if is_gw
            && !gw6.is_empty()
            && s(pif, "ipv6_configuration_mode") == "Static"
            && (gateway6.is_none() || b(pif, "management"))
        {
            gateway6 = Some((gw6.to_string(), dev.clone()));
        }
        // (address, gateway, nameservers) from the static settings or the lease.
        let config = match s(pif, "ip_configuration_mode") {
            "Static" => {
                let (Ok(ip), Some(len)) = (
                    s(pif, "IP").parse::<IpAddr>(),
                    h::netmask_prefix(s(pif, "netmask")),
                ) else {
                    out.errors
                        .insert(pref.clone(), "static IP configuration is incomplete".into());
                    continue;
                };
                Some((
                    (ip, len),
                    s(pif, "gateway").to_string(),
                    s(pif, "DNS").to_string(),
                ))
            }
            "DHCP" => {
                out.dhcp.insert(dev.clone(), pref.clone());
                leases
                    .get(&dev)
                    .and_then(|l| l.cidr().map(|c| (c, l.router.clone(), l.dns.clone())))
            }
            _ => None,
        };
        if let Some((cidr, gw, dns)) = config {
            out.addrs.entry(dev.clone()).or_default().push(cidr);
            if is_gw && !gw.is_empty() && (gateway.is_none() || b(pif, "management")) {
                gateway = Some((gw, dev.clone()));
            }
            if b(pif, "management") || mget(pif, "other_config", "peerdns") == Some("true") {
                let ns: Vec<&str> = dns.split(',').filter(|x| !x.is_empty()).collect();
                let domains: Vec<&str> = mget(pif, "other_config", "domain")
                    .unwrap_or("")
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .collect();
                let mut text = String::from("# written by xnet from the management PIF\n");
                if !domains.is_empty() {
                    text.push_str(&format!("search {}\n", domains.join(" ")));
                }
                for n in ns {
                    text.push_str(&format!("nameserver {n}\n"));
                }
                resolv = Some(text);
            }
        }
        for (k, v) in m(&nr, "other_config") {
            if k == "static-routes" {
                out.routes
                    .extend(static_routes(v.as_str().unwrap_or(""), &dev));
            }
        }
    }
    for list in out.addrs.values_mut() {
        list.sort();
        list.dedup();
    }
    for (gw, dev) in gateway.into_iter().chain(gateway6) {
        if let Ok(g) = gw.parse::<IpAddr>() {
            let any: IpAddr = if g.is_ipv4() {
                "0.0.0.0".parse().unwrap()
            } else {
                "::".parse().unwrap()
            };
            out.routes.push(RouteSpec {
                dst: any,
                prefix: 0,
                gateway: g,
                dev,
            });
        }
    }
    out.resolv = resolv;
    out.up.sort();
    out.up.dedup();
    let _ = db::is_null;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use xnet_model::host::Nic;
    use xnet_model::install::{install, Management, Setup};
    use xnet_model::{Db, MemTables};

    fn host() -> (MemTables, String) {
        let mut t = MemTables::default();
        let setup = Setup {
            hostname: "h".into(),
            backend: "openvswitch".into(),
            nics: (0..4)
                .map(|n| Nic {
                    device: format!("eth{n}"),
                    mac: format!("52:54:00:00:30:0{n}"),
                    position: n,
                    carrier: true,
                    speed_mbps: 0,
                    duplex_full: false,
                    driver: String::new(),
                })
                .collect(),
            management: Management {
                device: Some("eth0".into()),
                mode: "static".into(),
                ip: "10.1.0.2".into(),
                netmask: "255.255.255.0".into(),
                gateway: "10.1.0.1".into(),
                dns: "10.1.0.53".into(),
                domain: "a.example,b.example".into(),
            },
        };
        let h = install(&mut Db::new(&mut t), &setup).unwrap();
        (t, h)
    }

    fn pif(t: &MemTables, dev: &str) -> String {
        t.tables["PIF"]
            .iter()
            .find(|(_, r)| s(r, "device") == dev && b(r, "physical"))
            .map(|(k, _)| k.clone())
            .unwrap()
    }

    #[test]
    fn management_bridge_address_route_dns() {
        let (t, h) = host();
        let d = compile(&t, &h, &[], &BTreeMap::new());
        let br = &d.bridges["xenbr0"];
        assert!(br.ports.contains_key("eth0") && br.ports.contains_key("xenbr0"));
        assert_eq!(br.other_config["hwaddr"], "52:54:00:00:30:00");
        assert_eq!(d.addrs["xenbr0"], vec![("10.1.0.2".parse().unwrap(), 24)]);
        assert_eq!(d.routes[0].prefix, 0);
        assert!(d
            .resolv
            .as_ref()
            .unwrap()
            .contains("search a.example b.example\nnameserver 10.1.0.53\n"));
        assert_eq!(d.bridges.len(), 1, "unplugged NICs have no bridge");
    }

    #[test]
    fn ipv6_static_autoconf_and_gateway() {
        let (mut t, h) = host();
        let mgmt = pif(&t, "eth0");
        let mut d = Db::new(&mut t);
        xnet_model::pif::reconfigure_ipv6(
            &mut d,
            &mgmt,
            "Static",
            "2001:db8:1::2/64",
            "2001:db8:1::1",
            "",
        )
        .unwrap();
        let out = compile(&t, &h, &[], &BTreeMap::new());
        assert_eq!(
            out.addrs["xenbr0"],
            vec![
                ("10.1.0.2".parse().unwrap(), 24),
                ("2001:db8:1::2".parse().unwrap(), 64)
            ]
        );
        let v6gw: IpAddr = "2001:db8:1::1".parse().unwrap();
        assert!(out
            .routes
            .iter()
            .any(|r| r.prefix == 0 && r.gateway == v6gw && r.dev == "xenbr0"));
        assert!(out.autoconf.is_empty(), "static: no RAs taken");
        let mut d = Db::new(&mut t);
        xnet_model::pif::reconfigure_ipv6(&mut d, &mgmt, "Autoconf", "", "", "").unwrap();
        let out = compile(&t, &h, &[], &BTreeMap::new());
        assert_eq!(out.addrs["xenbr0"], vec![("10.1.0.2".parse().unwrap(), 24)]);
        assert!(out.autoconf.contains("xenbr0"));
        assert!(out.routes.iter().all(|r| r.gateway != v6gw));
        let mut d = Db::new(&mut t);
        xnet_model::pif::reconfigure_ipv6(&mut d, &mgmt, "DHCP", "", "", "").unwrap();
        let out = compile(&t, &h, &[], &BTreeMap::new());
        assert_eq!(out.dhcp6.get("xenbr0"), Some(&mgmt));
    }

    #[test]
    fn ethtool_link_keys() {
        let (mut t, h) = host();
        let eth1 = pif(&t, "eth1");
        let mut d = Db::new(&mut t);
        xnet_model::pif::plug(&mut d, &eth1).unwrap();
        for (k, v) in [
            ("ethtool-speed", "1000"),
            ("ethtool-duplex", "full"),
            ("ethtool-autoneg", "off"),
            ("ethtool-advertise", "0x2f"),
        ] {
            d.set_map_key("PIF", &eth1, "other_config", k, Some(v))
                .unwrap();
        }
        let out = compile(&t, &h, &[], &BTreeMap::new());
        assert_eq!(
            out.link["eth1"],
            LinkRequest {
                speed_mbps: Some(1000),
                duplex: Some(Duplex::Full),
                autoneg: Some(false),
                advertise: Some(0x2f),
            }
        );
        let mut d = Db::new(&mut t);
        for (k, v) in [
            ("ethtool-speed", "fast"),
            ("ethtool-duplex", "both"),
            ("ethtool-autoneg", "maybe"),
            ("ethtool-advertise", "2f"),
        ] {
            d.set_map_key("PIF", &eth1, "other_config", k, Some(v))
                .unwrap();
        }
        let out = compile(&t, &h, &[], &BTreeMap::new());
        assert!(!out.link.contains_key("eth1"), "invalid values are ignored");
    }

    #[test]
    fn vlan_bond_and_routes() {
        let (mut t, h) = host();
        let (eth1, eth2, eth3) = (pif(&t, "eth1"), pif(&t, "eth2"), pif(&t, "eth3"));
        let mut d = Db::new(&mut t);
        let n = xnet_model::network::create(
            &mut d,
            [
                ("name_label".to_string(), db::vs("v")),
                (
                    "other_config".to_string(),
                    db::smap(&[("static-routes", "10.9.0.0/24/10.1.0.254")]),
                ),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap();
        xnet_model::vlan::create(&mut d, &eth1, 10, &n).unwrap();
        let bn = xnet_model::network::create(
            &mut d,
            [
                ("name_label".to_string(), db::vs("b")),
                ("other_config".to_string(), db::smap(&[])),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap();
        let bond = xnet_model::bond::create(
            &mut d,
            &bn,
            &[eth2, eth3],
            "",
            "lacp",
            &[("hashing_algorithm".into(), "src_mac".into())],
        )
        .unwrap();
        let _ = bond;
        let out = compile(&t, &h, &[], &BTreeMap::new());
        let vbr = s(&t.tables["network"][&n], "bridge").to_string();
        let p = &out.bridges["xenbr1"].ports[&vbr];
        assert!(p.fake_bridge);
        assert_eq!(p.tag, Some(10));
        let bbr = s(&t.tables["network"][&bn], "bridge").to_string();
        let bp = &out.bridges[&bbr].ports["bond0"];
        assert_eq!(
            bp.interfaces
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>(),
            vec!["eth2", "eth3"]
        );
        assert_eq!(bp.lacp.as_deref(), Some("active"));
        assert_eq!(bp.bond_mode.as_deref(), Some("balance-slb"));
        assert_eq!(static_routes("10.9.0.0/24/10.1.0.254,bad", "x"), vec![]);
        assert_eq!(static_routes("10.9.0.0/24/10.1.0.254", "x").len(), 1);
    }

    #[test]
    fn bond_links_up_follows_member_carrier() {
        let (mut t, h) = host();
        let (eth2, eth3) = (pif(&t, "eth2"), pif(&t, "eth3"));
        let mut d = Db::new(&mut t);
        let bn = xnet_model::network::create(
            &mut d,
            [("name_label".to_string(), db::vs("b"))]
                .into_iter()
                .collect(),
        )
        .unwrap();
        let bond =
            xnet_model::bond::create(&mut d, &bn, &[eth2, eth3], "", "active-backup", &[]).unwrap();
        let nics = |down: &str| -> Vec<Nic> {
            (0..4)
                .map(|n| Nic {
                    device: format!("eth{n}"),
                    mac: format!("52:54:00:00:30:0{n}"),
                    position: n,
                    carrier: format!("eth{n}") != down,
                    speed_mbps: 0,
                    duplex_full: false,
                    driver: String::new(),
                })
                .collect()
        };
        xnet_model::host::set_inventory(&mut d, &h, &nics("eth3")).unwrap();
        assert_eq!(i(&t.tables["Bond"][&bond], "links_up"), 1);
        let mut d = Db::new(&mut t);
        xnet_model::host::set_inventory(&mut d, &h, &nics("")).unwrap();
        assert_eq!(i(&t.tables["Bond"][&bond], "links_up"), 2);
    }

    #[test]
    fn pv_and_emulated_backends_both_attach() {
        let (mut t, h) = host();
        let net = s(&t.tables["PIF"][&pif(&t, "eth0")], "network").to_string();
        let mut d = Db::new(&mut t);
        let vm = d.create(&xnet_model::schema::VM, vec![("name_label", db::vs("g"))]);
        xnet_model::vm::set_domain(&mut d, &vm, Some(&h), 5).unwrap();
        let vif = d.create(
            &xnet_model::schema::VIF,
            vec![
                ("VM", db::vs(vm.as_str())),
                ("network", db::vs(net.as_str())),
                ("device", db::vs("0")),
                ("MAC", db::vs("02:00:00:00:00:05")),
                ("currently_attached", xapi_wire::Value::Bool(true)),
            ],
        );
        let _ = vif;
        let links = ["vif5.0".to_string(), "tap5.0".to_string()];
        let out = compile(&t, &h, &links, &BTreeMap::new());
        let br = &out.bridges["xenbr0"];
        for dev in ["vif5.0", "tap5.0"] {
            assert_eq!(
                br.ports[dev].interfaces[0].external_ids["attached-mac"],
                "02:00:00:00:00:05"
            );
        }
        let out = compile(&t, &h, &links[1..], &BTreeMap::new());
        assert!(!out.bridges["xenbr0"].ports.contains_key("vif5.0"));
        assert!(out.bridges["xenbr0"].ports.contains_key("tap5.0"));
        // The missing one waits, with the very port it will get.
        let p = &out.pending["vif5.0"];
        assert_eq!(p.bridge, "xenbr0");
        assert_eq!(p.spec.device, "vif5.0");
        let full = compile(&t, &h, &links, &BTreeMap::new());
        assert_eq!(p.port, full.bridges["xenbr0"].ports["vif5.0"]);
        assert!(full.pending.keys().all(|k| k.ends_with("-emu")));
    }

    #[test]
    fn backend_devices_get_dummy_mac_and_vif_ethtool_keys() {
        let (mut t, h) = host();
        let net = s(&t.tables["PIF"][&pif(&t, "eth0")], "network").to_string();
        let mut d = Db::new(&mut t);
        let vm = d.create(&xnet_model::schema::VM, vec![("name_label", db::vs("g"))]);
        xnet_model::vm::set_domain(&mut d, &vm, Some(&h), 6).unwrap();
        let oc: xnet_model::db::Map = [("ethtool-tx", "off"), ("ethtool-sg", "on")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), db::vs(v)))
            .collect();
        d.create(
            &xnet_model::schema::VIF,
            vec![
                ("VM", db::vs(vm.as_str())),
                ("network", db::vs(net.as_str())),
                ("device", db::vs("1")),
                ("MAC", db::vs("02:00:00:00:00:06")),
                ("currently_attached", xapi_wire::Value::Bool(true)),
                ("other_config", xapi_wire::Value::Struct(oc)),
            ],
        );
        let out = compile(&t, &h, &["vif6.1".to_string()], &BTreeMap::new());
        assert!(out.backends.contains("vif6.1"));
        assert!(!out.backends.contains("eth0"));
        let mut e = out.ethtool["vif6.1"].clone();
        e.sort_by_key(|(f, _)| format!("{f:?}"));
        assert_eq!(e, vec![(Offload::Sg, true), (Offload::Tx, false)]);
        // Not there: nothing to configure.
        let out = compile(&t, &h, &[], &BTreeMap::new());
        assert!(out.backends.is_empty());
    }
}
