//! VIF.xnet_hotplug / xnet_hotunplug: what the vif-xnet script reports
//! becomes VM and VIF records the agent realizes.

use xapi_wire::Value;
use xnet_model::db::{b, i, mget, s, set_strs};
use xnet_model::Read;

mod common;
use common::*;

const UUID: &str = "0f6a3c1e-2b7d-4e59-9a41-5c8d0e7b1f23";

fn params(pairs: &[(&str, &str)]) -> Value {
    Value::Struct(pairs.iter().map(|(k, v)| (k.to_string(), vs(v))).collect())
}

fn online(f: &mut Fx, extra: &[(&str, &str)]) -> Result<String, (String, Vec<String>)> {
    let mut p = vec![
        ("vm_uuid", UUID),
        ("vm_name", "web1"),
        ("domid", "7"),
        ("device", "0"),
        ("mac", "00:16:3E:12:34:56"),
        ("bridge", "xenbr1"),
    ];
    for (k, v) in extra {
        p.retain(|(a, _)| a != k);
        p.push((k, v));
    }
    f.call("VIF.xnet_hotplug", vec![params(&p)])
        .map(|v| v.as_str().unwrap().to_string())
        .map_err(|e| (e.code, e.params))
}

#[test]
fn online_makes_the_vm_and_an_attached_vif() {
    let mut f = fx();
    let vif = online(&mut f, &[]).unwrap();
    let r = f.rec("VIF", &vif);
    let vm = s(&r, "VM").to_string();
    let vmr = f.rec("VM", &vm);
    assert_eq!(s(&vmr, "uuid"), UUID);
    assert_eq!(s(&vmr, "name_label"), "web1");
    assert_eq!(s(&vmr, "power_state"), "Running");
    assert_eq!(s(&vmr, "resident_on"), f.host);
    assert_eq!(i(&vmr, "domid"), 7);
    assert_eq!(mget(&vmr, "other_config", "xnet-origin"), Some("hotplug"));
    assert_eq!(s(&r, "MAC"), "00:16:3e:12:34:56");
    assert_eq!(s(&r, "device"), "0");
    assert!(b(&r, "currently_attached"));
    let net = f.net_of(&f.pif("eth1"));
    assert_eq!(s(&r, "network"), net);
    assert_eq!(s(&r, "locking_mode"), "network_default");
    assert_eq!(s(&r, "qos_algorithm_type"), "");
    assert!(f
        .r()
        .tables()
        .get("VIF_metrics", s(&r, "metrics"))
        .is_some());
    // Online again (a re-run of the script) changes nothing but is fine.
    assert_eq!(online(&mut f, &[]).unwrap(), vif);
    assert_eq!(f.r().find("VIF", &|_| true).len(), 1);
}

#[test]
fn ip_locks_and_rate_limits() {
    let mut f = fx();
    let vif = online(
        &mut f,
        &[
            ("ip", "10.0.0.5 10.0.1.0/24,fd00::5"),
            ("rate_kbps", "1221"),
            ("timeslice_us", "20000"),
        ],
    )
    .unwrap();
    let r = f.rec("VIF", &vif);
    assert_eq!(s(&r, "locking_mode"), "locked");
    assert_eq!(
        set_strs(&r, "ipv4_allowed"),
        vec!["10.0.0.5", "10.0.1.0/24"]
    );
    assert_eq!(set_strs(&r, "ipv6_allowed"), vec!["fd00::5"]);
    assert_eq!(s(&r, "qos_algorithm_type"), "ratelimit");
    assert_eq!(mget(&r, "qos_algorithm_params", "kbps"), Some("1221"));
    assert_eq!(
        mget(&r, "qos_algorithm_params", "timeslice_us"),
        Some("20000")
    );
    // The domain's next plug without a rate drops the limit it set.
    online(&mut f, &[]).unwrap();
    assert_eq!(s(&f.rec("VIF", &vif), "qos_algorithm_type"), "");
}

