//! The lab: a switch namespace, host namespaces each with its own OVS, VMs and peers.

use crate::ns::{self, in_ns, End};
use crate::ovs::Ovs;
use crate::{LabError, RUN_ROOT};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const CHILD_GRACE: Duration = Duration::from_secs(2);

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub hosts: usize,
    /// NICs per host; NIC k of every host is on segment k.
    pub nics: usize,
    /// Default `/run/xnet-lab/<id>`.
    pub run_dir: Option<PathBuf>,
    /// Default: 4 random hex digits. 1–6 chars of `[0-9a-z]`.
    pub id: Option<String>,
    /// Run in each host namespace once its OVS is up (e.g. xnetd), with `{host}`, `{ns}`,
    /// `{db}` (db socket path) and `{dir}` (host run dir) substituted; killed on teardown.
    pub host_cmd: Option<Vec<String>>,
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            hosts: 2,
            nics: 2,
            run_dir: None,
            id: None,
            host_cmd: None,
        }
    }
}

/// A simulated host: namespace `xl<id>h<i>` with NICs `eth0..` and its own OVS.
#[derive(Debug)]
pub struct Host {
    index: usize,
    ovs: Ovs,
    cmd: Option<Child>,
}

impl Host {
    pub fn index(&self) -> usize {
        self.index
    }
    pub fn ns(&self) -> &str {
        self.ovs.ns()
    }
    pub fn run_dir(&self) -> &Path {
        self.ovs.dir()
    }
    pub fn db_sock(&self) -> PathBuf {
        self.ovs.db_sock()
    }
    pub fn vswitchd_ctl(&self) -> PathBuf {
        self.ovs.vswitchd_ctl()
    }
    pub fn ovs(&self) -> &Ovs {
        &self.ovs
    }
}

/// A VM: namespace `xl<id>v<domid>`; its `eth<n>` pairs with `vif<domid>.<devid>` in the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub domid: u32,
    pub host: usize,
    pub ns: String,
}

/// A peer on the switch: namespace `xl<id>p<n>` whose `eth0` pairs with OVS port `port` of
/// `seg<segment>` in the switch (access port of `tag` if given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ns: String,
    pub segment: usize,
    pub port: String,
    pub tag: Option<u16>,
}

/// What `xnet-lab down/status` need to find a lab: written to `<run_dir>/lab.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub id: String,
    pub run_dir: PathBuf,
    pub switch_ns: String,
    pub hosts: Vec<HostState>,
    pub namespaces: Vec<String>,
    pub pids: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostState {
    pub ns: String,
    pub dir: PathBuf,
    pub db_sock: PathBuf,
    pub vswitchd_ctl: PathBuf,
}

pub struct Lab {
    id: String,
    run_dir: PathBuf,
    nics: usize,
    switch: Option<Ovs>,
    hosts: Vec<Host>,
    /// domid → (VM, devids so far)
    vms: BTreeMap<u32, (Vm, Vec<u32>)>,
    peers: Vec<Peer>,
    /// Every namespace made so far, in creation order (torn down in reverse).
    namespaces: Vec<String>,
    detached: bool,
}

