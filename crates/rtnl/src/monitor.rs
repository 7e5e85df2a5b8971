//! Multicast events: link, address and route changes as they happen.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::socket::{split, NlSocket};
use crate::{addr, link, route, Addr, Link, Route, RtnlError};

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;
/// Enough for bursts of thousands of link events (VIF hotplug storms).
const MONITOR_RCVBUF: i32 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    NewLink(Link),
    DelLink {
        index: u32,
        name: String,
    },
    NewAddr(Addr),
    DelAddr(Addr),
    /// Only main-table unicast routes, as `Rtnl::routes` reports them.
    NewRoute(Route),
    DelRoute(Route),
}

impl Event {
    /// Decodes a datagram of netlink messages into events; messages that are no
    /// event (or describe bridge ports, other tables, …) are skipped.
    pub fn parse_datagram(buf: &[u8]) -> Result<Vec<Event>, RtnlError> {
        let mut out = Vec::new();
        for m in split(buf)? {
            let ev = match m.ty {
                // AF_BRIDGE link messages are about bridge ports; a DELLINK of that
                // family only means "left the bridge".
                link::RTM_NEWLINK | link::RTM_DELLINK
                    if link::family(m.payload) == Some(libc::AF_BRIDGE as u8) =>
                {
                    None
                }
                link::RTM_NEWLINK => Some(Event::NewLink(link::parse(m.payload)?)),
                link::RTM_DELLINK => {
                    let (index, name) = link::parse_del(m.payload)?;
                    Some(Event::DelLink { index, name })
                }
                addr::RTM_NEWADDR => addr::parse(m.payload)?.map(Event::NewAddr),
                addr::RTM_DELADDR => addr::parse(m.payload)?.map(Event::DelAddr),
                route::RTM_NEWROUTE => route::parse(m.payload)?.map(Event::NewRoute),
                route::RTM_DELROUTE => route::parse(m.payload)?.map(Event::DelRoute),
                _ => None,
            };
            out.extend(ev);
        }
        Ok(out)
    }
}

/// A socket subscribed to link, v4/v6 address and v4/v6 route groups of the network
/// namespace of the calling thread at `open` time.
pub struct Monitor {
    sock: NlSocket,
}

impl Monitor {
    pub fn open() -> Result<Monitor, RtnlError> {
        let sock = NlSocket::open(
            RTMGRP_LINK
                | RTMGRP_IPV4_IFADDR
                | RTMGRP_IPV6_IFADDR
                | RTMGRP_IPV4_ROUTE
                | RTMGRP_IPV6_ROUTE,
        )?;
        sock.set_rcvbuf(MONITOR_RCVBUF);
        Ok(Monitor { sock })
    }

    /// Waits for events (forever with `None`) and returns all that are queued; an
    /// empty vector means the timeout passed. `Err(Overrun)` means events were lost:
    /// the caller should re-read the state with `Rtnl`.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Vec<Event>, RtnlError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let wait_ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Round up so a sub-millisecond remainder does not spin.
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
                }
            };
            let mut pfd = libc::pollfd {
                fd: self.sock.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, wait_ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(RtnlError::Io {
                    op: "poll(netlink)",
                    source: e,
                });
            }
            let mut events = Vec::new();
            if r > 0 {
                // Drain everything queued so one call returns a whole burst.
                while let Some(n) = self.sock.recv(true)? {
                    events.extend(Event::parse_datagram(&self.sock.buf()[..n])?);
                }
            }
            if !events.is_empty() {
                return Ok(events);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(events);
            }
        }
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.sock.raw_fd()
    }
}

impl std::os::fd::AsRawFd for Monitor {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.raw_fd()
    }
}
