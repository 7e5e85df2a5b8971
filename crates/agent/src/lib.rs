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
}

/// Starts the next pass early: set by store commits and by link events.
#[derive(Default)]
struct Wake {
    pending: Mutex<bool>,
    cv: Condvar,
}
impl Wake {
    fn kick(&self) {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }
    /// Waits for a kick or the timeout; true if kicked.
    fn wait(&self, timeout: Duration) -> bool {
        let g = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (mut g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |p| !*p)
            .unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *g, false)
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
                self.wake.kick();
            }
        }
    }

    /// Link, address and route events: a NIC or a guest's backend device
    /// appearing, carrier changes, something removed by hand.
    fn watch_links(&self, mut m: xnet_rtnl::Monitor) {
        while !self.stop.load(Ordering::SeqCst) {
            match m.recv(Some(PASS_INTERVAL)) {
                Ok(evs) if evs.is_empty() => {}
                Ok(_) => self.wake.kick(),
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
            {
                let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
                st.realized = generation;
                match result {
                    Ok(p) => {
                        st.errors = p.errors;
                        st.failure = None;
                    }
                    Err(e) => st.failure = Some(e.to_string()),
                }
            }
            self.done.notify_all();
            full = !self.wake.wait(PASS_INTERVAL);
        }
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
        let links = if w > 0 || internal.iter().any(|n| !have.contains(n.as_str())) {
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