fn valid_id(id: &str) -> bool {
    (1..=6).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

fn random_id() -> String {
    let mut b = [0u8; 2];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    format!("{:02x}{:02x}", b[0], b[1])
}

/// Whether namespace `ns` belongs to lab `id` (`xl<id>sw`, `xl<id>{h,v,p}<n>`).
fn ns_of(id: &str, ns: &str) -> bool {
    let Some(rest) = ns.strip_prefix("xl").and_then(|r| r.strip_prefix(id)) else {
        return false;
    };
    rest == "sw"
        || (rest.len() > 1
            && matches!(rest.as_bytes()[0], b'h' | b'v' | b'p')
            && rest[1..].bytes().all(|c| c.is_ascii_digit()))
}

/// Whether `ns` looks like any lab's namespace.
fn is_lab_ns(ns: &str) -> bool {
    let Some(rest) = ns.strip_prefix("xl") else {
        return false;
    };
    let id = if let Some(id) = rest.strip_suffix("sw") {
        id
    } else {
        let t = rest.trim_end_matches(|c: char| c.is_ascii_digit());
        if t.len() == rest.len() {
            return false;
        }
        match t.strip_suffix(['h', 'v', 'p']) {
            Some(id) => id,
            None => return false,
        }
    };
    valid_id(id)
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> LabError {
    move |source| LabError::Io { what, source }
}

impl Lab {
    pub fn new(spec: LabSpec) -> Result<Lab, LabError> {
        if spec.hosts == 0 || spec.nics == 0 || spec.hosts > 99 || spec.nics > 9 {
            return Err(LabError::Invalid(format!(
                "hosts {} / nics {}: need 1..=99 hosts and 1..=9 nics (interface names stay ≤ 15)",
                spec.hosts, spec.nics
            )));
        }
        let id = match spec.id {
            Some(id) if valid_id(&id) => id,
            Some(id) => return Err(LabError::Invalid(format!("lab id {id:?}: 1-6 of [0-9a-z]"))),
            None => loop {
                let id = random_id();
                let taken = ns::list_netns().iter().any(|n| ns_of(&id, n))
                    || Path::new(RUN_ROOT).join(&id).exists();
                if !taken {
                    break id;
                }
            },
        };
        if ns::list_netns().iter().any(|n| ns_of(&id, n)) {
            return Err(LabError::Invalid(format!("lab {id} already exists")));
        }
        let run_dir = spec
            .run_dir
            .unwrap_or_else(|| Path::new(RUN_ROOT).join(&id));
        // From here on a failure drops `lab`, which tears down whatever was made.
        let mut lab = Lab {
            id,
            run_dir,
            nics: spec.nics,
            switch: None,
            hosts: Vec::new(),
            vms: BTreeMap::new(),
            peers: Vec::new(),
            namespaces: Vec::new(),
            detached: false,
        };
        std::fs::create_dir_all(&lab.run_dir)
            .map_err(io_err(format!("create {}", lab.run_dir.display())))?;

        let sw = lab.switch_ns();
        lab.make_ns(&sw)?;
        lab.switch = Some(Ovs::start(&sw, &lab.run_dir.join("sw"))?);
        let mut batch: Vec<String> = Vec::new();
        for k in 0..spec.nics {
            let br = format!("seg{k}");
            batch.extend(
                [
                    "--",
                    "add-br",
                    &br,
                    "--",
                    "set",
                    "bridge",
                    &br,
                    "datapath_type=netdev",
                ]
                .map(String::from),
            );
        }
        lab.sw_vsctl(&batch)?;

        for i in 0..spec.hosts {
            let hns = lab.host_ns(i);
            lab.make_ns(&hns)?;
            let mut batch: Vec<String> = Vec::new();
            for k in 0..spec.nics {
                let (eth, swp) = (format!("eth{k}"), format!("h{i}e{k}"));
                let x = ((i as u16) << 8) | k as u16;
                ns::veth(
                    &End {
                        ns: &hns,
                        name: &eth,
                        mac: &ns::mac(&lab.id, 0x01, x),
                    },
                    &End {
                        ns: &sw,
                        name: &swp,
                        mac: &ns::mac(&lab.id, 0x02, x),
                    },
                )?;
                batch.extend(["--", "add-port", &format!("seg{k}"), &swp].map(String::from));
            }
            lab.sw_vsctl(&batch)?;
            let ovs = Ovs::start(&hns, &lab.run_dir.join(format!("h{i}")))?;
            lab.hosts.push(Host {
                index: i,
                ovs,
                cmd: None,
            });
        }
        lab.write_state()?;
        if let Some(cmd) = &spec.host_cmd {
            for i in 0..spec.hosts {
                let h = &lab.hosts[i];
                let argv: Vec<String> = cmd
                    .iter()
                    .map(|a| {
                        a.replace("{host}", &i.to_string())
                            .replace("{ns}", h.ns())
                            .replace("{db}", &h.db_sock().display().to_string())
                            .replace("{dir}", &h.run_dir().display().to_string())
                    })
                    .collect();
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let child = lab.spawn_ns(&lab.host_ns(i), &argv, &[], "host_cmd")?;
                lab.hosts[i].cmd = Some(child);
            }
            lab.write_state()?;
        }
        Ok(lab)
    }

    fn make_ns(&mut self, name: &str) -> Result<(), LabError> {
        ns::add_netns(name)?;
        self.namespaces.push(name.to_string());
        Ok(())
    }

    fn sw_vsctl(&self, args: &[String]) -> Result<String, LabError> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.switch().vsctl(&args)
    }

    fn switch(&self) -> &Ovs {
        self.switch
            .as_ref()
            .expect("switch OVS is started in Lab::new")
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
    pub fn switch_ns(&self) -> String {
        format!("xl{}sw", self.id)
    }
    fn host_ns(&self, i: usize) -> String {
        format!("xl{}h{i}", self.id)
    }
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
    pub fn nics(&self) -> usize {
        self.nics
    }
    /// All namespaces of this lab, in creation order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
    pub fn host(&self, i: usize) -> Result<&Host, LabError> {
        self.hosts
            .get(i)
            .ok_or_else(|| LabError::Invalid(format!("no host {i} (lab has {})", self.hosts.len())))
    }
    /// MAC of `eth<nic>` of host `host` (stable for a given lab id).
    pub fn nic_mac(&self, host: usize, nic: usize) -> String {
        ns::mac(&self.id, 0x01, ((host as u16) << 8) | nic as u16)
    }
    /// The switch's own OVS (bridges `seg<k>`).
    pub fn switch_ovs(&self) -> &Ovs {
        self.switch()
    }

    fn nic_check(&self, host: usize, nic: usize) -> Result<(), LabError> {
        self.host(host)?;
        if nic >= self.nics {
            return Err(LabError::Invalid(format!(
                "no nic {nic} (lab has {})",
                self.nics
            )));
        }
        Ok(())
    }

    // ---- VMs ----

    /// Start VM `domid` on `host` with `eth0` ↔ `vif<domid>.<devid>` in the host namespace.
    /// Both ends are up with tx offload off; the vif is not attached to any bridge.
    pub fn add_vm(&mut self, host: usize, domid: u32, devid: u32) -> Result<Vm, LabError> {
        self.host(host)?;
        if self.vms.contains_key(&domid) {
            return Err(LabError::Invalid(format!("domid {domid} already exists")));
        }
        let vm = Vm {
            domid,
            host,
            ns: format!("xl{}v{domid}", self.id),
        };
        self.make_ns(&vm.ns)?;
        self.vms.insert(domid, (vm.clone(), Vec::new()));
        self.add_vm_nic(&vm, devid)?;
        Ok(vm)
    }

    /// Add the next NIC `eth<n>` to `vm`, paired with `vif<domid>.<devid>`; returns `eth<n>`.
    pub fn add_vm_nic(&mut self, vm: &Vm, devid: u32) -> Result<String, LabError> {
        let hns = self.host(vm.host)?.ns().to_string();
        let (_, devs) = self
            .vms
            .get(&vm.domid)
            .ok_or_else(|| LabError::Invalid(format!("no VM {}", vm.domid)))?;
        if devs.contains(&devid) {
            return Err(LabError::Invalid(format!("vif{}.{devid} exists", vm.domid)));
        }
        let eth = format!("eth{}", devs.len());
        let vif = format!("vif{}.{devid}", vm.domid);
        if vif.len() > 15 {
            return Err(LabError::Invalid(format!("{vif}: longer than 15 chars")));
        }
        let x = vm.domid as u16;
        ns::veth(
            &End {
                ns: &vm.ns,
                name: &eth,
                mac: &ns::mac(&self.id, 0x10 | (devid as u8 & 0x0f), x),
            },
            &End {
                ns: &hns,
                name: &vif,
                mac: &ns::mac(&self.id, 0x20 | (devid as u8 & 0x0f), x),
            },
        )?;
        if let Some((_, devs)) = self.vms.get_mut(&vm.domid) {
            devs.push(devid);
        }
        self.write_state()?;
        Ok(eth)
    }

    /// Destroy the VM: its namespace goes, and with it every `vif<domid>.*` in the host.
    pub fn remove_vm(&mut self, vm: &Vm) -> Result<(), LabError> {
        self.vms.remove(&vm.domid);
        self.namespaces.retain(|n| n != &vm.ns);
        ns::del_netns(&vm.ns)?;
        self.write_state()
    }

    pub fn vms(&self) -> Vec<Vm> {
        self.vms.values().map(|(vm, _)| vm.clone()).collect()
    }

    // ---- the switch side ----

    /// A peer namespace on segment `segment` through switch port `name` (≤ 15 chars),
    /// an access port of VLAN `tag` if given, else untagged.
    pub fn switch_port(
        &mut self,
        segment: usize,
        name: &str,
        tag: Option<u16>,
    ) -> Result<Peer, LabError> {
        if segment >= self.nics {
            return Err(LabError::Invalid(format!("no segment {segment}")));
        }
        if name.is_empty() || name.len() > 15 || self.peers.iter().any(|p| p.port == name) {
            return Err(LabError::Invalid(format!("switch port name {name:?}")));
        }
        let n = self.peers.len();
        let peer = Peer {
            ns: format!("xl{}p{n}", self.id),
            segment,
            port: name.to_string(),
            tag,
        };
        self.make_ns(&peer.ns)?;
        let sw = self.switch_ns();
        ns::veth(
            &End {
                ns: &peer.ns,
                name: "eth0",
                mac: &ns::mac(&self.id, 0x03, n as u16),
            },
            &End {
                ns: &sw,
                name,
                mac: &ns::mac(&self.id, 0x04, n as u16),
            },
        )?;
        let seg = format!("seg{segment}");
        let tag_s = tag.map(|t| format!("tag={t}"));
        let mut args = vec!["add-port", &seg, name];
        args.extend(tag_s.as_deref());
        self.switch().vsctl(&args)?;
        self.peers.push(peer.clone());
        self.write_state()?;
        Ok(peer)
    }

    /// Turn the switch side of `host`'s NICs on `segments` into one OVS bond with
    /// `lacp=active` (fast rate), on bridge `seg<segments[0]>` — the LACP partner of a host
    /// bond. Falls back to active-backup when the host does not speak LACP.
    pub fn lacp_partner(&mut self, segments: &[usize], host: usize) -> Result<String, LabError> {
        if segments.len() < 2 {
            return Err(LabError::Invalid(
                "a bond needs at least two segments".into(),
            ));
        }
        for &k in segments {
            self.nic_check(host, k)?;
        }
        let bond = format!("bond-h{host}");
        let mut args: Vec<String> = Vec::new();
        for &k in segments {
            args.extend(
                ["--", "--if-exists", "del-port", &format!("h{host}e{k}")].map(String::from),
            );
        }
        args.extend(["--", "add-bond", &format!("seg{}", segments[0]), &bond].map(String::from));
        args.extend(segments.iter().map(|k| format!("h{host}e{k}")));
        args.extend(
            [
                "lacp=active",
                "bond_mode=balance-tcp",
                "other_config:lacp-time=fast",
                "other_config:lacp-fallback-ab=true",
            ]
            .map(String::from),
        );
        self.sw_vsctl(&args)?;
        Ok(bond)
    }

    /// Cut host `host`'s `eth<nic>` wire (switch-side veth end down: the host sees no carrier).
    pub fn link_down(&self, host: usize, nic: usize) -> Result<(), LabError> {
        self.nic_check(host, nic)?;
        ns::link_set(&self.switch_ns(), &format!("h{host}e{nic}"), false)
    }

    pub fn link_up(&self, host: usize, nic: usize) -> Result<(), LabError> {
        self.nic_check(host, nic)?;
        ns::link_set(&self.switch_ns(), &format!("h{host}e{nic}"), true)
    }

    // ---- running things ----

    fn own_ns(&self, ns: &str) -> Result<(), LabError> {
        if self.namespaces.iter().any(|n| n == ns) {
            Ok(())
        } else {
            Err(LabError::Invalid(format!(
                "{ns} is not a namespace of lab {}",
                self.id
            )))
        }
    }

    /// Run `argv` in any namespace of this lab; the exit status is in the `Output`.
    pub fn exec_ns(&self, ns: &str, argv: &[&str]) -> Result<Output, LabError> {
        self.own_ns(ns)?;
        ns::output(&in_ns(ns, argv), &[], ns::CMD_TIMEOUT)
    }

    /// Run `argv` in host `host`'s namespace, with `OVS_RUNDIR` etc. pointing at its OVS.
    pub fn exec(&self, host: usize, argv: &[&str]) -> Result<Output, LabError> {
        let h = self.host(host)?;
        let env = h.ovs.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ns::output(&in_ns(h.ns(), argv), &env, ns::CMD_TIMEOUT)
    }

    pub fn vm_exec(&self, vm: &Vm, argv: &[&str]) -> Result<Output, LabError> {
        self.exec_ns(&vm.ns, argv)
    }

    pub fn peer_exec(&self, peer: &Peer, argv: &[&str]) -> Result<Output, LabError> {
        self.exec_ns(&peer.ns, argv)
    }

    /// `ovs-vsctl` against host `host`'s db; stdout, or an error with stderr.
    pub fn vsctl(&self, host: usize, args: &[&str]) -> Result<String, LabError> {
        self.host(host)?.ovs.vsctl(args)
    }

    pub fn appctl(&self, host: usize, args: &[&str]) -> Result<String, LabError> {
        self.host(host)?.ovs.appctl(args)
    }

    /// `ovs-ofctl <cmd> <bridge> …` against host `host`; the bridge name is turned into its
    /// `<rundir>/<bridge>.mgmt` socket.
    pub fn ofctl(&self, host: usize, args: &[&str]) -> Result<String, LabError> {
        self.host(host)?.ovs.ofctl(args)
    }

    /// Start `cmd` in host `host`'s namespace with `OVS_RUNDIR` etc. and `env`; stdout and
    /// stderr go to `<host dir>/spawn-<pid>.log`. The caller owns (and should reap) the
    /// `Child`; teardown kills it anyway.
    pub fn spawn_in(
        &self,
        host: usize,
        cmd: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Child, LabError> {
        let ns = self.host(host)?.ns().to_string();
        self.spawn_ns(&ns, cmd, env, "spawn")
    }

    /// Like [`Lab::spawn_in`] for any namespace of the lab (VM, peer); log in the run dir.
    pub fn spawn_in_ns(
        &self,
        ns: &str,
        cmd: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Child, LabError> {
        self.own_ns(ns)?;
        self.spawn_ns(ns, cmd, env, "spawn")
    }

    /// Log file of a child started by `spawn_in`/`spawn_in_ns`.
    pub fn spawn_log(&self, ns: &str, pid: u32) -> PathBuf {
        self.log_dir(ns).join(format!("spawn-{pid}.log"))
    }

    fn log_dir(&self, ns: &str) -> PathBuf {
        match self.hosts.iter().find(|h| h.ns() == ns) {
            Some(h) => h.run_dir().to_path_buf(),
            None => self.run_dir.clone(),
        }
    }

    fn spawn_ns(
        &self,
        ns: &str,
        cmd: &[&str],
        env: &[(&str, &str)],
        tag: &str,
    ) -> Result<Child, LabError> {
        if cmd.is_empty() {
            return Err(LabError::Invalid("empty command".into()));
        }
        let dir = self.log_dir(ns);
        let tmp = dir.join(format!("{tag}-new.log"));
        let out = File::create(&tmp).map_err(io_err(format!("create {}", tmp.display())))?;
        let err = out.try_clone().map_err(io_err("dup log fd".into()))?;
        let argv = in_ns(ns, cmd);
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]);
        if let Some(h) = self.hosts.iter().find(|h| h.ns() == ns) {
            c.envs(h.ovs.env());
        }
        let child = c
            .envs(env.iter().copied())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| LabError::Spawn {
                cmd: argv.join(" "),
                source,
            })?;
        // Name the log by pid so several children do not share one file.
        let _ = std::fs::rename(&tmp, dir.join(format!("{tag}-{}.log", child.id())));
        Ok(child)
    }

    // ---- state and teardown ----

    pub fn state(&self) -> LabState {
        let mut pids: Vec<u32> = self.switch.iter().flat_map(Ovs::pids).collect();
        for h in &self.hosts {
            pids.extend(h.ovs.pids());
            pids.extend(h.cmd.as_ref().map(Child::id));
        }
        LabState {
            id: self.id.clone(),
            run_dir: self.run_dir.clone(),
            switch_ns: self.switch_ns(),
            hosts: self
                .hosts
                .iter()
                .map(|h| HostState {
                    ns: h.ns().to_string(),
                    dir: h.run_dir().to_path_buf(),
                    db_sock: h.db_sock(),
                    vswitchd_ctl: h.vswitchd_ctl(),
                })
                .collect(),
            namespaces: self.namespaces.clone(),
            pids,
        }
    }

    fn write_state(&self) -> Result<(), LabError> {
        let path = self.run_dir.join("lab.json");
        let json = serde_json::to_string_pretty(&self.state())?;
        std::fs::write(&path, json).map_err(io_err(format!("write {}", path.display())))
    }

    /// Leave everything running and forget it (for `xnet-lab up`); `cleanup_id` removes it.
    pub fn detach(mut self) -> LabState {
        let st = self.state();
        self.detached = true;
        self.switch.as_mut().map(Ovs::detach);
        for h in &mut self.hosts {
            h.ovs.detach();
            h.cmd = None;
        }
        st
    }

    fn teardown(&mut self) {
        for h in &mut self.hosts {
            if let Some(c) = h.cmd.as_mut() {
                ns::stop_child(c, CHILD_GRACE);
            }
            h.cmd = None;
            h.ovs.stop();
        }
        if let Some(sw) = self.switch.as_mut() {
            sw.stop();
        }
        // Whatever else runs in our namespaces (spawn_in children) dies with them.
        for n in self.namespaces.iter().rev() {
            if let Err(e) = ns::del_netns(n) {
                eprintln!("xnet-lab {}: {e}", self.id);
            }
        }
        self.namespaces.clear();
        kill_under(&self.run_dir);
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.detached {
            self.teardown();
        }
    }
}

/// Pids (not us, not zombies) whose cwd or command line points into `dir`.
pub(crate) fn pids_under(dir: &Path) -> Vec<u32> {
    let d = dir.display().to_string();
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| p != me && ns::alive(p))
        .filter(|p| {
            let cwd = std::fs::read_link(format!("/proc/{p}/cwd")).ok();
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cwd.is_some_and(|c| c.starts_with(dir)) || String::from_utf8_lossy(&cmd).contains(&d)
        })
        .collect()
}

