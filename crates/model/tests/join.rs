//! pool.join as data: the pre-join checks between two installed hosts, the
//! network merge, and the pool's bonds and VLANs copied onto the new member.

use xapi_wire::Value;
use xnet_model::db::{self, b, i, s};
use xnet_model::host::Nic;
use xnet_model::install::{install, Management, Setup};
use xnet_model::join::{introduce_member, pre_join_checks};
use xnet_model::{ApiError, Db, MemTables, Read, Reader};

fn host(name: &str, nics: u32, ip: &str, mac_byte: u8) -> MemTables {
    let mut t = MemTables::default();
    let setup = Setup {
        hostname: name.into(),
        backend: "openvswitch".into(),
        nics: (0..nics)
            .map(|n| Nic {
                device: format!("eth{n}"),
                mac: format!("52:54:00:{mac_byte:02x}:00:{n:02x}"),
                position: n,
                carrier: true,
                speed_mbps: 1000,
                duplex_full: true,
                driver: "veth".into(),
            })
            .collect(),
        management: Management {
            device: Some("eth0".into()),
            mode: "static".into(),
            ip: ip.into(),
            netmask: "255.255.255.0".into(),
            ..Default::default()
        },
    };
    install(&mut Db::new(&mut t), &setup).unwrap();
    t
}

fn pif(t: &MemTables, host_name: &str, dev: &str) -> String {
    let r = Reader { t };
    let h = r.find("host", &|h| s(h, "hostname") == host_name)[0].clone();
    r.find("PIF", &|p| {
        s(p, "host") == h && s(p, "device") == dev && b(p, "physical")
    })[0]
        .clone()
}

fn code(e: ApiError) -> (String, Vec<String>) {
    (e.code.clone(), e.params.clone())
}

/// The coordinator's side of a join: checks, then the introduction, in one
/// transaction (a failure leaves `master` as it was).
fn join(master: &mut MemTables, joiner: &MemTables, force: bool) -> Result<String, ApiError> {
    pre_join_checks(joiner, master, force)?;
    let mut copy = master.clone();
    let h = introduce_member(&mut Db::new(&mut copy), joiner)?;
    *master = copy;
    Ok(h)
}

#[test]
fn networks_merge_by_bridge_and_uuids_are_kept() {
    let mut m = host("c", 6, "10.0.0.1", 0xa0);
    let j = host("m1", 6, "10.0.0.2", 0xb0);
    let nets_before = m.tables["network"].len();
    let jr = Reader { t: &j };
    let j_eth1_uuid = jr.uuid_of("PIF", &pif(&j, "m1", "eth1"));
    let h = join(&mut m, &j, false).unwrap();
    let r = Reader { t: &m };
    assert_eq!(r.find("host", &|_| true).len(), 2);
    assert_eq!(
        m.tables["network"].len(),
        nets_before,
        "no new network: all merged"
    );
    for n in 0..6 {
        let bridge = format!("xenbr{n}");
        let net = r.find("network", &|x| s(x, "bridge") == bridge)[0].clone();
        let pifs = r.children("PIF", "network", &net);
        assert_eq!(pifs.len(), 2, "{bridge}: one PIF per host");
    }
    let e1 = pif(&m, "m1", "eth1");
    assert_eq!(r.uuid_of("PIF", &e1), j_eth1_uuid);
    let mgmt = pif(&m, "m1", "eth0");
    let mr = r.rec("PIF", &mgmt).unwrap();
    assert!(b(mr, "management") && b(mr, "currently_attached"));
    assert_eq!(s(mr, "IP"), "10.0.0.2");
    assert_eq!(s(mr, "host"), h);
    // Its control domain came along, resident on it.
    let dom0 = r.find("VM", &|v| {
        b(v, "is_control_domain") && s(v, "resident_on") == h
    });
    assert_eq!(dom0.len(), 1);
    // Joining twice is refused.
    let e = introduce_member(&mut Db::new(&mut m.clone()), &j).unwrap_err();
    assert_eq!(e.code, "OPERATION_NOT_ALLOWED");
}

