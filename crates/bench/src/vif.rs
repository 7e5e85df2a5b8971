//! `xnet-bench vif`: VIF plugs on one host, from the moment the backend
//! device exists until OVS holds its port (with an ofport) and all of its
//! locking flows. The VIFs are locked so that every plug has flows to
//! install. The baseline runs, per plug, the command sequence of XAPI's vif
//! hotplug path on Open vSwitch, one fork per step: `ip link` for the MTU,
//! the dummy MAC, ARP off and up; one `ovs-vsctl` add-port with the
//! external_ids; one `ovs-vsctl get … ofport`; one `ovs-ofctl add-flow` per
//! locking rule (the same rule set).

use crate::realize::{OvsHost, XnetHost};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use xapi_wire::Value;
use xnet_model::db::{self, s};
use xnet_model::Db;
use xnet_openflow::{Conn, Field, FlowFilter, PORT_ANY, TABLE_ALL};

fn mac_of(d: usize) -> String {
    format!("02:00:00:00:{:02x}:{:02x}", d >> 8, d & 0xff)
}
fn ip_of(d: usize) -> String {
    format!("10.77.{}.{}", d >> 8, d & 0xff)
}

/// `dev`'s Interface row in the client's monitored replica (pushed by
/// ovsdb-server, so watching costs the switch nothing): `None` before it is
/// committed, then the ofport vswitchd has given it and the one asked for.
fn iface(c: &xnet_ovsdb::Client, dev: &str) -> Result<Option<(Option<u32>, Option<u32>)>> {
    c.poll()?;
    let num = |v: &serde_json::Value| v.as_i64().filter(|p| *p > 0).map(|p| p as u32);
    Ok(c.replica(|r| {
        r.rows("Interface")
            .find(|(_, row)| row["name"].as_str() == Some(dev))
            .map(|(_, row)| (num(&row["ofport"]), num(&row["ofport_request"])))
    }))
}

