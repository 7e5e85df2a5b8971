//! First start of a host ("installation"): the pool and host records, one
//! PIF and network per NIC, the host internal management network and the
//! management PIF with the IP configuration given at setup (management.conf).

use crate::db::{self, s, Db, Read};
use crate::error::ApiResult;
use crate::host::Nic;
use crate::schema::{HOST, NETWORK, POOL, VM};
use xapi_wire::Value;

/// What the administrator gives at setup (XCP-ng's management.conf keys).
#[derive(Debug, Clone, Default)]
pub struct Management {
    /// `LABEL`: the management NIC (default: the first NIC).
    pub device: Option<String>,
    /// `MODE`: "dhcp", "static" or "none".
    pub mode: String,
    pub ip: String,
    pub netmask: String,
    pub gateway: String,
    pub dns: String,
    pub domain: String,
}

pub struct Setup {
    pub hostname: String,
    pub backend: String,
    pub nics: Vec<Nic>,
    pub management: Management,
}

pub const HIMN_BRIDGE: &str = "xenapi";

/// Creates everything a freshly installed host has. Returns the host ref.
pub fn install(d: &mut Db, setup: &Setup) -> ApiResult<String> {
    let host = d.create(
        &HOST,
        vec![
            ("name_label", db::vs(setup.hostname.clone())),
            ("hostname", db::vs(setup.hostname.clone())),
            (
                "software_version",
                db::smap(&[
                    ("product_brand", "xnet"),
                    ("product_version", env!("CARGO_PKG_VERSION")),
                    ("xapi", "2.23"),
                    ("network_backend", &setup.backend),
                ]),
            ),
            ("API_version_vendor_implementation", db::smap(&[])),
        ],
    );
    d.create(
        &POOL,
        vec![("master", db::vs(host.clone())), ("name_label", db::vs(""))],
    );
    d.create(
        &VM,
        vec![
            (
                "name_label",
                db::vs(format!("Control domain on host: {}", setup.hostname)),
            ),
            ("power_state", db::vs("Running")),
            ("domid", Value::Int(0)),
            ("resident_on", db::vs(host.clone())),
            ("is_control_domain", Value::Bool(true)),
        ],
    );
    crate::host::set_inventory(d, &host, &setup.nics)?;
    let m = &setup.management;
    let mgmt_dev = m
        .device
        .clone()
        .or_else(|| setup.nics.first().map(|n| n.device.clone()));
    if let Some(dev) = &mgmt_dev {
        if let Some(n) = setup.nics.iter().find(|n| &n.device == dev) {
            let bridge = crate::helpers::default_bridge(Some(n.position), dev);
            d.set("host", &host, "management_bridge", db::vs(bridge))?;
        }
    }
    crate::pif::scan(d, &host)?;
    d.create(
        &NETWORK,
        vec![
            ("name_label", db::vs("Host internal management network")),
            (
                "name_description",
                db::vs("Network on which guests will be assigned a private link-local IP address which can be used to talk XenAPI"),
            ),
            ("bridge", db::vs(HIMN_BRIDGE)),
            (
                "other_config",
                db::smap(&[
                    ("is_guest_installer_network", "true"),
                    ("is_host_internal_management_network", "true"),
                    ("ip_begin", "169.254.0.1"),
                    ("ip_end", "169.254.255.254"),
                    ("netmask", "255.255.0.0"),
                ]),
            ),
        ],
    );
    let mgmt = d.find("PIF", &|r| s(r, "host") == host && db::b(r, "management"));
    if let Some(pif) = mgmt.first() {
        let mode = match m.mode.to_ascii_lowercase().as_str() {
            "static" => "Static",
            "none" => "None",
            _ => "DHCP",
        };
        crate::pif::reconfigure_ip(d, pif, mode, &m.ip, &m.netmask, &m.gateway, &m.dns)?;
        if !m.domain.is_empty() {
            d.set_map_key("PIF", pif, "other_config", "domain", Some(&m.domain))?;
        }
        crate::pif::set_attached(d, pif, true)?;
    }
    Ok(host)
}
