//! Against a real ovs-vswitchd (userspace datapath), one private
//! ovsdb-server + ovs-vswitchd pair per test, read back with ovs-ofctl.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use xnet_openflow::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A private OVS instance; dropping it kills the daemons, removes the
/// bridge's tap device if it remains and deletes the directory.
struct Ovs {
    dir: PathBuf,
    bridge: String,
}

fn run(cmd: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(cmd)
        .args(args)
        .env("OVS_RUNDIR", dir)
        .env("OVS_LOGDIR", dir)
        .env("OVS_DBDIR", dir)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Ovs {
    fn start() -> Ovs {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/xnet-of-{pid}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Interface names are at most 15 bytes: "xt" + pid + "n" + n fits.
        let ovs = Ovs {
            dir,
            bridge: format!("xt{pid}n{n}"),
        };
        let d = ovs.dir.to_str().unwrap().to_string();
        let db = format!("unix:{d}/db.sock");
        run(
            "ovsdb-tool",
            &[
                "create",
                &format!("{d}/conf.db"),
                "/usr/share/openvswitch/vswitch.ovsschema",
            ],
            &ovs.dir,
        );
        run(
            "ovsdb-server",
            &[
                &format!("--remote=punix:{d}/db.sock"),
                &format!("--pidfile={d}/ovsdb.pid"),
                &format!("--unixctl={d}/ovsdb.ctl"),
                &format!("--log-file={d}/ovsdb.log"),
                "--detach",
                &format!("{d}/conf.db"),
            ],
            &ovs.dir,
        );
        run(
            "ovs-vsctl",
            &[&format!("--db={db}"), "--no-wait", "init"],
            &ovs.dir,
        );
        // The userspace datapath creates persistent tap devices: one per
        // bridge and one named "ovs-netdev" for the datapath itself, the
        // same name in every ovs-vswitchd. Two instances in one network
        // namespace collide on it ("creating tap device failed: Device or
        // resource busy"), so each vswitchd gets a private namespace, which
        // (with its taps) goes away when the daemon dies.
        run(
            "unshare",
            &[
                "--net",
                "ovs-vswitchd",
                &db,
                &format!("--pidfile={d}/vswitchd.pid"),
                &format!("--unixctl={d}/vswitchd.ctl"),
                &format!("--log-file={d}/vswitchd.log"),
                "--detach",
            ],
            &ovs.dir,
        );
        let br = ovs.bridge.as_str();
        run(
            "ovs-vsctl",
            &[
                &format!("--db={db}"),
                "--timeout=10",
                "add-br",
                br,
                "--",
                "set",
                "bridge",
                br,
                "datapath_type=netdev",
                "protocols=OpenFlow10,OpenFlow13",
            ],
            &ovs.dir,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ovs.mgmt().exists() {
            assert!(Instant::now() < deadline, "no {}", ovs.mgmt().display());
            std::thread::sleep(Duration::from_millis(20));
        }
        ovs
    }

    fn mgmt(&self) -> PathBuf {
        self.dir.join(format!("{}.mgmt", self.bridge))
    }

    fn connect(&self) -> Conn {
        Conn::connect_unix(&self.mgmt(), Duration::from_secs(5)).expect("connect")
    }

    fn ofctl(&self, what: &str) -> String {
        let target = format!("unix:{}", self.mgmt().display());
        run(
            "ovs-ofctl",
            &[
                "-O",
                "OpenFlow13",
                "--no-stats",
                "--no-names",
                what,
                &target,
            ],
            &self.dir,
        )
    }

    /// The dumped flows, one per line, trimmed and sorted.
    fn flows(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ofctl("dump-flows")
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty() && !l.starts_with("OFPST_FLOW"))
            .collect();
        v.sort();
        v
    }

    /// dump-meters output without its header line, lines trimmed, joined
    /// by '|'.
    fn meters(&self) -> String {
        self.ofctl("dump-meters")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("OFPST_METER"))
            .collect::<Vec<_>>()
            .join("|")
    }
}