/// Where the guests' ends of the backend pairs live, as frontends live in
/// the guests on Xen: the host sees only the backend device, which appears
/// in it whole (created here, then moved in, as netback's appears in dom0).
struct Guests {
    ns: String,
    rt: xnet_rtnl::Rtnl,
}
impl Guests {
    fn new(tag: &str) -> Result<Guests> {
        let ns = format!("xbench{tag}g{}", std::process::id());
        crate::realize::run(&["ip", "netns", "add", &ns])?;
        let rt = xnet_rtnl::netns::run_in(&ns, xnet_rtnl::Rtnl::open)??;
        Ok(Guests { ns, rt })
    }
    /// Makes backend `dev` appear in the namespace `host` refers to.
    fn backend(&mut self, dev: &str, guest: &str, host: &std::fs::File) -> Result<()> {
        use std::os::fd::AsRawFd;
        self.rt.create_veth(dev, guest)?;
        let l = self
            .rt
            .link_by_name(dev)?
            .with_context(|| format!("{dev} not created"))?;
        self.rt.move_to_netns(l.index, host.as_raw_fd())?;
        Ok(())
    }
}
impl Drop for Guests {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn bench(n: usize, baseline_n: usize) -> Result<()> {
    println!("xnet-bench vif: {n} locked VIF plugs on one host (userspace datapath), backend device appears -> port and flows in OVS");
    let x = XnetHost::start("v", 1)?;
    let args = Value::Struct(
        [
            ("name_label".to_string(), db::vs("bench vifs")),
            (
                "other_config".to_string(),
                Value::Struct(Default::default()),
            ),
        ]
        .into_iter()
        .collect(),
    );
    let net = x
        .api
        .run("network.create", &[args])
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let net = net.as_str().unwrap_or("").to_string();
    // The records exist before the domains start, as on a XAPI host: n VMs
    // running here as domains 1..=n, each with a locked, attached VIF.
    let hostref = x.hostref.clone();
    let (vifs, _) = x
        .store
        .write(|t| {
            let mut t = xnet_api::tables::TxnTables(t);
            let mut d = Db::new(&mut t);
            let mut vifs = vec![];
            for dom in 1..=n {
                let vm = d.create(
                    &xnet_model::schema::VM,
                    vec![("name_label", db::vs(format!("b{dom}")))],
                );
                xnet_model::vm::set_domain(&mut d, &vm, Some(&hostref), dom as i64)?;
                let mut a = db::Map::new();
                for (k, v) in [
                    ("device", "0".to_string()),
                    ("network", net.clone()),
                    ("VM", vm.clone()),
                    ("MAC", mac_of(dom)),
                    ("locking_mode", "locked".into()),
                ] {
                    a.insert(k.into(), db::vs(v));
                }
                a.insert("MTU".into(), Value::Int(1500));
                a.insert("ipv4_allowed".into(), db::sset(&[ip_of(dom)]));
                let v = xnet_model::vif::create(&mut d, a)?;
                d.set("VIF", &v, "currently_attached", Value::Bool(true))?;
                vifs.push(v);
            }
            d.touch_host(&hostref);
            Ok::<_, xnet_model::ApiError>(vifs)
        })
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let bridge = x.store.read(|v| {
        v.get("network", &net)
            .map(|r| s(r, "bridge").to_string())
            .unwrap_or_default()
    });
    // What the agent means to install for one VIF: the switch must hold
    // all of them (under their exact cookie, which OVS looks up by index)
    // before a plug counts as done.
    let want = |dom: usize, port: u32| -> (u64, usize) {
        x.store.read(|v| {
            let vif = v.get("VIF", &vifs[dom - 1]).cloned().unwrap_or_default();
            let nr = v.get("network", &net).cloned().unwrap_or_default();
            let lock = xnet_agent::flows::effective_locking(&vif, &nr)
                .unwrap_or(xnet_agent::flows::Locking::Unlocked);
            let spec = xnet_agent::flows::VifSpec::new("", &vif, &bridge, "", lock);
            let flows = xnet_agent::flows::rules(&spec, port).0;
            (flows.first().map_or(0, |f| f.cookie), flows.len())
        })
    };
    let ns = x.host.ns.clone();
    let dir = x.host.dir.clone();
    let db = x.host.db();
    let mut guests = Guests::new("v")?;
    let host_ns = xnet_rtnl::netns::open(&ns)?;
    // Per plug: the whole time, and vswitchd's part of it (the Interface
    // row committed until vswitchd has given it its ofport).
    let (mut samples, mut vswitchd) = xnet_rtnl::netns::run_in(&ns, || -> Result<_> {
        let c = xnet_ovsdb::Client::connect(&db)?;
        c.monitor(
            "Open_vSwitch",
            json!({"Interface": {"columns": ["name", "ofport", "ofport_request"]}}),
        )?;
        let mut of: Option<Conn> = None;
        let (mut out, mut switch) = (vec![], vec![]);
        for dom in 1..=n {
            let dev = format!("vif{dom}.0");
            guests.backend(&dev, &format!("g{dom}"), &host_ns)?;
            let t0 = Instant::now();
            let late = || -> Result<()> {
                if t0.elapsed() > Duration::from_secs(30) {
                    bail!("{dev}: not realized after 30 s");
                }
                std::thread::sleep(Duration::from_micros(100));
                Ok(())
            };
            // Done when vswitchd has given the port its number and the
            // switch holds all of that number's flows (under their exact
            // cookie). Flows are looked for as soon as a number is known,
            // asked for or given: a toolstack may install them first.
            let (mut committed, mut numbered) = (None, None);
            let mut flows_for = None;
            loop {
                let Some((given, asked)) = iface(&c, &dev)? else {
                    late()?;
                    continue;
                };
                let at = Instant::now();
                committed.get_or_insert(at);
                if given.is_some() {
                    numbered.get_or_insert(at);
                }
                // An internal network's bridge exists once its first port does.
                let mgmt = dir.join(format!("{bridge}.mgmt"));
                if of.is_none() && mgmt.exists() {
                    of = Some(Conn::connect_unix(&mgmt, Duration::from_secs(5))?);
                }
                let Some(of) = of.as_mut() else {
                    late()?;
                    continue;
                };
                if let Some(p) = given.or(asked).filter(|p| flows_for != Some(*p)) {
                    let (cookie, count) = want(dom, p);
                    let filter = FlowFilter {
                        table: TABLE_ALL,
                        out_port: PORT_ANY,
                        cookie,
                        cookie_mask: u64::MAX,
                        matches: vec![Field::InPort(p)],
                    };
                    if of.dump_flows(&filter)?.len() >= count {
                        flows_for = Some(p);
                    }
                }
                if given.is_some() && given == flows_for {
                    break;
                }
                late()?;
            }
            let (committed, numbered) = (committed.unwrap_or(t0), numbered.unwrap_or(t0));
            switch.push(numbered.saturating_duration_since(committed));
            out.push(t0.elapsed());
        }
        Ok((out, switch))
    })??;
    let flows_per_vif = want(1, 1).1;
    x.agent.stop();
    drop(x);

    drop(guests);

