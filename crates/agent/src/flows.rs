//! VIF locking and rate limits as OpenFlow on the bridge that holds each
//! VIF's port (reference §8): compiling a VIF's rule set from its records,
//! and reconciling the flows and meters of every xnet bridge by cookie.
//!
//! Every xnet flow carries [`COOKIE_TAG`] in the cookie's high 32 bits and a
//! hash of its VIF's whole rule set in the low 32, so a changed rule set is a
//! new cookie: its flows are added before the old cookie's are deleted, and
//! the VIF is never open or shut wrongly in between. Each bridge also gets
//! an xnet base flow (priority 0, NORMAL; low bits 0) so that flushing every
//! flow by hand is repaired too.

use crate::compile::{Bridge, Desired};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xnet_model::db::{mget, s, set_strs};
use xnet_model::Record;
use xnet_openflow::{
    Action, Conn, Field, FlowCommand, FlowFilter, FlowMod, Instruction, MeterCommand, MeterMod,
    Msg, OfError, ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, IP_PROTO_ICMPV6, IP_PROTO_TCP,
    IP_PROTO_UDP, PORT_NORMAL, TABLE_ALL,
};

/// "xnet" in the high 32 bits of every cookie the agent writes.
pub const COOKIE_TAG: u64 = 0x786e_6574_0000_0000;
const TAG_MASK: u64 = 0xffff_ffff_0000_0000;
/// XAPI's default netback credit interval.
const DEFAULT_TIMESLICE_US: u64 = 50_000;
/// The least a rate limit's bucket holds, in milliseconds of traffic.
const MIN_BURST_MS: u64 = 200;
/// How long one OpenFlow exchange may take.
const OF_TIMEOUT: Duration = Duration::from_secs(5);
/// Even under a steady stream of events, re-read the switch this often.
const MAX_CACHE_AGE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FlowsError {
    #[error("OpenFlow connection to bridge {bridge}: {source}")]
    Connect { bridge: String, source: OfError },
    #[error("bridge {bridge}: {source}")]
    Switch { bridge: String, source: OfError },
}

/// Effective locking of an attached VIF (`disabled` has no port at all, so
/// it is not a value here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locking {
    Unlocked,
    Locked {
        ipv4: Vec<(Ipv4Addr, u8)>,
        ipv6: Vec<(Ipv6Addr, u8)>,
    },
}

/// A rate limit on what the guest sends, in OpenFlow/OVS units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// kbit/s (1000 bit/s).
    pub kbit_s: u32,
    /// Burst, in kbit.
    pub burst_kbit: u32,
}

/// The rule set of one backend device of an attached VIF.
#[derive(Debug, Clone, PartialEq)]
pub struct VifSpec {
    /// The VIF's reference.
    pub vif: String,
    /// The real bridge holding the port (a VLAN network's parent bridge).
    pub bridge: String,
    /// The backend device, also the port and interface name.
    pub device: String,
    pub mac: Option<[u8; 6]>,
    pub locking: Locking,
    /// Realized as a meter; `None` on the kernel datapath, where
    /// [`police`] moved it into the interface's ingress policing.
    pub rate: Option<Rate>,
    /// Settings that were ignored, XAPI-style (logged once).
    pub warnings: Vec<String>,
}

/// `locking_mode`, with `network_default` resolved through the network;
/// `None` means disabled (the port is not added).
pub fn effective_locking(vif: &Record, net: &Record) -> Option<Locking> {
    let mode = match s(vif, "locking_mode") {
        "network_default" | "" => match s(net, "default_locking_mode") {
            "disabled" => "disabled",
            _ => "unlocked",
        },
        m => m,
    };
    match mode {
        "disabled" => None,
        "locked" => {
            let mut ipv4 = vec![];
            let mut ipv6 = vec![];
            for v in set_strs(vif, "ipv4_allowed")
                .iter()
                .chain(&set_strs(vif, "ipv6_allowed"))
            {
                match address(v) {
                    Some((IpAddr::V4(a), l)) => ipv4.push((a, l)),
                    Some((IpAddr::V6(a), l)) => ipv6.push((a, l)),
                    None => {} // the model refuses these on the way in
                }
            }
            ipv4.sort();
            ipv4.dedup();
            ipv6.sort();
            ipv6.dedup();
            Some(Locking::Locked { ipv4, ipv6 })
        }
        _ => Some(Locking::Unlocked),
    }
}

