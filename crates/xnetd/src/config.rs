//! Command line and management.conf parsing. Every value is checked here so a
//! bad setting stops the daemon with a clear message before anything changes.

use anyhow::{anyhow, bail, Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use xnet_model::install::Management;

#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// HTTPS listener; None disables it.
    pub listen: Option<SocketAddr>,
    /// Plain-HTTP listener, loopback only (local tools, tests, benchmarks).
    pub http_listen: Option<SocketAddr>,
    pub ovsdb: String,
    pub datapath: String,
    pub nic_prefixes: Vec<String>,
    pub hostname: Option<String>,
    pub management: Management,
    pub resolv_conf: PathBuf,
    /// OVS run directory (bridges' .mgmt sockets); None: the db socket's.
    pub ovs_rundir: Option<PathBuf>,
    pub root_password: Option<String>,
    pub agent: bool,
}

pub const USAGE: &str = "usage: xnetd [options]
  --state-dir DIR         records, users, certificate (default /var/lib/xnet)
  --run-dir DIR           the unix socket xapi.sock (default /run/xnet)
  --listen ADDR:PORT      HTTPS listener (default 0.0.0.0:443; 'none' disables)
  --http-listen ADDR:PORT plain HTTP on a loopback address (local tools)
  --ovsdb unix:PATH       Open vSwitch database (default unix:/var/run/openvswitch/db.sock)
  --datapath system|netdev  OVS datapath type (netdev = userspace, for the lab)
  --ovs-rundir DIR        where the bridges' <bridge>.mgmt sockets are (default: the db socket's dir)
  --nic-prefix P[,P…]     interface names that count as NICs (default eth)
  --hostname NAME         host name (default: the kernel's)
  --resolv-conf PATH      where DNS settings go (default /etc/resolv.conf)
  --root-password-file F  password of user root, set on first start
  --no-agent              serve the API only; realizing calls fail with HOST_OFFLINE
  first start only (like XCP-ng's management.conf):
  --management-conf F     read LABEL, MODE, IP, NETMASK, GATEWAY, DNS, DOMAIN from F
  --mgmt-device DEV --mgmt-mode dhcp|static|none --mgmt-ip IP --mgmt-netmask MASK
  --mgmt-gateway IP --mgmt-dns IP[,IP] --mgmt-domain D[,D]
xnetd user-add NAME --role pool-admin|read-only --password-file F [--state-dir DIR]";

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: "/var/lib/xnet".into(),
            run_dir: "/run/xnet".into(),
            listen: Some("0.0.0.0:443".parse().expect("addr")),
            http_listen: None,
            ovsdb: "unix:/var/run/openvswitch/db.sock".into(),
            datapath: "system".into(),
            nic_prefixes: vec!["eth".into()],
            hostname: None,
            management: Management {
                mode: "dhcp".into(),
                ..Default::default()
            },
            resolv_conf: "/etc/resolv.conf".into(),
            ovs_rundir: None,
            root_password: None,
            agent: true,
        }
    }
}

fn read_secret(path: &str) -> Result<String> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

fn ipv4(v: &str, what: &str) -> Result<String> {
    v.parse::<std::net::Ipv4Addr>()
        .map(|a| a.to_string())
        .map_err(|_| anyhow!("{what}: '{v}' is not an IPv4 address"))
}

/// Applies one management.conf-style key (shared by the file and the flags).
fn set_mgmt(m: &mut Management, key: &str, v: &str) -> Result<()> {
    match key {
        "LABEL" => m.device = Some(v.to_string()),
        "MODE" => {
            let l = v.to_ascii_lowercase();
            if !["dhcp", "static", "none"].contains(&l.as_str()) {
                bail!("MODE: '{v}' is not dhcp, static or none");
            }
            m.mode = l;
        }
        "IP" => m.ip = ipv4(v, "IP")?,
        "NETMASK" => m.netmask = ipv4(v, "NETMASK")?,
        "GATEWAY" => {
            m.gateway = if v.is_empty() {
                String::new()
            } else {
                ipv4(v, "GATEWAY")?
            }
        }
        "DNS" => {
            for d in v.split(',').filter(|d| !d.is_empty()) {
                d.parse::<std::net::IpAddr>()
                    .map_err(|_| anyhow!("DNS: '{d}' is not an IP address"))?;
            }
            m.dns = v.to_string();
        }
        "DOMAIN" => m.domain = v.to_string(),
        // Keys of management.conf xnet does not act on at first start.
        "MODEV6" | "IPv6" | "IPv6_GATEWAY" | "VLAN" | "BOND_MODE" | "BOND_MEMBERS" => {}
        _ => bail!("unknown management setting {key}"),
    }
    Ok(())
}