#[test]
fn the_pools_bonds_and_vlans_are_copied_by_position() {
    let mut m = host("c", 6, "10.0.0.1", 0xa0);
    let j = host("m1", 6, "10.0.0.2", 0xb0);
    let (e1, e4, e2) = (
        pif(&m, "c", "eth1"),
        pif(&m, "c", "eth4"),
        pif(&m, "c", "eth2"),
    );
    let (bond_net, vlan_net) = {
        let mut d = Db::new(&mut m);
        let mk = |d: &mut Db, l: &str| {
            xnet_model::network::create(
                d,
                [("name_label".to_string(), db::vs(l))]
                    .into_iter()
                    .collect(),
            )
            .unwrap()
        };
        let bn = mk(&mut d, "guests");
        let vn = mk(&mut d, "vlan 10");
        xnet_model::bond::create(&mut d, &bn, &[e1, e4], "", "balance-slb", &[]).unwrap();
        xnet_model::vlan::create(&mut d, &e2, 10, &vn).unwrap();
        (bn, vn)
    };
    let h = join(&mut m, &j, false).unwrap();
    let r = Reader { t: &m };
    let bonds: Vec<_> = r
        .find("Bond", &|_| true)
        .into_iter()
        .filter(|bd| {
            let master = s(r.rec("Bond", bd).unwrap(), "master").to_string();
            s(r.rec("PIF", &master).unwrap(), "host") == h
        })
        .collect();
    assert_eq!(bonds.len(), 1, "the member got the bond");
    let br = r.rec("Bond", &bonds[0]).unwrap();
    assert_eq!(s(br, "mode"), "balance-slb");
    let master = r.rec("PIF", s(br, "master")).unwrap();
    assert_eq!(s(master, "network"), bond_net);
    let mut devs: Vec<String> = r
        .children("PIF", "bond_slave_of", &bonds[0])
        .iter()
        .map(|p| s(r.rec("PIF", p).unwrap(), "device").to_string())
        .collect();
    devs.sort();
    assert_eq!(devs, ["eth1", "eth4"]);
    let vl = r.find("PIF", &|p| s(p, "host") == h && s(p, "network") == vlan_net);
    assert_eq!(vl.len(), 1);
    assert_eq!(i(r.rec("PIF", &vl[0]).unwrap(), "VLAN"), 10);
}

#[test]
fn checks_refuse_with_the_difference_named_and_change_nothing() {
    let m = host("c", 6, "10.0.0.1", 0xa0);
    // Fewer NICs.
    let j4 = host("m1", 4, "10.0.0.2", 0xb0);
    let (c, p) = code(pre_join_checks(&j4, &m, false).unwrap_err());
    assert_eq!(c, "OPERATION_NOT_ALLOWED");
    assert!(
        p[0].contains("NIC count differs") && p[0].contains("eth5"),
        "{p:?}"
    );
    // join_force skips the homogeneity checks.
    pre_join_checks(&j4, &m, true).unwrap();
    // MTU of a network that would merge.
    let mut jm = host("m1", 6, "10.0.0.2", 0xb0);
    {
        let r = Reader { t: &jm };
        let n = r.find("network", &|x| s(x, "bridge") == "xenbr3")[0].clone();
        let mut d = Db::new(&mut jm);
        d.set("network", &n, "MTU", xapi_wire::Value::Int(9000))
            .unwrap();
    }
    let (_, p) = code(pre_join_checks(&jm, &m, false).unwrap_err());
    assert!(
        p[0].contains("MTU differs on xenbr3") && p[0].contains("9000"),
        "{p:?}"
    );
    // A bond on the joiner.
    let mut jb = host("m1", 6, "10.0.0.2", 0xb0);
    let (a, b2) = (pif(&jb, "m1", "eth1"), pif(&jb, "m1", "eth4"));
    {
        let mut d = Db::new(&mut jb);
        let n = xnet_model::network::create(
            &mut d,
            [("name_label".to_string(), db::vs("b"))]
                .into_iter()
                .collect(),
        )
        .unwrap();
        xnet_model::bond::create(&mut d, &n, &[a, b2], "", "active-backup", &[]).unwrap();
    }
    assert_eq!(
        code(pre_join_checks(&jb, &m, false).unwrap_err()).0,
        "POOL_JOINING_HOST_HAS_BONDS"
    );
    // Joining itself.
    assert_eq!(
        code(pre_join_checks(&m, &m, false).unwrap_err()),
        (
            "OPERATION_NOT_ALLOWED".to_string(),
            vec!["Host cannot become slave of itself".to_string()]
        )
    );
    // A running guest on the joiner.
    let mut jv = host("m1", 6, "10.0.0.2", 0xb0);
    {
        let mut d = Db::new(&mut jv);
        d.create(
            &xnet_model::schema::VM,
            vec![("power_state", db::vs("Running"))],
        );
    }
    assert_eq!(
        code(pre_join_checks(&jv, &m, false).unwrap_err()).0,
        "POOL_JOINING_HOST_CANNOT_HAVE_RUNNING_VMS"
    );
    // A failed join leaves the coordinator as it was.
    let mut m2 = m.clone();
    assert!(join(&mut m2, &j4, false).is_err());
    assert_eq!(m2.tables, m.tables);
}