/// An allowed address: an IP (full length) or a CIDR.
fn address(v: &str) -> Option<(IpAddr, u8)> {
    if let Ok(a) = v.parse::<IpAddr>() {
        return Some((a, if a.is_ipv4() { 32 } else { 128 }));
    }
    xnet_model::helpers::parse_cidr(v)
}

/// XAPI's `ratelimit`: `kbps` is KiB/s (netback gets
/// `kbps*1024*timeslice_us/1e6` bytes per `timeslice_us`, default 50 ms), so
/// kbit/s = kbps × 8.192. Netback queues what exceeds the credit, while a
/// policer drops it, so the bucket holds the larger of one timeslice's credit
/// and `MIN_BURST_MS` of traffic: with only 50 ms, TCP in the lab reached a
/// quarter of a 10 Mbit/s limit; with 200 ms it reaches the limit. Returns
/// the limit, or a warning for settings XAPI ignores (no limit then).
pub fn rate_limit(vif: &Record) -> Result<Option<Rate>, String> {
    let kind = s(vif, "qos_algorithm_type");
    if kind.is_empty() {
        return Ok(None);
    }
    if kind != "ratelimit" {
        return Err(format!("unknown qos_algorithm_type '{kind}' ignored"));
    }
    let Some(kbps) = mget(vif, "qos_algorithm_params", "kbps") else {
        return Err(
            "qos_algorithm_type ratelimit without qos_algorithm_params:kbps ignored".into(),
        );
    };
    let Ok(kbps) = kbps.trim().parse::<u64>() else {
        return Err(format!(
            "qos_algorithm_params:kbps '{kbps}' is not an integer: ignored"
        ));
    };
    let timeslice = mget(vif, "qos_algorithm_params", "timeslice_us")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|t| *t > 0)
        .unwrap_or(DEFAULT_TIMESLICE_US);
    let bytes_per_interval = kbps.saturating_mul(1024).saturating_mul(timeslice) / 1_000_000;
    if bytes_per_interval == 0 || bytes_per_interval >= u64::from(u32::MAX) {
        return Err(format!(
            "rate limit kbps={kbps} timeslice_us={timeslice} out of range: ignored"
        ));
    }
    let kbit_s = (kbps * 8192).div_ceil(1000);
    let burst = (bytes_per_interval * 8)
        .div_ceil(1000)
        .max((kbit_s * MIN_BURST_MS).div_ceil(1000))
        .max(1);
    Ok(Some(Rate {
        kbit_s: u32::try_from(kbit_s).unwrap_or(u32::MAX),
        burst_kbit: u32::try_from(burst).unwrap_or(u32::MAX),
    }))
}

impl VifSpec {
    /// The spec of backend `device` of `vif` on `bridge`.
    pub fn new(vref: &str, vif: &Record, bridge: &str, device: &str, locking: Locking) -> VifSpec {
        let mut warnings = vec![];
        let rate = rate_limit(vif).unwrap_or_else(|w| {
            warnings.push(w);
            None
        });
        let mac = xnet_model::helpers::parse_mac(s(vif, "MAC"));
        if mac.is_none() && matches!(locking, Locking::Locked { .. }) {
            warnings.push(format!(
                "locked VIF has no valid MAC '{}': all its traffic is dropped",
                s(vif, "MAC")
            ));
        }
        VifSpec {
            vif: vref.to_string(),
            bridge: bridge.to_string(),
            device: device.to_string(),
            mac,
            locking,
            rate,
            warnings,
        }
    }
}

