//! Lab end to end: needs root, iproute2 and OVS. Every lab drops (tears down) even when an
//! assertion fails; each test then checks that nothing of its id remains.

use std::path::Path;
use std::process::Output;
use xnet_lab::{list_netns, Lab, LabSpec, Vm};

/// Bounded ping (`-c count -W 1`, whole run capped) from a namespace.
fn ping(ns: &str, addr: &str) -> bool {
    xnet_lab::ping(ns, addr, 3)
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn lab(hosts: usize, nics: usize) -> Lab {
    Lab::new(LabSpec {
        hosts,
        nics,
        ..LabSpec::default()
    })
    .expect("lab up")
}

/// `xenbr0` (netdev) with eth0 on host `h`, up, with `addr` on it.
fn xenbr0(lab: &Lab, h: usize, addr: &str) {
    lab.vsctl(
        h,
        &[
            "add-br",
            "xenbr0",
            "--",
            "set",
            "bridge",
            "xenbr0",
            "datapath_type=netdev",
            "--",
            "add-port",
            "xenbr0",
            "eth0",
        ],
    )
    .unwrap();
    ok(lab.exec(h, &["ip", "link", "set", "xenbr0", "up"]).unwrap());
    ok(lab
        .exec(h, &["ip", "addr", "add", addr, "dev", "xenbr0"])
        .unwrap());
}

fn vm_ip(lab: &Lab, vm: &Vm, addr: &str) {
    ok(lab
        .vm_exec(vm, &["ip", "addr", "add", addr, "dev", "eth0"])
        .unwrap());
}

/// Live (non-zombie) processes whose command line mentions `dir`.
fn procs_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_string();
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (state != "Z" && cmd.contains(&d)).then(|| format!("{p}: {cmd}"))
        })
        .collect()
}

fn assert_gone(id: &str, run_dir: &Path) {
    let left: Vec<String> = list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&format!("xl{id}")))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    // `ip netns list` is what an operator would look at.
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&format!("xl{id}")));
    assert!(!run_dir.exists(), "run dir {} left", run_dir.display());
    let procs = procs_under(run_dir);
    assert!(procs.is_empty(), "processes left: {procs:?}");
}

fn finish(lab: Lab) {
    let (id, dir) = (lab.id().to_string(), lab.run_dir().to_path_buf());
    drop(lab);
    assert_gone(&id, &dir);
}

#[test]
fn two_hosts_ping_across_switch() {
    let lab = lab(2, 2);
    for h in 0..2 {
        lab.vsctl(h, &["show"]).unwrap();
        assert!(lab.host(h).unwrap().db_sock().exists());
        let links = ok(lab.exec(h, &["ip", "-o", "link"]).unwrap());
        assert!(links.contains("eth0") && links.contains("eth1"), "{links}");
        assert!(links.contains(&lab.nic_mac(h, 1)), "{links}");
    }
    assert_ne!(lab.nic_mac(0, 0), lab.nic_mac(1, 0));
    xenbr0(&lab, 0, "10.77.0.1/24");
    xenbr0(&lab, 1, "10.77.0.2/24");
    assert!(ping(lab.host(0).unwrap().ns(), "10.77.0.2"));
    // ofctl reaches the netdev bridge through its mgmt socket.
    let flows = lab.ofctl(0, &["dump-flows", "xenbr0"]).unwrap();
    assert!(flows.contains("NORMAL"), "{flows}");
    assert!(lab
        .appctl(0, &["version"])
        .unwrap()
        .contains("ovs-vswitchd"));

    // Cutting host1's wire stops the traffic; restoring it brings it back.
    lab.link_down(1, 0).unwrap();
    assert!(!xnet_lab::ping(lab.host(0).unwrap().ns(), "10.77.0.2", 2));
    lab.link_up(1, 0).unwrap();
    assert!(ping(lab.host(0).unwrap().ns(), "10.77.0.2"));
    finish(lab);
}

#[test]
fn vm_on_host0_reaches_host1() {
    let mut lab = lab(2, 1);
    xenbr0(&lab, 0, "10.78.0.1/24");
    xenbr0(&lab, 1, "10.78.0.2/24");
    let vm = lab.add_vm(0, 1, 0).unwrap();
    let links = ok(lab
        .exec(0, &["ip", "-o", "link", "show", "vif1.0"])
        .unwrap());
    assert!(links.contains("vif1.0"), "{links}");
    lab.vsctl(0, &["add-port", "xenbr0", "vif1.0"]).unwrap();
    vm_ip(&lab, &vm, "10.78.0.10/24");
    assert!(ping(&vm.ns, "10.78.0.2"));

    // A second NIC appears as eth1 ↔ vif1.1.
    assert_eq!(lab.add_vm_nic(&vm, 1).unwrap(), "eth1");
    ok(lab.exec(0, &["ip", "link", "show", "vif1.1"]).unwrap());
    lab.remove_vm(&vm).unwrap();
    let o = lab.exec(0, &["ip", "link", "show", "vif1.0"]).unwrap();
    assert!(!o.status.success(), "vif1.0 survived its VM");
    finish(lab);
}

