"""VIF locking and rate limits with real packets: OpenFlow rules and meters
the agent puts on the VIFs' bridge, checked by what gets through."""

import json
import os
import re
import signal
import subprocess
import tempfile
import time

import pytest
import XenAPI

from conftest import Vm, login, sh, wait_for
from test_api import new_net

COOKIE_TAG = "0x786e6574"
STATS = re.compile(r"(duration|n_packets|n_bytes|idle_age|hard_age)=[^,]*, ")


def vif_for(x, host, domid, net, ip, **fields):
    vm = Vm(host, domid)
    ref = x.VM.create({"name_label": "lock%d" % domid})
    rec = {"device": "0", "network": net, "VM": ref, "MAC": vm.mac(), "MTU": "1500",
           "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}}
    rec.update(fields)
    vif = x.VIF.create(rec)
    host_ref = x.pool.get_master(x.pool.get_all()[0])
    x.VM.xnet_set_running(ref, host_ref, str(domid))
    x.VIF.plug(vif)
    if ip:
        vm.sh("ip", "addr", "add", ip, "dev", "eth0")
    return vm, vif


def ofctl(host, br, *args):
    target = "unix:" + os.path.join(host.ovs, br + ".mgmt")
    return host.ns("ovs-ofctl", "-O", "OpenFlow13", *args[:1], target, *args[1:]).stdout


def xnet_flows(host, br):
    """The xnet-tagged flows, without their counters and ages."""
    out = ofctl(host, br, "dump-flows", "cookie=%s00000000/0xffffffff00000000" % COOKIE_TAG)
    return [STATS.sub("", l.strip()) for l in out.splitlines() if "cookie=" in l]


def ping_from(vm, src, dst, count=2):
    return vm.sh("ping", "-c", str(count), "-W", "1", "-i", "0.2", "-I", src, dst, check=False).returncode == 0


@pytest.fixture(scope="module")
def lan(host):
    """An internal network with an unlocked peer VM (10.61.0.1), shared by the
    module's tests; domids 81-87 are this file's."""
    s = login()
    x = s.xenapi
    net = new_net(x, "locking lan")
    peer, _ = vif_for(x, host, 81, net, "10.61.0.1/24")
    yield x, net, x.network.get_bridge(net), peer
    try:
        s.xenapi.session.logout()
    except Exception:
        pass


def test_locked_vif_passes_only_its_addresses(host, lan):
    x, net, br, peer = lan
    vm, vif = vif_for(x, host, 82, net, "10.61.0.82/24", locking_mode="locked",
                      ipv4_allowed=["10.61.0.82"])
    flows = xnet_flows(host, br)
    ofport = host.vsctl("get", "interface", "vif82.0", "ofport").strip()
    mine = [f for f in flows if "in_port=%s" % ofport in f]
    assert any("priority=4000" in f and "actions=drop" in f for f in mine), mine
    assert any("priority=6000" in f and "nw_src=10.61.0.82" in f for f in mine), mine
    # ARP and IP from the allowed address.
    assert vm.ping("10.61.0.1")
    vm.sh("ip", "neigh", "flush", "dev", "eth0")
    peer.sh("ip", "neigh", "flush", "dev", "eth0")
    assert vm.ping("10.61.0.1"), "ARP resolution works when locked"
    # A second, not allowed, source address is dropped.
    vm.sh("ip", "addr", "add", "10.61.0.99/24", "dev", "eth0")
    assert not ping_from(vm, "10.61.0.99", "10.61.0.1", count=1)
    # A spoofed source MAC is dropped, even from the allowed address.
    real = vm.mac()
    vm.sh("ip", "link", "set", "eth0", "address", "02:00:00:00:99:99")
    try:
        peer.sh("ip", "neigh", "flush", "dev", "eth0")
        assert not vm.ping("10.61.0.1", count=1)
    finally:
        vm.sh("ip", "link", "set", "eth0", "address", real)
    assert vm.ping("10.61.0.1")
    # Changing ipv4_allowed of the attached VIF applies when the call returns.
    x.VIF.set_ipv4_allowed(vif, ["10.61.0.99"])
    assert ping_from(vm, "10.61.0.99", "10.61.0.1", count=1)
    assert not ping_from(vm, "10.61.0.82", "10.61.0.1", count=1)
    x.VIF.add_ipv4_allowed(vif, "10.61.0.82")
    assert ping_from(vm, "10.61.0.82", "10.61.0.1", count=1)
    # Unlocking removes the VIF's flows.
    x.VIF.set_locking_mode(vif, "unlocked")
    assert not [f for f in xnet_flows(host, br) if "in_port=%s," % ofport in f]
    assert ping_from(vm, "10.61.0.99", "10.61.0.1", count=1)


def test_locked_vif_gets_a_dhcp_lease(host, lan):
    x, net, br, peer = lan
    tmp = tempfile.mkdtemp(prefix="xnet-dhcp-")
    dnsmasq = subprocess.Popen(
        ["ip", "netns", "exec", peer.ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
         "--port=0", "--interface=eth0", "--bind-interfaces", "--user=root", "--pid-file=",
         "--dhcp-range=10.61.0.100,10.61.0.150,255.255.255.0",
         "--dhcp-leasefile=" + os.path.join(tmp, "leases")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        vm, _ = vif_for(x, host, 83, net, None, locking_mode="locked", ipv4_allowed=["10.61.0.83"])
        out = vm.sh("timeout", "20", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "8", "-T", "1",
                    "-s", "/bin/true", check=False)
        text = out.stdout + out.stderr
        assert re.search(r"lease of 10\.61\.0\.1\d\d obtained", text), text
    finally:
        dnsmasq.terminate()
        try:
            dnsmasq.wait(timeout=5)
        except subprocess.TimeoutExpired:
            dnsmasq.kill()
            dnsmasq.wait(timeout=5)
        sh("rm", "-rf", tmp)


def test_disabled_vif_has_no_port(host, lan):
    x, net, br, peer = lan
    vm, vif = vif_for(x, host, 84, net, "10.61.0.84/24", locking_mode="disabled")
    assert "vif84.0" not in host.vsctl("list-ports", br).split()
    assert not vm.ping("10.61.0.1", count=1)
    x.VIF.set_locking_mode(vif, "unlocked")
    assert "vif84.0" in host.vsctl("list-ports", br).split()
    assert vm.ping("10.61.0.1")
    # network_default follows the network's default_locking_mode, which (as in
    # XAPI) cannot change while a VIF on the network is attached.
    x.VIF.set_locking_mode(vif, "network_default")
    with pytest.raises(XenAPI.Failure) as err:
        x.network.set_default_locking_mode(net, "disabled")
    assert err.value.details[0] == "VIF_IN_USE"
    dnet = new_net(x, "disabled by default")
    x.network.set_default_locking_mode(dnet, "disabled")
    x.VIF.move(vif, dnet)
    wait_for(lambda: not host.vsctl("--columns=name", "find", "interface", "name=vif84.0").strip(),
             timeout=5, what="no port for a VIF on a disabled-by-default network")
    assert not vm.ping("10.61.0.1", count=1)
    x.VIF.set_locking_mode(vif, "unlocked")
    dbr = x.network.get_bridge(dnet)
    wait_for(lambda: "vif84.0" in host.vsctl("list-ports", dbr).split(), timeout=5, what="port back")


def iperf(vm, server_ip):
    out = vm.sh("timeout", "20", "iperf3", "-c", server_ip, "-t", "3", "-J", check=False).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"]


def meters(host, br):
    return ofctl(host, br, "dump-meters")


def test_rate_limit(host, lan):
    x, net, br, peer = lan
    server = subprocess.Popen(["ip", "netns", "exec", peer.ns, "iperf3", "-s"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # kbps is KiB/s: 1221 KiB/s = 1221 * 8.192 kbit/s ≈ 10.0 Mbit/s.
        vm, vif = vif_for(x, host, 85, net, "10.61.0.85/24", qos_algorithm_type="ratelimit",
                          qos_algorithm_params={"kbps": "1221"})
        assert "rate=10003" in meters(host, br)
        wait_for(lambda: vm.ping("10.61.0.1", count=1), timeout=10, what="iperf server reachable")
        bps = iperf(vm, "10.61.0.1")
        assert 8e6 <= bps <= 12e6, bps
        # 12207 KiB/s ≈ 100.0 Mbit/s; a changed limit applies to the running VIF.
        x.VIF.set_qos_algorithm_params(vif, {"kbps": "12207"})
        wait_for(lambda: "rate=100000" in meters(host, br), timeout=5, what="meter at 100 Mbit/s")
        bps = iperf(vm, "10.61.0.1")
        assert 80e6 <= bps <= 120e6, bps
        # No limit: the meter goes and the VIF runs at full speed.
        x.VIF.set_qos_algorithm_type(vif, "")
        ofport = host.vsctl("get", "interface", "vif85.0", "ofport").strip()
        wait_for(lambda: "meter=%s " % ofport not in meters(host, br), timeout=5, what="meter removed")
        bps = iperf(vm, "10.61.0.1")
        assert bps > 200e6, bps
        # An unknown algorithm is ignored (with a warning), as XAPI does.
        x.VIF.set_qos_algorithm_type(vif, "token-bucket")
        time.sleep(1.5)
        assert "meter=%s " % ofport not in meters(host, br)
    finally:
        server.terminate()
        server.wait(timeout=5)


def test_backend_appearing_takes_the_fast_path(host, lan):
    """A locked VIF recorded and plugged before its device exists: when the
    device appears the agent adds its port asking for a port number whose
    rules are already in place, and the whole passes after find nothing to
    change."""
    x, net, br, peer = lan
    mac = "02:00:00:61:00:87"
    vm_ref = x.VM.create({"name_label": "lock87"})
    vif = x.VIF.create({"device": "0", "network": net, "VM": vm_ref, "MAC": mac, "MTU": "1500",
                        "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {},
                        "locking_mode": "locked", "ipv4_allowed": ["10.61.0.87"]})
    x.VM.xnet_set_running(vm_ref, x.pool.get_master(x.pool.get_all()[0]), "87")
    x.VIF.plug(vif)
    assert "vif87.0" not in host.vsctl("list-ports", br).split()
    vm = Vm(host, 87)
    vm.sh("ip", "link", "set", "eth0", "address", mac)
    vm.sh("ip", "addr", "add", "10.61.0.87/24", "dev", "eth0")

    def ofport():
        out = host.vsctl("--if-exists", "get", "interface", "vif87.0", "ofport").strip()
        return out if out.isdigit() and int(out) > 0 else None
    wait_for(ofport, timeout=5, what="vif87.0 in the bridge")
    port = ofport()
    # Asked for by the fast path (a whole pass lets vswitchd choose).
    assert host.vsctl("get", "interface", "vif87.0", "ofport_request").strip() == port
    mine = [f for f in xnet_flows(host, br) if "in_port=%s," % port in f]
    assert any("priority=6000" in f and "nw_src=10.61.0.87" in f for f in mine), mine
    assert host.ns("cat", "/sys/class/net/vif87.0/address").stdout.strip() == "fe:ff:ff:ff:ff:ff"
    assert vm.ping("10.61.0.1")
    vm.sh("ip", "addr", "add", "10.61.0.98/24", "dev", "eth0")
    assert not ping_from(vm, "10.61.0.98", "10.61.0.1", count=1)
    # The timer's whole passes (one a second) agree with what the fast path
    # wrote: none of the VIF's flows is rewritten.
    def ages():
        out = ofctl(host, br, "dump-flows", "cookie=%s00000000/0xffffffff00000000" % COOKIE_TAG)
        return {STATS.sub("", l.strip()): float(re.search(r"duration=([0-9.]+)s", l).group(1))
                for l in out.splitlines() if "in_port=%s," % port in l}
    before = ages()
    time.sleep(2.5)
    after = ages()
    assert after.keys() == before.keys() and after
    for k, age in after.items():
        assert age >= before[k] + 2, ("flow was rewritten", k, before[k], age)
    x.VIF.unplug(vif)
    assert "vif87.0" not in host.vsctl("list-ports", br).split()


def test_drift_and_restart(host, lan):
    x, net, br, peer = lan
    vm, vif = vif_for(x, host, 86, net, "10.61.0.86/24", locking_mode="locked",
                      ipv4_allowed=["10.61.0.86"], qos_algorithm_type="ratelimit",
                      qos_algorithm_params={"kbps": "100000"})
    want = sorted(xnet_flows(host, br))
    assert len(want) > 10
    ofport = host.vsctl("get", "interface", "vif86.0", "ofport").strip()
    assert "meter=%s " % ofport in meters(host, br)
    # Every flow deleted by hand comes back within about a second.
    ofctl(host, br, "del-flows")
    assert ofctl(host, br, "dump-flows").count("cookie") == 0
    wait_for(lambda: sorted(xnet_flows(host, br)) == want, timeout=5, what="flows restored")
    assert vm.ping("10.61.0.1")
    # A meter deleted by hand (which takes its flows along) too.
    ofctl(host, br, "del-meter", "meter=%s" % ofport)
    wait_for(lambda: "meter=%s " % ofport in meters(host, br) and sorted(xnet_flows(host, br)) == want,
             timeout=5, what="meter restored")
    # An agent restart on an unchanged host rewrites no flow: every flow's
    # age goes on from before the restart.
    def ages():
        out = ofctl(host, br, "dump-flows", "cookie=%s00000000/0xffffffff00000000" % COOKIE_TAG)
        return {STATS.sub("", l.strip()):
                float(re.search(r"duration=([0-9.]+)s", l).group(1))
                for l in out.splitlines() if "duration=" in l}
    time.sleep(0.5)
    before = ages()
    host.restart(signal.SIGTERM)
    time.sleep(3)
    after = ages()
    assert after.keys() == before.keys()
    for k, age in after.items():
        assert age >= before[k] + 2.5, ("flow was rewritten", k, before[k], age)
    assert "meter=%s " % ofport in meters(host, br)