/// On the kernel datapath (`system`) a rate limit is the interface's
/// ingress policing (kbit/s, burst in kbit), as OVS has always done it
/// there; on the userspace datapath it stays a meter.
pub fn police(d: &mut Desired, datapath: &str) {
    if datapath != "system" {
        return;
    }
    for spec in &mut d.vifs {
        let Some(rate) = spec.rate.take() else {
            continue;
        };
        let iface = d
            .bridges
            .get_mut(&spec.bridge)
            .and_then(|b| b.ports.get_mut(&spec.device))
            .and_then(|p| p.interfaces.first_mut());
        if let Some(i) = iface {
            police_iface(i, rate);
        }
    }
    for p in d.pending.values_mut() {
        if let (Some(rate), Some(i)) = (p.spec.rate.take(), p.port.interfaces.first_mut()) {
            police_iface(i, rate);
        }
    }
}

fn police_iface(i: &mut crate::compile::Iface, rate: Rate) {
    i.ingress_policing_rate = i64::from(rate.kbit_s);
    i.ingress_policing_burst = i64::from(rate.burst_kbit);
}

/// The meter of a VIF is numbered after its port.
pub fn meter_id(ofport: u32) -> u32 {
    ofport
}

/// The flows (all with the rule set's cookie) and the meter of one VIF
/// whose port is `ofport`.
pub fn rules(spec: &VifSpec, ofport: u32) -> (Vec<FlowMod>, Option<MeterMod>) {
    let meter = spec.rate.map(|r| MeterMod {
        command: MeterCommand::Add,
        meter_id: meter_id(ofport),
        rate_kbps: r.kbit_s,
        burst_kb: r.burst_kbit,
    });
    let allow = || {
        let mut v = vec![];
        if let Some(m) = &meter {
            v.push(Instruction::Meter(m.meter_id));
        }
        v.push(Instruction::Apply(vec![Action::Output(PORT_NORMAL)]));
        v
    };
    let mut flows: Vec<FlowMod> = vec![];
    let mut add = |priority: u16, mut matches: Vec<Field>, instructions: Vec<Instruction>| {
        matches.insert(0, Field::InPort(ofport));
        flows.push(FlowMod {
            priority,
            matches,
            instructions,
            ..FlowMod::default()
        });
    };
    match &spec.locking {
        Locking::Unlocked => {
            if meter.is_some() {
                add(4000, vec![], allow());
            }
        }
        Locking::Locked { ipv4, ipv6 } => {
            if let Some(mac) = spec.mac {
                let src = || Field::EthSrc(mac, None);
                add(
                    8000,
                    vec![
                        src(),
                        Field::EthType(ETH_TYPE_IPV4),
                        Field::IpProto(IP_PROTO_UDP),
                        Field::UdpDst(67),
                    ],
                    allow(),
                );
                let arp = |spa: Option<Field>| {
                    let mut m = vec![src(), Field::EthType(ETH_TYPE_ARP), Field::ArpSha(mac)];
                    m.extend(spa);
                    m
                };
                add(
                    7000,
                    arp(Some(Field::ArpSpa(Ipv4Addr::UNSPECIFIED, None))),
                    allow(),
                );
                for &(ip, len) in ipv4 {
                    let (a, m) = (v4_prefix(ip, len), v4_mask(len));
                    let spa = (len > 0).then_some(Field::ArpSpa(a, m));
                    add(7000, arp(spa), allow());
                    let mut m4 = vec![src(), Field::EthType(ETH_TYPE_IPV4)];
                    m4.extend((len > 0).then_some(Field::Ipv4Src(a, m)));
                    add(6000, m4, allow());
                }
                for &(ip, len) in ipv6 {
                    let (a, m) = (v6_prefix(ip, len), v6_mask(len));
                    let src6 = (len > 0).then_some(Field::Ipv6Src(a, m));
                    let icmp6 = |t: u8| {
                        vec![
                            Field::EthType(ETH_TYPE_IPV6),
                            Field::IpProto(IP_PROTO_ICMPV6),
                            Field::Icmpv6Type(t),
                        ]
                    };
                    let mut ns = icmp6(135);
                    ns.extend(src6.clone());
                    ns.push(Field::Ipv6NdSll(mac));
                    add(8000, ns, allow());
                    let mut na = icmp6(136);
                    na.extend(src6.clone());
                    // nd_target takes no mask here: a range allows any target.
                    na.extend((len == 128).then_some(Field::Ipv6NdTarget(ip)));
                    add(8000, na, allow());
                    for proto in [IP_PROTO_ICMPV6, IP_PROTO_TCP, IP_PROTO_UDP] {
                        let mut m6 =
                            vec![src(), Field::EthType(ETH_TYPE_IPV6), Field::IpProto(proto)];
                        m6.extend(src6.clone());
                        add(5000, m6, allow());
                    }
                }
            }
            for t in [135u8, 136] {
                add(
                    7000,
                    vec![
                        Field::EthType(ETH_TYPE_IPV6),
                        Field::IpProto(IP_PROTO_ICMPV6),
                        Field::Icmpv6Type(t),
                    ],
                    vec![],
                );
            }
            for t in [134u8, 137, 146, 147, 151, 152, 153] {
                add(
                    6000,
                    vec![
                        Field::EthType(ETH_TYPE_IPV6),
                        Field::IpProto(IP_PROTO_ICMPV6),
                        Field::Icmpv6Type(t),
                    ],
                    vec![],
                );
            }
            add(4000, vec![], vec![]);
        }
    }
    // Equal matches at one priority are one flow (e.g. 0.0.0.0 allowed).
    let mut seen = BTreeSet::new();
    flows.retain(|f| seen.insert(match_key(f.table, f.priority, &f.matches)));
    let cookie = COOKIE_TAG | rule_hash(&flows, meter.as_ref());
    for f in &mut flows {
        f.cookie = cookie;
    }
    (flows, meter)
}

