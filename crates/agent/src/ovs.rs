//! The Open vSwitch backend: reads Bridge/Port/Interface rows, diffs them
//! against the desired bridges and writes only the difference, in one OVSDB
//! transaction. Bridges without `external_ids:xnet-managed` are never touched.

use crate::compile::{Bridge, Iface, Port};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use xnet_ovsdb::{atom, Client, OvsdbError};

const DB: &str = "Open_vSwitch";

#[derive(Debug, Default)]
struct Actual {
    root: Option<String>,
    bridges: BTreeMap<String, Value>,
    ports: BTreeMap<String, Value>,
    ifaces: BTreeMap<String, Value>,
}

/// The Open vSwitch backend over one OVSDB connection.
pub struct Ovs {
    client: Client,
    datapath: String,
}

impl Ovs {
    pub fn new(addr: &str, datapath: &str) -> Result<Ovs, OvsdbError> {
        let client = Client::new(addr)?;
        monitor(&client)?;
        Ok(Ovs {
            client,
            datapath: datapath.to_string(),
        })
    }
}

impl crate::Backend for Ovs {
    fn reconcile(&mut self, bridges: &BTreeMap<String, Bridge>) -> Result<u64, crate::AgentError> {
        Ok(reconcile(&self.client, bridges, &self.datapath)?)
    }

    fn ofports(
        &mut self,
        ifaces: &[String],
        wait: Duration,
    ) -> Result<BTreeMap<String, i64>, crate::AgentError> {
        Ok(ofports(&self.client, ifaces, wait)?)
    }

    fn free_ofport(&mut self, bridge: &str, port: &Port) -> Result<Option<u32>, crate::AgentError> {
        Ok(free_ofport(&self.client, bridge, port)?)
    }

    fn plug(&mut self, bridge: &str, port: &Port, ofport: u32) -> Result<(), crate::AgentError> {
        Ok(plug(&self.client, bridge, port, ofport)?)
    }
}

/// The fast path, first step: the lowest OpenFlow port number free on an
/// existing bridge for a new one-interface port, so its rules can be in
/// place before vswitchd adds it. `None` when the bridge is missing or the
/// name is already in use anywhere: the whole-host reconcile sorts those
/// out.
pub fn free_ofport(c: &Client, bridge: &str, port: &Port) -> Result<Option<u32>, OvsdbError> {
    c.poll()?;
    let names: BTreeSet<&str> = std::iter::once(port.name.as_str())
        .chain(port.interfaces.iter().map(|i| i.name.as_str()))
        .collect();
    if port.interfaces.len() != 1 {
        return Ok(None);
    }
    Ok(c.replica(|r| {
        let named = |t: &str| {
            r.rows(t)
                .any(|(_, row)| row["name"].as_str().is_some_and(|n| names.contains(n)))
        };
        let (_, brow) = r
            .rows("Bridge")
            .find(|(_, row)| row["name"].as_str() == Some(bridge))?;
        if named("Port") || named("Interface") {
            return None;
        }
        // Numbers held or asked for on this bridge.
        let mut used = BTreeSet::new();
        for pu in refs(&brow["ports"]) {
            let Some(pr) = r.get("Port", &pu) else {
                continue;
            };
            for iu in refs(&pr["interfaces"]) {
                let Some(ir) = r.get("Interface", &iu) else {
                    continue;
                };
                used.extend(opt_int(&ir["ofport"]));
                used.extend(opt_int(&ir["ofport_request"]));
            }
        }
        (1..=OFPORT_MAX)
            .find(|n| !used.contains(n))
            .and_then(|n| u32::try_from(n).ok())
    }))
}

/// The fast path, second step: adds the port with one insert and mutate,
/// asking for `ofport`, without reading or diffing the rest.
pub fn plug(c: &Client, bridge: &str, port: &Port, ofport: u32) -> Result<(), OvsdbError> {
    let Some(iface) = port.interfaces.first() else {
        return Ok(());
    };
    let mut row = iface_row(iface);
    row["ofport_request"] = json!(ofport);
    let ops = vec![
        json!({"op": "insert", "table": "Interface", "row": row, "uuid-name": "i"}),
        json!({"op": "insert", "table": "Port", "uuid-name": "p",
               "row": port_row(port, atom::set(vec![atom::named("i")]))}),
        json!({"op": "mutate", "table": "Bridge", "where": [["name", "==", bridge]],
               "mutations": [["ports", "insert", atom::set(vec![atom::named("p")])]]}),
    ];
    c.transact(DB, ops)?;
    Ok(())
}

