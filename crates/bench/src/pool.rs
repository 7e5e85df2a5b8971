//! `xnet-bench pool`: a pool of N lab hosts (default 16), each a namespace
//! with its own OVS (userspace datapath) and the real xnetd, joined to host
//! 0. Figures: a bond on every host from one Bond.create on the coordinator
//! against XenCenter's way with XAPI (one Bond.create per host, members
//! first), and the round trip of a change to a member's PIF made on the
//! coordinator against the same change to the coordinator's own PIF.

use crate::{ms, pct};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};
use xapi_client::{CallError, Client, Target};
use xapi_wire::Value;
use xnet_lab::{Lab, LabSpec};
use xnet_ovsdb::atom;

const PASSWORD: &str = "bench-pw";
/// Host i's management address is 10.97.0.<i+2>: a subnet of its own, so
/// the bench does not clash with the tests' (10.98/10.99).
const COORDINATOR: &str = "10.97.0.2:443";
const NICS: usize = 3;

fn s(x: &str) -> Value {
    Value::String(x.into())
}
fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
fn code(e: &CallError) -> &str {
    match e {
        CallError::Api(v) => v.first().map_or("", String::as_str),
        CallError::Transport(_) => "",
    }
}

/// A logged-in session on a host's unix socket (root logs in with any
/// password there).
struct Session {
    c: Client,
    s: Value,
}
impl Session {
    fn open(sock: &str) -> Result<Session, CallError> {
        let mut c = Client::connect(&Target::Unix(sock.into())).map_err(CallError::Transport)?;
        let s = c.call(
            "session.login_with_password",
            vec![s("root"), s(""), s("2.23"), s("xnet-bench pool")],
        )?;
        Ok(Session { c, s })
    }
    fn try_call(&mut self, method: &str, mut args: Vec<Value>) -> Result<Value, CallError> {
        args.insert(0, self.s.clone());
        self.c.call(method, args)
    }
    fn call(&mut self, method: &str, args: Vec<Value>) -> Result<Value> {
        self.try_call(method, args)
            .map_err(|e| anyhow!("{method}: {e:?}"))
    }
}

