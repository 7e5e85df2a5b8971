//! VLAN.create / VLAN.destroy (xapi_vlan.ml, reference §2.3, §3.2).

use crate::calls::{a_int, a_str, p, Registry, P};
use crate::db::{self, b, i, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use crate::helpers::{self as h, PifKind};
use crate::schema::{PIF, VLAN};
use xapi_wire::Value;

pub fn register(reg: &mut Registry) {
    reg.write(
        "VLAN.create",
        vec![
            p("tagged_PIF", P::Ref("PIF")),
            p("tag", P::Int),
            p("network", P::Ref("network")),
        ],
        Box::new(|d, a| create(d, a_str(a, 0), a_int(a, 1), a_str(a, 2)).map(db::vs)),
    );
    reg.write(
        "VLAN.destroy",
        vec![p("self", P::Ref("VLAN"))],
        Box::new(|d, a| destroy(d, a_str(a, 0)).map(|_| Value::Nil)),
    );
}

pub fn assert_valid_tag(tag: i64) -> ApiResult<()> {
    if (0..=4094).contains(&tag) {
        Ok(())
    } else {
        Err(ApiError::new("VLAN_TAG_INVALID", &[&tag.to_string()]))
    }
}

pub fn create(d: &mut Db, tagged: &str, tag: i64, net: &str) -> ApiResult<String> {
    let host = s(d.rec("PIF", tagged)?, "host").to_string();
    h::assert_network_managed(d, net)?;
    h::assert_no_other_local_pifs(d, &host, net)?;
    h::assert_pif_managed(d, tagged)?;
    let root = h::root_pif(d, tagged);
    if h::is_bond_slave(d, &root) {
        return Err(ApiError::new("CANNOT_ADD_VLAN_TO_BOND_SLAVE", &[tagged]));
    }
    match h::pif_kind(d, tagged) {
        PifKind::VlanUntagged => return Err(ApiError::new("PIF_IS_VLAN", &[tagged])),
        PifKind::TunnelAccess => return Err(ApiError::new("IS_TUNNEL_ACCESS_PIF", &[tagged])),
        _ => {}
    }
    let sriov_net = d
        .children("PIF", "network", net)
        .iter()
        .any(|p| !d.children("network_sriov", "logical_PIF", p).is_empty());
    if h::pif_kind(d, tagged) != PifKind::SriovLogical && sriov_net {
        return Err(ApiError::new(
            "NETWORK_INCOMPATIBLE_WITH_VLAN_ON_BRIDGE",
            &[net],
        ));
    }
    assert_valid_tag(tag)?;
    let tr = d.rec("PIF", tagged)?.clone();
    let same = d.children("VLAN", "tagged_PIF", tagged).iter().any(|v| {
        d.tables()
            .get("VLAN", v)
            .map(|r| i(r, "tag") == tag)
            .unwrap_or(false)
    });
    if same {
        return Err(ApiError::new("PIF_VLAN_EXISTS", &[s(&tr, "device")]));
    }
    let trunks = d.children("VIF", "network", net).iter().any(|v| {
        d.tables()
            .get("VIF", v)
            .map(|r| !db::set(r, "trunks").is_empty())
            .unwrap_or(false)
    });
    if trunks {
        return Err(ApiError::new("NETWORK_INCOMPATIBLE_WITH_TRUNKS", &[net]));
    }
    let vlan = create_internal(d, tagged, tag, net)?;
    let untagged = s(d.rec("VLAN", &vlan)?, "untagged_PIF").to_string();
    crate::pif::plug(d, &untagged)?;
    Ok(vlan)
}

/// The records of a VLAN: an untagged PIF sharing the tagged PIF's device and
/// metrics, and the VLAN object.
pub fn create_internal(d: &mut Db, tagged: &str, tag: i64, net: &str) -> ApiResult<String> {
    let tr = d.rec("PIF", tagged)?.clone();
    let untagged = d.create(
        &PIF,
        vec![
            ("device", db::vs(s(&tr, "device"))),
            ("network", db::vs(net)),
            ("host", db::vs(s(&tr, "host"))),
            ("MAC", db::vs("fe:ff:ff:ff:ff:ff")),
            ("MTU", Value::Int(i(&tr, "MTU"))),
            ("VLAN", Value::Int(tag)),
            ("metrics", db::vs(s(&tr, "metrics"))),
            ("physical", Value::Bool(false)),
            ("currently_attached", Value::Bool(false)),
            ("managed", Value::Bool(true)),
            ("IPv6", Value::Array(vec![])),
            (
                "primary_address_type",
                db::vs(s(&tr, "primary_address_type")),
            ),
        ],
    );
    let vlan = d.create(
        &VLAN,
        vec![
            ("tagged_PIF", db::vs(tagged)),
            ("untagged_PIF", db::vs(untagged.clone())),
            ("tag", Value::Int(tag)),
            ("other_config", Value::Struct(db::Map::new())),
        ],
    );
    d.set("PIF", &untagged, "VLAN_master_of", db::vs(vlan.clone()))?;
    Ok(vlan)
}

pub fn destroy(d: &mut Db, vlan: &str) -> ApiResult<()> {
    let vr = d.rec("VLAN", vlan)?.clone();
    let untagged = s(&vr, "untagged_PIF").to_string();
    let Some(ur) = d.tables().get("PIF", &untagged).cloned() else {
        // Orphaned record: the untagged PIF is already gone.
        return d.destroy("VLAN", vlan);
    };
    if h::is_bond_slave(d, &untagged) {
        return Err(ApiError::new("PIF_ALREADY_BONDED", &[&untagged]));
    }
    h::assert_no_protection(d, Some(&untagged))?;
    if i(&ur, "VLAN") < 0 {
        return Err(ApiError::new("PIF_IS_PHYSICAL", &[]));
    }
    if b(&ur, "currently_attached") {
        crate::pif::unplug(d, &untagged)?;
    } else if b(&ur, "management") {
        return Err(ApiError::new("PIF_IS_MANAGEMENT_INTERFACE", &[&untagged]));
    }
    d.touch_host(s(&ur, "host"));
    d.destroy("VLAN", vlan)?;
    d.destroy("PIF", &untagged)
}