#[test]
fn tagged_peer_reaches_vm_untagged_does_not() {
    let mut lab = lab(1, 1);
    xenbr0(&lab, 0, "10.79.0.1/24");
    let vm = lab.add_vm(0, 1, 0).unwrap();
    lab.vsctl(0, &["add-port", "xenbr0", "vif1.0", "tag=10"])
        .unwrap();
    vm_ip(&lab, &vm, "10.79.10.1/24");
    let tagged = lab.switch_port(0, "p10", Some(10)).unwrap();
    let untagged = lab.switch_port(0, "p0", None).unwrap();
    ok(lab
        .peer_exec(
            &tagged,
            &["ip", "addr", "add", "10.79.10.2/24", "dev", "eth0"],
        )
        .unwrap());
    ok(lab
        .peer_exec(
            &untagged,
            &["ip", "addr", "add", "10.79.10.3/24", "dev", "eth0"],
        )
        .unwrap());
    assert!(ping(&tagged.ns, "10.79.10.1"));
    assert!(!xnet_lab::ping(&untagged.ns, "10.79.10.1", 2));
    finish(lab);
}

#[test]
fn lacp_partner_negotiates_with_host_bond() {
    let mut lab = lab(1, 2);
    lab.lacp_partner(&[0, 1], 0).unwrap();
    lab.vsctl(
        0,
        &[
            "add-br",
            "xenbr0",
            "--",
            "set",
            "bridge",
            "xenbr0",
            "datapath_type=netdev",
            "--",
            "add-bond",
            "xenbr0",
            "bond0",
            "eth0",
            "eth1",
            "lacp=active",
            "bond_mode=balance-tcp",
            "other_config:lacp-time=fast",
        ],
    )
    .unwrap();
    // LACP needs a few fast-rate PDUs (1 s apart); poll bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut show = String::new();
    while std::time::Instant::now() < deadline {
        show = lab.appctl(0, &["lacp/show", "bond0"]).unwrap_or_default();
        if show.contains("status: active negotiated") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(show.contains("status: active negotiated"), "{show}");
    finish(lab);
}

#[test]
fn teardown_is_complete_even_after_panic() {
    let mut captured = None;
    let mut children = Vec::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = Lab::new(LabSpec {
            hosts: 2,
            nics: 1,
            // A host hook stands in for xnetd: kept as a child, killed on teardown.
            host_cmd: Some(vec!["sh".into(), "-c".into(), "sleep 3007; : {dir}".into()]),
            ..LabSpec::default()
        })
        .unwrap();
        captured = Some((lab.id().to_string(), lab.run_dir().to_path_buf()));
        let vm = lab.add_vm(1, 7, 0).unwrap();
        lab.switch_port(0, "pp", Some(5)).unwrap();
        // A spawned child that would outlive a careless teardown.
        children.push(lab.spawn_in(0, &["sleep", "3008"], &[]).unwrap());
        children.push(lab.spawn_in_ns(&vm.ns, &["sleep", "3009"], &[]).unwrap());
        assert!(
            !procs_under(lab.run_dir()).is_empty(),
            "host_cmd not running"
        );
        panic!("test body fails");
    }));
    assert!(r.is_err());
    // Teardown killed them; the caller owns the handles and reaps them.
    for mut c in children {
        assert!(!c.wait().unwrap().success());
    }
    let (id, dir) = captured.expect("lab was built");
    assert_gone(&id, &dir);
    // No sleep of ours survives either (they ran in lab namespaces, some as grandchildren).
    let stray: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let st = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let live = st.rsplit_once(')')?.1.split_whitespace().next()? != "Z";
            let ours = [
                &b"sleep\x003007\x00"[..],
                b"sleep\x003008\x00",
                b"sleep\x003009\x00",
            ]
            .contains(&cmd.as_slice());
            (live && ours).then_some(p)
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn leaked_lab_is_removed_by_cleanup_id() {
    let lab = lab(1, 1);
    let (id, dir) = (lab.id().to_string(), lab.run_dir().to_path_buf());
    let st = lab.detach();
    assert_eq!(st.id, id);
    assert!(xnet_lab::list_labs().iter().any(|l| l.id == id));
    xnet_lab::cleanup_id(&id).unwrap();
    assert_gone(&id, &dir);
}

#[test]
fn same_id_gives_same_macs() {
    let spec = || LabSpec {
        hosts: 1,
        nics: 1,
        id: Some(format!("m{:04x}", std::process::id() & 0xffff)),
        ..LabSpec::default()
    };
    let l1 = Lab::new(spec()).unwrap();
    let m1 = ok(l1.exec(0, &["cat", "/sys/class/net/eth0/address"]).unwrap());
    let id = l1.id().to_string();
    drop(l1);
    let l2 = Lab::new(spec()).unwrap();
    assert_eq!(l2.id(), id);
    let m2 = ok(l2.exec(0, &["cat", "/sys/class/net/eth0/address"]).unwrap());
    assert_eq!(m1, m2);
    assert_eq!(m1.trim(), l2.nic_mac(0, 0));
    // tx checksum offload is off on the host NIC.
    let feat = ok(l2.exec(0, &["ethtool", "-k", "eth0"]).unwrap());
    assert!(feat.contains("tx-checksumming: off"), "{feat}");
    finish(l2);
}