#[test]
fn a_changed_bridge_moves_the_vif_and_vifname_is_kept() {
    let mut f = fx();
    let vif = online(&mut f, &[]).unwrap();
    online(&mut f, &[("bridge", "xenbr2"), ("vifname", "web1-eth0")]).unwrap();
    let r = f.rec("VIF", &vif);
    assert_eq!(s(&r, "network"), f.net_of(&f.pif("eth2")));
    assert_eq!(mget(&r, "other_config", "xnet-vifname"), Some("web1-eth0"));
    assert_eq!(
        xnet_model::hotplug::backend_devices(7, &r),
        vec![
            "vif7.0",
            "tap7.0",
            "vif7.0-emu",
            "web1-eth0",
            "web1-eth0-emu"
        ]
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let mut f = fx();
    let before = f.t.clone();
    for (extra, want) in [
        (vec![("bridge", "nosuchbr")], "BRIDGE_NOT_AVAILABLE"),
        (vec![("mac", "00:16:3e:12:34")], "MAC_INVALID"),
        (vec![("domid", "seven")], "INVALID_VALUE"),
        (vec![("device", "")], "INVALID_VALUE"),
        (vec![("vm_uuid", "not-a-uuid")], "INVALID_VALUE"),
        (vec![("ip", "10.0.0.300")], "INVALID_IP_ADDRESS_SPECIFIED"),
        (vec![("rate_kbps", "-5")], "INVALID_VALUE"),
        (vec![("vifname", "a-name-longer-than-15")], "INVALID_VALUE"),
    ] {
        let e = online(&mut f, &extra).unwrap_err();
        assert_eq!(e.0, want, "{extra:?}: {e:?}");
        assert!(f.t.tables == before.tables, "{extra:?} changed the tables");
    }
}

#[test]
fn a_mac_used_on_the_network_is_refused() {
    let mut f = fx();
    online(&mut f, &[]).unwrap();
    let other = "1d2c3b4a-0000-4000-8000-000000000001";
    let e = online(&mut f, &[("vm_uuid", other), ("domid", "8")]).unwrap_err();
    assert_eq!(e.0, "MAC_ALREADY_IN_USE");
    assert!(f.r().find("VM", &|r| s(r, "uuid") == other).is_empty());
}

#[test]
fn offline_detaches_and_a_gone_domain_takes_its_records() {
    let mut f = fx();
    let vif = online(&mut f, &[]).unwrap();
    let unplug = |f: &mut Fx, gone: &str| {
        f.call(
            "VIF.xnet_hotunplug",
            vec![params(&[
                ("vm_uuid", UUID),
                ("device", "0"),
                ("domain_gone", gone),
            ])],
        )
        .unwrap();
    };
    unplug(&mut f, "false");
    assert!(!b(&f.rec("VIF", &vif), "currently_attached"));
    let vm = s(&f.rec("VIF", &vif), "VM").to_string();
    assert_eq!(s(&f.rec("VM", &vm), "power_state"), "Running");
    unplug(&mut f, "true");
    assert!(f.r().find("VM", &|r| s(r, "uuid") == UUID).is_empty());
    assert!(f.r().find("VIF", &|_| true).is_empty());
    // Offline for a domain xnet never saw is fine.
    unplug(&mut f, "true");
    // A VM made through the API is only halted, never destroyed.
    let api_vm = new_vm(&mut f, "api");
    let uuid = s(&f.rec("VM", &api_vm), "uuid").to_string();
    let p = |gone: &str| {
        params(&[
            ("vm_uuid", &uuid),
            ("vm_name", "api"),
            ("domid", "9"),
            ("device", "1"),
            ("mac", "00:16:3e:00:00:09"),
            ("bridge", "xenbr0"),
            ("domain_gone", gone),
        ])
    };
    f.call("VIF.xnet_hotplug", vec![p("")]).unwrap();
    f.call("VIF.xnet_hotunplug", vec![p("true")]).unwrap();
    let r = f.rec("VM", &api_vm);
    assert_eq!(s(&r, "power_state"), "Halted");
    assert_eq!(f.r().children("VIF", "VM", &api_vm).len(), 1);
}
