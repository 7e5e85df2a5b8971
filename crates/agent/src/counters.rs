//! Interface counters into PIF_metrics and VIF_metrics, what users would
//! otherwise watch with `iftop`: every [`INTERVAL`] the netlink stats64 of
//! this host's NICs and VIF backends become `io_read_kbs`/`io_write_kbs`
//! (KiB/s over the interval) and raw counters in `other_config`. Only records
//! whose values changed are written, so an idle host makes no events.
//!
//! Directions are XAPI's (xcp-rrdd's netdev plugin): a PIF reads what its NIC
//! receives; a VIF's figures are the guest's view, so what the backend device
//! transmits is what the guest reads (receives) and the other way round.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use xapi_wire::Value;
use xnet_model::db::{self, b, i, s};
use xnet_model::{ApiError, Db, Read, Record, Tables};
use xnet_rtnl::{Link, LinkStats, Rtnl, RtnlError};
use xnet_store::Store;

/// How often counters are sampled and written.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// The `other_config` keys the raw counters go under.
pub const KEYS: [&str; 8] = [
    "rx_bytes",
    "tx_bytes",
    "rx_packets",
    "tx_packets",
    "rx_dropped",
    "tx_dropped",
    "rx_errors",
    "tx_errors",
];

#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    #[error("netlink: {0}")]
    Netlink(#[from] RtnlError),
}

/// One metrics record and the devices whose counters it sums.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub class: &'static str,
    pub metrics: String,
    pub devices: Vec<String>,
    /// A VIF: counters are turned round to the guest's point of view.
    pub guest: bool,
}

/// What the sources of this host are: physical PIFs (bond masters sum their
/// members; VLAN and tunnel PIFs share their parent's metrics, as in XAPI)
/// and VIFs of VMs running here (PV `vif` and emulated `tap` devices summed,
/// as xcp-rrdd does).
pub fn sources(t: &impl Tables, host: &str) -> Vec<Source> {
    let mut out = vec![];
    for (_, pif) in t.scan("PIF") {
        if s(pif, "host") != host || i(pif, "VLAN") >= 0 {
            continue;
        }
        let devices = if b(pif, "physical") {
            vec![s(pif, "device").to_string()]
        } else if let Some(bond) = db::set_strs(pif, "bond_master_of").first() {
            t.scan("PIF")
                .filter(|(_, m)| s(m, "bond_slave_of") == bond.as_str())
                .map(|(_, m)| s(m, "device").to_string())
                .collect()
        } else {
            continue;
        };
        out.push(Source {
            class: "PIF_metrics",
            metrics: s(pif, "metrics").to_string(),
            devices,
            guest: false,
        });
    }
    for (_, vif) in t.scan("VIF") {
        let Some(vm) = t.get("VM", s(vif, "VM")) else {
            continue;
        };
        if s(vm, "resident_on") != host || b(vm, "is_control_domain") {
            continue;
        }
        let running = b(vif, "currently_attached") && s(vm, "power_state") == "Running";
        let devices = if running {
            xnet_model::hotplug::backend_devices(i(vm, "domid"), vif)
        } else {
            vec![]
        };
        out.push(Source {
            class: "VIF_metrics",
            metrics: s(vif, "metrics").to_string(),
            devices,
            guest: true,
        });
    }
    out.retain(|x| !x.metrics.is_empty() && x.metrics != "OpaqueRef:NULL");
    out
}

/// Swaps receive and transmit: the backend's view → the guest's.
pub fn guest_view(st: &LinkStats) -> LinkStats {
    LinkStats {
        rx_packets: st.tx_packets,
        tx_packets: st.rx_packets,
        rx_bytes: st.tx_bytes,
        tx_bytes: st.rx_bytes,
        rx_errors: st.tx_errors,
        tx_errors: st.rx_errors,
        rx_dropped: st.tx_dropped,
        tx_dropped: st.rx_dropped,
    }
}

fn add(a: &mut LinkStats, b: &LinkStats) {
    a.rx_packets += b.rx_packets;
    a.tx_packets += b.tx_packets;
    a.rx_bytes += b.rx_bytes;
    a.tx_bytes += b.tx_bytes;
    a.rx_errors += b.rx_errors;
    a.tx_errors += b.tx_errors;
    a.rx_dropped += b.rx_dropped;
    a.tx_dropped += b.tx_dropped;
}

