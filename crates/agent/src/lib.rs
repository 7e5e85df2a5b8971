//! The host agent: compiles this host's records into its desired
//! configuration, makes Open vSwitch and the kernel hold it (writing only the
//! difference), reports NICs back, and tells API calls when their change is
//! realized. Idempotent: an unchanged host gets no write.

pub mod compile;
pub mod counters;
mod dhcp;
pub mod flows;
mod netif;
pub mod ovs;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use xnet_model::{ApiError, Db, Record, Tables, TablesMut};
use xnet_store::{Store, Txn, View};

#[derive(Debug, Clone)]
pub struct Settings {
    /// `unix:/path/db.sock`
    pub ovsdb: String,
    /// `system` (kernel datapath) or `netdev` (userspace, the lab).
    pub datapath_type: String,
    pub resolv_conf: PathBuf,
    /// Interface names that count as NICs.
    pub nic_prefixes: Vec<String>,
    /// Where DHCP client state lives.
    pub run_dir: PathBuf,
    /// OVS run directory holding the bridges' `<bridge>.mgmt` OpenFlow
    /// sockets; `None`: the OVSDB socket's directory.
    pub ovs_rundir: Option<PathBuf>,
}

/// What holds the bridges: Open vSwitch today; the Linux bridge backend fits
/// here. Makes the switch hold exactly the desired bridges (xnet's only) and
/// returns the number of writes it needed.
pub trait Backend: Send {
    fn reconcile(&mut self, bridges: &BTreeMap<String, compile::Bridge>)
        -> Result<u64, AgentError>;

    /// OpenFlow port numbers of these interfaces, waiting up to `wait` for
    /// the switch to assign them; those without one are left out.
    fn ofports(
        &mut self,
        _ifaces: &[String],
        _wait: Duration,
    ) -> Result<BTreeMap<String, i64>, AgentError> {
        Ok(BTreeMap::new())
    }

    /// The OpenFlow port number a new port on `bridge` should ask for;
    /// `None` when the port cannot be added alone (a full reconcile must).
    fn free_ofport(
        &mut self,
        _bridge: &str,
        _port: &compile::Port,
    ) -> Result<Option<u32>, AgentError> {
        Ok(None)
    }

    /// Adds one port to an existing bridge, asking for `ofport`, without
    /// touching anything else.
    fn plug(
        &mut self,
        _bridge: &str,
        _port: &compile::Port,
        _ofport: u32,
    ) -> Result<(), AgentError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("OVSDB: {0}")]
    Ovsdb(#[from] xnet_ovsdb::OvsdbError),
    #[error("netlink: {0}")]
    Netlink(#[from] xnet_rtnl::RtnlError),
}

#[derive(Default)]
struct Status {
    /// The store generation the last finished pass had compiled.
    realized: u64,
    /// PIF → error of the last pass.
    errors: BTreeMap<String, String>,
    /// A failure of the pass as a whole (OVSDB unreachable, …).
    failure: Option<String>,
}

pub struct Agent {
    store: Arc<Store<Record>>,
    host: String,
    settings: Settings,
    status: Mutex<Status>,
    done: Condvar,
    writes: AtomicU64,
    stop: AtomicBool,
    wake: Wake,
    watched: Mutex<Watched>,
}

/// Backend device names as of the last pass, for the link watcher to sort
/// events by.
#[derive(Default)]
struct Watched {
    /// Devices of attached VIFs that do not exist yet: their appearance
    /// takes the fast path.
    pending: std::collections::HashSet<String>,
    /// Backend devices in a bridge: their flag changes (vswitchd's, the
    /// agent's own) need no pass; the timer pass still checks them.
    attached: std::collections::HashSet<String>,
}

/// Why the agent thread should act before its timer.
#[derive(Default)]
struct Reasons {
    /// A link event that needs a whole pass.
    full: bool,
    /// A store commit.
    store: bool,
    /// Pending backend devices that appeared.
    plugs: Vec<xnet_rtnl::Link>,
}

/// Starts the agent's next step early: set by store commits and link events.
#[derive(Default)]
struct Wake {
    pending: Mutex<Reasons>,
    cv: Condvar,
}
impl Wake {
    fn kick(&self) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).full = true;
        self.cv.notify_all();
    }
    fn commit(&self) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).store = true;
        self.cv.notify_all();
    }
    fn plug(&self, links: Vec<xnet_rtnl::Link>) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .plugs
            .extend(links);
        self.cv.notify_all();
    }
    /// Waits for a reason or the timeout (`None`).
    fn wait(&self, timeout: Duration) -> Option<Reasons> {
        let g = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (mut g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |r| !r.full && !r.store && r.plugs.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        let r = std::mem::take(&mut *g);
        (r.full || r.store || !r.plugs.is_empty()).then_some(r)
    }
}

