//! Links: struct ifinfomsg + IFLA_* attributes (RTM_NEWLINK/DELLINK/GETLINK/SETLINK).

use std::os::fd::RawFd;

use crate::attr::{self, attrs};
use crate::socket::{NLM_F_CREATE, NLM_F_EXCL};
use crate::{Rtnl, RtnlError};

pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;

const IFINFOMSG_LEN: usize = 16;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_STATS64: u16 = 23;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_CARRIER: u16 = 33;
const IFLA_PERM_ADDRESS: u16 = 54;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

const IFF_UP: u32 = 0x1;
const IFF_NOARP: u32 = 0x80;
const IFF_LOWER_UP: u32 = 0x10000;
const IF_OPER_UP: u8 = 6;
/// Linux IFNAMSIZ minus the NUL.
const IFNAME_MAX: usize = 15;

/// Counters from IFLA_STATS64 (struct rtnl_link_stats64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub perm_mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// IFF_UP.
    pub admin_up: bool,
    /// IFLA_CARRIER (IFF_LOWER_UP when the attribute is absent).
    pub carrier: bool,
    /// IFLA_OPERSTATE == IF_OPER_UP.
    pub oper_up: bool,
    /// IFLA_INFO_KIND: "veth", "bridge", "tun", "openvswitch", … (None for lo, real NICs).
    pub kind: Option<String>,
    pub master: Option<u32>,
    pub stats: LinkStats,
    /// IFF_NOARP.
    pub noarp: bool,
}

