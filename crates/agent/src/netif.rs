//! The kernel side over netlink: devices up, addresses on xnet's bridge
//! devices, default and static routes, resolv.conf. Only differences are
//! written.

use crate::compile::{Desired, RouteSpec};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use xnet_rtnl::{Link, Route, Rtnl, RtnlError};

const RTPROT_STATIC: u8 = 4;

/// Routes this agent installed, so removing a key removes exactly those.
#[derive(Default)]
pub struct NetIf {
    routes: BTreeSet<(IpAddr, u8, IpAddr, String)>,
    /// `dev/offload/state` settings the driver refused.
    ethtool_refused: BTreeSet<String>,
}

/// Runs a netlink dump again when the kernel reports it was interrupted by
/// concurrent changes (NLM_F_DUMP_INTR, seen as EINTR): links come and go
/// while vswitchd builds bridges.
pub fn dump<T>(mut f: impl FnMut() -> Result<T, RtnlError>) -> Result<T, RtnlError> {
    // While vswitchd creates a thousand devices, back-to-back retries are all
    // interrupted: wait a little longer each time (at most about 2 s in all).
    let mut tries = 0u64;
    loop {
        match f() {
            Err(e) if e.errno() == Some(4) && tries < 60 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(tries));
            }
            r => return r,
        }
    }
}

