//! pool.join as data (xapi_pool.ml, reference §2.9): the pre-join checks
//! over the joining host's tables and the coordinator's (which the joiner
//! fetched over the wire), and the coordinator's side of the join: the new
//! member's host, control domain and PIFs introduced, its NICs merged onto
//! the pool networks by bridge (`xenbr<position>`), then the pool's bonds,
//! VLANs and tunnels copied onto it by NIC position.

use crate::db::{self, b, i, s, Db, Read, Reader, Record, Tables};
use crate::error::{ApiError, ApiResult};
use crate::helpers as h;
use crate::schema::{HOST, VM};
use std::collections::BTreeMap;
use xapi_wire::Value;

fn not_allowed(why: &str) -> ApiError {
    ApiError::new("OPERATION_NOT_ALLOWED", &[why])
}

/// The master host of a set of tables (the pool's `master`).
fn master_of(r: &Reader) -> ApiResult<String> {
    crate::host::local_host(r)
}

fn management_pif(r: &Reader, host: &str) -> Option<(String, Record)> {
    r.t.scan("PIF")
        .find(|(_, p)| s(p, "host") == host && b(p, "management"))
        .map(|(k, p)| (k.to_string(), p.clone()))
}

/// Physical NICs of a host by position: position → (device, PIF).
fn nics_by_position(r: &Reader, host: &str) -> BTreeMap<u32, (String, String)> {
    let Some(hr) = r.t.get("host", host) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (dev, pos) in db::m(hr, "nic_positions") {
        let Some(pos) = pos.as_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let pif = r
            .find("PIF", &|p| {
                s(p, "host") == host && b(p, "physical") && s(p, "device") == dev
            })
            .first()
            .cloned()
            .unwrap_or_default();
        out.insert(pos, (dev.clone(), pif));
    }
    out
}

fn backend(hr: &Record) -> String {
    db::mget(hr, "software_version", "network_backend")
        .unwrap_or("bridge")
        .to_string()
}

/// XAPI's pre-join checks that concern xnet, in XAPI's order, then xnet's
/// own: NIC count and order and network MTUs must match the coordinator,
/// each difference named. `force` (join_force) skips the homogeneity
/// checks: software version and xnet's NIC checks.
pub fn pre_join_checks(me: &dyn Tables, master: &dyn Tables, force: bool) -> ApiResult<()> {
    let (me, them) = (Reader { t: me }, Reader { t: master });
    let my_host = master_of(&me)?;
    let their_host = master_of(&them)?;
    let Some((my_mgmt, my_mgmt_rec)) = management_pif(&me, &my_host) else {
        return Err(ApiError::new("HOST_STILL_BOOTING", &[]));
    };
    if h::ha_enabled(&me) || h::ha_enabled(&them) {
        return Err(ApiError::new("HA_IS_ENABLED", &[]));
    }
    let my_rec = me.rec("host", &my_host)?.clone();
    let their_rec = them.rec("host", &their_host)?.clone();
    if s(&my_rec, "uuid") == s(&their_rec, "uuid") {
        let hosts = me.find("host", &|_| true).len();
        return Err(not_allowed(if hosts > 1 {
            "Host is already part of a pool"
        } else {
            "Host cannot become slave of itself"
        }));
    }
    if me.find("host", &|_| true).len() > 1 {
        return Err(ApiError::new(
            "POOL_JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS",
            &[],
        ));
    }
    let running = me.find("VM", &|v| {
        !b(v, "is_control_domain") && s(v, "power_state") == "Running"
    });
    if !running.is_empty() {
        return Err(ApiError::new(
            "POOL_JOINING_HOST_CANNOT_HAVE_RUNNING_VMS",
            &[],
        ));
    }
    if !force {
        let version = |r: &Record| {
            ["product_brand", "product_version", "xapi"]
                .map(|k| db::mget(r, "software_version", k).unwrap_or("").to_string())
        };
        if version(&my_rec) != version(&their_rec) {
            return Err(ApiError::new(
                "POOL_HOSTS_NOT_HOMOGENEOUS",
                &["software version differs"],
            ));
        }
    }
    let networking = [
        ("Bond", "POOL_JOINING_HOST_HAS_BONDS"),
        ("tunnel", "POOL_JOINING_HOST_HAS_TUNNELS"),
        ("network_sriov", "POOL_JOINING_HOST_HAS_NETWORK_SRIOVS"),
    ];
    for (class, code) in networking {
        if me.t.scan(class).next().is_some() {
            return Err(ApiError::new(code, &[]));
        }
    }
    let my_vlan = i(&my_mgmt_rec, "VLAN");
    let other_vlans = me.find("VLAN", &|v| s(v, "untagged_PIF") != my_mgmt);
    if !other_vlans.is_empty() {
        return Err(ApiError::new(
            "POOL_JOINING_HOST_HAS_NON_MANAGEMENT_VLANS",
            &[],
        ));
    }
    let their_mgmt = management_pif(&them, &their_host);
    let their_vlan = their_mgmt.as_ref().map(|(_, p)| i(p, "VLAN")).unwrap_or(-1);
    if my_vlan != their_vlan {
        return Err(ApiError::new(
            "POOL_JOINING_HOST_MANAGEMENT_VLAN_DOES_NOT_MATCH",
            &[&my_vlan.to_string(), &their_vlan.to_string()],
        ));
    }
    if backend(&my_rec) != backend(&their_rec) {
        return Err(not_allowed("Network backends differ"));
    }
    let their_type = their_mgmt
        .as_ref()
        .map(|(_, p)| s(p, "primary_address_type").to_string())
        .unwrap_or_default();
    if s(&my_mgmt_rec, "primary_address_type") != their_type {
        return Err(not_allowed("Primary address type differs"));
    }
    if !force {
        assert_nics_match(&me, &my_host, &them, &their_host)?;
    }
    Ok(())
}

