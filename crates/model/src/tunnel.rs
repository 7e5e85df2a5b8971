//! tunnel.create / tunnel.destroy (xapi_tunnel.ml, reference §2.5).

use crate::calls::{a_str, opt, p, Registry, P};
use crate::db::{self, b, s, Db, Read};
use crate::error::{ApiError, ApiResult};
use crate::helpers::{self as h, PifKind};
use crate::schema::{self, PIF, TUNNEL};
use xapi_wire::Value;

pub fn register(reg: &mut Registry) {
    reg.write(
        "tunnel.create",
        vec![
            p("transport_PIF", P::Ref("PIF")),
            p("network", P::Ref("network")),
            opt("protocol", P::Enum(schema::TUNNEL_PROTOCOLS), db::vs("gre")),
        ],
        Box::new(|d, a| create(d, a_str(a, 0), a_str(a, 1), a_str(a, 2)).map(db::vs)),
    );
    reg.write(
        "tunnel.destroy",
        vec![p("self", P::Ref("tunnel"))],
        Box::new(|d, a| destroy(d, a_str(a, 0)).map(|_| Value::Nil)),
    );
}

pub fn create(d: &mut Db, transport: &str, net: &str, protocol: &str) -> ApiResult<String> {
    let host = s(d.rec("PIF", transport)?, "host").to_string();
    h::assert_network_managed(d, net)?;
    h::assert_no_other_local_pifs(d, &host, net)?;
    h::assert_pif_managed(d, transport)?;
    if h::is_bond_slave(d, transport) {
        return Err(ApiError::new(
            "CANNOT_ADD_TUNNEL_TO_BOND_SLAVE",
            &[transport],
        ));
    }
    match h::pif_kind(d, transport) {
        PifKind::TunnelAccess => return Err(ApiError::new("IS_TUNNEL_ACCESS_PIF", &[transport])),
        PifKind::SriovLogical => {
            return Err(ApiError::new(
                "CANNOT_ADD_TUNNEL_TO_SRIOV_LOGICAL",
                &[transport],
            ))
        }
        PifKind::VlanUntagged => {
            let root = h::root_pif(d, transport);
            let on_sriov = d
                .find("VLAN", &|r| s(r, "untagged_PIF") == transport)
                .iter()
                .any(|v| {
                    d.tables()
                        .get("VLAN", v)
                        .map(|r| {
                            !d.children("network_sriov", "logical_PIF", s(r, "tagged_PIF"))
                                .is_empty()
                        })
                        .unwrap_or(false)
                });
            if on_sriov && !root.is_empty() {
                return Err(ApiError::new(
                    "CANNOT_ADD_TUNNEL_TO_VLAN_ON_SRIOV_LOGICAL",
                    &[transport],
                ));
            }
        }
        _ => {}
    }
    let sriov_net = d
        .children("PIF", "network", net)
        .iter()
        .any(|p| !d.children("network_sriov", "logical_PIF", p).is_empty());
    if sriov_net {
        return Err(ApiError::new("NETWORK_INCOMPATIBLE_WITH_TUNNEL", &[net]));
    }
    let non_ovs = d.find("host", &|r| {
        db::mget(r, "software_version", "network_backend") != Some("openvswitch")
    });
    if !non_ovs.is_empty() {
        return Err(ApiError::new("OPENVSWITCH_NOT_ACTIVE", &[]));
    }
    let t = create_internal(d, transport, net, protocol)?;
    let access = s(d.rec("tunnel", &t)?, "access_PIF").to_string();
    crate::pif::plug(d, &access)?;
    Ok(t)
}

pub fn create_internal(
    d: &mut Db,
    transport: &str,
    net: &str,
    protocol: &str,
) -> ApiResult<String> {
    let tr = d.rec("PIF", transport)?.clone();
    let host = s(&tr, "host").to_string();
    let device = h::next_device(d, &host, "tunnel");
    let mac = h::gen_mac(0, &db::new_uuid());
    let access = d.create(
        &PIF,
        vec![
            ("device", db::vs(device)),
            ("network", db::vs(net)),
            ("host", db::vs(host)),
            ("MAC", db::vs(mac)),
            ("MTU", Value::Int(-1)),
            ("VLAN", Value::Int(-1)),
            ("metrics", db::vs(s(&tr, "metrics"))),
            ("physical", Value::Bool(false)),
            ("currently_attached", Value::Bool(false)),
            ("managed", Value::Bool(true)),
            ("IPv6", Value::Array(vec![])),
        ],
    );
    Ok(d.create(
        &TUNNEL,
        vec![
            ("access_PIF", db::vs(access)),
            ("transport_PIF", db::vs(transport)),
            ("protocol", db::vs(protocol)),
            ("other_config", Value::Struct(db::Map::new())),
        ],
    ))
}

pub fn destroy(d: &mut Db, t: &str) -> ApiResult<()> {
    let tr = d.rec("tunnel", t)?.clone();
    let access = s(&tr, "access_PIF").to_string();
    if let Some(ar) = d.tables().get("PIF", &access).cloned() {
        d.touch_host(s(&ar, "host"));
        d.destroy("PIF", &access)?;
    }
    d.destroy("tunnel", t)
}

/// Re-creates a tunnel on another transport PIF (bond create/destroy).
pub fn move_to(d: &mut Db, t: &str, new_transport: &str) -> ApiResult<()> {
    let tr = d.rec("tunnel", t)?.clone();
    let access = s(&tr, "access_PIF").to_string();
    let ar = d.rec("PIF", &access)?.clone();
    let net = s(&ar, "network").to_string();
    let proto = s(&tr, "protocol").to_string();
    destroy(d, t)?;
    let nt = create_internal(d, new_transport, &net, &proto)?;
    if b(&ar, "currently_attached") {
        let na = s(d.rec("tunnel", &nt)?, "access_PIF").to_string();
        crate::pif::set_attached(d, &na, true)?;
    }
    Ok(())
}
