"""The XenServer bonding tutorial, end to end, with real packets: two hosts
with six NICs joined into one pool; on the coordinator a management bond
(eth0+eth3, active-backup), a storage bond (eth2+eth5, active-backup, its
static IP kept) and a guest bond (eth1+eth4, balance-slb); every host
realizes all three; VMs on the two hosts talk over the guest bond while the
management addresses keep answering. Then a third host joins and inherits
the bonds, and is ejected again.

NICs at the same position of every host share one segment per role: a
Linux bridge in the switch namespace holds eth0 and eth3 of every host
(management), another eth1 and eth4 (guests), a third eth2 and eth5
(storage), as the tutorial's physical switches do. A peer namespace on the
management and storage segments pings the hosts."""

import os
import subprocess
import time

import pytest

from conftest import HTTPS_PORT, PASSWORD, Host, Vm, sh, wait_for
from test_pool import XapiError, call, xe

MGMT = {"ta": "10.96.0.2", "tb": "10.96.0.3", "tc": "10.96.0.4"}
STORAGE = {"ta": "10.96.2.2", "tb": "10.96.2.3", "tc": "10.96.2.4"}
SEGMENTS = {"mgmt": (0, 3), "guest": (1, 4), "stor": (2, 5)}
PEER_MGMT, PEER_STOR = "10.96.0.100", "10.96.2.100"


class Pool:
    def __init__(self):
        self.hosts = {t: Host(t, mgmt_ip=MGMT[t], listen="0.0.0.0", mac_byte=0x31 + i)
                      for i, t in enumerate(("ta", "tb", "tc"))}
        self.a = self.hosts["ta"]
        self.peer = self.a.name + "peer"

    def setup(self):
        for h in self.hosts.values():
            h.setup()
        sw = self.a.sw
        for seg in SEGMENTS:
            sh("ip", "-n", sw, "link", "add", seg, "type", "bridge")
            sh("ip", "-n", sw, "link", "set", seg, "up")
        for t, h in self.hosts.items():
            for seg, nics in SEGMENTS.items():
                for n in nics:
                    port = "%s%d" % (t, n)
                    sh("ip", "-n", h.sw, "link", "set", "p%d" % n, "name", port)
                    if h is not self.a:
                        sh("ip", "-n", h.sw, "link", "set", port, "netns", sw)
                    sh("ip", "-n", sw, "link", "set", port, "master", seg, "up")
        sh("ip", "netns", "add", self.peer)
        for seg, ip in (("mgmt", PEER_MGMT), ("stor", PEER_STOR)):
            dev = "pe" + seg
            sh("ip", "link", "add", dev, "netns", self.peer, "type", "veth", "peer", "name", "sw" + seg,
               "netns", sw)
            sh("ip", "-n", sw, "link", "set", "sw" + seg, "master", seg, "up")
            sh("ip", "-n", self.peer, "link", "set", dev, "up")
            sh("ip", "-n", self.peer, "addr", "add", ip + "/24", "dev", dev)
            sh("ip", "netns", "exec", self.peer, "ethtool", "-K", dev, "tx", "off", check=False)

    def teardown(self):
        sh("ip", "netns", "del", self.peer, check=False)
        for h in self.hosts.values():
            h.teardown()

    def peer_ping(self, ip):
        return sh("ip", "netns", "exec", self.peer, "ping", "-c", "1", "-W", "1", ip,
                  check=False).returncode == 0


@pytest.fixture(scope="module")
def pool():
    p = Pool()
    try:
        p.setup()
        yield p
    finally:
        p.teardown()


class Pinger:
    """Pings an address every 20 ms from the peer; the longest time between
    two replies is the outage."""

    def __init__(self, pool, ip):
        self.ip = ip
        self.p = subprocess.Popen(["ip", "netns", "exec", pool.peer, "ping", "-D", "-n", "-i", "0.02",
                                   "-W", "1", ip], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self):
        self.p.terminate()
        out, _ = self.p.communicate(timeout=10)
        stamps = [float(l[1:l.index("]")]) for l in out.splitlines() if l.startswith("[") and "bytes from" in l]
        assert len(stamps) > 10, "%s never answered: %s" % (self.ip, out[-500:])
        return max(b - a for a, b in zip(stamps, stamps[1:]))


