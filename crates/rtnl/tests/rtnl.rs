//! rtnetlink against the kernel, each test in its own namespace.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::TestNs;
use xnet_rtnl::{Addr, Event, Link, Monitor, Route, Rtnl, RtnlError};

fn link(r: &mut Rtnl, name: &str) -> Link {
    r.link_by_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no link {name}"))
}

fn veth(r: &mut Rtnl) -> (Link, Link) {
    r.create_veth("va", "vb").unwrap();
    (link(r, "va"), link(r, "vb"))
}

#[test]
fn links_lists_lo() {
    let ns = TestNs::new();
    ns.run(|| {
        let mut r = Rtnl::open().unwrap();
        let links = r.links().unwrap();
        let lo = links.iter().find(|l| l.name == "lo").expect("lo");
        assert_eq!(lo.index, 1);
        assert_eq!(lo.mtu, 65536);
        assert_eq!(lo.kind, None);
        assert!(r.link_by_name("nonexistent0").unwrap().is_none());
        assert!(matches!(
            r.link_by_name("this-name-is-too-long"),
            Err(RtnlError::Invalid(_))
        ));
    });
}

#[test]
fn veth_create_up_carrier_delete() {
    let ns = TestNs::new();
    ns.run(|| {
        let mut r = Rtnl::open().unwrap();
        let (a, b) = veth(&mut r);
        assert_eq!(a.kind.as_deref(), Some("veth"));
        assert_eq!(b.kind.as_deref(), Some("veth"));
        assert!(!a.admin_up && !a.carrier);
        assert!(a.mac.is_some());
        // EEXIST is an error for create_veth.
        let e = r.create_veth("va", "vc").unwrap_err();
        assert_eq!(e.errno(), Some(libc_eexist()));

        r.set_up(a.index, true).unwrap();
        let a1 = link(&mut r, "va");
        assert!(a1.admin_up);
        assert!(!a1.carrier, "no carrier while the peer is down");
        r.set_up(b.index, true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let a2 = link(&mut r, "va");
            if a2.carrier && a2.oper_up {
                break;
            }
            assert!(Instant::now() < deadline, "carrier never came: {a2:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        r.set_up(b.index, false).unwrap();
        assert!(!link(&mut r, "vb").admin_up);

        r.delete_link(a.index).unwrap();
        assert!(r.link_by_name("va").unwrap().is_none());
        assert!(r.link_by_name("vb").unwrap().is_none(), "peer goes too");
        let e = r.delete_link(a.index).unwrap_err();
        assert!(
            matches!(
                e,
                RtnlError::Kernel {
                    op: "RTM_DELLINK",
                    ..
                }
            ),
            "{e}"
        );
    });
}

fn libc_eexist() -> i32 {
    17
}

#[test]
fn mtu_mac_arp_read_back() {
    let ns = TestNs::new();
    let name = ns.name.clone();
    ns.run(|| {
        let mut r = Rtnl::open().unwrap();
        let (a, _) = veth(&mut r);
        r.set_mtu(a.index, 1400).unwrap();
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        r.set_mac(a.index, mac).unwrap();
        r.set_arp(a.index, false).unwrap();
        let l = link(&mut r, "va");
        assert_eq!(l.mtu, 1400);
        assert_eq!(l.mac, Some(mac));
        assert!(l.noarp);
        r.set_arp(a.index, true).unwrap();
        assert!(!link(&mut r, "va").noarp);
        let e = r.set_mtu(a.index, 10).unwrap_err();
        assert!(
            matches!(
                e,
                RtnlError::Kernel {
                    op: "RTM_SETLINK",
                    errno: 22
                }
            ),
            "{e}"
        );
    });
    let shown = TestNs { name }.ip(&["link", "show", "va"]);
    // The guard above was consumed by ns.run's borrow ending; this second guard only
    // re-deletes the same namespace at the end, which is harmless.
    assert!(shown.contains("mtu 1400"), "{shown}");
    assert!(shown.contains("02:11:22:33:44:55"), "{shown}");
}

#[test]
fn addresses_v4_v6() {
    let ns = TestNs::new();
    let shown = {
        let ns_name = ns.name.clone();
        ns.run(move || {
            let mut r = Rtnl::open().unwrap();
            let (a, _) = veth(&mut r);
            let v4: IpAddr = "192.0.2.10".parse().unwrap();
            let v6: IpAddr = "2001:db8::10".parse().unwrap();
            r.add_addr(a.index, v4, 24).unwrap();
            r.add_addr(a.index, v4, 24).unwrap(); // EEXIST → Ok
            r.add_addr(a.index, v6, 64).unwrap();
            let got = r.addrs(Some(a.index)).unwrap();
            assert!(
                got.contains(&Addr {
                    ifindex: a.index,
                    addr: v4,
                    prefix: 24,
                    permanent: true
                }),
                "{got:?}"
            );
            assert!(
                got.contains(&Addr {
                    ifindex: a.index,
                    addr: v6,
                    prefix: 64,
                    permanent: true
                }),
                "{got:?}"
            );
            let all = r.addrs(None).unwrap();
            assert!(all
                .iter()
                .any(|x| x.addr == IpAddr::V4(Ipv4Addr::LOCALHOST) || x.ifindex == a.index));
            assert!(r.addrs(Some(1)).unwrap().iter().all(|x| x.ifindex == 1));
            let shown = std::process::Command::new("ip")
                .args(["-n", &ns_name, "addr", "show", "va"])
                .output()
                .unwrap();
            r.del_addr(a.index, v4, 24).unwrap();
            r.del_addr(a.index, v6, 64).unwrap();
            let got = r.addrs(Some(a.index)).unwrap();
            assert!(!got.iter().any(|x| x.addr == v4 || x.addr == v6), "{got:?}");
            assert!(r.del_addr(a.index, v4, 24).is_err());
            assert!(matches!(
                r.add_addr(a.index, v4, 33),
                Err(RtnlError::Invalid(_))
            ));
            String::from_utf8_lossy(&shown.stdout).into_owned()
        })
    };
    assert!(shown.contains("inet 192.0.2.10/24"), "{shown}");
    assert!(shown.contains("inet6 2001:db8::10/64"), "{shown}");
}

#[test]
fn routes_replace_and_delete() {
    let ns = TestNs::new();
    let ns_name = ns.name.clone();
    ns.run(move || {
        let mut r = Rtnl::open().unwrap();
        let (a, b) = veth(&mut r);
        r.set_up(a.index, true).unwrap();
        r.set_up(b.index, true).unwrap();
        r.add_addr(a.index, "192.0.2.1".parse().unwrap(), 24)
            .unwrap();
        r.add_addr(a.index, "2001:db8:1::1".parse().unwrap(), 64)
            .unwrap();

        let static4 = Route {
            dst: "10.99.0.0".parse().unwrap(),
            prefix: 24,
            gateway: Some("192.0.2.254".parse().unwrap()),
            oif: Some(a.index),
            protocol: 4, // RTPROT_STATIC
            metric: None,
        };
        let default4 = Route {
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            prefix: 0,
            gateway: Some("192.0.2.254".parse().unwrap()),
            oif: None,
            protocol: 4,
            metric: Some(100),
        };
        let default6 = Route {
            dst: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            prefix: 0,
            gateway: Some("2001:db8:1::fe".parse().unwrap()),
            oif: Some(a.index),
            protocol: 4,
            metric: Some(1024),
        };
        for rt in [&static4, &default4, &default6] {
            r.replace_route(rt).unwrap();
            r.replace_route(rt).unwrap(); // replace is idempotent
        }
        let routes = r.routes().unwrap();
        let find = |rs: &[Route], dst: IpAddr, prefix: u8| {
            rs.iter()
                .find(|x| x.dst == dst && x.prefix == prefix)
                .copied()
        };
        let got = find(&routes, static4.dst, 24).expect("10.99.0.0/24");
        assert_eq!(got.gateway, static4.gateway);
        assert_eq!(got.oif, Some(a.index));
        assert_eq!(got.protocol, 4);
        let got = find(&routes, default4.dst, 0).expect("default v4");
        assert_eq!(got.metric, Some(100));
        assert_eq!(got.oif, Some(a.index), "kernel resolves the oif");
        let got = find(&routes, default6.dst, 0).expect("default v6");
        assert_eq!(got.gateway, default6.gateway);
        // the kernel's connected route
        assert!(
            find(&routes, "192.0.2.0".parse().unwrap(), 24).is_some(),
            "{routes:?}"
        );

        let out = std::process::Command::new("ip")
            .args(["-n", &ns_name, "route", "show"])
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            shown.contains("10.99.0.0/24 via 192.0.2.254 dev va proto static"),
            "{shown}"
        );

        // Replace the gateway in place.
        let moved = Route {
            gateway: Some("192.0.2.253".parse().unwrap()),
            ..static4
        };
        r.replace_route(&moved).unwrap();
        let routes = r.routes().unwrap();
        assert_eq!(
            find(&routes, static4.dst, 24).unwrap().gateway,
            moved.gateway
        );

        for rt in [&moved, &default4, &default6] {
            r.del_route(rt).unwrap();
        }
        let routes = r.routes().unwrap();
        assert!(find(&routes, static4.dst, 24).is_none());
        assert!(find(&routes, default4.dst, 0).is_none());
        assert!(find(&routes, default6.dst, 0).is_none());
        let e = r.del_route(&moved).unwrap_err();
        assert!(
            matches!(
                e,
                RtnlError::Kernel {
                    op: "RTM_DELROUTE",
                    ..
                }
            ),
            "{e}"
        );
        // Gateway of the other family is refused before reaching the kernel.
        let bad = Route {
            gateway: default6.gateway,
            ..static4
        };
        assert!(matches!(r.replace_route(&bad), Err(RtnlError::Invalid(_))));
    });
}

#[test]
fn monitor_sees_changes() {
    let ns = TestNs::new();
    ns.run(|| {
        let mut m = Monitor::open().unwrap();
        assert!(m.as_raw_fd() >= 0);
        // Nothing happens yet: the timeout returns an empty batch.
        assert!(m.recv(Some(Duration::from_millis(50))).unwrap().is_empty());

        let mut r = Rtnl::open().unwrap();
        let (a, b) = veth(&mut r);
        r.set_up(a.index, true).unwrap();
        r.set_up(b.index, true).unwrap();
        let v4: IpAddr = "198.51.100.1".parse().unwrap();
        r.add_addr(a.index, v4, 24).unwrap();
        let rt = Route {
            dst: "10.99.0.0".parse().unwrap(),
            prefix: 24,
            gateway: Some("198.51.100.254".parse().unwrap()),
            oif: Some(a.index),
            protocol: 4,
            metric: None,
        };
        r.replace_route(&rt).unwrap();
        // IPv4 routes flushed with their link are not announced, so delete it first.
        r.del_route(&rt).unwrap();
        r.delete_link(b.index).unwrap();

        let (mut new_link, mut del_link, mut new_addr, mut new_route, mut del_route) =
            (false, false, false, false, false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(new_link && del_link && new_addr && new_route && del_route) {
            assert!(
                Instant::now() < deadline,
                "missing events: link {new_link} dellink {del_link} addr {new_addr} route {new_route} delroute {del_route}"
            );
            for ev in m.recv(Some(Duration::from_millis(200))).unwrap() {
                match ev {
                    Event::NewLink(l) if l.name == "va" => {
                        new_link = true;
                        assert_eq!(l.kind.as_deref(), Some("veth"));
                    }
                    Event::DelLink { index, name } if name == "vb" || name == "va" => {
                        assert!(index == a.index || index == b.index);
                        del_link = true;
                    }
                    Event::NewAddr(x) if x.addr == v4 => {
                        assert_eq!((x.ifindex, x.prefix), (a.index, 24));
                        new_addr = true;
                    }
                    Event::NewRoute(x) if x.dst == rt.dst => {
                        assert_eq!(x.gateway, rt.gateway);
                        new_route = true;
                    }
                    Event::DelRoute(x) if x.dst == rt.dst => del_route = true,
                    _ => {}
                }
            }
        }
    });
}

#[test]
fn move_to_netns() {
    let ns1 = TestNs::new();
    let ns2 = TestNs::new();
    let target = ns2.name.clone();
    let moved_index = ns1.run(move || {
        let mut r = Rtnl::open().unwrap();
        let (_, b) = veth(&mut r);
        let f = xnet_rtnl::netns::open(&target).unwrap();
        r.move_to_netns(b.index, f.as_raw_fd()).unwrap();
        assert!(r.link_by_name("vb").unwrap().is_none());
        assert!(r.link_by_name("va").unwrap().is_some());
        b.index
    });
    let seen = ns2.run(|| {
        let mut r = Rtnl::open().unwrap();
        r.link_by_name("vb").unwrap()
    });
    let seen = seen.expect("vb in the second namespace");
    assert_eq!(seen.kind.as_deref(), Some("veth"));
    let _ = moved_index;
    assert!(xnet_rtnl::netns::open("no/such").is_err());
}

#[test]
fn stats_count_traffic() {
    let ns = TestNs::new();
    ns.run(|| {
        let mut r = Rtnl::open().unwrap();
        let lo = link(&mut r, "lo");
        r.set_up(lo.index, true).unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        for _ in 0..5 {
            sock.send_to(&[0u8; 100], addr).unwrap();
        }
        let lo = link(&mut r, "lo");
        assert!(lo.stats.tx_packets >= 5, "{:?}", lo.stats);
        assert!(lo.stats.rx_bytes >= 500, "{:?}", lo.stats);
    });
}

#[test]
fn malformed_bytes_are_errors() {
    // Header claims more bytes than there are.
    let mut m = vec![0u8; 16];
    m[0..4].copy_from_slice(&100u32.to_ne_bytes());
    m[4..6].copy_from_slice(&16u16.to_ne_bytes());
    assert!(matches!(
        Event::parse_datagram(&m),
        Err(RtnlError::Parse(_))
    ));
    // Too short for a header.
    assert!(Event::parse_datagram(&[1, 2, 3]).is_err());
    // RTM_NEWLINK whose ifinfomsg is truncated.
    let mut m = vec![0u8; 20];
    m[0..4].copy_from_slice(&20u32.to_ne_bytes());
    m[4..6].copy_from_slice(&16u16.to_ne_bytes());
    assert!(Event::parse_datagram(&m).is_err());
    // RTM_NEWLINK with an attribute overrunning the message.
    let mut m = vec![0u8; 36];
    m[0..4].copy_from_slice(&36u32.to_ne_bytes());
    m[4..6].copy_from_slice(&16u16.to_ne_bytes());
    m[32..34].copy_from_slice(&40u16.to_ne_bytes());
    m[34..36].copy_from_slice(&3u16.to_ne_bytes());
    assert!(Event::parse_datagram(&m).is_err());
    // RTM_NEWADDR with an IPv4 address of 3 bytes.
    let mut m = vec![0u8; 16 + 8 + 8];
    m[0..4].copy_from_slice(&32u32.to_ne_bytes());
    m[4..6].copy_from_slice(&20u16.to_ne_bytes());
    m[16] = 2; // AF_INET
    m[24..26].copy_from_slice(&7u16.to_ne_bytes());
    m[26..28].copy_from_slice(&2u16.to_ne_bytes());
    assert!(Event::parse_datagram(&m).is_err());
    // An empty datagram and unknown message types are fine.
    assert!(Event::parse_datagram(&[]).unwrap().is_empty());
    let mut m = vec![0u8; 16];
    m[0..4].copy_from_slice(&16u32.to_ne_bytes());
    m[4..6].copy_from_slice(&999u16.to_ne_bytes());
    assert!(Event::parse_datagram(&m).unwrap().is_empty());
}

/// `ethtool -s`: a tap device stores speed, duplex and autonegotiation; a
/// veth cannot change them and says so.
#[test]
fn link_settings_set_on_tap_refused_on_veth() {
    use xnet_rtnl::ethtool::{self, Duplex, LinkRequest};
    let ns = TestNs::new();
    ns.run(|| {
        let mut r = Rtnl::open().unwrap();
        veth(&mut r);
        let st = std::process::Command::new("ip")
            .args(["tuntap", "add", "dev", "tp0", "mode", "tap"])
            .status()
            .unwrap();
        assert!(st.success());
        let req = LinkRequest {
            speed_mbps: Some(100),
            duplex: Some(Duplex::Half),
            autoneg: Some(false),
            advertise: None,
        };
        assert!(ethtool::set_link("tp0", &req).unwrap(), "first set writes");
        let got = ethtool::link_settings("tp0").unwrap().unwrap();
        assert_eq!(got.speed_mbps, Some(100));
        assert_eq!(got.duplex, Some(Duplex::Half));
        assert!(
            !ethtool::set_link("tp0", &req).unwrap(),
            "unchanged: no write"
        );
        let e = ethtool::set_link("va", &req).unwrap_err();
        assert!(
            matches!(e, ethtool::EthtoolError::LinkUnsupported { .. }),
            "{e}"
        );
        // Nothing asked: nothing written, even where setting is impossible.
        assert!(!ethtool::set_link("va", &LinkRequest::default()).unwrap());
    });
}