pub fn parse_management_conf(text: &str) -> Result<Management> {
    let mut m = Management {
        mode: "dhcp".into(),
        ..Default::default()
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("line {}: expected KEY=value", n + 1))?;
        let v = v.trim().trim_matches(|c| c == '\'' || c == '"');
        set_mgmt(&mut m, k.trim(), v).with_context(|| format!("line {}", n + 1))?;
    }
    check_mgmt(&m)?;
    Ok(m)
}

fn check_mgmt(m: &Management) -> Result<()> {
    if m.mode == "static" && (m.ip.is_empty() || m.netmask.is_empty()) {
        bail!("static management needs IP and NETMASK");
    }
    if !m.netmask.is_empty() && xnet_model::helpers::netmask_prefix(&m.netmask).is_none() {
        bail!("NETMASK '{}' is not a contiguous mask", m.netmask);
    }
    Ok(())
}

fn addr(v: &str, flag: &str) -> Result<SocketAddr> {
    v.parse()
        .map_err(|_| anyhow!("{flag}: '{v}' is not ADDR:PORT"))
}

pub fn parse(args: &[String]) -> Result<Config> {
    let mut c = Config::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--state-dir" => c.state_dir = val()?.into(),
            "--run-dir" => c.run_dir = val()?.into(),
            "--listen" => {
                let v = val()?;
                c.listen = if v == "none" {
                    None
                } else {
                    Some(addr(&v, a)?)
                };
            }
            "--http-listen" => {
                let sa = addr(&val()?, a)?;
                if !sa.ip().is_loopback() {
                    bail!("--http-listen: plain HTTP is only served on loopback, not {sa}");
                }
                c.http_listen = Some(sa);
            }
            "--ovsdb" => {
                let v = val()?;
                if !v.starts_with("unix:") && !v.starts_with("tcp:") {
                    bail!("--ovsdb: '{v}' is not unix:PATH or tcp:ADDR:PORT");
                }
                c.ovsdb = v;
            }
            "--datapath" => {
                let v = val()?;
                if v != "system" && v != "netdev" {
                    bail!("--datapath: '{v}' is not system or netdev");
                }
                c.datapath = v;
            }
            "--nic-prefix" => {
                c.nic_prefixes = val()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if c.nic_prefixes.is_empty() {
                    bail!("--nic-prefix: give at least one prefix");
                }
            }
            "--hostname" => c.hostname = Some(val()?),
            "--resolv-conf" => c.resolv_conf = val()?.into(),
            "--ovs-rundir" => c.ovs_rundir = Some(val()?.into()),
            "--root-password-file" => c.root_password = Some(read_secret(&val()?)?),
            "--no-agent" => c.agent = false,
            "--management-conf" => {
                let p = val()?;
                let text = std::fs::read_to_string(&p).with_context(|| format!("reading {p}"))?;
                c.management = parse_management_conf(&text).with_context(|| p.clone())?;
            }
            "--mgmt-device" => set_mgmt(&mut c.management, "LABEL", &val()?)?,
            "--mgmt-mode" => set_mgmt(&mut c.management, "MODE", &val()?)?,
            "--mgmt-ip" => set_mgmt(&mut c.management, "IP", &val()?)?,
            "--mgmt-netmask" => set_mgmt(&mut c.management, "NETMASK", &val()?)?,
            "--mgmt-gateway" => set_mgmt(&mut c.management, "GATEWAY", &val()?)?,
            "--mgmt-dns" => set_mgmt(&mut c.management, "DNS", &val()?)?,
            "--mgmt-domain" => set_mgmt(&mut c.management, "DOMAIN", &val()?)?,
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    check_mgmt(&c.management)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }
    #[test]
    fn parses_flags_and_rejects_bad_values() {
        let c = parse(&v(&[
            "--mgmt-mode",
            "static",
            "--mgmt-ip",
            "10.0.0.2",
            "--mgmt-netmask",
            "255.255.255.0",
        ]))
        .unwrap();
        assert_eq!(c.management.mode, "static");
        assert!(parse(&v(&["--mgmt-mode", "static"])).is_err());
        assert!(parse(&v(&["--mgmt-ip", "10.0.0.300"])).is_err());
        assert!(parse(&v(&["--http-listen", "0.0.0.0:80"])).is_err());
        assert!(parse(&v(&["--datapath", "kernel"])).is_err());
        assert!(parse(&v(&["--bogus"])).is_err());
    }
    #[test]
    fn management_conf() {
        let m = parse_management_conf("LABEL='eth1'\nMODE=static\nIP=192.0.2.5\nNETMASK=255.255.255.0\nGATEWAY=192.0.2.1\nDNS=192.0.2.53\nDOMAIN=example.org\n").unwrap();
        assert_eq!(m.device.as_deref(), Some("eth1"));
        assert_eq!(m.gateway, "192.0.2.1");
        assert!(parse_management_conf("MODE=weird\n").is_err());
        assert!(parse_management_conf("garbage\n").is_err());
        assert!(parse_management_conf("MODE=static\nIP=1.2.3.4\nNETMASK=255.0.255.0\n").is_err());
    }
}