def host_ref(a, tag):
    return [r for r, h in call(a, "host.get_all_records").items() if h["name_label"] == "it-host" + tag][0]


def pif_of(a, tag, device):
    h = host_ref(a, tag)
    return [r for r, p in call(a, "PIF.get_all_records").items()
            if p["host"] == h and p["device"] == device and p["physical"]][0]


def bond_ports(h, bridge):
    """The bond port on `bridge` of host `h` and its interfaces, from OVS."""
    for port in h.vsctl("list-ports", bridge).split():
        ifaces = h.vsctl("get", "port", port, "interfaces").strip("[]\n").split(", ")
        if len(ifaces) > 1:
            names = sorted(h.vsctl("get", "interface", i, "name").strip().strip('"') for i in ifaces)
            return port, names
    return None, []


def join(pool, tag):
    h = pool.hosts[tag]
    call(h, "pool.join", "%s:%d" % (MGMT["ta"], HTTPS_PORT), "root", PASSWORD)
    time.sleep(1)
    wait_for(h.answers, timeout=30, what="the member's xnetd")
    wait_for(lambda: "it-host" + tag in [x["name_label"] for x in call(pool.a, "host.get_all_records").values()],
             timeout=10, what="the member in the pool")


def new_net(a, label):
    return call(a, "network.create", {"name_label": label, "name_description": "", "MTU": "1500",
                                      "other_config": {}})


def test_the_bonding_tutorial(pool):
    a, b = pool.hosts["ta"], pool.hosts["tb"]
    # Storage on eth2 with static IPs, before the pool forms.
    for tag in ("ta", "tb"):
        h = pool.hosts[tag]
        eth2 = pif_of(h, tag, "eth2")
        call(h, "PIF.reconfigure_ip", eth2, "Static", STORAGE[tag], "255.255.255.0", "", "")
        call(h, "PIF.plug", eth2)
    join(pool, "tb")
    # The default networks merged: both hosts' eth<n> on one network.
    for n in range(6):
        nets = {call(a, "PIF.get_network", pif_of(a, t, "eth%d" % n)) for t in ("ta", "tb")}
        assert len(nets) == 1, "eth%d on one pool network" % n
    for ip in list(MGMT.values())[:2] + list(STORAGE.values())[:2]:
        wait_for(lambda: pool.peer_ping(ip), timeout=20, what="%s before the bonds" % ip)

    pingers = [Pinger(pool, MGMT[t]) for t in ("ta", "tb")]
    try:
        nets = {}
        for name, (x, y), mode in (("mgmt", (0, 3), "active-backup"),
                                   ("stor", (2, 5), "active-backup"),
                                   ("guest", (1, 4), "balance-slb")):
            nets[name] = new_net(a, "bond " + name)
            t0 = time.monotonic()
            call(a, "Bond.create", nets[name], [pif_of(a, "ta", "eth%d" % x), pif_of(a, "ta", "eth%d" % y)],
                 "", mode, {})
            print("Bond.create %s on the pool: %.0f ms" % (name, (time.monotonic() - t0) * 1e3))
            time.sleep(1)
    finally:
        gaps = [p.stop() for p in pingers]
    print("longest management gap: %s" % ", ".join("%.0f ms" % (g * 1e3) for g in gaps))
    assert max(gaps) <= 1.0, "management addresses stopped answering for %s s" % gaps

    # Every host has all three bonds in its records and in its OVS.
    for tag in ("ta", "tb"):
        h, href = pool.hosts[tag], host_ref(a, tag)
        for name, (x, y) in SEGMENTS.items():
            pifs = [p for p in call(a, "PIF.get_all_records").values()
                    if p["host"] == href and p["network"] == nets[name]]
            assert len(pifs) == 1 and pifs[0]["bond_master_of"], (tag, name)
            bridge = call(a, "network.get_bridge", nets[name])
            port, ifaces = bond_ports(h, bridge)
            assert ifaces == ["eth%d" % x, "eth%d" % y], (tag, name, port, ifaces)
            mode = h.vsctl("get", "port", port, "bond_mode").strip()
            assert mode == {"guest": "balance-slb"}.get(name, "active-backup"), (tag, name, mode)
        mgmt = [p for p in call(a, "PIF.get_all_records").values() if p["host"] == href and p["management"]]
        assert len(mgmt) == 1 and mgmt[0]["network"] == nets["mgmt"], "%s: management on the bond" % tag
        assert mgmt[0]["IP"] == MGMT[tag]
        stor = [p for p in call(a, "PIF.get_all_records").values()
                if p["host"] == href and p["network"] == nets["stor"]][0]
        assert stor["IP"] == STORAGE[tag], "%s: the storage IP kept on the bond" % tag
    for ip in list(STORAGE.values())[:2]:
        wait_for(lambda: pool.peer_ping(ip), timeout=10, what="storage address %s on its bond" % ip)

    # VMs on the two hosts reach each other over the guest bond.
    vms = []
    for tag, domid, ip in (("ta", 101, "10.96.1.11"), ("tb", 102, "10.96.1.12")):
        h = pool.hosts[tag]
        vm = Vm(h, domid)
        ref = call(a, "VM.create", {"name_label": "tutorial%d" % domid})
        vif = call(a, "VIF.create", {"device": "0", "network": nets["guest"], "VM": ref, "MAC": vm.mac(),
                                     "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
                                     "qos_algorithm_params": {}})
        call(a, "VM.xnet_set_running", ref, host_ref(a, tag), str(domid))
        call(a, "VIF.plug", vif)
        vm.sh("ip", "addr", "add", ip + "/24", "dev", "eth0")
        vms.append((vm, ref))
    wait_for(lambda: vms[0][0].ping("10.96.1.12"), timeout=20, what="a VM on each host over the guest bond")
    assert vms[1][0].ping("10.96.1.11")