fn v4_mask(len: u8) -> Option<Ipv4Addr> {
    (len < 32).then(|| Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)))
}
fn v4_prefix(a: Ipv4Addr, len: u8) -> Ipv4Addr {
    v4_mask(len).map_or(a, |m| Ipv4Addr::from(u32::from(a) & u32::from(m)))
}
fn v6_mask(len: u8) -> Option<Ipv6Addr> {
    (len < 128).then(|| Ipv6Addr::from(u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)))
}
fn v6_prefix(a: Ipv6Addr, len: u8) -> Ipv6Addr {
    v6_mask(len).map_or(a, |m| Ipv6Addr::from(u128::from(a) & u128::from(m)))
}

/// FNV-1a over the rule set's canonical keys: stable across restarts and
/// builds (std's hasher promises neither). Never 0, which is the base flow's.
fn rule_hash(flows: &[FlowMod], meter: Option<&MeterMod>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for f in flows {
        eat(key_of(f).as_bytes());
        eat(b"\n");
    }
    if let Some(m) = meter {
        eat(format!("meter {} {} {}", m.meter_id, m.rate_kbps, m.burst_kb).as_bytes());
    }
    let low = (h ^ (h >> 32)) & 0xffff_ffff;
    if low == 0 {
        1
    } else {
        low
    }
}

/// A canonical text of one flow: match fields in wire form, sorted (the
/// switch reorders them), and instructions without empty action lists.
fn flow_key(table: u8, priority: u16, matches: &[Field], instructions: &[Instruction]) -> String {
    let inst: Vec<&Instruction> = instructions
        .iter()
        .filter(|i| !matches!(i, Instruction::Apply(a) if a.is_empty()))
        .collect();
    format!("{}/{inst:?}", match_key(table, priority, matches))
}