pub(crate) fn ifinfomsg(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.push(libc::AF_UNSPEC as u8);
    b.push(0);
    b.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    b.extend_from_slice(&(index as i32).to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    b
}

fn mac_of(d: &[u8]) -> Option<[u8; 6]> {
    // Non-Ethernet links (lo has 6 zero bytes, tun none, ipip 4 bytes) are reported
    // only when the address is 6 bytes long.
    d.try_into().ok()
}

/// The ifinfomsg family of a link payload (AF_BRIDGE messages describe bridge ports,
/// not links, and are skipped by the monitor).
pub(crate) fn family(payload: &[u8]) -> Option<u8> {
    payload.first().copied()
}

/// Parses an RTM_NEWLINK payload (after the netlink header).
pub(crate) fn parse(p: &[u8]) -> Result<Link, RtnlError> {
    if p.len() < IFINFOMSG_LEN {
        return Err(RtnlError::Parse(format!("ifinfomsg of {} bytes", p.len())));
    }
    let index = u32::from_ne_bytes(p[4..8].try_into().unwrap());
    let flags = u32::from_ne_bytes(p[8..12].try_into().unwrap());
    let mut l = Link {
        index,
        name: String::new(),
        mac: None,
        perm_mac: None,
        mtu: 0,
        admin_up: flags & IFF_UP != 0,
        carrier: flags & IFF_LOWER_UP != 0,
        oper_up: false,
        kind: None,
        master: None,
        stats: LinkStats::default(),
        noarp: flags & IFF_NOARP != 0,
    };
    let mut have_name = false;
    for a in attrs(&p[IFINFOMSG_LEN..]) {
        let (ty, d) = a?;
        match ty {
            IFLA_IFNAME => {
                l.name = attr::get_str("IFLA_IFNAME", d)?;
                have_name = true;
            }
            IFLA_ADDRESS => l.mac = mac_of(d),
            IFLA_PERM_ADDRESS => l.perm_mac = mac_of(d),
            IFLA_MTU => l.mtu = attr::get_u32("IFLA_MTU", d)?,
            IFLA_MASTER => l.master = Some(attr::get_u32("IFLA_MASTER", d)?),
            IFLA_OPERSTATE => l.oper_up = attr::get_u8("IFLA_OPERSTATE", d)? == IF_OPER_UP,
            IFLA_CARRIER => l.carrier = attr::get_u8("IFLA_CARRIER", d)? != 0,
            IFLA_LINKINFO => {
                for a in attrs(d) {
                    let (ty, d) = a?;
                    if ty == IFLA_INFO_KIND {
                        l.kind = Some(attr::get_str("IFLA_INFO_KIND", d)?);
                    }
                }
            }
            IFLA_STATS64 => {
                // Older kernels may send a shorter struct: missing counters read 0.
                let s = |i| attr::get_u64_at(d, i);
                l.stats = LinkStats {
                    rx_packets: s(0),
                    tx_packets: s(1),
                    rx_bytes: s(2),
                    tx_bytes: s(3),
                    rx_errors: s(4),
                    tx_errors: s(5),
                    rx_dropped: s(6),
                    tx_dropped: s(7),
                };
            }
            _ => {}
        }
    }
    if !have_name {
        return Err(RtnlError::Parse(format!(
            "link {index} without IFLA_IFNAME"
        )));
    }
    Ok(l)
}

/// Parses an RTM_DELLINK payload into (index, name).
pub(crate) fn parse_del(p: &[u8]) -> Result<(u32, String), RtnlError> {
    let l = parse(p)?;
    Ok((l.index, l.name))
}

fn check_name(name: &str) -> Result<(), RtnlError> {
    if name.is_empty() || name.len() > IFNAME_MAX || name.contains(['/', '\0']) {
        return Err(RtnlError::Invalid(format!("interface name {name:?}")));
    }
    Ok(())
}

impl Rtnl {
    /// All links of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, RtnlError> {
        let msgs = self
            .sock
            .dump("RTM_GETLINK", RTM_GETLINK, &ifinfomsg(0, 0, 0))?;
        msgs.iter()
            .filter(|(ty, _)| *ty == RTM_NEWLINK)
            .map(|(_, p)| parse(p))
            .collect()
    }

    /// One link by name; `None` if there is no such link.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>, RtnlError> {
        check_name(name)?;
        let mut req = ifinfomsg(0, 0, 0);
        attr::put_str(&mut req, IFLA_IFNAME, name);
        match self.sock.request("RTM_GETLINK", RTM_GETLINK, 0, &req) {
            Ok(msgs) => msgs
                .iter()
                .find(|(ty, _)| *ty == RTM_NEWLINK)
                .map(|(_, p)| parse(p))
                .transpose(),
            Err(RtnlError::Kernel { errno, .. }) if errno == libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn setlink(&mut self, req: &[u8]) -> Result<(), RtnlError> {
        self.sock.request("RTM_SETLINK", RTM_SETLINK, 0, req)?;
        Ok(())
    }

    pub fn set_up(&mut self, ifindex: u32, up: bool) -> Result<(), RtnlError> {
        self.setlink(&ifinfomsg(ifindex, if up { IFF_UP } else { 0 }, IFF_UP))
    }

    pub fn set_mtu(&mut self, ifindex: u32, mtu: u32) -> Result<(), RtnlError> {
        let mut req = ifinfomsg(ifindex, 0, 0);
        attr::put_u32(&mut req, IFLA_MTU, mtu);
        self.setlink(&req)
    }

    pub fn set_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), RtnlError> {
        let mut req = ifinfomsg(ifindex, 0, 0);
        attr::put(&mut req, IFLA_ADDRESS, &mac);
        self.setlink(&req)
    }

    /// MAC, up and ARP off in one request: one change for those watching
    /// links (vswitchd reconfigures on each).
    pub fn set_mac_up_noarp(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), RtnlError> {
        let mut req = ifinfomsg(ifindex, IFF_UP | IFF_NOARP, IFF_UP | IFF_NOARP);
        attr::put(&mut req, IFLA_ADDRESS, &mac);
        self.setlink(&req)
    }

    /// `on == true` clears IFF_NOARP (ARP enabled); `false` sets it.
    pub fn set_arp(&mut self, ifindex: u32, on: bool) -> Result<(), RtnlError> {
        self.setlink(&ifinfomsg(
            ifindex,
            if on { 0 } else { IFF_NOARP },
            IFF_NOARP,
        ))
    }

    /// Creates the veth pair `a` <-> `b` (both down). EEXIST is an error here: a
    /// same-named link may be something else.
    pub fn create_veth(&mut self, a: &str, b: &str) -> Result<(), RtnlError> {
        check_name(a)?;
        check_name(b)?;
        let mut req = ifinfomsg(0, 0, 0);
        attr::put_str(&mut req, IFLA_IFNAME, a);
        let info = attr::nest_start(&mut req, IFLA_LINKINFO);
        attr::put_str(&mut req, IFLA_INFO_KIND, "veth");
        let data = attr::nest_start(&mut req, IFLA_INFO_DATA);
        let peer = attr::nest_start(&mut req, VETH_INFO_PEER);
        // VETH_INFO_PEER holds a whole ifinfomsg followed by the peer's attributes.
        req.extend_from_slice(&ifinfomsg(0, 0, 0));
        attr::put_str(&mut req, IFLA_IFNAME, b);
        attr::nest_end(&mut req, peer);
        attr::nest_end(&mut req, data);
        attr::nest_end(&mut req, info);
        self.sock
            .request("RTM_NEWLINK", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &req)?;
        Ok(())
    }

    pub fn delete_link(&mut self, ifindex: u32) -> Result<(), RtnlError> {
        self.sock
            .request("RTM_DELLINK", RTM_DELLINK, 0, &ifinfomsg(ifindex, 0, 0))?;
        Ok(())
    }

    /// Moves a link into the namespace `netns_fd` refers to (e.g. from `netns::open`).
    pub fn move_to_netns(&mut self, ifindex: u32, netns_fd: RawFd) -> Result<(), RtnlError> {
        let mut req = ifinfomsg(ifindex, 0, 0);
        attr::put_u32(&mut req, IFLA_NET_NS_FD, netns_fd as u32);
        self.setlink(&req)
    }
}