/// The highest port number `ofport_request` accepts.
const OFPORT_MAX: i64 = 65279;

/// The OpenFlow port numbers of `ifaces` from the replica, waiting up to
/// `wait` for vswitchd to assign the missing ones (it writes `ofport` once
/// it has added the port). Interfaces without one are left out.
pub fn ofports(
    c: &Client,
    ifaces: &[String],
    wait: Duration,
) -> Result<BTreeMap<String, i64>, OvsdbError> {
    let deadline = Instant::now() + wait;
    let wanted: std::collections::HashSet<&str> = ifaces.iter().map(String::as_str).collect();
    loop {
        c.poll()?;
        // -1 is vswitchd's answer for a port it could not add: no waiting.
        let have: BTreeMap<String, i64> = c.replica(|r| {
            r.rows("Interface")
                .filter_map(|(_, row)| {
                    let name = row["name"].as_str()?;
                    let port = opt_int(&row["ofport"])?;
                    wanted.contains(name).then(|| (name.to_string(), port))
                })
                .collect()
        });
        if have.len() == ifaces.len() || Instant::now() >= deadline {
            return Ok(have.into_iter().filter(|(_, p)| *p > 0).collect());
        }
        // vswitchd answers within milliseconds: a fine poll keeps a plug's
        // latency its own.
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The columns the agent compares and writes, monitored into the client's
/// replica so a pass reads memory instead of the whole database.
pub fn monitor(c: &Client) -> Result<(), OvsdbError> {
    c.monitor(
        DB,
        json!({
            "Open_vSwitch": {"columns": ["bridges", "cur_cfg", "next_cfg"]},
            "Bridge": {"columns": ["name", "ports", "other_config", "external_ids", "datapath_type"]},
            "Port": {"columns": ["name", "interfaces", "tag", "fake_bridge", "bond_mode", "lacp",
                                 "bond_updelay", "bond_downdelay", "mac", "other_config", "external_ids"]},
            "Interface": {"columns": ["name", "type", "mtu_request", "other_config", "external_ids", "ofport", "ofport_request",
                                      "ingress_policing_rate", "ingress_policing_burst"]},
        }),
    )
}

fn read(c: &Client) -> Result<Actual, OvsdbError> {
    // Notifications that arrived since the last pass (drift by hand, …);
    // reconnects and re-synchronizes when the server went away.
    c.poll()?;
    Ok(c.replica(|r| {
        let rows = |t: &str| {
            r.rows(t)
                .map(|(u, row)| (u.clone(), row.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        Actual {
            root: r.rows("Open_vSwitch").next().map(|(u, _)| u.clone()),
            bridges: rows("Bridge"),
            ports: rows("Port"),
            ifaces: rows("Interface"),
        }
    }))
}

fn smap(v: &Value) -> BTreeMap<String, String> {
    atom::map_pairs(v).into_iter().collect()
}
fn opt_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        _ => atom::set_items(v).first().and_then(|x| x.as_i64()),
    }
}
fn opt_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        _ => atom::set_items(v)
            .first()
            .and_then(|x| x.as_str().map(str::to_string)),
    }
}
fn refs(v: &Value) -> Vec<String> {
    atom::set_items(v)
        .iter()
        .filter_map(atom::uuid_of)
        .collect()
}
fn jmap(m: &BTreeMap<String, String>) -> Value {
    atom::map(
        &m.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>(),
    )
}
fn jopt_int(v: Option<i64>) -> Value {
    match v {
        Some(x) => json!(x),
        None => atom::set(vec![]),
    }
}
fn jopt_str(v: &Option<String>) -> Value {
    match v {
        Some(x) => json!(x),
        None => atom::set(vec![]),
    }
}

fn iface_row(i: &Iface) -> Value {
    json!({"name": i.name, "type": i.kind, "mtu_request": jopt_int(i.mtu), "other_config": jmap(&i.other_config),
           "external_ids": jmap(&i.external_ids),
           "ingress_policing_rate": i.ingress_policing_rate, "ingress_policing_burst": i.ingress_policing_burst})
}
fn iface_same(i: &Iface, a: &Value) -> bool {
    a["type"].as_str().unwrap_or("") == i.kind
        && opt_int(&a["mtu_request"]) == i.mtu
        && smap(&a["other_config"]) == i.other_config
        && smap(&a["external_ids"]) == i.external_ids
        && opt_int(&a["ingress_policing_rate"]).unwrap_or(0) == i.ingress_policing_rate
        && opt_int(&a["ingress_policing_burst"]).unwrap_or(0) == i.ingress_policing_burst
}
fn port_row(p: &Port, ifaces: Value) -> Value {
    json!({
        "name": p.name, "interfaces": ifaces, "tag": jopt_int(p.tag), "fake_bridge": p.fake_bridge,
        "bond_mode": jopt_str(&p.bond_mode), "lacp": jopt_str(&p.lacp),
        "bond_updelay": p.bond_updelay, "bond_downdelay": p.bond_downdelay, "mac": jopt_str(&p.mac),
        "other_config": jmap(&p.other_config), "external_ids": jmap(&p.external_ids),
    })
}
fn port_same(p: &Port, a: &Value) -> bool {
    opt_int(&a["tag"]) == p.tag
        && a["fake_bridge"].as_bool().unwrap_or(false) == p.fake_bridge
        && opt_str(&a["bond_mode"]) == p.bond_mode
        && opt_str(&a["lacp"]) == p.lacp
        && opt_int(&a["bond_updelay"]).unwrap_or(0) == p.bond_updelay
        && opt_int(&a["bond_downdelay"]).unwrap_or(0) == p.bond_downdelay
        && opt_str(&a["mac"]) == p.mac
        && smap(&a["other_config"]) == p.other_config
        && smap(&a["external_ids"]) == p.external_ids
}

/// Makes OVS hold exactly `desired` (for xnet's bridges). Returns the number
/// of transactions written (0 when nothing differed).
pub fn reconcile(
    c: &Client,
    desired: &BTreeMap<String, Bridge>,
    datapath: &str,
) -> Result<u64, OvsdbError> {
    let a = read(c)?;
    let mut ops: Vec<Value> = vec![];
    let mut n = 0usize;
    let mut named = |prefix: &str| {
        n += 1;
        format!("{prefix}{n}")
    };
    let root_ref = match &a.root {
        Some(u) => atom::uuid(u),
        None => {
            ops.push(
                json!({"op": "insert", "table": "Open_vSwitch", "row": {}, "uuid-name": "root"}),
            );
            atom::named("root")
        }
    };
    let root_where = |r: &Value| -> Value {
        if a.root.is_some() {
            json!([["_uuid", "==", r]])
        } else {
            json!([])
        }
    };
    let by_name: BTreeMap<String, (&String, &Value)> = a
        .bridges
        .iter()
        .map(|(u, r)| (r["name"].as_str().unwrap_or("").to_string(), (u, r)))
        .collect();
    let mut add_bridges = vec![];
    let mut del_bridges = vec![];
    for (u, r) in &a.bridges {
        let name = r["name"].as_str().unwrap_or("");
        let managed = smap(&r["external_ids"])
            .get("xnet-managed")
            .map(String::as_str)
            == Some("true");
        if managed && !desired.contains_key(name) {
            del_bridges.push(atom::uuid(u));
        }
    }
    // A port name lives on one bridge only: ports moving between bridges are
    // removed from the old one in the same transaction.
    let desired_port_home: BTreeMap<&str, &str> = desired
        .values()
        .flat_map(|b| b.ports.keys().map(move |p| (p.as_str(), b.name.as_str())))
        .collect();
    for br in desired.values() {
        let mut port_refs = vec![];
        let existing = by_name.get(&br.name);
        let existing_ports: BTreeMap<String, (String, &Value)> = existing
            .map(|(_, r)| {
                refs(&r["ports"])
                    .into_iter()
                    .filter_map(|pu| {
                        a.ports.get(&pu).map(|pr| {
                            (
                                pr["name"].as_str().unwrap_or("").to_string(),
                                (pu.clone(), pr),
                            )
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut ports_changed = false;
        for p in br.ports.values() {
            match existing_ports.get(&p.name) {
                Some((pu, pr)) => {
                    // Interfaces by name; any difference in the set rewrites it.
                    let cur: Vec<(String, &Value)> = refs(&pr["interfaces"])
                        .into_iter()
                        .filter_map(|iu| a.ifaces.get(&iu).map(|ir| (iu, ir)))
                        .collect();
                    let cur_names: BTreeSet<&str> = cur
                        .iter()
                        .map(|(_, r)| r["name"].as_str().unwrap_or(""))
                        .collect();
                    let want_names: BTreeSet<&str> =
                        p.interfaces.iter().map(|i| i.name.as_str()).collect();
                    let mut iface_refs = vec![];
                    let mut ifaces_changed = cur_names != want_names;
                    for i in &p.interfaces {
                        match cur
                            .iter()
                            .find(|(_, r)| r["name"].as_str() == Some(&i.name))
                        {
                            Some((iu, ir)) => {
                                if !iface_same(i, ir) {
                                    let mut row = iface_row(i);
                                    if let Some(m) = row.as_object_mut() {
                                        m.remove("name");
                                    }
                                    ops.push(json!({"op": "update", "table": "Interface", "where": [["_uuid", "==", atom::uuid(iu)]],
                                        "row": row}));
                                }
                                iface_refs.push(atom::uuid(iu));
                            }
                            None => {
                                let nm = named("i");
                                ops.push(json!({"op": "insert", "table": "Interface", "row": iface_row(i), "uuid-name": nm}));
                                iface_refs.push(atom::named(&nm));
                                ifaces_changed = true;
                            }
                        }
                    }
                    if ifaces_changed || !port_same(p, pr) {
                        // A port's name is immutable in OVSDB.
                        let mut row = port_row(p, atom::set(iface_refs));
                        if let Some(m) = row.as_object_mut() {
                            m.remove("name");
                        }
                        ops.push(json!({"op": "update", "table": "Port", "where": [["_uuid", "==", atom::uuid(pu)]],
                            "row": row}));
                    }
                    port_refs.push(atom::uuid(pu));
                }
                None => {
                    let mut iface_refs = vec![];
                    for i in &p.interfaces {
                        let nm = named("i");
                        ops.push(json!({"op": "insert", "table": "Interface", "row": iface_row(i), "uuid-name": nm}));
                        iface_refs.push(atom::named(&nm));
                    }
                    let nm = named("p");
                    ops.push(json!({"op": "insert", "table": "Port", "row": port_row(p, atom::set(iface_refs)), "uuid-name": nm}));
                    port_refs.push(atom::named(&nm));
                    ports_changed = true;
                }
            }
        }
        // Ports on an xnet bridge that are not desired go (manual additions
        // too: the bridge is xnet's).
        if existing_ports.keys().any(|k| !br.ports.contains_key(k)) {
            ports_changed = true;
        }
        match existing {
            Some((bu, brow)) => {
                let same = smap(&brow["other_config"]) == br.other_config
                    && smap(&brow["external_ids"]) == br.external_ids
                    && brow["datapath_type"].as_str().unwrap_or("") == datapath;
                if ports_changed || !same {
                    ops.push(json!({"op": "update", "table": "Bridge", "where": [["_uuid", "==", atom::uuid(bu)]],
                        "row": {"ports": atom::set(port_refs), "other_config": jmap(&br.other_config),
                                "external_ids": jmap(&br.external_ids), "datapath_type": datapath}}));
                }
            }
            None => {
                let nm = named("b");
                ops.push(json!({"op": "insert", "table": "Bridge", "uuid-name": nm,
                    "row": {"name": br.name, "ports": atom::set(port_refs), "other_config": jmap(&br.other_config),
                            "external_ids": jmap(&br.external_ids), "datapath_type": datapath}}));
                add_bridges.push(atom::named(&nm));
            }
        }
    }
    // Desired ports currently sitting on another bridge (xnet's or not).
    for (bname, (bu, brow)) in &by_name {
        if desired.contains_key(bname) {
            continue;
        }
        let stray: Vec<Value> = refs(&brow["ports"])
            .into_iter()
            .filter(|pu| {
                a.ports
                    .get(pu)
                    .and_then(|pr| pr["name"].as_str())
                    .is_some_and(|n| desired_port_home.get(n).is_some_and(|home| home != bname))
            })
            .map(|pu| atom::uuid(&pu))
            .collect();
        if !stray.is_empty() && !del_bridges.contains(&atom::uuid(bu)) {
            ops.push(json!({"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", atom::uuid(bu)]],
                "mutations": [["ports", "delete", atom::set(stray)]]}));
        }
    }
    if !add_bridges.is_empty() {
        ops.push(
            json!({"op": "mutate", "table": "Open_vSwitch", "where": root_where(&root_ref),
            "mutations": [["bridges", "insert", atom::set(add_bridges)]]}),
        );
    }
    if !del_bridges.is_empty() {
        ops.push(
            json!({"op": "mutate", "table": "Open_vSwitch", "where": root_where(&root_ref),
            "mutations": [["bridges", "delete", atom::set(del_bridges)]]}),
        );
    }
    if ops.is_empty() {
        return Ok(0);
    }
    c.transact(DB, ops)?;
    Ok(1)
}
