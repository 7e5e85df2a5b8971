"""Bonds with real packets, against a switch namespace running its own Open
vSwitch: active-backup failover loss, balance-slb spreading, LACP with a
partner; the management IP seen from the switch; OVS daemons crashing."""

import os
import re
import subprocess
import time

import pytest

from conftest import sh, wait_for
from test_api import new_net, pif_by_device
from test_guests import vm_with_vif


class Switch:
    """An OVS in the switch namespace: bridge swbr holding the far ends of
    eth3 and eth4 (p3, p4) and an internal port `peer` with 10.60.0.1/24."""

    def __init__(self, host):
        self.host = host
        self.dir = os.path.join(host.dir, "swovs")
        os.makedirs(self.dir)
        db = os.path.join(self.dir, "conf.db")
        sh("ovsdb-tool", "create", db, "/usr/share/openvswitch/vswitch.ovsschema")
        env = dict(os.environ, OVS_RUNDIR=self.dir, OVS_DBDIR=self.dir, OVS_LOGDIR=self.dir)
        self.sock = "unix:" + os.path.join(self.dir, "db.sock")
        self.spawn(["ovsdb-server", db, "--remote=p" + self.sock, "--unixctl=" + os.path.join(self.dir, "db.ctl"),
                    "--no-chdir", "--log-file=" + os.path.join(self.dir, "ovsdb.log")], env)
        wait_for(lambda: os.path.exists(os.path.join(self.dir, "db.sock")), what="switch ovsdb-server")
        self.vsctl("--no-wait", "init")
        self.spawn(["ovs-vswitchd", self.sock, "--unixctl=" + os.path.join(self.dir, "vs.ctl"),
                    "--no-chdir", "--log-file=" + os.path.join(self.dir, "vswitchd.log")], env)
        wait_for(lambda: os.path.exists(os.path.join(self.dir, "vs.ctl")), what="switch ovs-vswitchd")
        self.vsctl("add-br", "swbr", "--", "set", "bridge", "swbr", "datapath_type=netdev",
                   "--", "add-port", "swbr", "peer", "--", "set", "interface", "peer", "type=internal")
        self.plain()
        wait_for(lambda: self.sw("ip", "link", "show", "peer").returncode == 0, what="peer device")
        self.sw("ip", "link", "set", "peer", "up")
        self.sw("ip", "addr", "add", "10.60.0.1/24", "dev", "peer")
        self.sw("ethtool", "-K", "peer", "tx", "off")

    def spawn(self, argv, env):
        p = subprocess.Popen(["ip", "netns", "exec", self.host.sw] + argv, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.host.procs.append(p)

    def sw(self, *args):
        return sh("ip", "netns", "exec", self.host.sw, *args, check=False)

    def vsctl(self, *args):
        r = self.sw("ovs-vsctl", "--db=" + self.sock, *args)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def plain(self):
        """p3 and p4 as two ordinary switch ports."""
        self.vsctl("--if-exists", "del-port", "swbr", "swbond")
        for p in ("p3", "p4"):
            self.vsctl("--may-exist", "add-port", "swbr", p)

    def lacp(self):
        """p3 and p4 as one LACP bond (the partner of an xnet lacp bond)."""
        for p in ("p3", "p4"):
            self.vsctl("--if-exists", "del-port", "swbr", p)
        self.vsctl("add-bond", "swbr", "swbond", "p3", "p4", "lacp=active", "bond_mode=balance-tcp",
                   "other_config:lacp-time=fast")

    def link(self, port, up):
        self.sw("ip", "link", "set", port, "up" if up else "down")
        if not up:
            # A hardware switch forgets the MACs of a port whose link went
            # down; OVS as the switch does not always, so flush as one would.
            self.sw("ovs-appctl", "-t", os.path.join(self.dir, "vs.ctl"), "fdb/flush", "swbr")

    def ping_loss_ms(self, ip, cut):
        """Pings `ip` every 10 ms for 3 s, calling `cut` after 1 s; returns the
        outage in ms (lost replies x 10 ms)."""
        p = subprocess.Popen(["ip", "netns", "exec", self.host.sw, "ping", "-n", "-q", "-i", "0.01", "-W", "1",
                              "-c", "300", ip], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(1.0)
            cut()
            out, _ = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        return (int(m.group(1)) - int(m.group(2))) * 10


@pytest.fixture(scope="module")
def switch(host):
    return Switch(host)


def tx_packets(host, dev):
    return int(host.ns("cat", "/sys/class/net/%s/statistics/tx_packets" % dev).stdout)


def active_member(host, bond_dev):
    """The bond member OVS currently sends on (bond/show's "active member")."""
    show = host.appctl("bond/show", bond_dev)
    cur = None
    for line in show.splitlines():
        m = re.match(r"^(?:member|slave) (\S+):", line)
        if m:
            cur = m.group(1)
        elif "active" in line and cur and ("active member" in line or "active slave" in line):
            return cur
    m = re.search(r"active-backup primary: (\S+)|active (?:member|slave) mac.*\((\S+)\)", show)
    if m:
        return m.group(1) or m.group(2)
    raise AssertionError("no active member in:\n" + show)


def make_bond(x, mode, props=None):
    net = new_net(x, "bond " + mode)
    eth3, eth4 = pif_by_device(x, "eth3"), pif_by_device(x, "eth4")
    bond = x.Bond.create(net, [eth3, eth4], "", mode, props or {})
    master = x.Bond.get_master(bond)
    return net, bond, master


def test_management_ip_answers_from_the_switch(host, session):
    sh("ip", "netns", "exec", host.sw, "ip", "addr", "add", "10.99.0.1/24", "dev", "p0", check=False)
    r = sh("ip", "netns", "exec", host.sw, "ping", "-c", "2", "-W", "2", "10.99.0.2", check=False)
    assert r.returncode == 0, r.stdout


def test_active_backup_failover(host, session, switch):
    x = session.xenapi
    net, bond, master = make_bond(x, "active-backup")
    # Members that come back are usable at once (XAPI waits 31 s).
    x.PIF.add_to_other_config(master, "bond-updelay", "0")
    x.PIF.reconfigure_ip(master, "Static", "10.60.0.2", "255.255.255.0", "", "")
    wait_for(lambda: switch.sw("ping", "-c", "1", "-W", "1", "10.60.0.2").returncode == 0, what="bond IP")
    try:
        # With XAPI's default 200 ms downdelay.
        first = active_member(host, "bond0")
        peer_of = {"eth3": "p3", "eth4": "p4"}
        loss_default = switch.ping_loss_ms("10.60.0.2", lambda: switch.link(peer_of[first], False))
        second = active_member(host, "bond0")
        assert second != first
        switch.link(peer_of[first], True)
        wait_for(lambda: "enabled" in re.search(r"(?:member|slave) %s: (\w+)" % first,
                                                host.appctl("bond/show", "bond0")).group(1),
                 what="member back")
        # With the downdelay taken off, through XAPI's bond-downdelay override.
        x.PIF.add_to_other_config(master, "bond-downdelay", "0")
        wait_for(lambda: host.vsctl("get", "port", "bond0", "bond_downdelay").strip() == "0", what="downdelay 0")
        loss_fast = switch.ping_loss_ms("10.60.0.2", lambda: switch.link(peer_of[second], False))
        print("active-backup failover loss: %d ms with downdelay 200 ms, %d ms with downdelay 0"
              % (loss_default, loss_fast))
        assert loss_default <= 1000, loss_default
        assert loss_fast <= 1000, loss_fast
    finally:
        switch.link("p3", True)
        switch.link("p4", True)
        x.PIF.reconfigure_ip(master, "None", "", "", "", "")
        x.Bond.destroy(bond)


def test_balance_slb_uses_both_links(host, session, switch):
    x = session.xenapi
    net, bond, master = make_bond(x, "balance-slb")
    vms = []
    try:
        wait_for(lambda: "bond0" in host.vsctl("list-ports", x.network.get_bridge(net)).split(), what="bond port")
        # Eight guests: source-MAC hashing spreads them over both members.
        for i in range(8):
            vm, _, _ = vm_with_vif(x, host, 60 + i, net, "10.60.0.%d/24" % (60 + i))
            vms.append(vm)
        before = {d: tx_packets(host, d) for d in ("eth3", "eth4")}
        for vm in vms:
            assert vm.ping("10.60.0.1", count=3), "guest reaches the switch side through the bond"
        sent = {d: tx_packets(host, d) - before[d] for d in before}
        print("balance-slb packets sent per member:", sent)
        assert sent["eth3"] >= 3 and sent["eth4"] >= 3, sent
    finally:
        for vm in vms:
            vm.remove()
        x.Bond.destroy(bond)


def test_lacp_negotiates_with_partner(host, session, switch):
    x = session.xenapi
    switch.lacp()
    net, bond, master = make_bond(x, "lacp", {"lacp-time": "fast"})
    try:
        wait_for(lambda: "negotiated" in host.appctl("lacp/show", "bond0"), timeout=30, what="LACP negotiated")
        x.PIF.reconfigure_ip(master, "Static", "10.60.0.2", "255.255.255.0", "", "")
        wait_for(lambda: switch.sw("ping", "-c", "1", "-W", "1", "10.60.0.2").returncode == 0, what="ping over LACP")
        assert "negotiated" in switch.sw("ovs-appctl", "-t", os.path.join(switch.dir, "vs.ctl"),
                                         "lacp/show", "swbond").stdout
    finally:
        x.PIF.reconfigure_ip(master, "None", "", "", "", "")
        x.Bond.destroy(bond)
        switch.plain()


def test_ovs_daemons_crash_and_come_back(host, session):
    x = session.xenapi
    # ovsdb-server dies and restarts: the agent reconnects, re-reads and
    # realizes what was asked meanwhile.
    host.kill_ovs("ovsdb-server")
    net = new_net(x, "after ovsdb crash")
    eth1 = pif_by_device(x, "eth1")
    host.start_ovs("ovsdb-server")
    vlan = x.VLAN.create(eth1, "77", net)
    br = x.network.get_bridge(net)
    wait_for(lambda: host.vsctl("br-to-vlan", br).strip() == "77", what="VLAN after ovsdb restart")
    # ovs-vswitchd dies: its devices go with it; after the restart the agent
    # brings the management bridge up again with its address.
    host.kill_ovs("ovs-vswitchd")
    host.start_ovs("ovs-vswitchd")

    def mgmt_back():
        out = host.ns("ip", "-o", "-4", "addr", "show", "dev", "xenbr0", check=False).stdout
        return "10.99.0.2/24" in out

    wait_for(mgmt_back, timeout=30, what="management address after vswitchd restart")
    sh("ip", "netns", "exec", host.sw, "ip", "addr", "add", "10.99.0.1/24", "dev", "p0", check=False)
    wait_for(lambda: sh("ip", "netns", "exec", host.sw, "ping", "-c", "1", "-W", "1", "10.99.0.2",
                        check=False).returncode == 0, timeout=30, what="management IP answers")
    x.VLAN.destroy(vlan)