fn kill_under(dir: &Path) {
    if dir.as_os_str().len() > 1 {
        ns::kill_pids(&pids_under(dir), CHILD_GRACE);
    }
}

/// Labs with a state file under [`RUN_ROOT`].
pub fn list_labs() -> Vec<LabState> {
    let Ok(rd) = std::fs::read_dir(RUN_ROOT) else {
        return Vec::new();
    };
    let mut v: Vec<LabState> = rd
        .filter_map(|e| {
            let s = std::fs::read_to_string(e.ok()?.path().join("lab.json")).ok()?;
            serde_json::from_str(&s).ok()
        })
        .collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// Remove everything of lab `id`: its processes, namespaces and run dir (found through
/// `/run/xnet-lab/<id>/lab.json` when present, else by name).
pub fn cleanup_id(id: &str) -> Result<(), LabError> {
    if !valid_id(id) {
        return Err(LabError::Invalid(format!("lab id {id:?}")));
    }
    let default_dir = Path::new(RUN_ROOT).join(id);
    let state: Option<LabState> = std::fs::read_to_string(default_dir.join("lab.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let mut dirs = vec![default_dir];
    if let Some(st) = &state {
        dirs.push(st.run_dir.clone());
    }
    for d in &dirs {
        kill_under(d);
    }
    for n in ns::list_netns().iter().filter(|n| ns_of(id, n)) {
        ns::del_netns(n)?;
    }
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(())
}

/// Remove the leftovers of every lab: namespaces `xl<id>…`, processes whose cwd or args
/// point into `/run/xnet-lab`, and the run dirs there (labs with a custom run dir found
/// through their state file). For `xnet-lab down --all` and CI start.
pub fn cleanup_all() -> Result<(), LabError> {
    for st in list_labs() {
        kill_under(&st.run_dir);
        let _ = std::fs::remove_dir_all(&st.run_dir);
    }
    kill_under(Path::new(RUN_ROOT));
    for n in ns::list_netns().iter().filter(|n| is_lab_ns(n)) {
        ns::del_netns(n)?;
    }
    if let Ok(rd) = std::fs::read_dir(RUN_ROOT) {
        for e in rd.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(ns_of("ab12", "xlab12sw"));
        assert!(ns_of("ab12", "xlab12h0"));
        assert!(ns_of("ab12", "xlab12v17"));
        assert!(!ns_of("ab12", "xlab12x0"));
        assert!(!ns_of("ab1", "xlab12h0"));
        assert!(is_lab_ns("xlab12p3"));
        assert!(is_lab_ns("xlab12sw"));
        assert!(!is_lab_ns("xlAB12sw"));
        assert!(!is_lab_ns("xlab12"));
        assert!(!is_lab_ns("other"));
    }

    #[test]
    fn macs_stable_and_local() {
        let m = ns::mac("ab12", 0x01, 0x0102);
        assert_eq!(m, "02:ab:12:01:01:02");
        assert_eq!(ns::mac("lab", 1, 1), ns::mac("lab", 1, 1));
        assert_ne!(ns::mac("ab12", 1, 1), ns::mac("ab12", 2, 1));
    }
}
