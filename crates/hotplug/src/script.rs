//! Xen's vif hotplug script contract, as libxl calls it:
//! `vif-xnet online|offline type_if=vif` for a PV backend `vif<domid>.<devid>`
//! and `vif-xnet add|remove type_if=tap` for an emulated NIC, with
//! `XENBUS_PATH=backend/vif/<domid>/<devid>` and the device in `vif` (or
//! udev's `INTERFACE`). The device's settings (`mac`, `bridge`, `ip`, `rate`)
//! and the domain's (`name`, `vm`) are read from xenstore and handed to
//! xnetd, which attaches the device; `hotplug-status` tells libxl how it went.

use crate::client::{Api, ClientError};
use crate::xenstore::{XenStore, XsError};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("usage: vif-xnet online|offline|add|remove [type_if=vif|tap] (with XENBUS_PATH and vif set)")]
    Usage,
    #[error("unknown command '{0}': expected online, offline, add or remove")]
    Command(String),
    #[error("{0} is not set")]
    MissingEnv(&'static str),
    #[error("XENBUS_PATH '{0}' is not backend/vif/<domid>/<devid>")]
    XenbusPath(String),
    #[error("xenstore has no {0}")]
    MissingKey(String),
    #[error("xenstore {key} '{value}' is malformed: {why}")]
    BadValue {
        key: String,
        value: String,
        why: &'static str,
    },
    #[error(transparent)]
    Xenstore(#[from] XsError),
    #[error(transparent)]
    Xnetd(#[from] ClientError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Attach,
    Detach,
}

/// One invocation, from the command line and the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub action: Action,
    /// `vif` (PV) or `tap` (emulated).
    pub type_if: String,
    /// The backend device.
    pub dev: String,
    /// `backend/vif/<domid>/<devid>` as given (relative or absolute).
    pub xenbus_path: String,
    pub domid: u32,
    pub devid: u32,
}

impl Call {
    /// `args` without the program name; `env` reads the environment.
    pub fn parse(
        args: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Call, ScriptError> {
        let command = args.first().ok_or(ScriptError::Usage)?;
        let mut vars: BTreeMap<&str, &str> = BTreeMap::new();
        for a in &args[1..] {
            let (k, v) = a.split_once('=').ok_or(ScriptError::Usage)?;
            vars.insert(k, v);
        }
        let var = |k: &str| vars.get(k).map(|v| v.to_string()).or_else(|| env(k));
        let (action, default_type) = match command.as_str() {
            "online" => (Action::Attach, "vif"),
            "offline" => (Action::Detach, "vif"),
            "add" => (Action::Attach, "tap"),
            "remove" => (Action::Detach, "tap"),
            c => return Err(ScriptError::Command(c.into())),
        };
        let type_if = var("type_if").unwrap_or_else(|| default_type.into());
        if type_if != "vif" && type_if != "tap" {
            return Err(ScriptError::BadValue {
                key: "type_if".into(),
                value: type_if,
                why: "expected vif or tap",
            });
        }
        let xenbus_path = var("XENBUS_PATH").ok_or(ScriptError::MissingEnv("XENBUS_PATH"))?;
        let (domid, devid) = parse_xenbus_path(&xenbus_path)?;
        let dev = match type_if.as_str() {
            "tap" => var("INTERFACE").or_else(|| var("vif")),
            _ => var("vif"),
        }
        .filter(|d| !d.is_empty())
        .ok_or(ScriptError::MissingEnv("vif"))?;
        Ok(Call {
            action,
            type_if,
            dev,
            xenbus_path,
            domid,
            devid,
        })
    }

    fn key(&self, k: &str) -> String {
        format!("{}/{k}", self.xenbus_path)
    }
}

fn parse_xenbus_path(p: &str) -> Result<(u32, u32), ScriptError> {
    let bad = || ScriptError::XenbusPath(p.into());
    let rel = p.strip_prefix("/local/domain/0/").unwrap_or(p);
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["backend", "vif", domid, devid] => {
            let num = |s: &str| {
                s.parse::<u32>()
                    .ok()
                    .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
            };
            Ok((num(domid).ok_or_else(bad)?, num(devid).ok_or_else(bad)?))
        }
        _ => Err(bad()),
    }
}

/// libxl's `rate` key: `<bytes>,<usecs>` of credit, as KiB/s (XAPI's kbps)
/// and the timeslice.
pub fn parse_rate(v: &str) -> Result<(u64, u64), &'static str> {
    let (bytes, usecs) = v.split_once(',').ok_or("expected <bytes>,<usecs>")?;
    let bytes: u64 = bytes.trim().parse().map_err(|_| "bytes is not a number")?;
    let usecs: u64 = usecs.trim().parse().map_err(|_| "usecs is not a number")?;
    if usecs == 0 || bytes == 0 {
        return Err("bytes and usecs must be positive");
    }
    let kbps = (u128::from(bytes) * 1_000_000 / u128::from(usecs) / 1024) as u64;
    if kbps == 0 {
        return Err("below 1 KiB/s");
    }
    Ok((kbps, usecs))
}

