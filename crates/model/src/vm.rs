//! VM, networking subset: create (with a mac_seed), destroy, the allowed VIF
//! devices, and the domain state that hotplug integrations report.

use crate::calls::{a_int, a_str, p, Registry, P};
use crate::db::{self, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use crate::schema::VM;
use xapi_wire::Value;

pub fn register(reg: &mut Registry) {
    reg.write(
        "VM.create",
        vec![p("args", P::Ctor("VM"))],
        Box::new(|d, a| {
            let mut args = match &a[0] {
                Value::Struct(m) => m.clone(),
                _ => db::Map::new(),
            };
            let mut oc = match args.get("other_config") {
                Some(Value::Struct(m)) => m.clone(),
                _ => db::Map::new(),
            };
            oc.entry("mac_seed".into())
                .or_insert_with(|| db::vs(db::new_uuid()));
            args.insert("other_config".into(), Value::Struct(oc));
            let fields: Vec<(&str, Value)> =
                args.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            Ok(db::vs(d.create(&VM, fields)))
        }),
    );
    reg.write(
        "VM.destroy",
        vec![p("self", P::Ref("VM"))],
        Box::new(|d, a| {
            let vm = a_str(a, 0);
            let r = d.rec("VM", vm)?;
            if db::b(r, "is_control_domain") {
                return Err(ApiError::operation_not_allowed(
                    "Cannot destroy the control domain",
                ));
            }
            if s(r, "power_state") != "Halted" {
                return Err(ApiError::new(
                    "VM_BAD_POWER_STATE",
                    &[vm, "halted", &s(r, "power_state").to_lowercase()],
                ));
            }
            for v in d.children("VIF", "VM", vm) {
                crate::vif::destroy_record(d, &v)?;
            }
            d.destroy("VM", vm).map(|_| Value::Nil)
        }),
    );
    reg.read(
        "VM.get_allowed_VIF_devices",
        vec![p("self", P::Ref("VM"))],
        Box::new(|r, a| {
            let used: Vec<String> = r
                .children("VIF", "VM", a_str(a, 0))
                .iter()
                .filter_map(|v| r.tables().get("VIF", v).map(|x| s(x, "device").to_string()))
                .collect();
            Ok(Value::Array(
                (0..16)
                    .map(|n| n.to_string())
                    .filter(|n| !used.contains(n))
                    .map(Value::String)
                    .collect(),
            ))
        }),
    );
    reg.write(
        "VM.power_state_reset",
        vec![p("vm", P::Ref("VM"))],
        Box::new(|d, a| set_domain(d, a_str(a, 0), None, -1).map(|_| Value::Nil)),
    );
    // xnet extension: a hotplug integration (xl, the lab) reports that the
    // VM runs as domain `domid` on `host`, so its VIFs can be realized there.
    reg.write(
        "VM.xnet_set_running",
        vec![
            p("self", P::Ref("VM")),
            p("host", P::Ref("host")),
            p("domid", P::Int),
        ],
        Box::new(|d, a| {
            let host = a_str(a, 1).to_string();
            set_domain(d, a_str(a, 0), Some(&host), a_int(a, 2)).map(|_| Value::Nil)
        }),
    );
}

/// Records a VM as running on `host` with `domid` (or halted with None).
/// Its VIFs follow: attached while running, detached when halted.
pub fn set_domain(d: &mut Db, vm: &str, host: Option<&str>, domid: i64) -> ApiResult<()> {
    let old_host = s(d.rec("VM", vm)?, "resident_on").to_string();
    let (state, resident) = match host {
        Some(h) => ("Running", h.to_string()),
        None => ("Halted", crate::NULL_REF.to_string()),
    };
    d.update("VM", vm, |r| {
        r.insert("power_state".into(), db::vs(state));
        r.insert("resident_on".into(), db::vs(resident.clone()));
        r.insert("domid".into(), Value::Int(domid));
    })?;
    if host.is_none() {
        for v in d.children("VIF", "VM", vm) {
            d.set("VIF", &v, "currently_attached", Value::Bool(false))?;
        }
    }
    d.touch_host(&old_host);
    d.touch_host(&resident);
    Ok(())
}