/// What identifies a flow in its table: priority and match.
fn match_key(table: u8, priority: u16, matches: &[Field]) -> String {
    let mut m: Vec<String> = matches
        .iter()
        .map(|f| f.encoded().iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    m.sort();
    format!("{table}/{priority}/{}", m.join(","))
}

fn key_of(f: &FlowMod) -> String {
    flow_key(f.table, f.priority, &f.matches, &f.instructions)
}

/// A rule set as the agent remembers it once written.
fn written(flows: &[FlowMod]) -> BTreeMap<String, FlowKey> {
    flows
        .iter()
        .map(|f| (key_of(f), Some((f.table, f.priority, f.matches.clone()))))
        .collect()
}

fn base_flow() -> FlowMod {
    FlowMod {
        priority: 0,
        cookie: COOKIE_TAG,
        instructions: vec![Instruction::Apply(vec![Action::Output(PORT_NORMAL)])],
        ..FlowMod::default()
    }
}

/// What one bridge should hold.
#[derive(Debug, Default)]
struct Want {
    /// cookie → flows
    flows: BTreeMap<u64, Vec<FlowMod>>,
    /// meter id → (kbit/s, burst kbit)
    meters: BTreeMap<u32, (u32, u32)>,
    /// VIFs whose rules live here.
    vifs: BTreeSet<String>,
}

/// One flow as the agent compares it: (table, priority, match), `None` when
/// the match was not fully decoded.
type FlowKey = Option<(u8, u16, Vec<Field>)>;

/// What one bridge holds, as last read or written.
#[derive(Default)]
struct Have {
    conn: Option<Conn>,
    /// cookie → canonical flow key → (table, priority, match), for the
    /// xnet-tagged flows; the match is `None` when not fully decoded.
    flows: BTreeMap<u64, BTreeMap<String, FlowKey>>,
    meters: BTreeMap<u32, (u32, u32)>,
    /// `flows`/`meters` reflect the switch (false: dump before use).
    known: bool,
    read_at: Option<Instant>,
}

/// The OpenFlow side of the agent: one persistent connection per bridge.
pub struct Flows {
    rundir: PathBuf,
    bridges: BTreeMap<String, Have>,
    warned: BTreeSet<String>,
    /// The rules last compiled per backend device, reused while its spec
    /// and port stay the same: a pass compiles only what changed.
    compiled: RuleCache,
}

type RuleCache = HashMap<String, (VifSpec, u32, Vec<FlowMod>, Option<MeterMod>)>;

/// The OVS run directory: an explicit setting, else the OVSDB socket's
/// directory (where vswitchd puts `<bridge>.mgmt` next to `db.sock`).
pub fn rundir(setting: Option<&Path>, ovsdb: &str) -> PathBuf {
    if let Some(p) = setting {
        return p.to_path_buf();
    }
    ovsdb
        .strip_prefix("unix:")
        .and_then(|p| Path::new(p).parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/var/run/openvswitch"))
}

impl Flows {
    pub fn new(rundir: PathBuf) -> Flows {
        Flows {
            rundir,
            bridges: BTreeMap::new(),
            warned: BTreeSet::new(),
            compiled: HashMap::new(),
        }
    }

    /// Makes every xnet bridge hold exactly its VIFs' flows and meters.
    /// `full` re-reads the switch first (timer passes); otherwise the state
    /// cached from the last read and the writes since is trusted. VIFs
    /// without an ofport yet get nothing this pass. Returns the number of
    /// flow and meter modifications sent, and VIF → error.
    pub fn reconcile(
        &mut self,
        desired: &Desired,
        ofports: &BTreeMap<String, i64>,
        full: bool,
    ) -> (u64, BTreeMap<String, String>) {
        for spec in &desired.vifs {
            self.warn(spec);
        }
        let wants = want(&desired.bridges, &desired.vifs, ofports, &mut self.compiled);
        self.bridges.retain(|b, _| wants.contains_key(b));
        let mut writes = 0;
        let mut errors = BTreeMap::new();
        for (name, want) in &wants {
            let have = self.bridges.entry(name.clone()).or_default();
            // One retry on a fresh connection: vswitchd may have restarted.
            let mut result = Ok(0);
            for attempt in 0..2 {
                result = sync(&self.rundir, name, have, want, full);
                match &result {
                    Err(FlowsError::Switch {
                        source: OfError::Io(_) | OfError::Timeout,
                        ..
                    }) if attempt == 0 => {
                        have.conn = None;
                        have.known = false;
                    }
                    _ => break,
                }
            }
            match result {
                Ok(n) => writes += n,
                // A new bridge whose socket vswitchd has not opened yet:
                // nothing of ours can be on it; the next pass programs it.
                Err(FlowsError::Connect { .. }) if want.vifs.is_empty() => {}
                Err(e) => {
                    have.conn = None;
                    have.known = false;
                    for v in &want.vifs {
                        errors.insert(v.clone(), e.to_string());
                    }
                }
            }
        }
        (writes, errors)
    }
}

impl Flows {
    /// Logs a VIF's warnings once each.
    fn warn(&mut self, spec: &VifSpec) {
        for w in &spec.warnings {
            let line = format!("VIF {} ({}): {w}", spec.vif, spec.device);
            if self.warned.insert(line.clone()) {
                eprintln!("xnet-agent: warning: {line}");
            }
        }
    }

    /// The fast path: sends one new VIF's meter and flows to its bridge,
    /// whose state the agent holds from its last read and writes, runs
    /// `meanwhile` while the switch takes them, and records them as
    /// written. `None` (nothing sent, `meanwhile` not run) when that state
    /// is not known or the meter or the rule set's cookie is already in
    /// use: a whole reconcile must look.
    pub fn plug<R>(
        &mut self,
        spec: &VifSpec,
        ofport: u32,
        meanwhile: impl FnOnce() -> R,
    ) -> Option<(Result<u64, FlowsError>, R)> {
        self.warn(spec);
        let have = self.bridges.get_mut(&spec.bridge)?;
        if !have.known || have.read_at.is_none_or(|t| t.elapsed() >= MAX_CACHE_AGE) {
            return None;
        }
        let conn = have.conn.as_mut()?;
        let (flows, meter) = rules(spec, ofport);
        let cookie = flows.first().map(|f| f.cookie);
        if cookie.is_some_and(|c| have.flows.contains_key(&c))
            || meter.is_some_and(|m| have.meters.contains_key(&m.meter_id))
        {
            return None;
        }
        // The meter before the flows that use it.
        let msgs: Vec<Msg> = meter
            .map(Msg::Meter)
            .into_iter()
            .chain(flows.iter().cloned().map(Msg::Flow))
            .collect();
        let (sent, r) = match conn.submit(&msgs) {
            Ok(batch) => {
                let r = meanwhile();
                (conn.finish(batch), r)
            }
            Err(e) => (Err(e), meanwhile()),
        };
        if let Err(e) = sent {
            have.known = false;
            have.conn = None;
            let e = FlowsError::Switch {
                bridge: spec.bridge.clone(),
                source: e,
            };
            return Some((Err(e), r));
        }
        if let Some(c) = cookie {
            have.flows.insert(c, written(&flows));
        }
        if let Some(m) = meter {
            have.meters.insert(m.meter_id, (m.rate_kbps, m.burst_kb));
        }
        self.compiled
            .insert(spec.device.clone(), (spec.clone(), ofport, flows, meter));
        Some((Ok(msgs.len() as u64), r))
    }
}

fn want(
    bridges: &BTreeMap<String, Bridge>,
    vifs: &[VifSpec],
    ofports: &BTreeMap<String, i64>,
    cache: &mut RuleCache,
) -> BTreeMap<String, Want> {
    let mut old = std::mem::take(cache);
    let mut out: BTreeMap<String, Want> = BTreeMap::new();
    for name in bridges.keys() {
        out.entry(name.clone())
            .or_default()
            .flows
            .insert(COOKIE_TAG, vec![base_flow()]);
    }
    for spec in vifs {
        let Some(w) = out.get_mut(&spec.bridge) else {
            continue;
        };
        let Some(port) = ofports
            .get(&spec.device)
            .and_then(|p| u32::try_from(*p).ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        let entry = match old.remove(&spec.device) {
            Some(e) if e.0 == *spec && e.1 == port => e,
            _ => {
                let (flows, meter) = rules(spec, port);
                (spec.clone(), port, flows, meter)
            }
        };
        let (_, _, flows, meter) = cache.entry(spec.device.clone()).or_insert(entry);
        let (flows, meter) = (flows.clone(), *meter);
        if let Some(m) = meter {
            w.meters.insert(m.meter_id, (m.rate_kbps, m.burst_kb));
        }
        if let Some(c) = flows.first().map(|f| f.cookie) {
            w.flows.insert(c, flows);
        }
        w.vifs.insert(spec.vif.clone());
    }
    out
}

/// One bridge: read if needed, send the difference in one batch (meters
/// first, new flows, stale flows, stale meters: nothing is ever less
/// locked or less limited than either the old or the new rule set).
fn sync(
    rundir: &Path,
    bridge: &str,
    have: &mut Have,
    want: &Want,
    full: bool,
) -> Result<u64, FlowsError> {
    let serr = |source| FlowsError::Switch {
        bridge: bridge.to_string(),
        source,
    };
    if have.conn.is_none() {
        let path = rundir.join(format!("{bridge}.mgmt"));
        let c = Conn::connect_unix(&path, OF_TIMEOUT).map_err(|source| FlowsError::Connect {
            bridge: bridge.to_string(),
            source,
        })?;
        have.conn = Some(c);
        have.known = false;
    }
    let conn = have.conn.as_mut().expect("connected");
    let stale = have.read_at.is_none_or(|t| t.elapsed() >= MAX_CACHE_AGE);
    let dumped = !have.known || full || stale;
    if dumped {
        let dumped = conn
            .dump_flows(&FlowFilter {
                cookie: COOKIE_TAG,
                cookie_mask: TAG_MASK,
                ..FlowFilter::default()
            })
            .map_err(serr)?;
        have.flows.clear();
        for f in dumped {
            let (key, m) = if f.undecoded {
                // Something we would never write: never equal to ours.
                (format!("undecoded {f:?}"), None)
            } else {
                (
                    flow_key(f.table, f.priority, &f.matches, &f.instructions),
                    Some((f.table, f.priority, f.matches)),
                )
            };
            have.flows.entry(f.cookie).or_default().insert(key, m);
        }
        have.meters = conn
            .dump_meters()
            .map_err(serr)?
            .into_iter()
            .map(|m| {
                let band = m.bands.first().copied();
                let ours = m.kbps()
                    && m.burst()
                    && m.bands.len() == 1
                    && band.is_some_and(|b| b.type_ == 1);
                let (rate, burst) = band.map_or((0, 0), |b| (b.rate, b.burst_size));
                // A meter of another shape never equals a wanted one.
                (m.meter_id, if ours { (rate, burst) } else { (0, 0) })
            })
            .collect();
        have.known = true;
        have.read_at = Some(Instant::now());
    }
    let mut msgs = vec![];
    for (&id, &(rate, burst)) in &want.meters {
        let command = match have.meters.get(&id) {
            None => MeterCommand::Add,
            Some(&cur) if cur == (rate, burst) => continue,
            Some(_) => MeterCommand::Modify,
        };
        msgs.push(Msg::Meter(MeterMod {
            command,
            meter_id: id,
            rate_kbps: rate,
            burst_kb: burst,
        }));
    }
    let mut deletes = vec![];
    let mut changed = vec![];
    for (&cookie, flows) in &want.flows {
        let cur = have.flows.get(&cookie);
        // A cookie is a hash of its whole rule set: between dumps, one the
        // agent wrote itself is trusted to be there in full.
        if !dumped && cur.is_some() {
            continue;
        }
        let keys: BTreeSet<String> = flows.iter().map(key_of).collect();
        if cur.is_some_and(|c| c.keys().eq(keys.iter())) {
            continue;
        }
        changed.push(cookie);
        // Adding a flow with an existing match and priority replaces it, so
        // re-adding the whole set repairs any missing or altered member.
        msgs.extend(flows.iter().cloned().map(Msg::Flow));
        // Flows under this cookie that the set does not have (added by
        // hand) go one by one; those the re-add replaces stay.
        let replaced: BTreeSet<String> = flows
            .iter()
            .map(|f| match_key(f.table, f.priority, &f.matches))
            .collect();
        for (key, m) in cur.into_iter().flatten() {
            let Some((table, priority, matches)) = m else {
                continue;
            };
            if keys.contains(key) || replaced.contains(&match_key(*table, *priority, matches)) {
                continue;
            }
            deletes.push(Msg::Flow(FlowMod {
                command: FlowCommand::DeleteStrict,
                table: *table,
                priority: *priority,
                cookie,
                cookie_mask: u64::MAX,
                matches: matches.clone(),
                ..FlowMod::default()
            }));
        }
    }
    for &cookie in have.flows.keys() {
        if !want.flows.contains_key(&cookie) {
            deletes.push(Msg::Flow(FlowMod {
                command: FlowCommand::Delete,
                table: TABLE_ALL,
                cookie,
                cookie_mask: u64::MAX,
                ..FlowMod::default()
            }));
        }
    }
    msgs.extend(deletes);
    for &id in have.meters.keys() {
        if !want.meters.contains_key(&id) {
            msgs.push(Msg::Meter(MeterMod {
                command: MeterCommand::Delete,
                meter_id: id,
                ..MeterMod::default()
            }));
        }
    }
    if msgs.is_empty() {
        return Ok(0);
    }
    let n = msgs.len() as u64;
    let sent = conn.send(&msgs);
    match sent {
        Ok(()) => {
            have.flows.retain(|c, _| want.flows.contains_key(c));
            for c in changed {
                have.flows.insert(c, written(&want.flows[&c]));
            }
            have.meters = want.meters.clone();
            Ok(n)
        }
        Err(e) => {
            have.known = false;
            Err(serr(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xapi_wire::Value;
    use xnet_model::db::vs;

    fn vif(kind: &str, params: &[(&str, &str)]) -> Record {
        let p = params
            .iter()
            .map(|(k, v)| (k.to_string(), vs(*v)))
            .collect();
        Record::from([
            ("qos_algorithm_type".to_string(), vs(kind)),
            ("qos_algorithm_params".to_string(), Value::Struct(p)),
        ])
    }

    #[test]
    fn ratelimit_kbps_is_kib_per_second_with_a_bucket_tcp_can_use() {
        // 1221 KiB/s ≈ 10 Mbit/s; the bucket holds 200 ms of it, more than
        // one 50 ms timeslice's credit.
        let r = rate_limit(&vif("ratelimit", &[("kbps", "1221")]))
            .unwrap()
            .unwrap();
        assert_eq!((r.kbit_s, r.burst_kbit), (10003, 2001));
        // A long timeslice's credit wins over the floor.
        let r = rate_limit(&vif(
            "ratelimit",
            &[("kbps", "1221"), ("timeslice_us", "1000000")],
        ))
        .unwrap()
        .unwrap();
        assert_eq!(r.burst_kbit, 10003);
        assert_eq!(rate_limit(&vif("", &[])), Ok(None));
    }

    #[test]
    fn settings_xapi_ignores_give_a_warning_and_no_limit() {
        for (kind, params) in [
            ("token-bucket", vec![("kbps", "100")]),
            ("ratelimit", vec![]),
            ("ratelimit", vec![("kbps", "ten")]),
            ("ratelimit", vec![("kbps", "0")]),
        ] {
            let w = rate_limit(&vif(kind, &params)).unwrap_err();
            assert!(w.contains("ignored"), "{kind} {params:?}: {w}");
        }
    }
}