def bond_net(a, name):
    return [n for n, r in call(a, "network.get_all_records").items() if r["name_label"] == "bond " + name][0]


def member_pif_on(a, tag, net):
    href = host_ref(a, tag)
    return [(r, p) for r, p in call(a, "PIF.get_all_records").items() if p["host"] == href and p["network"] == net][0]


def test_the_coordinator_sees_what_a_member_observes(pool):
    """The member's agent reports its own host: a link going down on the
    member shows in the coordinator's PIF_metrics and Bond.links_up."""
    a = pool.hosts["ta"]
    eth4 = pif_of(a, "tb", "eth4")
    metrics = call(a, "PIF.get_metrics", eth4)
    bond_pif, _ = member_pif_on(a, "tb", bond_net(a, "guest"))
    bond = call(a, "PIF.get_bond_master_of", bond_pif)[0]
    wait_for(lambda: call(a, "PIF_metrics.get_carrier", metrics) and int(call(a, "Bond.get_links_up", bond)) == 2,
             timeout=20, what="the member's links up on the coordinator")
    sh("ip", "-n", a.sw, "link", "set", "tb4", "down")
    try:
        wait_for(lambda: not call(a, "PIF_metrics.get_carrier", metrics), timeout=20,
                 what="the member's carrier loss on the coordinator")
        wait_for(lambda: int(call(a, "Bond.get_links_up", bond)) == 1, timeout=20, what="links_up 1")
    finally:
        sh("ip", "-n", a.sw, "link", "set", "tb4", "up")
    wait_for(lambda: call(a, "PIF_metrics.get_carrier", metrics), timeout=20, what="the carrier back")
    # A NIC added to the member: its inventory reaches the coordinator, and
    # PIF.scan there introduces it.
    b = pool.hosts["tb"]
    sh("ip", "link", "add", "eth6", "netns", b.name, "address", "52:54:00:32:00:06", "type", "veth",
       "peer", "name", "p6", "netns", b.sw)
    href = host_ref(a, "tb")

    def scanned():
        call(a, "PIF.scan", href)
        return [p for p in call(a, "PIF.get_all_records").values() if p["host"] == href and p["device"] == "eth6"]
    wait_for(scanned, timeout=20, what="the member's new NIC found by PIF.scan on the coordinator")
    new = scanned()
    assert len(new) == 1 and new[0]["MAC"] == "52:54:00:32:00:06", new