/// The names libxl gives a device when no `vifname=` is set.
fn default_names(domid: u32, devid: u32) -> [String; 3] {
    [
        format!("vif{domid}.{devid}"),
        format!("vif{domid}.{devid}-emu"),
        format!("tap{domid}.{devid}"),
    ]
}

/// The other devices of the same VIF (the emulated twin of a PV device,
/// and the other way round), whose presence keeps the VIF attached.
fn siblings(call: &Call) -> Vec<String> {
    let base = call.dev.strip_suffix("-emu").unwrap_or(&call.dev);
    let mut all = default_names(call.domid, call.devid).to_vec();
    all.extend([base.to_string(), format!("{base}-emu")]);
    all.sort();
    all.dedup();
    all.retain(|d| *d != call.dev);
    all
}

/// Runs one invocation. `exists` tells whether a network device is present.
pub fn run(
    call: &Call,
    xs: &mut dyn XenStore,
    api: &mut dyn Api,
    exists: &dyn Fn(&str) -> bool,
) -> Result<(), ScriptError> {
    match call.action {
        Action::Attach => {
            let r = attach(call, xs, api);
            match &r {
                Ok(()) => {
                    xs.rm(&call.key("hotplug-error"))?;
                    xs.write(&call.key("hotplug-status"), "connected")?;
                }
                Err(e) => report_failure(call, xs, &e.to_string())?,
            }
            r
        }
        Action::Detach => {
            if siblings(call).iter().any(|d| exists(d)) {
                // The guest's other device still carries the VIF (an HVM
                // guest whose PV driver took over from the emulated NIC).
                return Ok(());
            }
            let home = format!("/local/domain/{}", call.domid);
            let gone = xs.read(&format!("{home}/name"))?.is_none();
            let Some(uuid) = vm_uuid(xs, call)? else {
                return Ok(()); // nothing to detach: the domain left no trace
            };
            let mut p = BTreeMap::new();
            p.insert("vm_uuid".to_string(), uuid);
            p.insert("device".to_string(), call.devid.to_string());
            p.insert("domain_gone".to_string(), gone.to_string());
            api.call("VIF.xnet_hotunplug", &p)?;
            Ok(())
        }
    }
}

/// Tells libxl an attach failed and why (it shows `hotplug-error` to the
/// user and gives up on the device). Detaching has nobody waiting.
pub fn report_failure(call: &Call, xs: &mut dyn XenStore, why: &str) -> Result<(), XsError> {
    if call.action == Action::Attach {
        xs.write(&call.key("hotplug-error"), why)?;
        xs.write(&call.key("hotplug-status"), "error")?;
    }
    Ok(())
}

