//! DHCP for PIFs in DHCP mode: one `udhcpc` (a real DHCP client) per bridge
//! device. Its event script only records the lease in a file; the agent
//! applies addresses and routes itself and reports the lease into the PIF.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lease {
    pub ip: String,
    pub netmask: String,
    pub router: String,
    pub dns: String,
    pub domain: String,
}

impl Lease {
    pub fn cidr(&self) -> Option<(IpAddr, u8)> {
        Some((
            self.ip.parse().ok()?,
            xnet_model::helpers::netmask_prefix(&self.netmask)?,
        ))
    }
}

const SCRIPT: &str = r#"#!/bin/sh
# Written by xnet's agent: records the lease; the agent applies it.
f="$XNET_LEASE_DIR/$interface.lease"
case "$1" in
  bound|renew)
    printf 'ip=%s\nnetmask=%s\nrouter=%s\ndns=%s\ndomain=%s\n' "$ip" "$subnet" "${router%% *}" "$dns" "$domain" > "$f.tmp" && mv "$f.tmp" "$f" ;;
  deconfig|leasefail|nak) rm -f "$f" ;;
esac
exit 0
"#;

pub struct Dhcp {
    dir: PathBuf,
    clients: BTreeMap<String, Child>,
}

impl Dhcp {
    pub fn new(run_dir: &Path) -> Dhcp {
        let dir = run_dir.join("dhcp");
        let _ = std::fs::create_dir_all(&dir);
        // Clients of a previous agent (killed without cleanup) are ended;
        // the pass starts the ones still needed.
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pid") {
                if let Some(pid) = std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                {
                    let _ = Command::new("kill").arg(pid.to_string()).status();
                }
                let _ = std::fs::remove_file(&p);
            }
        }
        Dhcp {
            dir,
            clients: BTreeMap::new(),
        }
    }

    /// Runs a client on exactly the given devices. Returns devices whose client
    /// could not be started, with the reason.
    pub fn ensure(&mut self, devs: &BTreeSet<String>) -> BTreeMap<String, String> {
        let mut errors = BTreeMap::new();
        let gone: Vec<String> = self
            .clients
            .keys()
            .filter(|d| !devs.contains(*d))
            .cloned()
            .collect();
        for d in gone {
            if let Some(mut c) = self.clients.remove(&d) {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_file(self.dir.join(format!("{d}.lease")));
        }
        // A client that exited (e.g. its device vanished) is started again.
        self.clients.retain(|_, c| matches!(c.try_wait(), Ok(None)));
        for d in devs {
            if self.clients.contains_key(d) {
                continue;
            }
            match self.spawn(d) {
                Ok(c) => {
                    self.clients.insert(d.clone(), c);
                }
                Err(e) => {
                    errors.insert(d.clone(), e);
                }
            }
        }
        errors
    }

    fn spawn(&self, dev: &str) -> Result<Child, String> {
        let script = self.dir.join("udhcpc.script");
        if std::fs::read_to_string(&script).ok().as_deref() != Some(SCRIPT) {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&script, SCRIPT).map_err(|e| e.to_string())?;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
        Command::new("udhcpc")
            .args(["-f", "-R", "-t", "1000000", "-T", "2", "-i", dev, "-s"])
            .arg(&script)
            .arg("-p")
            .arg(self.dir.join(format!("{dev}.pid")))
            .env("XNET_LEASE_DIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot run the DHCP client udhcpc: {e} (install the udhcpc package)")
            })
    }

    pub fn lease(&self, dev: &str) -> Option<Lease> {
        let text = std::fs::read_to_string(self.dir.join(format!("{dev}.lease"))).ok()?;
        let mut l = Lease::default();
        for line in text.lines() {
            let (k, v) = line.split_once('=')?;
            let v = v.trim().to_string();
            match k {
                "ip" => l.ip = v,
                "netmask" => l.netmask = v,
                "router" => l.router = v,
                "dns" => l.dns = v.split_whitespace().collect::<Vec<_>>().join(","),
                "domain" => l.domain = v,
                _ => {}
            }
        }
        l.cidr().map(|_| l)
    }

    pub fn leases(&self, devs: &BTreeSet<String>) -> BTreeMap<String, Lease> {
        devs.iter()
            .filter_map(|d| self.lease(d).map(|l| (d.clone(), l)))
            .collect()
    }
}

impl Drop for Dhcp {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.clients) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