/// Waits (bounded) until the named devices exist.
pub fn wait_links(rt: &mut Rtnl, names: &[String], max: Duration) -> Result<Vec<Link>, RtnlError> {
    let deadline = Instant::now() + max;
    loop {
        let links = dump(|| rt.links())?;
        let have: std::collections::HashSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
        let all = names.iter().all(|n| have.contains(n.as_str()));
        if all || Instant::now() >= deadline {
            return Ok(links);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl NetIf {
    pub fn apply(
        &mut self,
        rt: &mut Rtnl,
        links: &[Link],
        d: &Desired,
        resolv: &Path,
    ) -> Result<u64, RtnlError> {
        let mut writes = 0;
        let by_name: HashMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
        let index = |n: &str| by_name.get(n).map(|l| l.index);
        for name in &d.up {
            if let Some(l) = by_name.get(name.as_str()) {
                if !l.admin_up {
                    rt.set_up(l.index, true)?;
                    writes += 1;
                }
            }
        }
        writes += backends(rt, &by_name, &d.backends)?;
        let addrs = dump(|| rt.addrs(None))?;
        let mut by_index: HashMap<u32, Vec<&xnet_rtnl::Addr>> = HashMap::new();
        for a in &addrs {
            by_index.entry(a.ifindex).or_default().push(a);
        }
        for (dev, want) in &d.addrs {
            let Some(ix) = index(dev) else { continue };
            let have: Vec<(IpAddr, u8)> = by_index
                .get(&ix)
                .into_iter()
                .flatten()
                .filter(
                    |a| !matches!(a.addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80),
                )
                // SLAAC's own addresses belong to the kernel where it is on.
                .filter(|a| a.permanent || !d.autoconf.contains(dev))
                .map(|a| (a.addr, a.prefix))
                .collect();
            for w in want {
                if !have.contains(w) {
                    rt.add_addr(ix, w.0, w.1)?;
                    writes += 1;
                }
            }
            for h in &have {
                if !want.contains(h) {
                    rt.del_addr(ix, h.0, h.1)?;
                    writes += 1;
                }
            }
        }
        for (dev, settings) in &d.ethtool {
            for &(feature, on) in settings {
                // A NIC without the feature (or gone) is left as it is.
                // One the driver will not change is tried once, not every pass.
                let key = format!("{dev}/{feature:?}/{on}");
                if self.ethtool_refused.contains(&key) {
                    continue;
                }
                if let Ok(Some(cur)) = xnet_rtnl::ethtool::get_offload(dev, feature) {
                    if cur != on {
                        let _ = xnet_rtnl::ethtool::set_offload(dev, feature, on);
                        writes += 1;
                        if xnet_rtnl::ethtool::get_offload(dev, feature).ok().flatten() != Some(on)
                        {
                            self.ethtool_refused.insert(key);
                        }
                    }
                }
            }
        }
        for dev in d.addrs.keys() {
            if index(dev).is_some() {
                writes += ipv6_autoconf(dev, d.autoconf.contains(dev));
            }
        }
        for (dev, req) in &d.link {
            // Refused once (a veth, a driver without the mode): not every pass.
            let key = format!("{dev}/{req:?}");
            if index(dev).is_none() || self.ethtool_refused.contains(&key) {
                continue;
            }
            match xnet_rtnl::ethtool::set_link(dev, req) {
                Ok(true) => writes += 1,
                Ok(false) => {}
                Err(e) => {
                    eprintln!("xnet agent: ethtool -s {dev}: {e}");
                    self.ethtool_refused.insert(key);
                }
            }
        }
        let devs: Vec<&String> = d.addrs.keys().collect();
        writes += self.routes(rt, links, &d.routes, &devs)?;
        if let Some(text) = &d.resolv {
            if std::fs::read_to_string(resolv).ok().as_deref() != Some(text.as_str()) {
                let tmp = resolv.with_extension("xnet-tmp");
                if std::fs::write(&tmp, text)
                    .and_then(|_| std::fs::rename(&tmp, resolv))
                    .is_ok()
                {
                    writes += 1;
                }
            }
        }
        Ok(writes)
    }

    fn routes(
        &mut self,
        rt: &mut Rtnl,
        links: &[Link],
        want: &[RouteSpec],
        xnet_devices: &[&String],
    ) -> Result<u64, RtnlError> {
        let mut writes = 0;
        let have = dump(|| rt.routes())?;
        let index = |n: &str| links.iter().find(|l| l.name == n).map(|l| l.index);
        let mut now = BTreeSet::new();
        for r in want {
            let Some(ix) = index(&r.dev) else { continue };
            let route = Route {
                dst: r.dst,
                prefix: r.prefix,
                gateway: Some(r.gateway),
                oif: Some(ix),
                protocol: RTPROT_STATIC,
                metric: None,
            };
            let present = have.iter().any(|h| {
                h.dst == r.dst
                    && h.prefix == r.prefix
                    && h.gateway == Some(r.gateway)
                    && h.oif == Some(ix)
            });
            if !present {
                match rt.replace_route(&route) {
                    Ok(()) => writes += 1,
                    // The gateway is not reachable yet (address not up): next pass.
                    Err(e) if e.errno() == Some(libc_enetunreach()) => {}
                    Err(e) => return Err(e),
                }
            }
            now.insert((r.dst, r.prefix, r.gateway, r.dev.clone()));
        }
        // Ours: static-protocol routes on xnet's bridge devices. Found in the
        // kernel, so keys removed while the agent was down are cleaned too.
        let xnet_devs: BTreeSet<u32> = xnet_devices.iter().filter_map(|n| index(n)).collect();
        for h in &have {
            let Some(oif) = h.oif else { continue };
            if h.protocol != RTPROT_STATIC || !xnet_devs.contains(&oif) {
                continue;
            }
            let dev = links
                .iter()
                .find(|l| l.index == oif)
                .map(|l| l.name.clone())
                .unwrap_or_default();
            let key = (h.dst, h.prefix, h.gateway.unwrap_or(h.dst), dev);
            if h.gateway.is_some() && !now.contains(&key) {
                rt.del_route(h)?;
                writes += 1;
            }
        }
        self.routes = now;
        Ok(writes)
    }
}

/// Router advertisements and SLAAC on or off for one device (the sysctls of
/// the agent's own namespace); returns the number of writes.
fn ipv6_autoconf(dev: &str, on: bool) -> u64 {
    let want = if on { "1" } else { "0" };
    let mut writes = 0;
    for key in ["accept_ra", "autoconf"] {
        let path = format!("/proc/sys/net/ipv6/conf/{dev}/{key}");
        // A device without IPv6 (disabled, or the sysctl absent) is left alone.
        let Ok(cur) = std::fs::read_to_string(&path) else {
            continue;
        };
        if cur.trim() != want && std::fs::write(&path, want).is_ok() {
            writes += 1;
        }
    }
    writes
}

/// A backend device that just appeared (the fast path): up, Xen's dummy
/// MAC and no ARP, in one request.
pub fn plug(rt: &mut Rtnl, l: &Link) -> Result<u64, RtnlError> {
    if l.admin_up && l.noarp && l.mac == Some(BACKEND_MAC) {
        return Ok(0);
    }
    rt.set_mac_up_noarp(l.index, BACKEND_MAC)?;
    Ok(1)
}

/// Xen's dummy MAC for netback devices: the guest owns the VIF's MAC, the
/// backend end must never be picked as a bridge's address or answer ARP.
pub const BACKEND_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

/// Gives VIF backend devices the dummy MAC and IFF_NOARP (only where they
/// differ, so an unchanged host gets no write).
fn backends(
    rt: &mut Rtnl,
    by_name: &HashMap<&str, &Link>,
    want: &BTreeSet<String>,
) -> Result<u64, RtnlError> {
    let mut writes = 0;
    for dev in want {
        let Some(l) = by_name.get(dev.as_str()) else {
            continue;
        };
        if l.mac != Some(BACKEND_MAC) {
            match rt.set_mac(l.index, BACKEND_MAC) {
                Ok(()) => writes += 1,
                // Gone meanwhile: its removal starts another pass.
                Err(e) if e.errno() == Some(19) => continue,
                Err(e) => return Err(e),
            }
        }
        if !l.noarp {
            match rt.set_arp(l.index, false) {
                Ok(()) => writes += 1,
                Err(e) if e.errno() == Some(19) => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(writes)
}

fn libc_enetunreach() -> i32 {
    101
}
