//! network_sriov.create / destroy (xapi_network_sriov.ml, reference §2.6).
//! No SR-IOV capable NIC exists in the lab: the agent reports capabilities,
//! so `PIF_IS_NOT_SRIOV_CAPABLE` is what users see there.

use crate::calls::{a_str, p, Registry, P};
use crate::db::{self, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use crate::helpers::{self as h};
use crate::schema::{NETWORK_SRIOV, PIF};
use xapi_wire::Value;

pub fn register(reg: &mut Registry) {
    reg.write(
        "network_sriov.create",
        vec![p("pif", P::Ref("PIF")), p("network", P::Ref("network"))],
        Box::new(|d, a| create(d, a_str(a, 0), a_str(a, 1)).map(db::vs)),
    );
    reg.write(
        "network_sriov.destroy",
        vec![p("self", P::Ref("network_sriov"))],
        Box::new(|d, a| destroy(d, a_str(a, 0)).map(|_| Value::Nil)),
    );
    reg.read(
        "network_sriov.get_remaining_capacity",
        vec![p("self", P::Ref("network_sriov"))],
        Box::new(|_, _| Ok(Value::Int(0))),
    );
}

pub fn create(d: &mut Db, pif: &str, net: &str) -> ApiResult<String> {
    h::assert_network_managed(d, net)?;
    h::assert_pif_managed(d, pif)?;
    let pr = d.rec("PIF", pif)?.clone();
    if !db::b(&pr, "physical") {
        return Err(ApiError::new("PIF_IS_NOT_PHYSICAL", &[pif]));
    }
    if !d.children("network_sriov", "physical_PIF", pif).is_empty() {
        return Err(ApiError::new("NETWORK_SRIOV_ALREADY_ENABLED", &[pif]));
    }
    if !db::set_strs(&pr, "capabilities")
        .iter()
        .any(|c| c == "sriov")
    {
        return Err(ApiError::new("PIF_IS_NOT_SRIOV_CAPABLE", &[pif]));
    }
    let host = s(&pr, "host").to_string();
    h::assert_no_other_local_pifs(d, &host, net)?;
    let others = d
        .children("PIF", "network", net)
        .into_iter()
        .filter(|p| d.children("network_sriov", "logical_PIF", p).is_empty())
        .count();
    if others > 0 {
        return Err(ApiError::new("NETWORK_INCOMPATIBLE_WITH_SRIOV", &[net]));
    }
    let logical = d.create(
        &PIF,
        vec![
            ("device", db::vs(s(&pr, "device"))),
            ("network", db::vs(net)),
            ("host", db::vs(host)),
            ("MAC", db::vs("fe:ff:ff:ff:ff:ff")),
            ("MTU", Value::Int(db::i(&pr, "MTU"))),
            ("VLAN", Value::Int(-1)),
            ("metrics", db::vs(s(&pr, "metrics"))),
            ("physical", Value::Bool(false)),
            ("currently_attached", Value::Bool(false)),
            ("managed", Value::Bool(true)),
        ],
    );
    let sr = d.create(
        &NETWORK_SRIOV,
        vec![
            ("physical_PIF", db::vs(pif)),
            ("logical_PIF", db::vs(logical.clone())),
        ],
    );
    crate::pif::plug(d, &logical)?;
    Ok(sr)
}

pub fn destroy(d: &mut Db, sr: &str) -> ApiResult<()> {
    let r = d.rec("network_sriov", sr)?.clone();
    let logical = s(&r, "logical_PIF").to_string();
    if !d.children("VLAN", "tagged_PIF", &logical).is_empty() {
        return Err(ApiError::new("PIF_VLAN_STILL_EXISTS", &[&logical]));
    }
    if let Some(lr) = d.tables().get("PIF", &logical).cloned() {
        d.touch_host(s(&lr, "host"));
        d.destroy("PIF", &logical)?;
    }
    d.destroy("network_sriov", sr)
}