#[test]
fn eject_removes_only_the_members_own_records() {
    let mut m = host("c", 6, "10.0.0.1", 0xa0);
    let j = host("m1", 6, "10.0.0.2", 0xb0);
    let before = m.clone();
    let h = join(&mut m, &j, false).unwrap();
    // A VLAN on the member's eth1, on a new pool network.
    let mut args = db::Map::new();
    args.insert("name_label".into(), db::vs("v5"));
    let net = xnet_model::network::create(&mut Db::new(&mut m), args).unwrap();
    let eth1 = pif(&m, "m1", "eth1");
    xnet_model::vlan::create(&mut Db::new(&mut m), &eth1, 5, &net).unwrap();
    // The coordinator itself cannot be ejected.
    let master = Reader { t: &m }.find("host", &|x| s(x, "hostname") == "c")[0].clone();
    let e = xnet_model::join::eject_member(&mut Db::new(&mut m.clone()), &master).unwrap_err();
    assert_eq!(e.code, "OPERATION_NOT_ALLOWED");
    xnet_model::join::eject_member(&mut Db::new(&mut m), &h).unwrap();
    let r = Reader { t: &m };
    assert_eq!(r.find("host", &|_| true).len(), 1);
    for class in ["PIF", "PIF_metrics", "VM", "VLAN"] {
        assert_eq!(
            m.tables.get(class).map_or(0, |t| t.len()),
            before.tables.get(class).map_or(0, |t| t.len()),
            "{class}: only the coordinator's are left"
        );
    }
    // Pool networks stay, the VLAN's too.
    assert_eq!(
        m.tables["network"].len(),
        before.tables["network"].len() + 1
    );
    assert!(xnet_model::join::eject_member(&mut Db::new(&mut m), &h).is_err());
}

/// Bond.create through its registered call, as the API runs it: the
/// touched hosts are what the API waits on.
fn bond_create(
    t: &mut MemTables,
    net: &str,
    members: &[String],
    mode: &str,
) -> Result<(String, Vec<String>), ApiError> {
    let call = xnet_model::calls::registry().lookup("Bond.create").unwrap();
    let args = vec![
        db::vs(net),
        Value::Array(members.iter().map(|m| db::vs(m.as_str())).collect()),
        db::vs(""),
        db::vs(mode),
    ];
    let mut copy = t.clone();
    let args = xnet_model::calls::decode_args(&copy, call, &args)?;
    let mut d = Db::new(&mut copy);
    let xnet_model::calls::Handler::Write(f) = &call.handler else {
        panic!("Bond.create writes")
    };
    let v = f(&mut d, &args)?;
    let touched = d.realize.iter().cloned().collect();
    *t = copy;
    Ok((v.as_str().unwrap().to_string(), touched))
}

#[test]
fn a_bond_made_on_the_coordinator_is_copied_to_every_member_at_once() {
    let mut m = host("c", 6, "10.0.0.1", 0xa0);
    let h1 = join(&mut m, &host("m1", 6, "10.0.0.2", 0xb0), false).unwrap();
    let h2 = join(&mut m, &host("m2", 6, "10.0.0.3", 0xc0), false).unwrap();
    let mut args = db::Map::new();
    args.insert("name_label".into(), db::vs("bond0"));
    let net = xnet_model::network::create(&mut Db::new(&mut m), args).unwrap();
    // The management NIC and eth3, as the bonding tutorial does.
    let members = [pif(&m, "c", "eth0"), pif(&m, "c", "eth3")];
    let (_, touched) = bond_create(&mut m, &net, &members, "active-backup").unwrap();
    let r = Reader { t: &m };
    let master = r.find("host", &|x| s(x, "hostname") == "c")[0].clone();
    let mut all = vec![master.clone(), h1.clone(), h2.clone()];
    all.sort();
    assert_eq!(touched, all, "the call waits for every host");
    for (name, h, ip) in [
        ("c", &master, "10.0.0.1"),
        ("m1", &h1, "10.0.0.2"),
        ("m2", &h2, "10.0.0.3"),
    ] {
        let bonds = r.find("PIF", &|p| {
            s(p, "host") == h.as_str() && s(p, "network") == net
        });
        assert_eq!(bonds.len(), 1, "{name} has one PIF on the bond network");
        let bm = r.t.get("PIF", &bonds[0]).unwrap();
        assert!(b(bm, "management"), "{name}: management moved to the bond");
        assert_eq!(s(bm, "IP"), ip, "{name}: its own management IP kept");
        let bond = r.find("Bond", &|x| s(x, "master") == bonds[0])[0].clone();
        assert_eq!(s(r.t.get("Bond", &bond).unwrap(), "mode"), "active-backup");
        let mut devs: Vec<String> = r
            .children("PIF", "bond_slave_of", &bond)
            .iter()
            .map(|p| s(r.t.get("PIF", p).unwrap(), "device").to_string())
            .collect();
        devs.sort();
        assert_eq!(devs, ["eth0", "eth3"], "{name}: NICs at the same positions");
    }
    // A member that cannot take the bond refuses it for the whole pool.
    let mut args = db::Map::new();
    args.insert("name_label".into(), db::vs("bond1"));
    let net2 = xnet_model::network::create(&mut Db::new(&mut m), args).unwrap();
    // m2's eth1 is already in a bond of its own.
    let mut args = db::Map::new();
    args.insert("name_label".into(), db::vs("m2-own"));
    let own = xnet_model::network::create(&mut Db::new(&mut m), args).unwrap();
    let m2_nics = [pif(&m, "m2", "eth1"), pif(&m, "m2", "eth2")];
    bond_create(&mut m, &own, &m2_nics, "active-backup").unwrap();
    let before = m.clone();
    let members = [pif(&m, "c", "eth1"), pif(&m, "c", "eth4")];
    assert!(bond_create(&mut m, &net2, &members, "balance-slb").is_err());
    assert_eq!(m.tables, before.tables, "nothing changed");
}