    let base = OvsHost::with_xenbr0("vb", 0)?;
    let bdir = base.dir.clone();
    let bdb = base.db();
    let mut guests = Guests::new("b")?;
    let host_ns = xnet_rtnl::netns::open(&base.ns)?;
    let mut base_samples = xnet_rtnl::netns::run_in(&base.ns, || -> Result<Vec<Duration>> {
        let mgmt = format!("unix:{}", bdir.join("xenbr0.mgmt").display());
        let vsctl = format!("--db={bdb}");
        let mut out = vec![];
        for dom in 1..=baseline_n {
            let dev = format!("vif{dom}.0");
            guests.backend(&dev, &format!("g{dom}"), &host_ns)?;
            let t0 = Instant::now();
            for step in [
                vec!["ip", "link", "set", &dev, "mtu", "1500"],
                vec!["ip", "link", "set", &dev, "address", "fe:ff:ff:ff:ff:ff"],
                vec!["ip", "link", "set", &dev, "arp", "off"],
            ] {
                fork(&step)?;
            }
            let ids = [
                format!("external-ids:xs-vif-uuid=00000000-0000-4000-8000-{dom:012}"),
                format!("external-ids:xs-vm-uuid=00000000-0000-4000-9000-{dom:012}"),
                "external-ids:xs-network-uuid=00000000-0000-4000-a000-000000000000".into(),
                format!("external-ids:attached-mac={}", mac_of(dom)),
            ];
            let mut add = vec![
                "ovs-vsctl",
                &vsctl,
                "--timeout=30",
                "--",
                "--if-exists",
                "del-port",
                &dev,
                "--",
                "add-port",
                "xenbr0",
                &dev,
                "--",
                "set",
                "interface",
                &dev,
            ];
            add.extend(ids.iter().map(String::as_str));
            fork(&add)?;
            fork(&["ip", "link", "set", &dev, "up"])?;
            let port = loop {
                let o = Command::new("ovs-vsctl")
                    .args([&vsctl, "get", "interface", &dev, "ofport"])
                    .output()?;
                let p: i64 = String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse()
                    .unwrap_or(-1);
                if p > 0 {
                    break p;
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    bail!("{dev}: no ofport");
                }
            };
            for rule in baseline_rules(port, &mac_of(dom), &ip_of(dom)) {
                fork(&["ovs-ofctl", "-O", "OpenFlow13", "add-flow", &mgmt, &rule])?;
            }
            out.push(t0.elapsed());
        }
        Ok(out)
    })??;
    drop(guests);
    drop(base);

    let rules = baseline_rules(1, &mac_of(1), &ip_of(1)).len();
    // Like for like: vswitchd's own work per port grows with the ports a
    // bridge has, so the ratio compares the same first plugs.
    let mut first: Vec<Duration> = samples.iter().take(baseline_n).copied().collect();
    let f50 = pct(&mut first, 0.5);
    let own: Vec<Duration> = samples
        .iter()
        .zip(&vswitchd)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let (mut own_first, mut own_all) = (own[..baseline_n.min(n)].to_vec(), own);
    let (s50, s99) = (pct(&mut vswitchd, 0.5), pct(&mut vswitchd, 0.99));
    let (p50, p99) = (pct(&mut samples, 0.5), pct(&mut samples, 0.99));
    let (b50, b99) = (pct(&mut base_samples, 0.5), pct(&mut base_samples, 0.99));
    println!(
        "  xnet (netlink event -> fast path: {flows_per_vif} flows by OpenFlow, then one OVSDB insert): p50 {:.2} ms  p99 {:.2} ms  over {n} plugs",
        ms(p50),
        ms(p99)
    );
    println!(
        "    of which vswitchd adding the port (row committed -> ofport, the switch's own work; any toolstack waits for it): p50 {:.2} ms  p99 {:.2} ms",
        ms(s50),
        ms(s99)
    );
    println!(
        "    xnet's own part (the rest): p50 {:.2} ms over all {n}, {:.2} ms over the first {}",
        ms(pct(&mut own_all, 0.5)),
        ms(pct(&mut own_first, 0.5)),
        baseline_n.min(n)
    );
    println!(
        "  baseline (XAPI's hotplug steps, one fork each: 4 ip, 2 ovs-vsctl, {rules} ovs-ofctl): p50 {:.2} ms  p99 {:.2} ms  over {baseline_n} plugs",
        ms(b50),
        ms(b99)
    );
    println!(
        "  xnet over the same first {baseline_n} plugs: p50 {:.2} ms; ratio baseline/xnet at p50: {:.1}x   (target: p50 <= 5 ms and >= 30x)",
        ms(f50),
        b50.as_secs_f64() / f50.as_secs_f64()
    );
    Ok(())
}

fn fork(argv: &[&str]) -> Result<()> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| argv[0].to_string())?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The locked-VIF rule set (reference §8) as `ovs-ofctl` flow strings.
fn baseline_rules(port: i64, mac: &str, ip: &str) -> Vec<String> {
    let mut r = vec![
        format!("priority=8000,in_port={port},dl_src={mac},udp,tp_dst=67,actions=NORMAL"),
        format!("priority=7000,in_port={port},dl_src={mac},arp,arp_sha={mac},arp_spa=0.0.0.0,actions=NORMAL"),
        format!("priority=7000,in_port={port},dl_src={mac},arp,arp_sha={mac},arp_spa={ip},actions=NORMAL"),
        format!("priority=6000,in_port={port},dl_src={mac},ip,nw_src={ip},actions=NORMAL"),
    ];
    for t in [135, 136] {
        r.push(format!(
            "priority=7000,in_port={port},icmp6,icmp_type={t},actions=drop"
        ));
    }
    for t in [134, 137, 146, 147, 151, 152, 153] {
        r.push(format!(
            "priority=6000,in_port={port},icmp6,icmp_type={t},actions=drop"
        ));
    }
    r.push(format!("priority=4000,in_port={port},actions=drop"));
    r
}