/// `/local/domain/<domid>/vm` is `/vm/<uuid>`; libxl also keeps the uuid in
/// the backend's `frontend` domain path. None when the domain is gone.
fn vm_uuid(xs: &mut dyn XenStore, call: &Call) -> Result<Option<String>, ScriptError> {
    let key = format!("/local/domain/{}/vm", call.domid);
    Ok(xs
        .read(&key)?
        .map(|v| {
            v.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .filter(|u| !u.is_empty()))
}

fn attach(call: &Call, xs: &mut dyn XenStore, api: &mut dyn Api) -> Result<(), ScriptError> {
    let mut need = |k: &str| -> Result<String, ScriptError> {
        xs.read(&call.key(k))?
            .ok_or_else(|| ScriptError::MissingKey(call.key(k)))
    };
    let mac = need("mac")?;
    let mut p: BTreeMap<String, String> = BTreeMap::new();
    let frontend = need("frontend-id")?;
    if frontend.trim() != call.domid.to_string() {
        return Err(ScriptError::BadValue {
            key: call.key("frontend-id"),
            value: frontend,
            why: "differs from XENBUS_PATH's domid",
        });
    }
    let uuid = vm_uuid(xs, call)?
        .ok_or_else(|| ScriptError::MissingKey(format!("/local/domain/{}/vm", call.domid)))?;
    let name = xs
        .read(&format!("/local/domain/{}/name", call.domid))?
        .unwrap_or_default();
    p.insert("vm_uuid".into(), uuid);
    p.insert("vm_name".into(), name);
    p.insert("domid".into(), call.domid.to_string());
    p.insert("device".into(), call.devid.to_string());
    p.insert("mac".into(), mac);
    for k in ["bridge", "ip"] {
        if let Some(v) = xs.read(&call.key(k))? {
            p.insert(k.into(), v);
        }
    }
    if let Some(rate) = xs.read(&call.key("rate"))? {
        let (kbps, usecs) = parse_rate(&rate).map_err(|why| ScriptError::BadValue {
            key: call.key("rate"),
            value: rate.clone(),
            why,
        })?;
        p.insert("rate_kbps".into(), kbps.to_string());
        p.insert("timeslice_us".into(), usecs.to_string());
    }
    // A device libxl named after xl's vifname= (or its -emu twin).
    if !default_names(call.domid, call.devid).contains(&call.dev) {
        let base = call.dev.strip_suffix("-emu").unwrap_or(&call.dev);
        p.insert("vifname".into(), base.to_string());
    }
    api.call("VIF.xnet_hotplug", &p)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Xenstore as a map of absolute paths.
    #[derive(Default)]
    struct Mem(BTreeMap<String, String>);
    fn abs(p: &str) -> String {
        if p.starts_with('/') {
            p.into()
        } else {
            format!("/local/domain/0/{p}")
        }
    }
    impl XenStore for Mem {
        fn read(&mut self, p: &str) -> Result<Option<String>, XsError> {
            Ok(self.0.get(&abs(p)).cloned())
        }
        fn write(&mut self, p: &str, v: &str) -> Result<(), XsError> {
            self.0.insert(abs(p), v.into());
            Ok(())
        }
        fn rm(&mut self, p: &str) -> Result<(), XsError> {
            self.0.remove(&abs(p));
            Ok(())
        }
    }

    #[derive(Default)]
    struct Calls(Vec<(String, BTreeMap<String, String>)>, Option<Vec<String>>);
    impl Api for Calls {
        fn call(&mut self, m: &str, p: &BTreeMap<String, String>) -> Result<(), ClientError> {
            self.0.push((m.into(), p.clone()));
            match &self.1 {
                Some(e) => Err(ClientError::Api(e.clone())),
                None => Ok(()),
            }
        }
    }

    const BE: &str = "/local/domain/0/backend/vif/7/0";

    fn domain() -> Mem {
        let mut xs = Mem::default();
        for (k, v) in [
            ("/local/domain/7/name", "web1"),
            (
                "/local/domain/7/vm",
                "/vm/0f6a3c1e-2b7d-4e59-9a41-5c8d0e7b1f23",
            ),
            ("backend/vif/7/0/frontend-id", "7"),
            ("backend/vif/7/0/handle", "0"),
            ("backend/vif/7/0/mac", "00:16:3e:12:34:56"),
            ("backend/vif/7/0/bridge", "xenbr1"),
        ] {
            xs.write(k, v).unwrap();
        }
        xs
    }

    fn call(args: &[&str], env: &[(&str, &str)]) -> Result<Call, ScriptError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Call::parse(&args, &move |k| env.get(k).cloned())
    }

    fn online() -> Call {
        call(
            &["online", "type_if=vif"],
            &[("XENBUS_PATH", "backend/vif/7/0"), ("vif", "vif7.0")],
        )
        .unwrap()
    }

    #[test]
    fn parses_libxl_invocations() {
        let c = online();
        assert_eq!(
            (c.action, c.type_if.as_str(), c.dev.as_str()),
            (Action::Attach, "vif", "vif7.0")
        );
        assert_eq!((c.domid, c.devid), (7, 0));
        let t = call(
            &["remove", "type_if=tap"],
            &[
                ("XENBUS_PATH", "/local/domain/0/backend/vif/7/1"),
                ("INTERFACE", "vif7.1-emu"),
            ],
        )
        .unwrap();
        assert_eq!(
            (t.action, t.dev.as_str(), t.devid),
            (Action::Detach, "vif7.1-emu", 1)
        );
        for (args, env) in [
            (vec![], vec![]),
            (
                vec!["plug"],
                vec![("XENBUS_PATH", "backend/vif/7/0"), ("vif", "vif7.0")],
            ),
            (vec!["online"], vec![("vif", "vif7.0")]),
            (
                vec!["online"],
                vec![("XENBUS_PATH", "backend/vbd/7/0"), ("vif", "vif7.0")],
            ),
            (
                vec!["online"],
                vec![("XENBUS_PATH", "backend/vif/x/0"), ("vif", "vif7.0")],
            ),
            (vec!["online"], vec![("XENBUS_PATH", "backend/vif/7/0")]),
            (
                vec!["online", "type_if=pci"],
                vec![("XENBUS_PATH", "backend/vif/7/0"), ("vif", "v")],
            ),
            (
                vec!["online", "junk"],
                vec![("XENBUS_PATH", "backend/vif/7/0"), ("vif", "v")],
            ),
        ] {
            assert!(call(&args, &env).is_err(), "{args:?} {env:?}");
        }
    }

    #[test]
    fn online_hands_the_settings_to_xnetd_and_reports_connected() {
        let mut xs = domain();
        xs.write("backend/vif/7/0/ip", "10.0.0.5 10.0.0.6").unwrap();
        // xl's rate=10Mb/s@20ms: 25000 bytes every 20000 us.
        xs.write("backend/vif/7/0/rate", "25000,20000").unwrap();
        let mut api = Calls::default();
        run(&online(), &mut xs, &mut api, &|_| false).unwrap();
        let (m, p) = &api.0[0];
        assert_eq!(m, "VIF.xnet_hotplug");
        let get = |k: &str| p.get(k).map(String::as_str);
        assert_eq!(get("vm_uuid"), Some("0f6a3c1e-2b7d-4e59-9a41-5c8d0e7b1f23"));
        assert_eq!(get("vm_name"), Some("web1"));
        assert_eq!((get("domid"), get("device")), (Some("7"), Some("0")));
        assert_eq!(get("mac"), Some("00:16:3e:12:34:56"));
        assert_eq!(get("bridge"), Some("xenbr1"));
        assert_eq!(get("ip"), Some("10.0.0.5 10.0.0.6"));
        assert_eq!(
            (get("rate_kbps"), get("timeslice_us")),
            (Some("1220"), Some("20000"))
        );
        assert_eq!(get("vifname"), None);
        assert_eq!(xs.0[&format!("{BE}/hotplug-status")], "connected");
    }

    #[test]
    fn a_vifname_device_is_recorded() {
        let mut xs = domain();
        let c = call(
            &["online"],
            &[("XENBUS_PATH", "backend/vif/7/0"), ("vif", "web1-eth0")],
        )
        .unwrap();
        let mut api = Calls::default();
        run(&c, &mut xs, &mut api, &|_| false).unwrap();
        assert_eq!(
            api.0[0].1.get("vifname").map(String::as_str),
            Some("web1-eth0")
        );
    }

    #[test]
    fn failures_are_reported_to_libxl() {
        let mut xs = domain();
        let mut api = Calls(
            vec![],
            Some(vec!["BRIDGE_NOT_AVAILABLE".into(), "xenbr1".into()]),
        );
        assert!(run(&online(), &mut xs, &mut api, &|_| false).is_err());
        assert_eq!(xs.0[&format!("{BE}/hotplug-status")], "error");
        assert_eq!(
            xs.0[&format!("{BE}/hotplug-error")],
            "BRIDGE_NOT_AVAILABLE xenbr1"
        );
        // A malformed rate never reaches xnetd.
        let mut xs = domain();
        xs.write("backend/vif/7/0/rate", "fast").unwrap();
        let mut api = Calls::default();
        let e = run(&online(), &mut xs, &mut api, &|_| false).unwrap_err();
        assert!(e.to_string().contains("rate 'fast' is malformed"), "{e}");
        assert!(api.0.is_empty());
        assert_eq!(xs.0[&format!("{BE}/hotplug-status")], "error");
        // So does a missing mac.
        let mut xs = domain();
        xs.rm("backend/vif/7/0/mac").unwrap();
        let e = run(&online(), &mut xs, &mut api, &|_| false).unwrap_err();
        assert!(e.to_string().contains("has no backend/vif/7/0/mac"), "{e}");
        // A later success clears the error.
        let mut xs = domain();
        xs.write(&format!("{BE}/hotplug-error"), "old").unwrap();
        run(&online(), &mut xs, &mut Calls::default(), &|_| false).unwrap();
        assert!(!xs.0.contains_key(&format!("{BE}/hotplug-error")));
    }

    #[test]
    fn rates_are_kib_per_second() {
        assert_eq!(parse_rate("25000,20000"), Ok((1220, 20000)));
        assert_eq!(parse_rate("1250000,1000000"), Ok((1220, 1000000)));
        for bad in ["", "5", "a,b", "0,100", "100,0", "1,1000000"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offline_detaches_unless_the_twin_device_remains() {
        let off = |dev: &str, cmd: &str| {
            call(
                &[cmd],
                &[
                    ("XENBUS_PATH", "backend/vif/7/0"),
                    ("vif", dev),
                    ("INTERFACE", dev),
                ],
            )
            .unwrap()
        };
        let mut xs = domain();
        let mut api = Calls::default();
        // The emulated NIC goes while the PV device stays: nothing to do.
        run(&off("vif7.0-emu", "remove"), &mut xs, &mut api, &|d| {
            d == "vif7.0"
        })
        .unwrap();
        assert!(api.0.is_empty());
        run(&off("vif7.0", "offline"), &mut xs, &mut api, &|_| false).unwrap();
        let (m, p) = &api.0[0];
        assert_eq!(m, "VIF.xnet_hotunplug");
        assert_eq!(p.get("domain_gone").map(String::as_str), Some("false"));
        // The domain is being destroyed: its xenstore home has no name.
        xs.rm("/local/domain/7/name").unwrap();
        run(&off("vif7.0", "offline"), &mut xs, &mut api, &|_| false).unwrap();
        assert_eq!(
            api.0[1].1.get("domain_gone").map(String::as_str),
            Some("true")
        );
        // Nothing left of the domain at all: nothing to call.
        xs.rm("/local/domain/7").unwrap();
        xs.0.retain(|k, _| !k.starts_with("/local/domain/7/"));
        run(&off("vif7.0", "offline"), &mut xs, &mut api, &|_| false).unwrap();
        assert_eq!(api.0.len(), 2);
    }
}