/// KiB/s between two samples `secs` apart: (read, write) = (rx, tx). A counter
/// that went down (the device was recreated) counts from zero, so the rate is
/// a lower bound rather than a huge wrap-around.
pub fn rates(prev: &LinkStats, cur: &LinkStats, secs: f64) -> (f64, f64) {
    if secs <= 0.0 {
        return (0.0, 0.0);
    }
    let per = |p: u64, c: u64| {
        let d = if c >= p { c - p } else { c };
        round2(d as f64 / 1024.0 / secs)
    };
    (
        per(prev.rx_bytes, cur.rx_bytes),
        per(prev.tx_bytes, cur.tx_bytes),
    )
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn counter_map(st: &LinkStats) -> [(&'static str, u64); 8] {
    [
        ("rx_bytes", st.rx_bytes),
        ("tx_bytes", st.tx_bytes),
        ("rx_packets", st.rx_packets),
        ("tx_packets", st.tx_packets),
        ("rx_dropped", st.rx_dropped),
        ("tx_dropped", st.tx_dropped),
        ("rx_errors", st.rx_errors),
        ("tx_errors", st.tx_errors),
    ]
}

/// The fields a sample gives a metrics record; `rates` is None for the first
/// sample of a record (no interval yet: the stored rate is kept).
pub fn apply(rec: &mut Record, st: &LinkStats, rates: Option<(f64, f64)>) -> bool {
    let before = rec.clone();
    let mut oc = db::m(rec, "other_config").clone();
    for (k, v) in counter_map(st) {
        oc.insert(k.to_string(), db::vs(v.to_string()));
    }
    rec.insert("other_config".into(), Value::Struct(oc));
    if let Some((r, w)) = rates {
        rec.insert("io_read_kbs".into(), Value::Float(r));
        rec.insert("io_write_kbs".into(), Value::Float(w));
    }
    *rec != before
}

/// Zero rates for a record whose devices are gone (VM halted, VIF unplugged);
/// the last counters stay.
fn idle(rec: &mut Record) -> bool {
    let before = rec.clone();
    rec.insert("io_read_kbs".into(), Value::Float(0.0));
    rec.insert("io_write_kbs".into(), Value::Float(0.0));
    let f = |r: &Record, k: &str| match r.get(k) {
        Some(Value::Float(x)) => *x,
        _ => 0.0,
    };
    f(&before, "io_read_kbs") != 0.0 || f(&before, "io_write_kbs") != 0.0
}

/// The previous sample of each metrics record.
#[derive(Default)]
pub struct Counters {
    last: Option<Instant>,
    prev: HashMap<String, (Instant, LinkStats)>,
}

impl Counters {
    /// Samples and writes if [`INTERVAL`] has passed since the last sample;
    /// returns the number of metrics records written.
    pub fn tick(
        &mut self,
        rt: &mut Rtnl,
        store: &Store<Record>,
        host: &str,
    ) -> Result<usize, CountersError> {
        let now = Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < INTERVAL) {
            return Ok(0);
        }
        self.last = Some(now);
        let links = crate::netif::dump(|| rt.links())?;
        Ok(self.sample(store, host, &links, now))
    }

    /// One sample from `links` taken at `now`.
    pub fn sample(
        &mut self,
        store: &Store<Record>,
        host: &str,
        links: &[Link],
        now: Instant,
    ) -> usize {
        let by_name: HashMap<&str, &LinkStats> =
            links.iter().map(|l| (l.name.as_str(), &l.stats)).collect();
        let srcs = store.read(|v| sources(&crate::ViewT(v), host));
        let mut changes: BTreeMap<(&'static str, String), Record> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for src in &srcs {
            let found: Vec<&LinkStats> = src
                .devices
                .iter()
                .filter_map(|d| by_name.get(d.as_str()).copied())
                .collect();
            let Some(mut rec) = store.read(|v| v.get(src.class, &src.metrics).cloned()) else {
                continue;
            };
            if found.is_empty() {
                self.prev.remove(&src.metrics);
                if idle(&mut rec) {
                    changes.insert((src.class, src.metrics.clone()), rec);
                }
                continue;
            }
            let mut st = LinkStats::default();
            for f in found {
                add(&mut st, f);
            }
            if src.guest {
                st = guest_view(&st);
            }
            seen.insert(src.metrics.clone());
            let r = self
                .prev
                .get(&src.metrics)
                .map(|(t, p)| rates(p, &st, now.duration_since(*t).as_secs_f64()));
            self.prev.insert(src.metrics.clone(), (now, st));
            if apply(&mut rec, &st, r) {
                changes.insert((src.class, src.metrics.clone()), rec);
            }
        }
        self.prev.retain(|k, _| seen.contains(k));
        if changes.is_empty() {
            return 0;
        }
        let n = changes.len();
        let stamp = xnet_model::now_datetime();
        let _ = store.write(|t| {
            let mut tt = crate::TxnT(t);
            let mut d = Db::new(&mut tt);
            for ((class, r), mut rec) in changes {
                if !d.exists(class, &r) {
                    continue;
                }
                rec.insert("last_updated".into(), Value::DateTime(stamp.clone()));
                // Other keys of other_config may have changed meanwhile.
                let current = d.rec(class, &r)?.clone();
                let mut oc = db::m(&current, "other_config").clone();
                for k in KEYS {
                    if let Some(v) = db::m(&rec, "other_config").get(k) {
                        oc.insert(k.to_string(), v.clone());
                    }
                }
                d.update(class, &r, |x| {
                    for f in ["io_read_kbs", "io_write_kbs", "last_updated"] {
                        if let Some(v) = rec.get(f) {
                            x.insert(f.into(), v.clone());
                        }
                    }
                    x.insert("other_config".into(), Value::Struct(oc));
                })?;
            }
            Ok::<_, ApiError>(())
        });
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(rx: u64, tx: u64) -> LinkStats {
        LinkStats {
            rx_bytes: rx,
            tx_bytes: tx,
            rx_packets: rx / 100,
            tx_packets: tx / 100,
            ..Default::default()
        }
    }

    #[test]
    fn rates_are_kib_per_second_over_the_interval() {
        // 5 MiB received and 512 KiB sent in 5 s.
        let (r, w) = rates(&st(1000, 0), &st(1000 + 5 * 1024 * 1024, 512 * 1024), 5.0);
        assert_eq!((r, w), (1024.0, 102.4));
        assert_eq!(rates(&st(7, 7), &st(7, 7), 5.0), (0.0, 0.0));
        assert_eq!(rates(&st(0, 0), &st(10240, 0), 0.0), (0.0, 0.0));
        // Counter reset: counted from zero, not as a wrap of 2^64.
        assert_eq!(rates(&st(1 << 40, 0), &st(2048, 0), 2.0), (1.0, 0.0));
    }

    #[test]
    fn guest_view_turns_directions_round() {
        let backend = LinkStats {
            rx_bytes: 1,
            tx_bytes: 2,
            rx_packets: 3,
            tx_packets: 4,
            rx_errors: 5,
            tx_errors: 6,
            rx_dropped: 7,
            tx_dropped: 8,
        };
        let g = guest_view(&backend);
        // The guest receives what the backend transmits.
        assert_eq!((g.rx_bytes, g.tx_bytes), (2, 1));
        assert_eq!((g.rx_packets, g.tx_packets), (4, 3));
        assert_eq!((g.rx_errors, g.tx_errors), (6, 5));
        assert_eq!((g.rx_dropped, g.tx_dropped), (8, 7));
        assert_eq!(guest_view(&g), backend);
    }

    #[test]
    fn apply_reports_change_only_when_values_move() {
        let mut rec = Record::new();
        let user: db::Map = [("mine".to_string(), db::vs("x"))].into_iter().collect();
        rec.insert("other_config".into(), Value::Struct(user));
        assert!(apply(&mut rec, &st(100, 200), None));
        assert_eq!(db::mget(&rec, "other_config", "rx_bytes"), Some("100"));
        assert_eq!(db::mget(&rec, "other_config", "tx_packets"), Some("2"));
        assert_eq!(db::mget(&rec, "other_config", "mine"), Some("x"));
        assert!(!rec.contains_key("io_read_kbs"));
        assert!(apply(&mut rec, &st(100, 200), Some((0.0, 0.0))));
        // Idle: same counters, same zero rates → nothing to write.
        assert!(!apply(&mut rec, &st(100, 200), Some((0.0, 0.0))));
        assert!(apply(&mut rec, &st(100, 300), Some((0.0, 0.02))));
        assert!(idle(&mut rec));
        assert!(!idle(&mut rec));
    }
}
