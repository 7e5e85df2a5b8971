"""pool.join between two real xnetd hosts: each a namespace with its own
OVS, their eth0 on one segment (a Linux bridge in a switch namespace), the
management addresses 10.98.0.2 (coordinator) and 10.98.0.3 (joiner). The
hosts are driven over their unix sockets (JSON-RPC, root is pool admin
there) and with the real xe over HTTPS on the management network."""

import json
import os
import socket
import subprocess
import time

import pytest

from conftest import BIN, HTTPS_PORT, PASSWORD, Host, sh, wait_for

A_IP, B_IP = "10.98.0.2", "10.98.0.3"


class XapiError(Exception):
    def __init__(self, details):
        super().__init__(details)
        self.details = details


def rpc(host, method, *params):
    """One JSON-RPC call on the host's unix socket; XAPI errors raise."""
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(os.path.join(host.run, "xapi.sock"))
        s.sendall(b"POST /jsonrpc HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, rest = data.split(b"\r\n\r\n", 1)
        n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
        while len(rest) < n:
            rest += s.recv(65536)
    finally:
        s.close()
    r = json.loads(rest[:n])
    if r.get("error"):
        raise XapiError([r["error"].get("message")] + list(r["error"].get("data") or []))
    return r["result"]


def call(host, method, *params):
    sess = rpc(host, "session.login_with_password", "root", "", "2.23", "it-pool")
    try:
        return rpc(host, method, sess, *params)
    finally:
        try:
            rpc(host, "session.logout", sess)
        except XapiError:
            pass


def xe(host, target_ip, *args):
    """The real xe, run in `host`'s namespace against `target_ip`."""
    return host.ns(os.path.join(BIN, "xe"), "-s", target_ip, "-p", str(HTTPS_PORT), "-u", "root",
                   "-pw", PASSWORD, *args, check=False)


def nic_networks(host):
    """device -> network uuid of the host's physical PIFs (as the host sees them)."""
    out = {}
    for p in call(host, "PIF.get_all_records").values():
        if p["physical"]:
            out[p["device"]] = call(host, "network.get_uuid", p["network"])
    return out


@pytest.fixture(scope="module")
def pair():
    a = Host("pa", mgmt_ip=A_IP, listen="0.0.0.0", mac_byte=0x21)
    # The joiner listens on its management address only: bound before the
    # agent has put the address on its bridge.
    b = Host("pb", mgmt_ip=B_IP, listen=B_IP, mac_byte=0x22)
    try:
        for h in (a, b):
            h.setup()
        # One segment for both management NICs.
        sh("ip", "-n", b.sw, "link", "set", "p0", "name", "q0")
        sh("ip", "-n", b.sw, "link", "set", "q0", "netns", a.sw)
        sh("ip", "-n", a.sw, "link", "add", "seg0", "type", "bridge")
        for dev in ("p0", "q0"):
            sh("ip", "-n", a.sw, "link", "set", dev, "master", "seg0", "up")
        sh("ip", "-n", a.sw, "link", "set", "seg0", "up")
        wait_for(lambda: a.ns("ping", "-c", "1", "-W", "1", B_IP, check=False).returncode == 0,
                 timeout=20, what="management network between the hosts")
        yield a, b
    finally:
        for h in (b, a):
            h.teardown()


def test_join_refused_for_a_mismatch_changes_nothing(pair):
    a, b = pair
    net = [n for n, r in call(b, "network.get_all_records").items() if r["bridge"] == "xenbr1"][0]
    call(b, "network.set_MTU", net, 9000)
    before_a = call(a, "host.get_all")
    try:
        with pytest.raises(XapiError) as e:
            call(b, "pool.join", "%s:%d" % (A_IP, HTTPS_PORT), "root", PASSWORD)
        assert e.value.details[0] == "OPERATION_NOT_ALLOWED", e.value.details
        assert "MTU" in " ".join(e.value.details) and "xenbr1" in " ".join(e.value.details)
    finally:
        call(b, "network.set_MTU", net, 1500)
    assert call(a, "host.get_all") == before_a
    # The joiner is still its own coordinator.
    assert len(call(b, "host.get_all")) == 1


def test_join_errors(pair):
    a, b = pair
    with pytest.raises(XapiError) as e:
        call(b, "pool.join", "%s:%d" % (A_IP, HTTPS_PORT), "root", "wrong")
    assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED", e.value.details
    with pytest.raises(XapiError) as e:
        call(b, "pool.join", "10.98.0.9:%d" % HTTPS_PORT, "root", PASSWORD)
    assert e.value.details[0] == "JOINING_HOST_CONNECTION_FAILED", e.value.details
    with pytest.raises(XapiError) as e:
        call(b, "pool.join", "", "root", PASSWORD)
    assert e.value.details[0] == "INVALID_VALUE", e.value.details
    # A host cannot join itself.
    with pytest.raises(XapiError) as e:
        call(a, "pool.join", "%s:%d" % (A_IP, HTTPS_PORT), "root", PASSWORD)
    assert e.value.details[0] == "OPERATION_NOT_ALLOWED", e.value.details
    assert len(call(a, "host.get_all")) == 1 and len(call(b, "host.get_all")) == 1


def test_join_merges_networks_and_redirects(pair):
    a, b = pair
    b_host_uuid = call(b, "host.get_uuid", call(b, "host.get_all")[0])
    b_macs = {r["device"]: r["MAC"] for r in call(b, "PIF.get_all_records").values() if r["physical"]}
    out = xe(b, B_IP, "pool-join", "master-address=%s:%d" % (A_IP, HTTPS_PORT),
             "master-username=root", "master-password=" + PASSWORD)
    assert out.returncode == 0, out.stderr
    # The joiner starts over as a member (as XAPI restarts after a join).
    time.sleep(1)
    wait_for(b.answers, timeout=30, what="the member's xnetd")
    hosts = call(a, "host.get_all_records")
    assert len(hosts) == 2
    member = [r for r, h in hosts.items() if h["uuid"] == b_host_uuid]
    assert member, "the joiner keeps its host uuid"
    # Each NIC of the member sits on the coordinator's network of its position.
    a_nets = nic_networks(a)
    pifs = [p for p in call(a, "PIF.get_all_records").values() if p["host"] == member[0] and p["physical"]]
    assert sorted(p["device"] for p in pifs) == ["eth%d" % i for i in range(6)]
    for p in pifs:
        assert call(a, "network.get_uuid", p["network"]) == a_nets[p["device"]], p["device"]
        assert p["MAC"] == b_macs[p["device"]]
    # The member sends every client to the coordinator.
    with pytest.raises(XapiError) as e:
        rpc(b, "session.login_with_password", "root", "", "2.23", "it-pool")
    assert e.value.details == ["HOST_IS_SLAVE", "%s:%d" % (A_IP, HTTPS_PORT)]
    with open(os.path.join(b.state, "pool.conf")) as f:
        assert f.read() == "slave:%s:%d\n" % (A_IP, HTTPS_PORT)
    # xe pointed at the member follows it to the coordinator.
    out = xe(a, B_IP, "host-list", "params=uuid", "--minimal")
    assert out.returncode == 0, out.stderr
    assert b_host_uuid in out.stdout.strip().split(","), out.stdout
    assert len(out.stdout.strip().split(",")) == 2
    # The role survives a restart of the member.
    b.restart()
    with pytest.raises(XapiError) as e:
        rpc(b, "session.login_with_password", "root", "", "2.23", "it-pool")
    assert e.value.details[0] == "HOST_IS_SLAVE"
    # Joining a second time is refused by the coordinator: already there.
    with pytest.raises(XapiError):
        call(b, "pool.join", "%s:%d" % (A_IP, HTTPS_PORT), "root", PASSWORD)



def member_ref(a):
    return [r for r, h in call(a, "host.get_all_records").items() if h["name_label"] == "it-hostpb"][0]


def member_pif(a, device):
    m = member_ref(a)
    return [r for r, p in call(a, "PIF.get_all_records").items() if p["host"] == m and p["device"] == device][0]


def test_member_realizes_what_the_coordinator_changes(pair):
    """The member follows the coordinator's records: calls for its objects
    return once it has realized them in its own Open vSwitch."""
    a, b = pair
    pif = member_pif(a, "eth2")
    call(a, "PIF.plug", pif)
    assert call(a, "PIF.get_currently_attached", pif)
    assert b.vsctl("br-exists", "xenbr2") == "", "the member built xenbr2"
    assert "eth2" in b.vsctl("list-ports", "xenbr2").split()
    # A VLAN on the member's eth1, made on the coordinator.
    net = call(a, "network.create", {"name_label": "v77", "other_config": {}})
    call(a, "VLAN.create", member_pif(a, "eth1"), "77", net)
    bridge = call(a, "network.get_bridge", net)
    assert b.vsctl("br-to-vlan", bridge).strip() == "77"
    assert b.vsctl("br-to-parent", bridge).strip() == "xenbr1"


def test_unreachable_member_gives_host_offline_and_changes_nothing(pair):
    a, b = pair
    pif = member_pif(a, "eth3")
    before = call(a, "PIF.get_record", pif)
    b.stop()
    try:
        with pytest.raises(XapiError) as e:
            call(a, "PIF.plug", pif)
        assert e.value.details[0] == "HOST_OFFLINE", e.value.details
        assert call(a, "PIF.get_record", pif) == before
    finally:
        b.start()
    # Back: it follows again and realizes the next change.
    call(a, "PIF.plug", pif)
    assert b.vsctl("br-exists", "xenbr3") == ""


def test_eject_returns_the_member_to_a_host_of_its_own(pair):
    a, b = pair
    a_host = call(a, "pool.get_master", call(a, "pool.get_all")[0])
    with pytest.raises(XapiError) as e:
        call(a, "pool.eject", a_host)
    assert e.value.details[0] == "OPERATION_NOT_ALLOWED", e.value.details
    m = member_ref(a)
    b_uuid = call(a, "host.get_uuid", m)
    vlan_bridge = [r["bridge"] for r in call(a, "network.get_all_records").values() if r["name_label"] == "v77"][0]
    out = xe(a, A_IP, "pool-eject", "host-uuid=" + b_uuid)
    assert out.returncode == 0, out.stderr
    assert len(call(a, "host.get_all")) == 1
    assert not [p for p in call(a, "PIF.get_all_records").values() if p["host"] == m]
    # The member notices, leaves and starts over as a single host.
    def standalone():
        try:
            return len(call(b, "host.get_all")) == 1
        except (XapiError, OSError):
            return False
    wait_for(standalone, timeout=40, what="the ejected host serving on its own")
    with open(os.path.join(b.state, "pool.conf")) as f:
        assert f.read() == "master\n"
    assert not os.path.exists(os.path.join(b.state, "pool-secret"))
    # Its networking is its own fresh install's: the pool's VLAN is gone.
    assert b.ns("ovs-vsctl", "--db=unix:" + os.path.join(b.ovs, "db.sock"), "br-exists", vlan_bridge,
                check=False).returncode != 0
    # Its management address comes back from its own install.
    wait_for(lambda: b.ns("ping", "-c", "1", "-W", "1", A_IP, check=False).returncode == 0,
             timeout=20, what="the ejected host's management network")