struct ViewT<'a>(&'a View<Record>);
impl Tables for ViewT<'_> {
    fn get(&self, c: &str, r: &str) -> Option<&Record> {
        self.0.get(c, r)
    }
    fn scan<'s>(&'s self, c: &str) -> Box<dyn Iterator<Item = (&'s str, &'s Record)> + 's> {
        Box::new(self.0.iter(c))
    }
}
struct TxnT<'a, 'b>(&'a mut Txn<'b, Record>);
impl Tables for TxnT<'_, '_> {
    fn get(&self, c: &str, r: &str) -> Option<&Record> {
        self.0.get(c, r)
    }
    fn scan<'s>(&'s self, c: &str) -> Box<dyn Iterator<Item = (&'s str, &'s Record)> + 's> {
        Box::new(self.0.iter(c))
    }
}
impl TablesMut for TxnT<'_, '_> {
    fn put(&mut self, c: &str, r: &str, rec: Record) {
        self.0.put(c, r, rec)
    }
    fn delete(&mut self, c: &str, r: &str) -> bool {
        self.0.delete(c, r)
    }
}

/// Bridge devices of this host's attached DHCP PIFs (read before compiling,
/// so their leases can be applied in the same pass).
fn dhcp_devices(store: &Store<Record>, host: &str) -> std::collections::BTreeSet<String> {
    use xnet_model::db::{b, s};
    store.read(|v| {
        v.iter("PIF")
            .filter(|(_, r)| {
                s(r, "host") == host
                    && b(r, "currently_attached")
                    && s(r, "ip_configuration_mode") == "DHCP"
            })
            .filter_map(|(_, r)| {
                v.get("network", s(r, "network"))
                    .map(|n| s(n, "bridge").to_string())
            })
            .collect()
    })
}

/// The outcome of a pass that reached the end.
struct Pass {
    /// PIF → error.
    errors: BTreeMap<String, String>,
    /// OVS internal devices vswitchd has not created yet.
    missing: usize,
    /// Backend devices the fast path may add.
    pending: BTreeMap<String, compile::Pending>,
}

const PASS_INTERVAL: Duration = Duration::from_secs(1);
const REALIZE_TIMEOUT: Duration = Duration::from_secs(20);

impl Agent {
    /// Starts the agent thread in the calling thread's network namespace.
    pub fn start(
        store: Arc<Store<Record>>,
        host: String,
        settings: Settings,
    ) -> Result<Arc<Agent>, AgentError> {
        let switch: Box<dyn Backend> =
            Box::new(ovs::Ovs::new(&settings.ovsdb, &settings.datapath_type)?);
        let rt = xnet_rtnl::Rtnl::open()?;
        let agent = Arc::new(Agent {
            store,
            host,
            settings,
            status: Mutex::new(Status::default()),
            done: Condvar::new(),
            writes: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            wake: Wake::default(),
            watched: Mutex::new(Watched::default()),
        });
        // Opened here, in the caller's network namespace.
        let links = xnet_rtnl::Monitor::open()?;
        let a = Arc::clone(&agent);
        std::thread::Builder::new()
            .name("xnet-agent".into())
            .spawn(move || a.run(switch, rt))
            .expect("agent thread");
        let a = Arc::clone(&agent);
        std::thread::Builder::new()
            .name("xnet-agent-store".into())
            .spawn(move || a.watch_store())
            .expect("agent thread");
        let a = Arc::clone(&agent);
        std::thread::Builder::new()
            .name("xnet-agent-links".into())
            .spawn(move || a.watch_links(links))
            .expect("agent thread");
        Ok(agent)
    }

    fn watch_store(&self) {
        let mut seen = self.store.generation();
        while !self.stop.load(Ordering::SeqCst) {
            let g = self.store.wait_newer(seen, PASS_INTERVAL);
            if g > seen {
                seen = g;
                self.wake.commit();
            }
        }
    }