def test_management_moves_across_the_pool(pool):
    """pool.management_reconfigure to the storage bond: every host's
    management moves, the member follows the coordinator's new address on
    its own (even once the old one is gone), then everything moves back."""
    a, b = pool.hosts["ta"], pool.hosts["tb"]
    mgmt, stor = bond_net(a, "mgmt"), bond_net(a, "stor")
    call(a, "pool.management_reconfigure", stor)
    for tag in ("ta", "tb"):
        r, p = member_pif_on(a, tag, stor)
        assert p["management"], "%s: management on the storage bond" % tag
        assert call(a, "host.get_address", host_ref(a, tag)) == STORAGE[tag]
    conf = os.path.join(b.state, "pool.conf")
    wait_for(lambda: open(conf).read() == "slave:%s:%d\n" % (STORAGE["ta"], HTTPS_PORT), timeout=20,
             what="the member recording the coordinator's new address")
    # The old address goes away: the member reconnects to the new one.
    old_a, _ = member_pif_on(a, "ta", mgmt)
    call(a, "PIF.reconfigure_ip", old_a, "None", "", "", "", "")
    wait_for(lambda: not pool.peer_ping(MGMT["ta"]), timeout=10, what="the old address gone")
    vnet = new_net(a, "after the move")
    t0 = time.monotonic()
    r, _ = member_pif_on(a, "tb", bond_net(a, "guest"))
    call(a, "VLAN.create", r, "55", vnet)
    print("a member change after the move: %.0f ms" % ((time.monotonic() - t0) * 1e3))
    br = call(a, "network.get_bridge", vnet)
    assert b.vsctl("br-to-vlan", br).strip() == "55", "the member still follows"
    # And back to the management bond.
    call(a, "PIF.reconfigure_ip", old_a, "Static", MGMT["ta"], "255.255.255.0", "", "")
    call(a, "pool.management_reconfigure", mgmt)
    for tag in ("ta", "tb"):
        assert call(a, "host.get_address", host_ref(a, tag)) == MGMT[tag]
    wait_for(lambda: open(conf).read() == "slave:%s:%d\n" % (MGMT["ta"], HTTPS_PORT), timeout=20,
             what="the member back on the management address")
    for ip in list(MGMT.values())[:2]:
        wait_for(lambda: pool.peer_ping(ip), timeout=10, what="%s answering again" % ip)


def test_a_members_own_management_moves(pool):
    """host.management_reconfigure (xe) of a member's PIF, on the
    coordinator: the member moves alone and keeps following."""
    a, b = pool.hosts["ta"], pool.hosts["tb"]
    stor_pif, _ = member_pif_on(a, "tb", bond_net(a, "stor"))
    out = xe(a, MGMT["ta"], "host-management-reconfigure", "pif-uuid=" + call(a, "PIF.get_uuid", stor_pif))
    assert out.returncode == 0, out.stderr
    assert call(a, "PIF.get_management", stor_pif)
    assert call(a, "host.get_address", host_ref(a, "tb")) == STORAGE["tb"]
    assert call(a, "host.get_address", host_ref(a, "ta")) == MGMT["ta"], "the coordinator stays"
    mgmt_pif, _ = member_pif_on(a, "tb", bond_net(a, "mgmt"))
    out = xe(a, MGMT["ta"], "host-management-reconfigure", "pif-uuid=" + call(a, "PIF.get_uuid", mgmt_pif))
    assert out.returncode == 0, out.stderr
    assert call(a, "host.get_address", host_ref(a, "tb")) == MGMT["tb"]


def test_pool_vlans_and_tunnels(pool):
    """xe pool-vlan-create makes the VLAN on every host's PIF of the
    network; a tunnel on the coordinator; both for the host joining next."""
    a, b = pool.hosts["ta"], pool.hosts["tb"]
    guest = bond_net(a, "guest")
    vnet = new_net(a, "pool vlan 66")
    coord_pif, _ = member_pif_on(a, "ta", guest)
    out = xe(a, MGMT["ta"], "pool-vlan-create", "pif-uuid=" + call(a, "PIF.get_uuid", coord_pif),
             "network-uuid=" + call(a, "network.get_uuid", vnet), "vlan=66")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) == 2, out.stdout
    br = call(a, "network.get_bridge", vnet)
    gbr = call(a, "network.get_bridge", guest)
    for h in (a, b):
        assert h.vsctl("br-to-vlan", br).strip() == "66"
        assert h.vsctl("br-to-parent", br).strip() == gbr
    tnet = new_net(a, "pool tunnel")
    stor_pif, _ = member_pif_on(a, "ta", bond_net(a, "stor"))
    call(a, "tunnel.create", stor_pif, tnet)


