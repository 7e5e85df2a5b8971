//! xnet extension for hosts driven by plain `xl`: Xen's vif hotplug script
//! (`vif-xnet`) reports a backend device coming online or going offline,
//! and the records follow, so the agent attaches it like any XAPI VIF.
//!
//! `VIF.xnet_hotplug(session, params)` makes sure of, in one transaction:
//! the VM (by the domain's uuid; created if new), the network (by bridge),
//! and the VIF (by VM and device), with the domain's MAC, `ip` (locking) and
//! `rate`; the VM running as `domid` on this host and the VIF attached.
//! `VIF.xnet_hotunplug(session, params)` detaches it again. Records made
//! here carry `other_config:xnet-origin=hotplug`.

use crate::calls::{a_map, p, Registry, P};
use crate::db::{self, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use crate::schema::VM;
use xapi_wire::Value;

/// libxl's bridge when a vif= setting names none.
pub const DEFAULT_BRIDGE: &str = "xenbr0";
/// Where a VIF keeps xl's `vifname=`: the agent then also looks for backend
/// devices of that name (and `<vifname>-emu`, the emulated twin).
pub const VIFNAME_KEY: &str = "xnet-vifname";
const ORIGIN: (&str, &str) = ("xnet-origin", "hotplug");

pub fn register(reg: &mut Registry) {
    reg.write(
        "VIF.xnet_hotplug",
        vec![p("params", P::StrMap)],
        Box::new(|d, a| online(d, &Params(a_map(a, 0))).map(db::vs)),
    );
    reg.write(
        "VIF.xnet_hotunplug",
        vec![p("params", P::StrMap)],
        Box::new(|d, a| offline(d, &Params(a_map(a, 0))).map(|_| Value::Nil)),
    );
}

struct Params(db::Map);

impl Params {
    fn get(&self, k: &str) -> &str {
        self.0.get(k).and_then(|v| v.as_str()).unwrap_or("").trim()
    }
    fn need(&self, k: &str) -> ApiResult<&str> {
        match self.get(k) {
            "" => Err(ApiError::new("INVALID_VALUE", &[k, "missing"])),
            v => Ok(v),
        }
    }
    fn num(&self, k: &str) -> ApiResult<i64> {
        let v = self.need(k)?;
        v.parse::<u32>()
            .map(i64::from)
            .map_err(|_| ApiError::new("INVALID_VALUE", &[k, v]))
    }
}

/// The VM of a domain: by uuid, or a new one named after the domain.
fn ensure_vm(d: &mut Db, uuid: &str, name: &str) -> ApiResult<String> {
    if uuid.len() != 36 || uuid.split('-').map(str::len).ne([8, 4, 4, 4, 12]) {
        return Err(ApiError::new("INVALID_VALUE", &["vm_uuid", uuid]));
    }
    if let Some(vm) = d.find("VM", &|r| s(r, "uuid") == uuid).into_iter().next() {
        return Ok(vm);
    }
    let label = if name.is_empty() { uuid } else { name };
    Ok(d.create(
        &VM,
        vec![
            ("uuid", db::vs(uuid)),
            ("name_label", db::vs(label)),
            (
                "other_config",
                db::smap(&[("mac_seed", &db::new_uuid()), ORIGIN]),
            ),
        ],
    ))
}

fn network_of_bridge(d: &impl Read, bridge: &str) -> ApiResult<String> {
    d.find("network", &|r| s(r, "bridge") == bridge)
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::new("BRIDGE_NOT_AVAILABLE", &[bridge]))
}

/// `ip=` of a vif= setting: addresses (or prefixes) separated by spaces or
/// commas, each checked as `ipv4_allowed`/`ipv6_allowed` are.
fn split_ips(ip: &str) -> ApiResult<(Vec<String>, Vec<String>)> {
    let (mut v4, mut v6) = (vec![], vec![]);
    for a in ip.split([' ', ',']).filter(|a| !a.is_empty()) {
        let (field, list) = if a.contains(':') {
            ("ipv6_allowed", &mut v6)
        } else {
            ("ipv4_allowed", &mut v4)
        };
        crate::vif::check_allowed(field, a)
            .map_err(|_| ApiError::new("INVALID_IP_ADDRESS_SPECIFIED", &["ip"]))?;
        list.push(a.to_string());
    }
    Ok((v4, v6))
}

