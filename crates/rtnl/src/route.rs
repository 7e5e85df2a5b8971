//! Routes of the main table: struct rtmsg + RTA_* attributes
//! (RTM_NEWROUTE/DELROUTE/GETROUTE).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::{check_prefix, family_of, ip_bytes, ip_of};
use crate::attr::{self, attrs};
use crate::socket::{NLM_F_CREATE, NLM_F_REPLACE};
use crate::{Rtnl, RtnlError};

pub(crate) const RTM_NEWROUTE: u16 = 24;
pub(crate) const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;

const RTMSG_LEN: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
/// On delete: match any scope.
const RT_SCOPE_NOWHERE: u8 = 255;
const RTM_F_CLONED: u32 = 0x200;

/// A unicast route of the main table. `protocol` is RTPROT_* (2 kernel, 3 boot,
/// 4 static, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub protocol: u8,
    pub metric: Option<u32>,
}

/// Parses an RTM_NEWROUTE/RTM_DELROUTE payload. `None` for what `routes()` does not
/// report: other tables, non-unicast types, cached clones, other families.
pub(crate) fn parse(p: &[u8]) -> Result<Option<Route>, RtnlError> {
    if p.len() < RTMSG_LEN {
        return Err(RtnlError::Parse(format!("rtmsg of {} bytes", p.len())));
    }
    let family = p[0];
    let prefix = p[1];
    let mut table = p[4] as u32;
    let protocol = p[5];
    let rtype = p[7];
    let flags = u32::from_ne_bytes(p[8..12].try_into().unwrap());
    let (mut dst, mut gateway, mut oif, mut metric) = (None, None, None, None);
    let v4v6 = family as i32 == libc::AF_INET || family as i32 == libc::AF_INET6;
    for a in attrs(&p[RTMSG_LEN..]) {
        let (ty, d) = a?;
        match ty {
            RTA_TABLE => table = attr::get_u32("RTA_TABLE", d)?,
            RTA_DST if v4v6 => dst = Some(ip_of(family, d)?),
            RTA_GATEWAY if v4v6 => gateway = Some(ip_of(family, d)?),
            RTA_OIF => oif = Some(attr::get_u32("RTA_OIF", d)?),
            RTA_PRIORITY => metric = Some(attr::get_u32("RTA_PRIORITY", d)?),
            _ => {}
        }
    }
    if !v4v6 || table != RT_TABLE_MAIN || rtype != RTN_UNICAST || flags & RTM_F_CLONED != 0 {
        return Ok(None);
    }
    let dst = match dst {
        Some(d) => d,
        None if family as i32 == libc::AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    Ok(Some(Route {
        dst,
        prefix,
        gateway,
        oif,
        protocol,
        metric,
    }))
}

fn route_request(r: &Route, del: bool) -> Result<Vec<u8>, RtnlError> {
    check_prefix(&r.dst, r.prefix)?;
    if let Some(gw) = &r.gateway {
        if gw.is_ipv4() != r.dst.is_ipv4() {
            return Err(RtnlError::Invalid(format!(
                "gateway {gw} for {}/{}",
                r.dst, r.prefix
            )));
        }
    }
    let (scope, rtype) = match (del, r.gateway.is_some() || r.dst.is_ipv6()) {
        (true, _) => (RT_SCOPE_NOWHERE, 0),
        (false, true) => (RT_SCOPE_UNIVERSE, RTN_UNICAST),
        // A v4 route without a gateway is on-link.
        (false, false) => (RT_SCOPE_LINK, RTN_UNICAST),
    };
    let mut req = vec![
        family_of(&r.dst),
        r.prefix,
        0, // src_len
        0, // tos
        RT_TABLE_MAIN as u8,
        r.protocol,
        scope,
        rtype,
    ];
    req.extend_from_slice(&0u32.to_ne_bytes());
    if r.prefix > 0 {
        attr::put(&mut req, RTA_DST, &ip_bytes(&r.dst));
    }
    if let Some(gw) = &r.gateway {
        attr::put(&mut req, RTA_GATEWAY, &ip_bytes(gw));
    }
    if let Some(oif) = r.oif {
        attr::put_u32(&mut req, RTA_OIF, oif);
    }
    if let Some(m) = r.metric {
        attr::put_u32(&mut req, RTA_PRIORITY, m);
    }
    Ok(req)
}

impl Rtnl {
    /// Unicast routes of the main table, IPv4 and IPv6.
    pub fn routes(&mut self) -> Result<Vec<Route>, RtnlError> {
        let mut req = vec![libc::AF_UNSPEC as u8, 0, 0, 0, 0, 0, 0, 0];
        req.extend_from_slice(&0u32.to_ne_bytes());
        let msgs = self.sock.dump("RTM_GETROUTE", RTM_GETROUTE, &req)?;
        let mut out = Vec::new();
        for (ty, p) in &msgs {
            if *ty == RTM_NEWROUTE {
                if let Some(r) = parse(p)? {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Adds the route or replaces the one with the same destination (and metric).
    pub fn replace_route(&mut self, r: &Route) -> Result<(), RtnlError> {
        let req = route_request(r, false)?;
        self.sock.request(
            "RTM_NEWROUTE",
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_REPLACE,
            &req,
        )?;
        Ok(())
    }

    /// Deletes a route; `protocol` 0 and `metric`/`gateway`/`oif` None match any.
    pub fn del_route(&mut self, r: &Route) -> Result<(), RtnlError> {
        let req = route_request(r, true)?;
        self.sock.request("RTM_DELROUTE", RTM_DELROUTE, 0, &req)?;
        Ok(())
    }
}
