//! Addresses: struct ifaddrmsg + IFA_* attributes (RTM_NEWADDR/DELADDR/GETADDR).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::attr::{self, attrs};
use crate::socket::{NLM_F_CREATE, NLM_F_EXCL};
use crate::{Rtnl, RtnlError};

pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;

const IFADDRMSG_LEN: usize = 8;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_PERMANENT: u32 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Addr {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub prefix: u8,
    /// Set by hand or by a tool (IFA_F_PERMANENT); unset for addresses the
    /// kernel made itself (SLAAC) or that expire.
    pub permanent: bool,
}

/// Decodes an address attribute of the given family.
pub(crate) fn ip_of(family: u8, d: &[u8]) -> Result<IpAddr, RtnlError> {
    match family as i32 {
        libc::AF_INET => <[u8; 4]>::try_from(d)
            .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
            .map_err(|_| RtnlError::Parse(format!("IPv4 address of {} bytes", d.len()))),
        libc::AF_INET6 => <[u8; 16]>::try_from(d)
            .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
            .map_err(|_| RtnlError::Parse(format!("IPv6 address of {} bytes", d.len()))),
        f => Err(RtnlError::Parse(format!("address family {f}"))),
    }
}

pub(crate) fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub(crate) fn family_of(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

pub(crate) fn check_prefix(ip: &IpAddr, prefix: u8) -> Result<(), RtnlError> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(RtnlError::Invalid(format!("prefix /{prefix} for {ip}")));
    }
    Ok(())
}

/// Parses an RTM_NEWADDR/RTM_DELADDR payload; `None` for families other than v4/v6.
pub(crate) fn parse(p: &[u8]) -> Result<Option<Addr>, RtnlError> {
    if p.len() < IFADDRMSG_LEN {
        return Err(RtnlError::Parse(format!("ifaddrmsg of {} bytes", p.len())));
    }
    let family = p[0];
    if family as i32 != libc::AF_INET && family as i32 != libc::AF_INET6 {
        return Ok(None);
    }
    let prefix = p[1];
    let ifindex = u32::from_ne_bytes(p[4..8].try_into().unwrap());
    // The 8-bit ifa_flags, superseded by IFA_FLAGS when the kernel sends it.
    let mut flags = p[2] as u32;
    let (mut local, mut address) = (None, None);
    for a in attrs(&p[IFADDRMSG_LEN..]) {
        let (ty, d) = a?;
        match ty {
            IFA_LOCAL => local = Some(ip_of(family, d)?),
            IFA_ADDRESS => address = Some(ip_of(family, d)?),
            IFA_FLAGS if d.len() == 4 => flags = u32::from_ne_bytes(d.try_into().unwrap()),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
    // point-to-point links (and the only one IPv6 sends otherwise).
    let addr = local
        .or(address)
        .ok_or_else(|| RtnlError::Parse(format!("address on {ifindex} without IFA_ADDRESS")))?;
    Ok(Some(Addr {
        ifindex,
        addr,
        prefix,
        permanent: flags & IFA_F_PERMANENT != 0,
    }))
}

fn ifaddrmsg(family: u8, prefix: u8, ifindex: u32) -> Vec<u8> {
    let mut b = vec![family, prefix, 0, 0]; // flags, scope universe
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b
}

fn addr_request(ifindex: u32, addr: &IpAddr, prefix: u8) -> Result<Vec<u8>, RtnlError> {
    check_prefix(addr, prefix)?;
    let mut req = ifaddrmsg(family_of(addr), prefix, ifindex);
    let b = ip_bytes(addr);
    // Both, as `ip addr` sends them: v4 keys on IFA_LOCAL, v6 takes either.
    attr::put(&mut req, IFA_LOCAL, &b);
    attr::put(&mut req, IFA_ADDRESS, &b);
    Ok(req)
}

impl Rtnl {
    /// Addresses of one link, or of all links.
    pub fn addrs(&mut self, ifindex: Option<u32>) -> Result<Vec<Addr>, RtnlError> {
        // The kernel ignores the ifindex of a dump request unless strict checking is
        // on, so filter here.
        let msgs = self
            .sock
            .dump("RTM_GETADDR", RTM_GETADDR, &ifaddrmsg(0, 0, 0))?;
        let mut out = Vec::new();
        for (ty, p) in &msgs {
            if *ty != RTM_NEWADDR {
                continue;
            }
            if let Some(a) = parse(p)? {
                if ifindex.is_none_or(|i| i == a.ifindex) {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }

    /// Adds an address; an address already present is fine.
    pub fn add_addr(&mut self, ifindex: u32, addr: IpAddr, prefix: u8) -> Result<(), RtnlError> {
        let req = addr_request(ifindex, &addr, prefix)?;
        match self
            .sock
            .request("RTM_NEWADDR", RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &req)
        {
            Err(RtnlError::Kernel { errno, .. }) if errno == libc::EEXIST => Ok(()),
            r => r.map(|_| ()),
        }
    }

    pub fn del_addr(&mut self, ifindex: u32, addr: IpAddr, prefix: u8) -> Result<(), RtnlError> {
        let req = addr_request(ifindex, &addr, prefix)?;
        self.sock.request("RTM_DELADDR", RTM_DELADDR, 0, &req)?;
        Ok(())
    }
}