fn kill_pidfile(path: &Path) {
    let Ok(s) = std::fs::read_to_string(path) else {
        return;
    };
    let pid = s.trim();
    if pid.is_empty() {
        return;
    }
    let _ = Command::new("kill").arg(pid).status();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let deadline = Instant::now() + Duration::from_secs(3);
    while proc_dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if proc_dir.exists() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        kill_pidfile(&self.dir.join("vswitchd.pid"));
        kill_pidfile(&self.dir.join("ovsdb.pid"));
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
        }
        if std::env::var_os("XNET_OF_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

const MAC: [u8; 6] = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
const MULTICAST: [u8; 6] = [0x01, 0, 0, 0, 0, 0];

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn flow(table: u8, priority: u16, cookie: u64, matches: Vec<Field>, inst: Vec<Instruction>) -> Msg {
    Msg::Flow(FlowMod {
        table,
        priority,
        cookie,
        matches,
        instructions: inst,
        ..FlowMod::default()
    })
}

fn output(ports: &[u32]) -> Instruction {
    Instruction::Apply(ports.iter().map(|&p| Action::Output(p)).collect())
}

const DEFAULT_FLOW: &str = "priority=0 actions=NORMAL";

#[test]
fn every_field_and_instruction_round_trips() {
    let ovs = Ovs::start();
    let mut c = ovs.connect();
    use Field::*;
    let batch = vec![
        Msg::Meter(MeterMod {
            command: MeterCommand::Add,
            meter_id: 1,
            rate_kbps: 500,
            burst_kb: 0,
        }),
        flow(
            0,
            100,
            0x11,
            vec![
                InPort(3),
                EthDst(MULTICAST, Some(MULTICAST)),
                EthSrc(MAC, None),
                Field::vlan(10),
            ],
            vec![output(&[2]), Instruction::GotoTable(1)],
        ),
        flow(
            0,
            101,
            0x12,
            vec![
                VlanVid(0),
                // The value bits outside the mask are cleared when encoding.
                EthSrc(MAC, Some([0xff, 0xff, 0xff, 0, 0, 0])),
            ],
            vec![],
        ),
        flow(
            1,
            200,
            0x13,
            vec![
                EthType(ETH_TYPE_IPV4),
                IpProto(IP_PROTO_UDP),
                Ipv4Src(v4("10.9.8.7"), Some(v4("255.0.0.0"))),
                Ipv4Dst(v4("10.1.2.3"), None),
                UdpSrc(68),
                UdpDst(67),
            ],
            vec![output(&[PORT_CONTROLLER])],
        ),
        flow(
            1,
            201,
            0x14,
            vec![
                EthType(ETH_TYPE_IPV4),
                IpProto(IP_PROTO_TCP),
                TcpSrc(80),
                TcpDst(443),
            ],
            vec![output(&[PORT_IN_PORT])],
        ),
        flow(
            1,
            202,
            0x15,
            vec![
                EthType(ETH_TYPE_ARP),
                ArpOp(1),
                ArpSpa(v4("10.0.0.0"), Some(v4("255.255.255.0"))),
                ArpTpa(v4("10.0.0.1"), None),
                ArpSha(MAC),
            ],
            vec![output(&[PORT_NORMAL])],
        ),
        flow(
            2,
            300,
            0x16,
            vec![
                EthType(ETH_TYPE_IPV6),
                IpProto(IP_PROTO_ICMPV6),
                Ipv6Src(v6("fe80::1234"), Some(v6("ffc0::"))),
                Ipv6Dst(v6("ff02::1:ff00:1"), None),
                Icmpv6Type(135),
                Ipv6NdTarget(v6("fe80::1")),
                Ipv6NdSll(MAC),
            ],
            vec![Instruction::Meter(1), output(&[1, 4])],
        ),
    ];
    c.send(&batch).expect("batch accepted");
    let mut want = vec![
        DEFAULT_FLOW.to_string(),
        "cookie=0x11, priority=100,in_port=3,dl_vlan=10,dl_src=00:11:22:33:44:55,\
         dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=output:2,goto_table:1"
            .to_string(),
        "cookie=0x12, priority=101,vlan_tci=0x0000/0x1fff,dl_src=00:11:22:00:00:00/ff:ff:ff:00:00:00 \
         actions=drop"
            .to_string(),
        "cookie=0x13, table=1, priority=200,udp,nw_src=10.0.0.0/8,nw_dst=10.1.2.3,tp_src=68,tp_dst=67 \
         actions=CONTROLLER:65535"
            .to_string(),
        "cookie=0x14, table=1, priority=201,tcp,tp_src=80,tp_dst=443 actions=IN_PORT".to_string(),
        "cookie=0x15, table=1, priority=202,arp,arp_spa=10.0.0.0/24,arp_tpa=10.0.0.1,arp_op=1,\
         arp_sha=00:11:22:33:44:55 actions=NORMAL"
            .to_string(),
        "cookie=0x16, table=2, priority=300,icmp6,ipv6_src=fe80::/10,ipv6_dst=ff02::1:ff00:1,\
         icmp_type=135,nd_target=fe80::1,nd_sll=00:11:22:33:44:55 actions=meter:1,output:1,output:4"
            .to_string(),
    ];
    want.sort();
    assert_eq!(ovs.flows(), want);
}

#[test]
fn delete_by_cookie_mask_removes_only_that_cookie() {
    let ovs = Ovs::start();
    let mut c = ovs.connect();
    let m = || vec![Field::EthType(ETH_TYPE_IPV4)];
    c.send(&[
        flow(0, 10, 0x1001, m(), vec![output(&[1])]),
        flow(0, 11, 0x1002, m(), vec![output(&[1])]),
        flow(3, 12, 0x1003, m(), vec![output(&[1])]),
        flow(0, 13, 0x2001, m(), vec![output(&[1])]),
        flow(3, 14, 0x2002, m(), vec![output(&[1])]),
    ])
    .unwrap();
    assert_eq!(ovs.flows().len(), 6);

    // All flows whose cookie has 0x1 in bits 12..16, in every table.
    c.send(&[Msg::Flow(FlowMod {
        command: FlowCommand::Delete,
        table: TABLE_ALL,
        cookie: 0x1000,
        cookie_mask: 0xf000,
        ..FlowMod::default()
    })])
    .unwrap();
    let mut want = vec![
        DEFAULT_FLOW.to_string(),
        "cookie=0x2001, priority=13,ip actions=output:1".to_string(),
        "cookie=0x2002, table=3, priority=14,ip actions=output:1".to_string(),
    ];
    want.sort();
    assert_eq!(ovs.flows(), want);

    // An exact cookie in one table only.
    c.send(&[Msg::Flow(FlowMod {
        command: FlowCommand::Delete,
        table: 3,
        cookie: 0x2002,
        cookie_mask: u64::MAX,
        ..FlowMod::default()
    })])
    .unwrap();
    let mut want = vec![
        DEFAULT_FLOW.to_string(),
        "cookie=0x2001, priority=13,ip actions=output:1".to_string(),
    ];
    want.sort();
    assert_eq!(ovs.flows(), want);
}

#[test]
fn meter_add_modify_delete() {
    let ovs = Ovs::start();
    let mut c = ovs.connect();
    c.send(&[
        Msg::Meter(MeterMod {
            command: MeterCommand::Add,
            meter_id: 7,
            rate_kbps: 1000,
            burst_kb: 100,
        }),
        flow(
            0,
            50,
            0x7,
            vec![Field::InPort(1)],
            vec![Instruction::Meter(7), output(&[PORT_NORMAL])],
        ),
    ])
    .unwrap();
    assert_eq!(
        ovs.meters(),
        "meter=7 kbps burst bands=|type=drop rate=1000 burst_size=100"
    );
    assert!(ovs
        .flows()
        .contains(&"cookie=0x7, priority=50,in_port=1 actions=meter:7,NORMAL".to_string()));

    c.send(&[Msg::Meter(MeterMod {
        command: MeterCommand::Modify,
        meter_id: 7,
        rate_kbps: 2000,
        burst_kb: 0,
    })])
    .unwrap();
    assert_eq!(ovs.meters(), "meter=7 kbps bands=|type=drop rate=2000");

    c.send(&[Msg::Meter(MeterMod {
        command: MeterCommand::Delete,
        meter_id: 7,
        ..MeterMod::default()
    })])
    .unwrap();
    assert_eq!(ovs.meters(), "");
    // OpenFlow 1.3 §7.3.4.4: deleting a meter removes the flows using it.
    assert_eq!(ovs.flows(), vec![DEFAULT_FLOW.to_string()]);

    // A flow naming a meter that does not exist is refused.
    match c.send(&[flow(0, 1, 0, vec![], vec![Instruction::Meter(8)])]) {
        Err(OfError::Refused { xid_index: 0, .. }) => {}
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn refused_message_reports_its_index() {
    let ovs = Ovs::start();
    let mut c = ovs.connect();
    let ok = |prio: u16| {
        flow(
            0,
            prio,
            0x40,
            vec![Field::EthType(ETH_TYPE_IPV4)],
            vec![output(&[1])],
        )
    };
    // Message 2 matches ipv4_src without its eth_type=0x0800 prerequisite.
    let bad = flow(
        0,
        3,
        0x40,
        vec![Field::Ipv4Src(v4("10.0.0.1"), None)],
        vec![output(&[1])],
    );
    match c.send(&[ok(1), ok(2), bad, ok(4)]) {
        // OFPET_BAD_MATCH / OFPBMC_BAD_PREREQ
        Err(OfError::Refused {
            type_: 4,
            code: 9,
            xid_index: 2,
        }) => {}
        other => panic!("expected Refused #2 BAD_PREREQ, got {other:?}"),
    }
    // No transaction: what came before stays, and OVS goes on with the
    // messages after the refused one too.
    let mut want = vec![
        DEFAULT_FLOW.to_string(),
        "cookie=0x40, priority=1,ip actions=output:1".to_string(),
        "cookie=0x40, priority=2,ip actions=output:1".to_string(),
        "cookie=0x40, priority=4,ip actions=output:1".to_string(),
    ];
    want.sort();
    assert_eq!(ovs.flows(), want);

    // goto_table to a lower table, at index 1 of the next batch; the
    // connection is still usable after a refusal.
    let back = flow(5, 9, 0x41, vec![], vec![Instruction::GotoTable(2)]);
    match c.send(&[ok(5), back]) {
        // OFPET_BAD_INSTRUCTION / OFPBIC_BAD_TABLE_ID
        Err(OfError::Refused {
            type_: 3,
            code: 2,
            xid_index: 1,
        }) => {}
        other => panic!("expected Refused #1 BAD_TABLE_ID, got {other:?}"),
    }
    assert_eq!(ovs.flows().len(), 5);

    // Two refusals in one batch: the first is reported.
    let bad2 = |p| flow(0, p, 0, vec![Field::UdpDst(53)], vec![]);
    match c.send(&[ok(6), bad2(7), bad2(8)]) {
        Err(OfError::Refused { xid_index: 1, .. }) => {}
        other => panic!("expected Refused #1, got {other:?}"),
    }
    // And a clean batch afterwards succeeds.
    c.send(&[ok(9)]).unwrap();
    assert_eq!(ovs.flows().len(), 7);
}

#[test]
fn empty_batch_is_just_a_barrier() {
    let ovs = Ovs::start();
    let mut c = ovs.connect();
    c.send(&[]).unwrap();
    assert_eq!(ovs.flows(), vec![DEFAULT_FLOW.to_string()]);
}

#[test]
fn flow_dump_filters_and_spans_several_replies() {
    let ovs = Ovs::start();
    let mut c = ovs.connect();
    c.send(&[Msg::Meter(MeterMod {
        command: MeterCommand::Add,
        meter_id: 3,
        rate_kbps: 800,
        burst_kb: 40,
    })])
    .unwrap();
    // 3000 flows of ~100 bytes: more than one 64 KiB reply message.
    let mut batch = vec![];
    for i in 0..3000u32 {
        let cookie = 0xabcd_0000_0000_0000 | u64::from(i % 3);
        let ip = Ipv4Addr::from(0x0a00_0000 + i);
        batch.push(flow(
            if i.is_multiple_of(2) { 0 } else { 1 },
            1000 + (i % 7) as u16,
            cookie,
            vec![
                Field::InPort(1 + i % 5),
                Field::EthType(ETH_TYPE_IPV4),
                Field::Ipv4Src(ip, None),
            ],
            vec![Instruction::Meter(3), output(&[PORT_NORMAL])],
        ));
    }
    batch.push(flow(
        0,
        4000,
        0x1234,
        vec![
            Field::EthType(ETH_TYPE_ARP),
            Field::ArpSpa(v4("10.1.0.0"), Some(v4("255.255.0.0"))),
            Field::ArpSha(MAC),
        ],
        vec![output(&[2])],
    ));
    c.send(&batch).unwrap();

    let all = c.dump_flows(&FlowFilter::default()).unwrap();
    assert_eq!(all.len(), 3002, "every flow, the default one included");
    let tagged = c
        .dump_flows(&FlowFilter {
            cookie: 0xabcd_0000_0000_0000,
            cookie_mask: 0xffff_0000_0000_0000,
            ..FlowFilter::default()
        })
        .unwrap();
    assert_eq!(tagged.len(), 3000);
    let one = tagged
        .iter()
        .find(|f| {
            f.matches
                .contains(&Field::Ipv4Src(Ipv4Addr::from(0x0a00_0007), None))
        })
        .expect("flow #7");
    assert_eq!(
        (one.table, one.priority, one.cookie),
        (1, 1000, 0xabcd_0000_0000_0001)
    );
    assert!(one.matches.contains(&Field::InPort(3)));
    assert_eq!(
        one.instructions,
        vec![Instruction::Meter(3), output(&[PORT_NORMAL])]
    );
    assert!(!one.undecoded);

    // Exact cookie, one table.
    let t0 = c
        .dump_flows(&FlowFilter {
            table: 0,
            cookie: 0xabcd_0000_0000_0002,
            cookie_mask: u64::MAX,
            ..FlowFilter::default()
        })
        .unwrap();
    assert_eq!(t0.len(), 500);
    assert!(t0.iter().all(|f| f.table == 0 && f.cookie & 3 == 2));
    // By output port and by a (non-strict) match.
    let to2 = c
        .dump_flows(&FlowFilter {
            out_port: 2,
            ..FlowFilter::default()
        })
        .unwrap();
    assert_eq!(to2.len(), 1);
    assert_eq!(to2[0].priority, 4000);
    let mut want = vec![
        Field::EthType(ETH_TYPE_ARP),
        Field::ArpSpa(v4("10.1.0.0"), Some(v4("255.255.0.0"))),
        Field::ArpSha(MAC),
    ];
    let mut got = to2[0].matches.clone();
    want.sort_by_key(Field::encoded);
    got.sort_by_key(Field::encoded);
    assert_eq!(got, want);
    let port4 = c
        .dump_flows(&FlowFilter {
            matches: vec![Field::InPort(4)],
            ..FlowFilter::default()
        })
        .unwrap();
    assert_eq!(port4.len(), 600);
    // What the dump says agrees with ovs-ofctl.
    assert_eq!(ovs.flows().len(), 3002);
}

#[test]
fn meter_dump_lists_every_meter() {
    let ovs = Ovs::start();
    let mut c = ovs.connect();
    assert_eq!(c.dump_meters().unwrap(), vec![]);
    let meters: Vec<Msg> = (1..=300u32)
        .map(|id| {
            Msg::Meter(MeterMod {
                command: MeterCommand::Add,
                meter_id: id,
                rate_kbps: 1000 * id,
                burst_kb: if id.is_multiple_of(2) { id } else { 0 },
            })
        })
        .collect();
    c.send(&meters).unwrap();
    let mut got = c.dump_meters().unwrap();
    got.sort_by_key(|m| m.meter_id);
    assert_eq!(got.len(), 300);
    for (i, m) in got.iter().enumerate() {
        let id = i as u32 + 1;
        assert_eq!(m.meter_id, id);
        assert!(m.kbps());
        assert_eq!(m.burst(), id.is_multiple_of(2));
        assert_eq!(m.bands.len(), 1);
        assert_eq!((m.bands[0].type_, m.bands[0].rate), (1, 1000 * id));
        if id.is_multiple_of(2) {
            assert_eq!(m.bands[0].burst_size, id);
        }
    }
}