fn online(d: &mut Db, p: &Params) -> ApiResult<String> {
    let domid = p.num("domid")?;
    let device = p.num("device")?.to_string();
    let mac = p.need("mac")?.to_lowercase();
    crate::helpers::assert_mac(&mac)?;
    let bridge = match p.get("bridge") {
        "" => DEFAULT_BRIDGE,
        b => b,
    };
    let net = network_of_bridge(d, bridge)?;
    let (v4, v6) = split_ips(p.get("ip"))?;
    let kbps = match p.get("rate_kbps") {
        "" => None,
        _ => Some(p.num("rate_kbps")?),
    };
    let timeslice = match p.get("timeslice_us") {
        "" => None,
        _ => Some(p.num("timeslice_us")?),
    };
    let vifname = p.get("vifname");
    if vifname.len() > 15 || vifname.contains(['/', ' ', '\0']) || vifname == "." || vifname == ".."
    {
        return Err(ApiError::new("INVALID_VALUE", &["vifname", vifname]));
    }
    let host = crate::host::local_host(d)?;
    let vm = ensure_vm(d, p.need("vm_uuid")?, p.get("vm_name"))?;
    if db::b(d.rec("VM", &vm)?, "is_control_domain") {
        return Err(ApiError::operation_not_allowed(
            "Control domain does not support hotplug",
        ));
    }
    let existing = d
        .children("VIF", "VM", &vm)
        .into_iter()
        .find(|v| d.tables().get("VIF", v).map(|r| s(r, "device")) == Some(device.as_str()));
    let vif = match existing {
        Some(v) => {
            // What xenstore says of the device is what the guest has now.
            crate::vif::check_mac_free(d, &mac, &net, Some(&v))?;
            if s(d.rec("VIF", &v)?, "network") != net {
                d.set("VIF", &v, "network", db::vs(&net))?;
            }
            v
        }
        None => {
            let mtu = db::i(d.rec("network", &net)?, "MTU");
            let args = [
                ("VM", db::vs(&vm)),
                ("network", db::vs(&net)),
                ("device", db::vs(&device)),
                ("MAC", db::vs(&mac)),
                ("MTU", Value::Int(mtu)),
                ("other_config", db::smap(&[ORIGIN])),
            ];
            crate::vif::create(d, args.map(|(k, v)| (k.to_string(), v)).into())?
        }
    };
    let locked = !v4.is_empty() || !v6.is_empty();
    d.update("VIF", &vif, |r| {
        r.insert("MAC".into(), db::vs(&mac));
        r.insert("MAC_autogenerated".into(), Value::Bool(false));
        if locked {
            r.insert("locking_mode".into(), db::vs("locked"));
            r.insert("ipv4_allowed".into(), db::sset(&v4));
            r.insert("ipv6_allowed".into(), db::sset(&v6));
        }
        match kbps {
            Some(k) => {
                r.insert("qos_algorithm_type".into(), db::vs("ratelimit"));
                let (k, t) = (k.to_string(), timeslice.map(|t| t.to_string()));
                let mut q = vec![("kbps", k.as_str())];
                q.extend(t.as_deref().map(|t| ("timeslice_us", t)));
                r.insert("qos_algorithm_params".into(), db::smap(&q));
            }
            None if db::mget(r, "qos_algorithm_params", "kbps").is_some()
                && db::mget(r, "other_config", ORIGIN.0) == Some(ORIGIN.1) =>
            {
                // The domain's config dropped its rate.
                r.insert("qos_algorithm_type".into(), db::vs(""));
                r.insert("qos_algorithm_params".into(), db::smap(&[]));
            }
            None => {}
        }
        r.insert("currently_attached".into(), Value::Bool(true));
    })?;
    let name = Some(vifname).filter(|n| !n.is_empty());
    d.set_map_key("VIF", &vif, "other_config", VIFNAME_KEY, name)?;
    let vmr = d.rec("VM", &vm)?;
    let running_here = s(vmr, "power_state") == "Running"
        && s(vmr, "resident_on") == host
        && db::i(vmr, "domid") == domid;
    if !running_here {
        crate::vm::set_domain(d, &vm, Some(&host), domid)?;
    }
    d.touch_host(&host);
    Ok(vif)
}

fn offline(d: &mut Db, p: &Params) -> ApiResult<()> {
    let device = p.num("device")?.to_string();
    let uuid = p.need("vm_uuid")?;
    let Some(vm) = d.find("VM", &|r| s(r, "uuid") == uuid).into_iter().next() else {
        return Ok(()); // nothing was ever attached: offline is idempotent
    };
    let vifs = d.children("VIF", "VM", &vm);
    for v in &vifs {
        if s(d.rec("VIF", v)?, "device") == device {
            d.set("VIF", v, "currently_attached", Value::Bool(false))?;
        }
    }
    // The domain is gone (its xenstore home removed): the VM halts, and a VM
    // that only hotplug made goes with its VIFs.
    if p.get("domain_gone") == "true" {
        crate::vm::set_domain(d, &vm, None, -1)?;
        let ours = db::mget(d.rec("VM", &vm)?, "other_config", ORIGIN.0) == Some(ORIGIN.1);
        if ours {
            for v in vifs {
                crate::vif::destroy_record(d, &v)?;
            }
            d.destroy("VM", &vm)?;
        }
    } else {
        let host = s(d.rec("VM", &vm)?, "resident_on").to_string();
        d.touch_host(&host);
    }
    Ok(())
}

/// The backend devices of a VIF of a VM running as `domid`: PV
/// `vif<domid>.<devid>`, emulated `tap<domid>.<devid>` (XAPI's name) or
/// `vif<domid>.<devid>-emu` (libxl's), and xl's `vifname=` (`<name>` and
/// `<name>-emu`) when the hotplug script recorded one.
pub fn backend_devices(domid: i64, vif: &db::Record) -> Vec<String> {
    let dev = s(vif, "device");
    let mut out = vec![
        format!("vif{domid}.{dev}"),
        format!("tap{domid}.{dev}"),
        format!("vif{domid}.{dev}-emu"),
    ];
    if let Some(n) = db::mget(vif, "other_config", VIFNAME_KEY).filter(|n| !n.is_empty()) {
        out.push(n.to_string());
        out.push(format!("{n}-emu"));
    }
    out
}