/// xnet's check: the joiner's NICs line up with the coordinator's, position
/// by position, and the networks they will merge into have the same MTU.
fn assert_nics_match(me: &Reader, my_host: &str, them: &Reader, their_host: &str) -> ApiResult<()> {
    let mine = nics_by_position(me, my_host);
    let theirs = nics_by_position(them, their_host);
    let list = |m: &BTreeMap<u32, (String, String)>| {
        m.values()
            .map(|(d, _)| d.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if mine.len() != theirs.len() {
        return Err(not_allowed(&format!(
            "NIC count differs: this host has {} NICs ({}), the pool coordinator has {} ({})",
            mine.len(),
            list(&mine),
            theirs.len(),
            list(&theirs)
        )));
    }
    for ((pos, (dev, pif)), (tpos, (tdev, _))) in mine.iter().zip(theirs.iter()) {
        if pos != tpos || dev != tdev {
            return Err(not_allowed(&format!(
                "NIC order differs: position {pos} is {dev} on this host but position {tpos} is {tdev} on the pool coordinator"
            )));
        }
        let Some(my_net) =
            me.t.get("PIF", pif)
                .and_then(|p| me.t.get("network", s(p, "network")))
        else {
            continue;
        };
        let bridge = s(my_net, "bridge");
        if let Some((_, their_net)) = them
            .t
            .scan("network")
            .find(|(_, n)| s(n, "bridge") == bridge)
        {
            if i(their_net, "MTU") != i(my_net, "MTU") {
                return Err(not_allowed(&format!(
                    "MTU differs on {bridge} ({dev}): {} on this host, {} in the pool",
                    i(my_net, "MTU"),
                    i(their_net, "MTU")
                )));
            }
        }
    }
    Ok(())
}

/// PIF fields the joiner's own configuration decides (IP settings, the
/// management flag, keys); refs and identity are the coordinator's.
const PIF_CONFIG: &[&str] = &[
    "uuid",
    "MTU",
    "ip_configuration_mode",
    "IP",
    "netmask",
    "gateway",
    "DNS",
    "ipv6_configuration_mode",
    "IPv6",
    "ipv6_gateway",
    "primary_address_type",
    "other_config",
    "properties",
    "management",
    "currently_attached",
    "disallow_unplug",
];

/// On the coordinator: adds the joining host (its records as `joiner` holds
/// them, already checked by [`pre_join_checks`]) to the pool and returns
/// its host ref. The joiner's uuids are kept; its NICs land on the pool
/// network of their bridge (created when the pool has none), its
/// management VLAN on the pool's management network; then the pool's
/// bonds, VLANs and tunnels are copied onto it.
pub fn introduce_member(d: &mut Db, joiner: &dyn Tables) -> ApiResult<String> {
    let jr = Reader { t: joiner };
    let jhost = master_of(&jr)?;
    let jrec = jr.rec("host", &jhost)?.clone();
    if d.by_uuid("host", s(&jrec, "uuid")).is_ok() {
        return Err(not_allowed("Host is already part of this pool"));
    }
    let copy = |k: &str| jrec.get(k).cloned().unwrap_or(Value::Nil);
    let host = d.create(
        &HOST,
        [
            "uuid",
            "name_label",
            "name_description",
            "hostname",
            "address",
            "software_version",
            "other_config",
            "nic_macs",
            "nic_positions",
            "management_bridge",
        ]
        .iter()
        .map(|k| (*k, copy(k)))
        .collect(),
    );
    if let Some((_, dom0)) = joiner.scan("VM").find(|(_, v)| b(v, "is_control_domain")) {
        d.create(
            &VM,
            vec![
                ("uuid", dom0.get("uuid").cloned().unwrap_or(Value::Nil)),
                (
                    "name_label",
                    dom0.get("name_label").cloned().unwrap_or(Value::Nil),
                ),
                ("power_state", db::vs("Running")),
                ("domid", Value::Int(0)),
                ("resident_on", db::vs(host.clone())),
                ("is_control_domain", Value::Bool(true)),
            ],
        );
    }
    // Physical PIFs: merged onto the pool network of their bridge.
    let mut by_device: BTreeMap<String, String> = BTreeMap::new();
    for (_, jp) in joiner.scan("PIF") {
        if !b(jp, "physical") || s(jp, "host") != jhost {
            continue;
        }
        let dev = s(jp, "device");
        let pif = crate::pif::introduce_internal(d, &host, dev, s(jp, "MAC"), b(jp, "managed"))?;
        copy_config(d, &pif, jp)?;
        by_device.insert(dev.to_string(), pif);
    }
    // A management VLAN: on the pool's management network, same tag (checked).
    for (_, jv) in joiner.scan("VLAN") {
        let (Some(untagged), Some(tagged)) = (
            joiner.get("PIF", s(jv, "untagged_PIF")),
            joiner.get("PIF", s(jv, "tagged_PIF")),
        ) else {
            continue;
        };
        let Some(parent) = by_device.get(s(tagged, "device")).cloned() else {
            continue;
        };
        let master = master_of(&Reader { t: d.tables() })?;
        let pool_mgmt_net = management_pif(&Reader { t: d.tables() }, &master)
            .map(|(_, p)| s(&p, "network").to_string())
            .ok_or_else(|| ApiError::internal("the pool has no management network"))?;
        let v = crate::vlan::create(d, &parent, i(jv, "tag"), &pool_mgmt_net)?;
        let pif = s(d.rec("VLAN", &v)?, "untagged_PIF").to_string();
        copy_config(d, &pif, untagged)?;
    }
    copy_pool_networking(d, &host)?;
    d.touch_host(&host);
    Ok(host)
}

fn copy_config(d: &mut Db, pif: &str, from: &Record) -> ApiResult<()> {
    d.update("PIF", pif, |r| {
        for k in PIF_CONFIG {
            if let Some(v) = from.get(*k) {
                r.insert((*k).to_string(), v.clone());
            }
        }
    })
}

/// XAPI's copy_bonds_from_master, copy_vlans_from_master and
/// copy_tunnels_from_master for one member, in that order: every bond of the
/// coordinator is made from the member's NICs at the same positions (partial
/// bonds allowed), every VLAN and tunnel on the same network of the member.
pub fn copy_pool_networking(d: &mut Db, host: &str) -> ApiResult<()> {
    let master = master_of(&Reader { t: d.tables() })?;
    if master == host {
        return Ok(());
    }
    for bond in d.find("Bond", &|_| true) {
        copy_bond_to(d, &bond, host)?;
    }
    for vlan in d.find("VLAN", &|_| true) {
        let vr = d.rec("VLAN", &vlan)?.clone();
        let (Some(tagged), Some(untagged)) = (
            d.tables().get("PIF", s(&vr, "tagged_PIF")).cloned(),
            d.tables().get("PIF", s(&vr, "untagged_PIF")).cloned(),
        ) else {
            continue;
        };
        if s(&tagged, "host") != master {
            continue;
        }
        let (base, vnet) = (s(&tagged, "network"), s(&untagged, "network"));
        if !d
            .find("PIF", &|p| s(p, "host") == host && s(p, "network") == vnet)
            .is_empty()
        {
            continue;
        }
        if let Some(mine) = d
            .find("PIF", &|p| s(p, "host") == host && s(p, "network") == base)
            .first()
            .cloned()
        {
            crate::vlan::create(d, &mine, i(&vr, "tag"), vnet)?;
        }
    }
    for t in d.find("tunnel", &|_| true) {
        let tr = d.rec("tunnel", &t)?.clone();
        let (Some(transport), Some(access)) = (
            d.tables().get("PIF", s(&tr, "transport_PIF")).cloned(),
            d.tables().get("PIF", s(&tr, "access_PIF")).cloned(),
        ) else {
            continue;
        };
        if s(&transport, "host") != master {
            continue;
        }
        let (base, tnet) = (s(&transport, "network"), s(&access, "network"));
        if !d
            .find("PIF", &|p| s(p, "host") == host && s(p, "network") == tnet)
            .is_empty()
        {
            continue;
        }
        if let Some(mine) = d
            .find("PIF", &|p| s(p, "host") == host && s(p, "network") == base)
            .first()
            .cloned()
        {
            // As XAPI's sync_tunnels: the record without create's checks (a
            // transport PIF may get its IP later); plugged as the pool's is.
            let mt = crate::tunnel::create_internal(d, &mine, tnet, s(&tr, "protocol"))?;
            if b(&access, "currently_attached") {
                let ap = s(d.rec("tunnel", &mt)?, "access_PIF").to_string();
                crate::pif::set_attached(d, &ap, true)?;
            }
        }
    }
    Ok(())
}

/// The NIC position of `dev` on `host` (`host.nic_positions`).
fn position(d: &Db, host: &str, dev: &str) -> Option<String> {
    let hr = d.tables().get("host", host)?;
    db::mget(hr, "nic_positions", dev).map(str::to_string)
}

/// XAPI's copy_bonds_from_master for one bond of the coordinator and one
/// member: the member's physical NICs at the positions of the bond's
/// members, bonded on the same network with the same mode and properties.
/// The NIC at the position whose MAC the bond took goes first; a partial
/// bond is made when the member lacks some positions. Nothing is done when
/// the bond is not the coordinator's, or the member already has a PIF on
/// its network. Returns the member's new bond.
pub fn copy_bond_to(d: &mut Db, bond: &str, host: &str) -> ApiResult<Option<String>> {
    let master = master_of(&Reader { t: d.tables() })?;
    let br = d.rec("Bond", bond)?.clone();
    let Some(bm) = d.tables().get("PIF", s(&br, "master")).cloned() else {
        return Ok(None);
    };
    if s(&bm, "host") != master || host == master {
        return Ok(None);
    }
    let net = s(&bm, "network").to_string();
    if !d
        .find("PIF", &|p| s(p, "host") == host && s(p, "network") == net)
        .is_empty()
    {
        return Ok(None);
    }
    let mut slaves = d.children("PIF", "bond_slave_of", bond);
    slaves.sort_by_key(|p| {
        d.tables()
            .get("PIF", p)
            .map(|r| s(r, "MAC") != s(&bm, "MAC"))
            .unwrap_or(true)
    });
    let mut members = vec![];
    for sl in slaves {
        let Some(sr) = d.tables().get("PIF", &sl) else {
            continue;
        };
        let Some(pos) = position(d, &master, s(sr, "device")) else {
            continue;
        };
        let mine = d.find("PIF", &|p| {
            s(p, "host") == host
                && b(p, "physical")
                && position(d, host, s(p, "device")).as_deref() == Some(&pos)
        });
        members.extend(mine.first().cloned());
    }
    if members.is_empty() {
        return Ok(None);
    }
    let props: Vec<(String, String)> = db::m(&br, "properties")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect();
    crate::bond::create(d, &net, &members, "", s(&br, "mode"), &props).map(Some)
}

/// Bond.create on the coordinator's NICs: the bond is copied to every
/// member at once, in the same transaction, so the call returns once every
/// host has realized its bond, and a member that cannot take it (or does
/// not answer) leaves the pool unchanged.
pub fn copy_bond_to_members(d: &mut Db, bond: &str) -> ApiResult<()> {
    for host in d.find("host", &|_| true) {
        copy_bond_to(d, bond, &host)?;
    }
    Ok(())
}

/// pool.eject on the coordinator: the member and everything that is only
/// its own (PIFs and their metrics, bonds, VLANs, tunnels and SR-IOV on
/// them, its control domain) leave the pool's records. Pool networks stay.
/// Refused for the coordinator itself and for a host with running guests.
pub fn eject_member(d: &mut Db, host: &str) -> ApiResult<()> {
    if h::ha_enabled(d) {
        return Err(ApiError::new("HA_IS_ENABLED", &[]));
    }
    d.rec("host", host)?;
    if master_of(&Reader { t: d.tables() })? == host {
        return Err(not_allowed("Cannot eject the pool coordinator"));
    }
    let r = Reader { t: d.tables() };
    let vms = r.find("VM", &|v| s(v, "resident_on") == host);
    let running = vms.iter().any(|vm| {
        r.t.get("VM", vm)
            .is_some_and(|v| !b(v, "is_control_domain") && s(v, "power_state") != "Halted")
    });
    if running {
        return Err(not_allowed("VM resident on host"));
    }
    let pifs = r.find("PIF", &|p| s(p, "host") == host);
    let on_pifs =
        |class: &str, field: &str| r.find(class, &|x| pifs.iter().any(|p| p == s(x, field)));
    let mut gone: Vec<(&str, String)> = vec![];
    for (class, field) in [
        ("Bond", "master"),
        ("VLAN", "untagged_PIF"),
        ("tunnel", "access_PIF"),
        ("network_sriov", "logical_PIF"),
    ] {
        gone.extend(on_pifs(class, field).into_iter().map(|x| (class, x)));
    }
    for p in &pifs {
        let metrics = r.t.get("PIF", p).map(|x| s(x, "metrics").to_string());
        if let Some(m) = metrics.filter(|m| r.t.get("PIF_metrics", m).is_some()) {
            gone.push(("PIF_metrics", m));
        }
        gone.push(("PIF", p.clone()));
    }
    for vm in vms {
        let own =
            r.t.get("VM", &vm)
                .is_some_and(|v| b(v, "is_control_domain"));
        if own {
            gone.extend(
                r.find("VIF", &|x| s(x, "VM") == vm)
                    .into_iter()
                    .map(|x| ("VIF", x)),
            );
            gone.push(("VM", vm));
        }
    }
    gone.push(("host", host.to_string()));
    let mut seen = std::collections::BTreeSet::new();
    for (class, x) in gone {
        if seen.insert((class, x.clone())) {
            d.destroy(class, &x)?;
        }
    }
    Ok(())
}