    /// Link, address and route events: a NIC or a guest's backend device
    /// appearing, carrier changes, something removed by hand.
    fn watch_links(&self, mut m: xnet_rtnl::Monitor) {
        while !self.stop.load(Ordering::SeqCst) {
            match m.recv(Some(PASS_INTERVAL)) {
                Ok(evs) => {
                    let mut full = false;
                    let mut plugs = vec![];
                    {
                        let w = self.watched.lock().unwrap_or_else(|e| e.into_inner());
                        for ev in evs {
                            match ev {
                                xnet_rtnl::Event::NewLink(l) if w.pending.contains(&l.name) => {
                                    plugs.push(l)
                                }
                                // Flags of a port's device (vswitchd's, the
                                // agent's own writes): the timer pass checks.
                                xnet_rtnl::Event::NewLink(l) if w.attached.contains(&l.name) => {}
                                _ => full = true,
                            }
                        }
                    }
                    if !plugs.is_empty() {
                        self.wake.plug(plugs);
                    }
                    if full {
                        self.wake.kick();
                    }
                }
                // Lost events (a full socket buffer): a pass reads everything.
                Err(_) => {
                    self.wake.kick();
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// OVSDB transactions, netlink changes and OpenFlow flow/meter
    /// modifications written so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn run(self: Arc<Self>, mut switch: Box<dyn Backend>, mut rt: xnet_rtnl::Rtnl) {
        let mut netif = netif::NetIf::default();
        let mut dhcp = dhcp::Dhcp::new(&self.settings.run_dir);
        let mut counters = counters::Counters::default();
        let mut flows = flows::Flows::new(flows::rundir(
            self.settings.ovs_rundir.as_deref(),
            &self.settings.ovsdb,
        ));
        // Timer passes re-read the flows (drift, a restarted vswitchd);
        // event-driven ones trust what the agent last read and wrote.
        let mut full = true;
        while !self.stop.load(Ordering::SeqCst) {
            let generation = self.store.generation();
            let started = Instant::now();
            let result = self.pass(
                switch.as_mut(),
                &mut rt,
                &mut netif,
                &mut dhcp,
                &mut flows,
                full,
            );
            full = false;
            // Every counters::INTERVAL; a missed sample is only a later one.
            let _ = counters.tick(&mut rt, &self.store, &self.host);
            if let Ok(Pass { missing: 1.., .. }) = result {
                // vswitchd is still creating devices: callers wait for the
                // pass that configures them.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let mut pending = BTreeMap::new();
            {
                let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
                st.realized = generation;
                match result {
                    Ok(p) => {
                        st.errors = p.errors;
                        st.failure = None;
                        pending = p.pending;
                    }
                    Err(e) => st.failure = Some(e.to_string()),
                }
            }
            self.done.notify_all();
            // Until the timer or a reason for a whole pass: appearing
            // backend devices are plugged one by one.
            full = loop {
                let left = PASS_INTERVAL.saturating_sub(started.elapsed());
                let Some(why) = self.wake.wait(left) else {
                    break true;
                };
                if why.full {
                    break false;
                }
                let now = self.store.generation();
                if now != generation {
                    if self.shaping_change(generation) {
                        break false;
                    }
                    // Counters, sessions, tasks: what the last pass compiled
                    // stands for this generation too.
                    let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
                    st.realized = st.realized.max(now);
                    drop(st);
                    self.done.notify_all();
                }
                let plugged = self.plug(
                    why.plugs,
                    &mut pending,
                    switch.as_mut(),
                    &mut rt,
                    &mut flows,
                );
                if !matches!(plugged, Ok(true)) {
                    break false;
                }
                let _ = counters.tick(&mut rt, &self.store, &self.host);
            };
        }
    }

    /// Whether the store changed since `generation` in anything a pass
    /// compiles from (true, too, when those events are no longer kept).
    fn shaping_change(&self, generation: u64) -> bool {
        match self.store.events_since(generation) {
            Ok(evs) => evs.iter().any(|e| {
                !matches!(
                    e.table.as_str(),
                    "PIF_metrics" | "VIF_metrics" | "session" | "task"
                )
            }),
            Err(_) => true,
        }
    }

    /// The fast path: each backend device that appeared gets its port (one
    /// OVSDB insert), its rules and its link settings, with no whole-host
    /// pass. False when one needs more than that (a whole pass follows).
    fn plug(
        &self,
        links: Vec<xnet_rtnl::Link>,
        pending: &mut BTreeMap<String, compile::Pending>,
        switch: &mut dyn Backend,
        rt: &mut xnet_rtnl::Rtnl,
        flows: &mut flows::Flows,
    ) -> Result<bool, AgentError> {
        for l in links {
            let Some(p) = pending.get(&l.name) else {
                // A later event of a device this loop already plugged.
                let w = self.watched.lock().unwrap_or_else(|e| e.into_inner());
                if w.attached.contains(&l.name) {
                    continue;
                }
                return Ok(false);
            };
            if !p.ethtool.is_empty() {
                return Ok(false);
            }
            // The device as it will stay before vswitchd opens it: a link
            // change after would cost vswitchd another reconfiguration.
            match netif::plug(rt, &l) {
                Ok(n) => self.writes.fetch_add(n, Ordering::SeqCst),
                Err(_) => return Ok(false),
            };
            let Some(ofport) = switch.free_ofport(&p.bridge, &p.port)? else {
                return Ok(false);
            };
            // The rules first, for the number the port will ask for: its
            // traffic meets them from the first packet. The port is added
            // while the switch takes them.
            let Some((sent, added)) =
                flows.plug(&p.spec, ofport, || switch.plug(&p.bridge, &p.port, ofport))
            else {
                return Ok(false);
            };
            added?;
            self.writes.fetch_add(1, Ordering::SeqCst);
            let Ok(n) = sent else {
                return Ok(false);
            };
            self.writes.fetch_add(n, Ordering::SeqCst);
            let got = switch.ofports(std::slice::from_ref(&l.name), Duration::from_secs(2))?;
            if got.get(&l.name) != Some(&i64::from(ofport)) {
                // Another number: a whole pass moves the rules to it.
                return Ok(false);
            }
            pending.remove(&l.name);
            let mut w = self.watched.lock().unwrap_or_else(|e| e.into_inner());
            w.pending.remove(&l.name);
            w.attached.insert(l.name);
        }
        Ok(true)
    }

    /// One reconcile pass: inventory, compile, OVS, kernel.
    fn pass(
        &self,
        switch: &mut dyn Backend,
        rt: &mut xnet_rtnl::Rtnl,
        netif: &mut netif::NetIf,
        dhcp: &mut dhcp::Dhcp,
        flows: &mut flows::Flows,
        full: bool,
    ) -> Result<Pass, AgentError> {
        let links = netif::dump(|| rt.links())?;
        self.report_inventory(&links);
        let names: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
        let leases = dhcp.leases(&dhcp_devices(&self.store, &self.host));
        let mut desired = self
            .store
            .read(|v| compile::compile(&ViewT(v), &self.host, &names, &leases));
        flows::police(&mut desired, &self.settings.datapath_type);
        let w = switch.reconcile(&desired.bridges)?;
        self.writes.fetch_add(w, Ordering::SeqCst);
        {
            let mut w = self.watched.lock().unwrap_or_else(|e| e.into_inner());
            w.pending = desired.pending.keys().cloned().collect();
            w.attached = desired.backends.iter().cloned().collect();
        }
        // VIF flows need the ports' OpenFlow numbers, which vswitchd assigns
        // once it has added them.
        let devs: Vec<String> = desired.vifs.iter().map(|v| v.device.clone()).collect();
        let ofports = if devs.is_empty() {
            BTreeMap::new()
        } else {
            switch.ofports(&devs, Duration::from_secs(2))?
        };
        let (w, vif_errors) = flows.reconcile(&desired, &ofports, full);
        self.writes.fetch_add(w, Ordering::SeqCst);
        desired.errors.extend(vif_errors);
        // Bridge devices appear once vswitchd has processed the transaction;
        // a pass is complete only when all of them are there to configure.
        let internal: Vec<String> = desired
            .bridges
            .values()
            .flat_map(|b| b.ports.values())
            .flat_map(|p| &p.interfaces)
            .filter(|i| i.kind == "internal")
            .map(|i| i.name.clone())
            .collect();
        let have: std::collections::HashSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
        let links = if internal.iter().any(|n| !have.contains(n.as_str())) {
            netif::wait_links(rt, &internal, Duration::from_secs(2))?
        } else {
            links
        };
        let have: std::collections::HashSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
        let missing = internal
            .iter()
            .filter(|n| !have.contains(n.as_str()))
            .count();
        let w = netif.apply(rt, &links, &desired, &self.settings.resolv_conf)?;
        self.writes.fetch_add(w, Ordering::SeqCst);
        let devs: std::collections::BTreeSet<String> = desired.dhcp.keys().cloned().collect();
        for (dev, why) in dhcp.ensure(&devs) {
            if let Some(pif) = desired.dhcp.get(&dev) {
                desired.errors.insert(pif.clone(), why);
            }
        }
        // No DHCPv6 client is packaged with xnet: said, not hidden.
        for pif in desired.dhcp6.values() {
            desired.errors.entry(pif.clone()).or_insert_with(|| {
                "xnet runs no DHCPv6 client: IPv6 DHCP mode gets router advertisements and SLAAC only".into()
            });
        }
        self.report_leases(&desired.dhcp, &leases);
        Ok(Pass {
            errors: desired.errors,
            missing,
            pending: desired.pending,
        })
    }

    /// Stores the NICs as PIF inventory and metrics when something changed.
    fn report_inventory(&self, links: &[xnet_rtnl::Link]) {
        let mut nics: Vec<&xnet_rtnl::Link> = links
            .iter()
            .filter(|l| {
                self.settings
                    .nic_prefixes
                    .iter()
                    .any(|p| l.name.starts_with(p.as_str()))
                    && l.mac.is_some()
            })
            .collect();
        nics.sort_by_key(|l| xnet_model::pif::device_order_key(&l.name));
        let nics: Vec<xnet_model::host::Nic> = nics
            .iter()
            .enumerate()
            .map(|(pos, l)| {
                let ls = xnet_rtnl::ethtool::link_settings(&l.name).ok().flatten();
                let drv = xnet_rtnl::ethtool::driver_info(&l.name).ok().flatten();
                xnet_model::host::Nic {
                    device: l.name.clone(),
                    mac: xnet_model::helpers::format_mac(l.perm_mac.or(l.mac).unwrap_or_default()),
                    position: pos as u32,
                    carrier: l.carrier,
                    speed_mbps: ls.and_then(|s| s.speed_mbps).map(i64::from).unwrap_or(0),
                    duplex_full: ls.and_then(|s| s.duplex)
                        == Some(xnet_rtnl::ethtool::Duplex::Full),
                    driver: drv.map(|d| d.driver).unwrap_or_default(),
                }
            })
            .collect();
        // The store skips transactions that change nothing.
        let _ = self.store.write(|t| {
            let mut tt = TxnT(t);
            xnet_model::host::set_inventory(&mut Db::new(&mut tt), &self.host, &nics)
        });
    }

    /// Copies DHCP leases into their PIFs (XAPI shows the leased IP there).
    fn report_leases(
        &self,
        pifs: &BTreeMap<String, String>,
        leases: &BTreeMap<String, dhcp::Lease>,
    ) {
        let _ = self.store.write(|t| {
            let mut tt = TxnT(t);
            let mut d = Db::new(&mut tt);
            for (dev, pif) in pifs {
                let Some(l) = leases.get(dev) else { continue };
                let Some(r) = xnet_model::Read::tables(&d).get("PIF", pif).cloned() else {
                    continue;
                };
                let s = |f: &str| xnet_model::db::s(&r, f).to_string();
                if (s("IP"), s("netmask"), s("gateway"), s("DNS"))
                    != (
                        l.ip.clone(),
                        l.netmask.clone(),
                        l.router.clone(),
                        l.dns.clone(),
                    )
                {
                    d.update("PIF", pif, |rec| {
                        for (k, v) in [
                            ("IP", &l.ip),
                            ("netmask", &l.netmask),
                            ("gateway", &l.router),
                            ("DNS", &l.dns),
                        ] {
                            rec.insert(k.into(), xnet_model::db::vs(v.clone()));
                        }
                    })?;
                    xnet_model::helpers::sync_host_address(&mut d, &s("host"))?;
                }
            }
            Ok::<_, ApiError>(())
        });
    }

    /// Blocks until a pass that saw `generation` finished; reports the
    /// errors of PIFs this generation changed.
    pub fn realize(&self, host: &str, generation: u64) -> Result<(), ApiError> {
        if host != self.host {
            return Err(ApiError::new("HOST_OFFLINE", &[host]));
        }
        let deadline = Instant::now() + REALIZE_TIMEOUT;
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        // A pass that started before the commit may have missed it: wait for
        // one that began at or after `generation`.
        while st.realized < generation {
            let now = Instant::now();
            if now >= deadline {
                return Err(ApiError::new(
                    "PIF_CONFIGURATION_ERROR",
                    &["", "the host agent did not answer in time"],
                ));
            }
            st = self
                .done
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if let Some(f) = &st.failure {
            return Err(ApiError::new("PIF_CONFIGURATION_ERROR", &["", f]));
        }
        let changed: Vec<String> = match self.store.events_since(generation.saturating_sub(1)) {
            Ok(evs) => evs
                .into_iter()
                .filter(|e| e.generation == generation && (e.table == "PIF" || e.table == "VIF"))
                .map(|e| e.key)
                .collect(),
            Err(_) => vec![],
        };
        for (pif, msg) in &st.errors {
            if changed.contains(pif) {
                return Err(ApiError::new("PIF_CONFIGURATION_ERROR", &[pif, msg]));
            }
        }
        Ok(())
    }
}