def test_a_host_joining_later_inherits_the_bonds(pool):
    a, c = pool.hosts["ta"], pool.hosts["tc"]
    eth2 = pif_of(c, "tc", "eth2")
    call(c, "PIF.reconfigure_ip", eth2, "Static", STORAGE["tc"], "255.255.255.0", "", "")
    call(c, "PIF.plug", eth2)
    join(pool, "tc")
    href = host_ref(a, "tc")
    bonds = [n for n, r in call(a, "network.get_all_records").items() if r["name_label"].startswith("bond ")]
    assert len(bonds) == 3
    for net in bonds:
        name = call(a, "network.get_name_label", net)[len("bond "):]
        x, y = SEGMENTS[name]
        pifs = [p for p in call(a, "PIF.get_all_records").values() if p["host"] == href and p["network"] == net]
        assert len(pifs) == 1 and pifs[0]["bond_master_of"], name
        bridge = call(a, "network.get_bridge", net)
        wait_for(lambda: bond_ports(c, bridge)[1] == ["eth%d" % x, "eth%d" % y], timeout=20,
                 what="%s bond in the new member's OVS" % name)
    # The pool's VLAN on its guest bond, the tunnel on its storage bond.
    vnet = [n for n, r in call(a, "network.get_all_records").items() if r["name_label"] == "pool vlan 66"][0]
    vpif = [p for p in call(a, "PIF.get_all_records").values() if p["host"] == href and p["network"] == vnet]
    assert len(vpif) == 1 and vpif[0]["VLAN"] == 66, vpif
    br = call(a, "network.get_bridge", vnet)
    wait_for(lambda: c.vsctl("br-to-vlan", br).strip() == "66", timeout=20, what="VLAN 66 on the new member")
    tnet = [n for n, r in call(a, "network.get_all_records").items() if r["name_label"] == "pool tunnel"][0]
    tpif = [p for p in call(a, "PIF.get_all_records").values() if p["host"] == href and p["network"] == tnet]
    assert len(tpif) == 1 and tpif[0]["tunnel_access_PIF_of"], tpif
    # Its storage IP is kept on its copy of the storage bond.
    stor = [p for p in call(a, "PIF.get_all_records").values()
            if p["host"] == href and p["network"] == bond_net(a, "stor")][0]
    assert stor["IP"] == STORAGE["tc"]
    wait_for(lambda: pool.peer_ping(STORAGE["tc"]), timeout=20, what="the new member's storage address")
    # Its management address moved onto its copy of the management bond.
    wait_for(lambda: pool.peer_ping(MGMT["tc"]), timeout=20, what="the new member's management address")
    mgmt_net = [n for n in bonds if call(a, "network.get_name_label", n) == "bond mgmt"][0]
    mgmt = [p for p in call(a, "PIF.get_all_records").values() if p["host"] == href and p["management"]]
    assert len(mgmt) == 1 and mgmt[0]["network"] == mgmt_net and mgmt[0]["IP"] == MGMT["tc"], mgmt


def test_eject_cleans_up_a_bonded_member(pool):
    a, c = pool.hosts["ta"], pool.hosts["tc"]
    bridges = [r["bridge"] for r in call(a, "network.get_all_records").values()
               if r["name_label"].startswith("bond ")]
    call(a, "pool.eject", host_ref(a, "tc"))
    assert len(call(a, "host.get_all")) == 2

    def standalone():
        try:
            return len(call(c, "host.get_all")) == 1
        except (XapiError, OSError):
            return False
    wait_for(standalone, timeout=40, what="the ejected host on its own")
    for br in bridges:
        wait_for(lambda: c.ns("ovs-vsctl", "--db=unix:" + os.path.join(c.ovs, "db.sock"), "br-exists", br,
                              check=False).returncode != 0, timeout=20, what="%s gone from the ejected host" % br)
    # Its management address is back on eth0's bridge.
    wait_for(lambda: pool.peer_ping(MGMT["tc"]), timeout=20, what="the ejected host's management address")
    mgmt = [p for p in call(c, "PIF.get_all_records").values() if p["management"]]
    assert [p["device"] for p in mgmt] == ["eth0"]