/// The lab and one xnetd per host. The xnetds are killed first; dropping
/// the lab then removes its namespaces, whatever still runs in them and its
/// run dir (the xnetds' state lives there), on error too.
struct Pool {
    xnetd: Vec<Child>,
    lab: Lab,
}
impl Drop for Pool {
    fn drop(&mut self) {
        for c in &mut self.xnetd {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pool {
    fn start(n: usize) -> Result<Pool> {
        let bin = std::env::current_exe()?.with_file_name("xnetd");
        if !bin.exists() {
            bail!(
                "no xnetd beside the bench ({}): cargo build --release --workspace --bins",
                bin.display()
            );
        }
        let lab = Lab::new(LabSpec {
            hosts: n,
            nics: NICS,
            ..LabSpec::default()
        })?;
        let mut pool = Pool { xnetd: vec![], lab };
        for i in 0..n {
            let dir = pool.dir(i);
            std::fs::write(dir.join("pw"), format!("{PASSWORD}\n"))?;
            let p = |f: &str| dir.join(f).display().to_string();
            let ip = format!("10.97.0.{}", i + 2);
            let db = format!("unix:{}", pool.lab.hosts()[i].db_sock().display());
            let bin = bin.display().to_string();
            let host = format!("bench-h{i}");
            // tests/integration/conftest.py's flags. HTTPS on every address
            // of the namespace (as the tests do): the management address is
            // only there once the agent has realized it.
            let argv = [
                bin.as_str(),
                "--state-dir",
                &p("state"),
                "--run-dir",
                &p("run"),
                "--listen",
                "0.0.0.0:443",
                "--ovsdb",
                &db,
                "--datapath",
                "netdev",
                "--hostname",
                &host,
                "--resolv-conf",
                &p("resolv.conf"),
                "--root-password-file",
                &p("pw"),
                "--mgmt-device",
                "eth0",
                "--mgmt-mode",
                "static",
                "--mgmt-ip",
                &ip,
                "--mgmt-netmask",
                "255.255.255.0",
            ];
            let child = pool.lab.spawn_in(i, &argv, &[])?;
            pool.xnetd.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..n {
            while Session::open(&pool.sock(i)).is_err() {
                if let Some(st) = pool.xnetd[i].try_wait()? {
                    bail!("xnetd of host {i} exited ({st}):\n{}", pool.log(i));
                }
                if Instant::now() > deadline {
                    bail!("xnetd of host {i} does not answer:\n{}", pool.log(i));
                }
                sleep(Duration::from_millis(50));
            }
        }
        Ok(pool)
    }
    fn dir(&self, i: usize) -> PathBuf {
        self.lab.hosts()[i].run_dir().to_path_buf()
    }
    fn sock(&self, i: usize) -> String {
        self.dir(i).join("run/xapi.sock").display().to_string()
    }
    fn session(&self, i: usize) -> Result<Session> {
        Session::open(&self.sock(i)).map_err(|e| anyhow!("host {i}: login: {e:?}"))
    }
    /// xnetd's stdout and stderr (one file across its re-exec: same pid).
    fn log(&self, i: usize) -> String {
        let h = &self.lab.hosts()[i];
        std::fs::read_to_string(self.lab.spawn_log(h.ns(), self.xnetd[i].id())).unwrap_or_default()
    }
    /// A monitor of host i's OVSDB, read without asking vswitchd.
    fn ovsdb(&self, i: usize) -> Result<xnet_ovsdb::Client> {
        let db = format!("unix:{}", self.lab.hosts()[i].db_sock().display());
        let c = xnet_ovsdb::Client::connect(&db)?;
        c.monitor(
            "Open_vSwitch",
            json!({
                "Bridge": {"columns": ["name", "ports"]},
                "Port": {"columns": ["interfaces"]},
                "Interface": {"columns": ["ofport"]},
            }),
        )?;
        Ok(c)
    }
}

/// Whether the switch holds a bond on `bridge`: a port of two or more
/// interfaces, each given its OpenFlow port by vswitchd.
fn has_bond(c: &xnet_ovsdb::Client, bridge: &str) -> Result<bool> {
    c.poll()?;
    Ok(c.replica(|r| {
        let numbered = |i: &String| {
            r.get("Interface", i)
                .and_then(|x| x["ofport"].as_i64())
                .is_some_and(|p| p > 0)
        };
        r.rows("Bridge")
            .filter(|(_, b)| b["name"].as_str() == Some(bridge))
            .flat_map(|(_, b)| atom::set_items(&b["ports"]))
            .filter_map(|p| r.get("Port", &atom::uuid_of(&p)?))
            .any(|port| {
                let ifs: Vec<String> = atom::set_items(&port["interfaces"])
                    .iter()
                    .filter_map(atom::uuid_of)
                    .collect();
                ifs.len() >= 2 && ifs.iter().all(numbered)
            })
    }))
}

/// Watches every host's OVS from `t0` on, on a thread of its own: for each
/// host, when its bond appeared (None if not within `limit`).
fn watch(
    dbs: Vec<xnet_ovsdb::Client>,
    bridge: String,
    t0: Instant,
    limit: Duration,
) -> JoinHandle<Result<Vec<Option<Duration>>>> {
    std::thread::spawn(move || {
        let mut seen = vec![None; dbs.len()];
        while seen.iter().any(Option::is_none) && t0.elapsed() < limit {
            for (c, at) in dbs.iter().zip(&mut seen) {
                if at.is_none() && has_bond(c, &bridge)? {
                    *at = Some(t0.elapsed());
                }
            }
            sleep(Duration::from_millis(2));
        }
        Ok(seen)
    })
}

/// "members with the bond k/N-1, all by t" from a watch's result.
fn held(seen: &[Option<Duration>]) -> String {
    let members = &seen[1..];
    let k = members.iter().flatten().count();
    let last = members.iter().flatten().max().copied().unwrap_or_default();
    let coord = seen[0].map_or("no".to_string(), secs);
    if k == members.len() {
        format!(
            "members with the bond {k}/{}, the last at {}; coordinator at {coord}",
            members.len(),
            secs(last)
        )
    } else {
        format!(
            "members with the bond {k}/{} (watched 30 s); coordinator at {coord}",
            members.len()
        )
    }
}

pub fn bench(n: usize) -> Result<()> {
    if n < 2 {
        bail!("a pool bench needs at least 2 hosts");
    }
    println!("xnet-bench pool: {n} lab hosts (namespaces, each its own OVS, userspace datapath, and xnetd), {NICS} NICs each, joined to host 0");
    let t = Instant::now();
    let pool = Pool::start(n)?;
    println!(
        "  setup: lab and {n} xnetds answering in {}",
        secs(t.elapsed())
    );

    // Joins, one after another; the coordinator's management address may
    // not be realized yet at the first.
    let mut joins = vec![];
    for i in 1..n {
        let t = Instant::now();
        loop {
            let r = Session::open(&pool.sock(i)).and_then(|mut se| {
                se.try_call("pool.join", vec![s(COORDINATOR), s("root"), s(PASSWORD)])
            });
            match r {
                Ok(_) => break,
                Err(e)
                    if code(&e) == "JOINING_HOST_CONNECTION_FAILED"
                        && t.elapsed() < Duration::from_secs(30) =>
                {
                    sleep(Duration::from_millis(200))
                }
                Err(e) => bail!("host {i}: pool.join: {e:?}\n{}", pool.log(i)),
            }
        }
        joins.push(t.elapsed());
    }
    let mut c0 = pool.session(0)?;
    let t_ready = Instant::now();
    let hosts_by_name: BTreeMap<String, String> = loop {
        let all = c0.call("host.get_all_records", vec![])?;
        let m: BTreeMap<String, String> = all
            .as_struct()
            .into_iter()
            .flatten()
            .map(|(r, h)| {
                let name = h.as_struct().and_then(|h| h.get("hostname"));
                (
                    name.and_then(Value::as_str).unwrap_or("").to_string(),
                    r.clone(),
                )
            })
            .collect();
        if m.len() == n {
            break m;
        }
        if t_ready.elapsed() > Duration::from_secs(30) {
            bail!("the coordinator lists {} hosts of {n}", m.len());
        }
        sleep(Duration::from_millis(50));
    };
    let host_ref = |i: usize| hosts_by_name[&format!("bench-h{i}")].clone();
    for i in 1..n {
        match Session::open(&pool.sock(i)) {
            Err(e) if code(&e) == "HOST_IS_SLAVE" => {}
            other => bail!("host {i} after its join: {:?}", other.err()),
        }
    }
    // (host, device) -> physical PIF, as the coordinator has them.
    let pifs: BTreeMap<(String, String), String> = c0
        .call("PIF.get_all_records", vec![])?
        .as_struct()
        .into_iter()
        .flatten()
        .filter_map(|(r, p)| {
            let p = p.as_struct()?;
            let f = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (p.get("physical")? == &Value::Bool(true))
                .then(|| ((f("host"), f("device")), r.clone()))
        })
        .collect();
    let pif = |i: usize, dev: &str| -> Result<String> {
        pifs.get(&(host_ref(i), dev.to_string()))
            .cloned()
            .with_context(|| format!("no {dev} PIF for host {i}"))
    };
    // A member is following once it has reported a change made for it: PIF.plug
    // of its plugged management PIF makes the coordinator wait for that report.
    for i in 1..n {
        let eth0 = pif(i, "eth0")?;
        loop {
            match c0.try_call("PIF.plug", vec![s(&eth0)]) {
                Ok(_) => break,
                Err(e) if t_ready.elapsed() < Duration::from_secs(60) => {
                    eprintln!("  (host {i} not following yet: {e:?})");
                    sleep(Duration::from_millis(200));
                }
                Err(e) => bail!("host {i} does not follow the coordinator: {e:?}"),
            }
        }
    }
    let mut js = joins.clone();
    js.sort();
    println!(
        "  joins: {} one after another, each pool.join p50 {} max {}; all {n} hosts following {} after the last",
        joins.len(),
        secs(pct(joins.clone(), 0.5)),
        secs(js[js.len() - 1]),
        secs(t_ready.elapsed())
    );

    // Bond figure.
    let net = c0.call(
        "network.create",
        vec![Value::Struct(
            [
                ("name_label".to_string(), s("bench bond")),
                ("other_config".to_string(), Value::Struct(BTreeMap::new())),
            ]
            .into_iter()
            .collect(),
        )],
    )?;
    let bridge = c0
        .call("network.get_bridge", vec![net.clone()])?
        .as_str()
        .unwrap_or("")
        .to_string();
    let bond_args = |i: usize| -> Result<Vec<Value>> {
        Ok(vec![
            net.clone(),
            Value::Array(vec![s(&pif(i, "eth1")?), s(&pif(i, "eth2")?)]),
            s(""),
            s("active-backup"),
            Value::Struct(BTreeMap::new()),
        ])
    };
    let dbs = |p: &Pool| (0..n).map(|i| p.ovsdb(i)).collect::<Result<Vec<_>>>();
    let limit = Duration::from_secs(30);
    let w = dbs(&pool)?;
    let t = Instant::now();
    let watcher = watch(w, bridge.clone(), t, limit);
    c0.call("Bond.create", bond_args(0)?)?;
    let xnet_call = t.elapsed();
    let xnet_seen = watcher.join().map_err(|_| anyhow!("watcher panicked"))??;
    // When the last host held it, if every host did.
    let xnet_all = xnet_seen
        .iter()
        .copied()
        .collect::<Option<Vec<_>>>()
        .map(|v| v.into_iter().max().unwrap_or_default());

    // Baseline: no bond anywhere, then one Bond.create per host, members
    // first, the coordinator last, each returning once its host realized it.
    for b in c0.call("Bond.get_all", vec![])?.as_array().unwrap_or(&[]) {
        c0.call("Bond.destroy", vec![b.clone()])?;
    }
    let w = dbs(&pool)?;
    if let Some(i) = (0..n).find(|&i| has_bond(&w[i], &bridge).unwrap_or(true)) {
        bail!("host {i} still holds the bond after Bond.destroy");
    }
    let t = Instant::now();
    let watcher = watch(w, bridge.clone(), t, Duration::from_secs(120));
    for i in (1..n).chain([0]) {
        c0.call("Bond.create", bond_args(i)?)?;
    }
    let base_calls = t.elapsed();
    let base_seen = watcher.join().map_err(|_| anyhow!("watcher panicked"))??;
    let base_all = base_seen
        .iter()
        .copied()
        .collect::<Option<Vec<_>>>()
        .context("the baseline's bonds did not all appear in OVS")?;
    let base_ovs = base_all.into_iter().max().unwrap_or_default();

    println!("\n  bond (active-backup, eth1+eth2) on all {n} hosts:");
    println!(
        "    xnet: one Bond.create on the coordinator, copied to the members: call {}; in every host's OVS: {}",
        secs(xnet_call),
        xnet_all.map_or("not on all hosts".into(), secs)
    );
    println!("      {}", held(&xnet_seen));
    println!(
        "    baseline (XenCenter with XAPI: one Bond.create per host, {} members then the coordinator, sequentially): calls {}; in every host's OVS: {}",
        n - 1,
        secs(base_calls),
        secs(base_ovs)
    );
    let verdict = match xnet_all {
        Some(o) if o.max(xnet_call) <= Duration::from_secs(2) => "met",
        Some(_) => "missed",
        None => "missed, not every host has the bond",
    };
    let ratio = match xnet_all {
        Some(_) => format!("{:.1}x", base_calls.as_secs_f64() / xnet_call.as_secs_f64()),
        None => "none".into(),
    };
    println!("    ratio baseline/xnet (calls): {ratio}   target: bond on 16 hosts <= 2 s: {verdict} (on {n} hosts)\n");

    // Event figure: PIF.plug of an already plugged management PIF changes
    // nothing on the host, but it is a write that touches the PIF's host, so
    // the coordinator waits until that host's agent has realized it.
    let samples = 200;
    let (m_eth0, c_eth0) = (pif(1, "eth0")?, pif(0, "eth0")?);
    let (mut member, mut local) = (vec![], vec![]);
    for _ in 0..samples {
        for (p, out) in [(&m_eth0, &mut member), (&c_eth0, &mut local)] {
            let t = Instant::now();
            c0.call("PIF.plug", vec![s(p)])?;
            out.push(t.elapsed());
        }
    }
    println!(
        "  event propagation coordinator -> member agent ({samples} samples each, alternating):"
    );
    println!(
        "    member's PIF (PIF.plug on the coordinator, of host 1's plugged eth0): p50 {}  p99 {}",
        ms(pct(member.clone(), 0.5)),
        ms(pct(member.clone(), 0.99))
    );
    println!("      a round trip: commit, replication to the member, its agent's pass, its report back; an upper bound of one-way propagation");
    println!(
        "    baseline, the coordinator's own PIF (local agent, no pool hop): p50 {}  p99 {}",
        ms(pct(local.clone(), 0.5)),
        ms(pct(local, 0.99))
    );
    let verdict = if pct(member, 0.5) <= Duration::from_millis(5) {
        "met"
    } else {
        "missed"
    };
    println!("    target: event p50 <= 5 ms (member's PIF): {verdict} (on {n} hosts)");

    // What the hosts logged beyond their usual start-up lines.
    let mut noted = 0;
    for i in 0..n {
        let log = pool.log(i);
        let odd: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_lowercase();
                ["error", "fail", "panic", "does not answer"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect();
        if !odd.is_empty() {
            noted += 1;
            println!(
                "\n  host {i}'s xnetd logged {} such line(s), e.g. {}",
                odd.len(),
                odd[0]
            );
        }
    }
    if noted == 0 {
        println!("\n  no xnetd logged an error");
    }
    Ok(())
}
