//! `xnet-bench realize`: 1,000 VLAN networks on one host, from the API call
//! until OVS holds them, against one `ovs-vsctl` per VLAN (how xcp-networkd
//! does it) measured in the same run; then the agent-restart write count.

use anyhow::{bail, Context, Result};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xapi_wire::{MethodCall, Response, Value};
use xnet_model::{ApiError, Db};

/// A namespace with its own ovsdb-server and ovs-vswitchd, removed on drop.
pub(crate) struct OvsHost {
    pub ns: String,
    pub dir: std::path::PathBuf,
    procs: Vec<Child>,
}
impl OvsHost {
    pub fn new(tag: &str, nics: usize) -> Result<OvsHost> {
        let ns = format!("xbench{tag}{}", std::process::id());
        let dir = std::env::temp_dir().join(&ns);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut h = OvsHost {
            ns: ns.clone(),
            dir: dir.clone(),
            procs: vec![],
        };
        run(&["ip", "netns", "add", &ns])?;
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        for i in 0..nics {
            let (a, b) = (format!("eth{i}"), format!("peer{i}"));
            run(&[
                "ip", "-n", &ns, "link", "add", &a, "type", "veth", "peer", "name", &b,
            ])?;
            run(&["ip", "-n", &ns, "link", "set", &a, "up"])?;
            run(&["ip", "-n", &ns, "link", "set", &b, "up"])?;
        }
        let db = dir.join("conf.db");
        run(&[
            "ovsdb-tool",
            "create",
            db.to_str().unwrap(),
            "/usr/share/openvswitch/vswitch.ovsschema",
        ])?;
        let sock = format!("unix:{}", dir.join("db.sock").display());
        h.spawn(&[
            "ovsdb-server",
            db.to_str().unwrap(),
            &format!("--remote=p{sock}"),
            &format!("--unixctl={}", dir.join("db.ctl").display()),
            "--no-chdir",
            &format!("--log-file={}", dir.join("ovsdb.log").display()),
        ])?;
        wait(|| dir.join("db.sock").exists())?;
        run(&["ovs-vsctl", &format!("--db={sock}"), "--no-wait", "init"])?;
        h.spawn(&[
            "ovs-vswitchd",
            &sock,
            &format!("--unixctl={}", dir.join("vs.ctl").display()),
            "--no-chdir",
            &format!("--log-file={}", dir.join("vswitchd.log").display()),
        ])?;
        wait(|| dir.join("vs.ctl").exists())?;
        Ok(h)
    }
    /// A baseline host: a `xenbr0` (userspace datapath) holding its
    /// `nics` NICs, as a XAPI host's first bridge.
    pub fn with_xenbr0(tag: &str, nics: usize) -> Result<OvsHost> {
        let h = OvsHost::new(tag, nics)?;
        let mut args: Vec<String> = "add-br xenbr0 -- set bridge xenbr0 datapath_type=netdev"
            .split(' ')
            .map(String::from)
            .collect();
        for i in 0..nics {
            args.extend([
                "--".into(),
                "add-port".into(),
                "xenbr0".into(),
                format!("eth{i}"),
            ]);
        }
        h.vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(h)
    }
    fn spawn(&mut self, argv: &[&str]) -> Result<()> {
        let c = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(argv)
            .env("OVS_RUNDIR", &self.dir)
            .env("OVS_DBDIR", &self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        self.procs.push(c);
        Ok(())
    }
    pub fn db(&self) -> String {
        format!("unix:{}", self.dir.join("db.sock").display())
    }
    pub fn vsctl(&self, args: &[&str]) -> Result<()> {
        let mut a = vec!["ip", "netns", "exec", &self.ns, "ovs-vsctl"];
        let db = format!("--db={}", self.db());
        a.push(&db);
        a.extend_from_slice(args);
        run(&a)
    }
}
impl Drop for OvsHost {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn run(a: &[&str]) -> Result<()> {
    let out = Command::new(a[0])
        .args(&a[1..])
        .output()
        .with_context(|| a[0].to_string())?;
    if !out.status.success() {
        bail!("{}: {}", a.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
fn wait(f: impl Fn() -> bool) -> Result<()> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > Duration::from_secs(15) {
            bail!("timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

struct AgentRealizer(Arc<xnet_agent::Agent>);
impl xnet_api::Realizer for AgentRealizer {
    fn realize(&self, h: &str, g: u64) -> Result<(), ApiError> {
        self.0.realize(h, g)
    }
}

/// A host namespace with OVS, installed with `nics` NICs (eth0 the
/// management NIC), an agent and an API server in this process.
pub(crate) struct XnetHost {
    pub host: OvsHost,
    pub store: Arc<xnet_store::Store<xnet_model::Record>>,
    pub hostref: String,
    pub settings: xnet_agent::Settings,
    pub agent: Arc<xnet_agent::Agent>,
    pub api: Arc<xnet_api::Api>,
}

impl XnetHost {
    pub fn start(tag: &str, nics: usize) -> Result<XnetHost> {
        let host = OvsHost::new(tag, nics)?;
        let store = Arc::new(xnet_store::Store::in_memory(xnet_store::Options {
            volatile_tables: xnet_api::volatile_tables(),
            ..Default::default()
        }));
        let hostref = xnet_rtnl::netns::run_in(&host.ns, || -> Result<String> {
            let nics = (0..nics)
                .map(|i| xnet_model::host::Nic {
                    device: format!("eth{i}"),
                    mac: format!("52:54:00:00:40:{i:02x}"),
                    position: i as u32,
                    carrier: true,
                    speed_mbps: 0,
                    duplex_full: false,
                    driver: String::new(),
                })
                .collect();
            let setup = xnet_model::install::Setup {
                hostname: "bench".into(),
                backend: "openvswitch".into(),
                nics,
                management: xnet_model::install::Management {
                    device: Some("eth0".into()),
                    mode: "static".into(),
                    ip: "10.98.0.2".into(),
                    netmask: "255.255.255.0".into(),
                    ..Default::default()
                },
            };
            let (h, _) = store
                .write(|t| {
                    let mut t = xnet_api::tables::TxnTables(t);
                    xnet_model::install::install(&mut Db::new(&mut t), &setup)
                })
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok(h)
        })??;
        let settings = xnet_agent::Settings {
            ovsdb: host.db(),
            datapath_type: "netdev".into(),
            resolv_conf: host.dir.join("resolv.conf"),
            nic_prefixes: vec!["eth".into()],
            run_dir: host.dir.clone(),
            ovs_rundir: None,
        };
        let agent = xnet_rtnl::netns::run_in(&host.ns, || {
            xnet_agent::Agent::start(store.clone(), hostref.clone(), settings.clone())
        })??;
        let mut users = xnet_api::Users::default();
        users.set("root", "pw", xnet_api::Role::PoolAdmin)?;
        let api = xnet_api::Api::new(store.clone(), users, Arc::new(AgentRealizer(agent.clone())));
        Ok(XnetHost {
            host,
            store,
            hostref,
            settings,
            agent,
            api,
        })
    }
}

pub fn bench(n: usize, baseline_n: usize) -> Result<()> {
    println!("xnet-bench realize: {n} VLAN networks on one host (userspace datapath), API call -> realized in OVS");
    // Baseline: one ovs-vsctl per VLAN, as xcp-networkd does, in a fresh host.
    let base = OvsHost::with_xenbr0("b", 1)?;
    let t = Instant::now();
    for tag in 1..=baseline_n {
        let br = format!("xapi{tag}");
        base.vsctl(&["--may-exist", "add-br", &br, "xenbr0", &tag.to_string()])?;
    }
    let base_each = t.elapsed() / baseline_n as u32;
    drop(base);
    // The floor: all n fake bridges in one ovs-vsctl transaction, waiting
    // for ovs-vswitchd once: what vswitchd itself needs for them.
    let floor = OvsHost::with_xenbr0("f", 1)?;
    let mut args: Vec<String> = vec![];
    for tag in 1..=n {
        args.extend([
            "--".into(),
            "add-br".into(),
            format!("xapi{tag}"),
            "xenbr0".into(),
            tag.to_string(),
        ]);
    }
    let t = Instant::now();
    floor.vsctl(&args.iter().skip(1).map(String::as_str).collect::<Vec<_>>())?;
    let floor_total = t.elapsed();
    drop(floor);

    let XnetHost {
        host,
        store,
        hostref,
        settings,
        agent,
        api,
    } = XnetHost::start("x", 2)?;
    let eth1 = store
        .read(|v| {
            v.iter("PIF")
                .find(|(_, r)| xnet_model::db::s(r, "device") == "eth1")
                .map(|(k, _)| k.to_string())
        })
        .unwrap_or_default();
    api.run("PIF.plug", &[Value::String(eth1.clone())])
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut nets = vec![];
    for i in 0..n {
        let args = Value::Struct(
            [
                ("name_label".to_string(), Value::String(format!("v{i}"))),
                (
                    "other_config".to_string(),
                    Value::Struct(Default::default()),
                ),
            ]
            .into_iter()
            .collect(),
        );
        nets.push(
            api.run("network.create", &[args])
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
    }
    let writes0 = agent.writes();
    // Submitted at once as Async.VLAN.create, the way XenCenter and Xen
    // Orchestra batch work: each task succeeds only once its VLAN is
    // realized, and the agent realizes concurrent calls in shared passes.
    let Response::Success(sess) = api.handle(
        MethodCall {
            method: "session.login_with_password".into(),
            params: vec![Value::String("root".into()), Value::String("pw".into())],
        },
        xnet_api::Origin::Network,
    ) else {
        bail!("login failed")
    };
    let t = Instant::now();
    let mut tasks = vec![];
    for (i, net) in nets.iter().enumerate() {
        let r = api.handle(
            MethodCall {
                method: "Async.VLAN.create".into(),
                params: vec![
                    sess.clone(),
                    Value::String(eth1.clone()),
                    Value::Int(i as i64 + 1),
                    net.clone(),
                ],
            },
            xnet_api::Origin::Network,
        );
        match r {
            Response::Success(Value::String(task)) => tasks.push(task),
            other => bail!("Async.VLAN.create {}: {other:?}", i + 1),
        }
    }
    loop {
        let (pending, failed) = store.read(|v| {
            let st = |t: &String| {
                v.get("task", t)
                    .map(|r| xnet_model::db::s(r, "status").to_string())
                    .unwrap_or_default()
            };
            let pending = tasks.iter().filter(|t| st(t) == "pending").count();
            let failed = tasks
                .iter()
                .find(|t| st(t) == "failure")
                .and_then(|t| v.get("task", t).cloned());
            (pending, failed)
        });
        if let Some(f) = failed {
            bail!("a VLAN.create task failed: {:?}", f.get("error_info"));
        }
        if pending == 0 {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("{pending} tasks still pending after 600 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let xnet_total = t.elapsed();
    let transactions = agent.writes() - writes0;
    // Check OVS really holds them all.
    let c = xnet_ovsdb::Client::connect(&host.db())?;
    let fake = c
        .select("Open_vSwitch", "Port")?
        .iter()
        .filter(|p| p["fake_bridge"].as_bool() == Some(true))
        .count();
    if fake < n {
        bail!("only {fake} of {n} VLAN fake bridges are in OVS");
    }
    let base_total = base_each * n as u32;
    println!("  xnet (Async.VLAN.create x{n} at once, each task done once realized): {:.2} s total, {:.2} ms per VLAN, {transactions} OVSDB+netlink writes", xnet_total.as_secs_f64(), xnet_total.as_secs_f64() * 1e3 / n as f64);
    println!("  baseline (one ovs-vsctl add-br per VLAN, {baseline_n} measured): {:.2} ms per VLAN -> {:.1} s for {n}", base_each.as_secs_f64() * 1e3, base_total.as_secs_f64());
    println!(
        "  ratio baseline/xnet: {:.1}x   (target: <= 5 s for 1,000 and >= 20x)",
        base_total.as_secs_f64() / xnet_total.as_secs_f64()
    );
    println!(
        "  floor (all {n} in one ovs-vsctl transaction, one wait for vswitchd): {:.2} s; xnet is {:.1}x the floor",
        floor_total.as_secs_f64(),
        xnet_total.as_secs_f64() / floor_total.as_secs_f64()
    );
    // Restart: a fresh agent on the unchanged host writes nothing.
    agent.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let again = xnet_rtnl::netns::run_in(&host.ns, || {
        xnet_agent::Agent::start(store.clone(), hostref.clone(), settings.clone())
    })??;
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "  agent restart on the unchanged host: {} writes in 3 s (target 0)",
        again.writes()
    );
    again.stop();
    Ok(())
}
