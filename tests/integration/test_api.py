"""The XenAPI surface through the official SDK (XML-RPC over HTTPS) and raw
JSON-RPC: classes, calls, errors, events, tasks, bad input, persistence."""

import http.client
import json
import os
import signal
import subprocess
import threading
import time
import xmlrpc.client

import pytest
import XenAPI

from conftest import (BIN, HTTP_PORT, HTTPS_PORT, PASSWORD, VIEWER_PASSWORD, https_context, jsonrpc, login,
                      wait_for)


def err(fn, *args):
    with pytest.raises(XenAPI.Failure) as e:
        fn(*args)
    return e.value.details


def new_net(x, label="it net", bridge=""):
    return x.network.create({"name_label": label, "name_description": "", "MTU": "1500",
                             "other_config": {}, "bridge": bridge, "managed": True, "tags": []})


def pif_by_device(x, dev):
    for ref, r in x.PIF.get_all_records().items():
        if r["device"] == dev and r["physical"]:
            return ref
    raise KeyError(dev)


def test_installation_records(session):
    x = session.xenapi
    pools = x.pool.get_all()
    assert len(pools) == 1
    host = x.pool.get_master(pools[0])
    h = x.host.get_record(host)
    assert h["name_label"] == "it-host"
    assert h["API_version_major"] == "2" and h["API_version_vendor"] == "XenSource"
    assert h["software_version"]["network_backend"] == "openvswitch"
    assert h["address"] == "10.99.0.2"
    pifs = x.PIF.get_all_records()
    devices = sorted(r["device"] for r in pifs.values())
    assert devices == ["eth%d" % i for i in range(6)]
    eth0 = pif_by_device(x, "eth0")
    r = pifs[eth0]
    assert r["management"] and r["currently_attached"] and r["IP"] == "10.99.0.2"
    assert r["MAC"] == "52:54:00:12:00:00"
    assert x.host.get_management_interface(host) == eth0
    nets = x.network.get_all_records()
    assert x.network.get_bridge(r["network"]) == "xenbr0"
    assert nets[r["network"]]["name_label"] == "Pool-wide network 0"
    himn = [n for n in nets.values() if n["bridge"] == "xenapi"]
    assert himn and himn[0]["other_config"]["is_host_internal_management_network"] == "true"
    metrics = x.PIF.get_metrics(eth0)
    assert x.PIF_metrics.get_record(metrics)["carrier"] is True
    dom0 = [v for v in x.VM.get_all_records().values() if v["is_control_domain"]]
    assert len(dom0) == 1 and dom0[0]["power_state"] == "Running"


def test_management_bridge_realized(host, session):
    out = host.vsctl("list-ports", "xenbr0")
    assert "eth0" in out.split()
    addrs = host.ns("ip", "-o", "addr", "show", "dev", "xenbr0").stdout
    assert "10.99.0.2/24" in addrs


def test_login_errors_and_rbac(host):
    s = XenAPI.Session("https://127.0.0.1:%d" % HTTPS_PORT, ignore_ssl=True)
    with pytest.raises(XenAPI.Failure) as e:
        s.xenapi.login_with_password("root", "wrong")
    assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED"
    v = login("viewer", VIEWER_PASSWORD)
    assert len(v.xenapi.PIF.get_all()) >= 6
    d = err(v.xenapi.network.create, {"name_label": "x", "other_config": {}})
    assert d[0] == "RBAC_PERMISSION_DENIED"
    v.xenapi.session.logout()
    # A stale session is SESSION_INVALID (raw client: the SDK would re-login).
    raw = xmlrpc.client.ServerProxy("https://127.0.0.1:%d" % HTTPS_PORT, context=https_context())
    r = raw.PIF.get_all("OpaqueRef:00000000-dead-beef-0000-000000000000")
    assert r["Status"] == "Failure" and r["ErrorDescription"][0] == "SESSION_INVALID"


def test_rpc_level_errors(session):
    x = session.xenapi
    assert err(x.PIF.no_such_call)[0] == "MESSAGE_METHOD_UNKNOWN"
    d = err(x.network.get_record)
    assert d[0] == "MESSAGE_PARAMETER_COUNT_MISMATCH" and d[1:] == ["network.get_record", "1", "0"]
    assert err(x.network.get_record, "OpaqueRef:nope") == ["HANDLE_INVALID", "network", "OpaqueRef:nope"]
    assert err(x.network.get_by_uuid, "nope") == ["UUID_INVALID", "network", "nope"]
    # <class>_<call> is accepted like <class>.<call>.
    assert x.PIF_get_all() == x.PIF.get_all()


def test_network_vlan_bond_lifecycle(host, session):
    x = session.xenapi
    net = new_net(x, "vlan 10")
    assert x.network.get_bridge(net).startswith("xapi")
    eth1 = pif_by_device(x, "eth1")
    vlan = x.VLAN.create(eth1, "10", net)
    untagged = x.VLAN.get_untagged_PIF(vlan)
    pr = x.PIF.get_record(untagged)
    assert pr["VLAN"] == "10" and pr["device"] == "eth1" and pr["currently_attached"]
    assert err(x.VLAN.create, eth1, "10", new_net(x, "other"))[0] == "PIF_VLAN_EXISTS"
    assert err(x.VLAN.create, eth1, "5000", new_net(x, "o2"))[:2] == ["VLAN_TAG_INVALID", "5000"]
    # The VLAN is a fake bridge on the parent's bridge, with its tag.
    br = x.network.get_bridge(net)
    wait_for(lambda: host.vsctl("br-to-vlan", br).strip() == "10", what="fake bridge")
    assert host.vsctl("br-to-parent", br).strip() == "xenbr1"
    x.VLAN.destroy(vlan)
    wait_for(lambda: br not in host.vsctl("list-br").split(), what="fake bridge removed")
    assert err(x.network.destroy, x.PIF.get_network(eth1))[0] == "NETWORK_CONTAINS_PIF"
    # Bond eth3+eth4 on a new network.
    bnet = new_net(x, "bond net")
    eth3, eth4 = pif_by_device(x, "eth3"), pif_by_device(x, "eth4")
    bond = x.Bond.create(bnet, [eth3, eth4], "", "active-backup", {})
    master = x.Bond.get_master(bond)
    assert x.PIF.get_device(master) == "bond0"
    assert sorted(x.Bond.get_slaves(bond)) == sorted([eth3, eth4])
    bbr = x.network.get_bridge(bnet)
    wait_for(lambda: "bond0" in host.vsctl("list-ports", bbr).split(), what="bond port")
    assert "active-backup" in host.vsctl("get", "port", "bond0", "bond_mode")
    assert err(x.Bond.set_property, bond, "lacp-time", "fast")[0] == "INVALID_VALUE"
    x.Bond.destroy(bond)
    wait_for(lambda: "bond0" not in host.vsctl("list-ports", bbr).split() if bbr in host.vsctl("list-br").split() else True,
             what="bond removed")
    assert x.PIF.get_bond_slave_of(eth3) == "OpaqueRef:NULL"


def test_async_task(session):
    x = session.xenapi
    net = new_net(x, "async vlan")
    eth2 = pif_by_device(x, "eth2")
    task = x.Async.VLAN.create(eth2, "22", net)
    wait_for(lambda: x.task.get_status(task) != "pending", what="task")
    assert x.task.get_status(task) == "success"
    assert float(x.task.get_progress(task)) == 1.0
    result = x.task.get_result(task)
    vlan = xmlrpc.client.loads("<params><param>%s</param></params>" % result)[0][0]
    assert x.VLAN.get_tag(vlan) == "22"
    bad = x.Async.VLAN.create(eth2, "22", new_net(x, "again"))
    wait_for(lambda: x.task.get_status(bad) != "pending", what="task")
    assert x.task.get_status(bad) == "failure"
    assert x.task.get_error_info(bad)[0] == "PIF_VLAN_EXISTS"
    x.task.destroy(task)


def test_event_from(session):
    x = session.xenapi
    first = x.event_from(["network"], "", 0.0)
    assert first["events"] and all(e["class"] == "network" for e in first["events"])
    token = first["token"]
    net = new_net(x, "event net")
    got = x.event_from(["network"], token, 5.0)
    ops = [(e["operation"], e["ref"]) for e in got["events"]]
    assert ("add", net) in ops
    assert got["events"][-1]["snapshot"]["name_label"] in ("event net",) or any(
        e["snapshot"]["name_label"] == "event net" for e in got["events"] if e["ref"] == net)
    # Nothing new: blocks for the timeout, returns no events.
    t0 = time.time()
    empty = x.event_from(["network/" + net], got["token"], 0.5)
    assert empty["events"] == [] and time.time() - t0 >= 0.4
    # A change made by another thread wakes a waiting call.
    def later():
        time.sleep(0.3)
        s2 = login()
        s2.xenapi.network.set_name_label(net, "renamed")
    threading.Thread(target=later).start()
    woke = x.event_from(["network/" + net], got["token"], 10.0)
    assert [e["operation"] for e in woke["events"]] == ["mod"]
    assert woke["events"][0]["snapshot"]["name_label"] == "renamed"
    x.network.destroy(net)
    gone = x.event_from(["network"], woke["token"], 5.0)
    assert ("del", net) in [(e["operation"], e["ref"]) for e in gone["events"]]
    assert err(x.event_from, ["nosuchclass"], "", 0.0)[0] == "EVENT_SUBSCRIPTION_PARSE_FAILURE"
    assert err(x.event_from, ["*"], "garbage", 0.0)[0] == "EVENT_FROM_TOKEN_PARSE_FAILURE"


def test_legacy_events(session):
    x = session.xenapi
    x.event.register(["network"])
    net = new_net(x, "legacy")
    evs = x.event.next()
    assert any(e["ref"] == net for e in evs)
    x.event.unregister(["network"])
    assert err(x.event.next)[0] == "SESSION_NOT_REGISTERED"


def test_jsonrpc_v1_and_v2(host):
    r = jsonrpc({"method": "session.login_with_password", "params": ["root", PASSWORD], "id": 1})
    assert r["error"] is None and r["result"].startswith("OpaqueRef:")
    s = r["result"]
    r = jsonrpc({"method": "PIF.get_all_records", "params": [s], "id": 2})
    assert r["id"] == 2 and len(r["result"]) >= 6
    any_pif = next(iter(r["result"].values()))
    assert isinstance(any_pif["MTU"], int) and isinstance(any_pif["physical"], bool)
    r = jsonrpc({"method": "network.get_record", "params": [s, "OpaqueRef:x"], "id": 3})
    assert r["result"] is None and r["error"] == ["HANDLE_INVALID", "network", "OpaqueRef:x"]
    r = jsonrpc({"jsonrpc": "2.0", "method": "network.get_record", "params": [s, "OpaqueRef:x"], "id": "a"})
    assert r["jsonrpc"] == "2.0" and r["id"] == "a"
    assert r["error"] == {"code": 1, "message": "HANDLE_INVALID", "data": ["network", "OpaqueRef:x"]}
    r = jsonrpc({"jsonrpc": "2.0", "method": "PIF.get_all", "params": [s], "id": 4})
    assert len(r["result"]) >= 6
    # The same session works over XML-RPC.
    raw = xmlrpc.client.ServerProxy("http://127.0.0.1:%d/RPC2" % HTTP_PORT)
    assert raw.PIF.get_all(s)["Status"] == "Success"


def post(path, body, ctype="text/xml"):
    c = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=30)
    c.request("POST", path, body=body, headers={"Content-Type": ctype})
    r = c.getresponse()
    return r.status, r.read()


def test_bad_input_changes_nothing(session):
    x = session.xenapi
    before = len(x.network.get_all())
    for body in [b"<methodCall><methodName>network.create</methodName>", b"\x00\xff garbage",
                 b"<methodCall><methodName>x</methodName><params><param><value><array><data>" * 2000,
                 b"<methodCall><methodName>x</methodName><params><param><value><int>12a</int></value></param></params></methodCall>"]:
        status, out = post("/RPC2", body)
        assert status == 200 and b"fault" in out
    for body in [b"{", b"[]", b'{"method": "PIF.get_all", "params": "x", "id": 1}',
                 b'{"method": "PIF.get_all", "params": []}', b"[" * 100000]:
        status, out = post("/jsonrpc", body, "application/json")
        assert status == 200 and b"error" in out
    # A body announced larger than 16 MiB is refused before it is read.
    c = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=30)
    c.putrequest("POST", "/RPC2")
    c.putheader("Content-Length", str(17 << 20))
    c.endheaders()
    assert c.getresponse().status == 413
    # Wrong types in a write: an XAPI error, nothing created.
    d = err(x.network.create, {"name_label": 5, "other_config": {}})
    assert d[0] == "FIELD_TYPE_ERROR"
    d = err(x.network.create, {"name_label": "x", "other_config": {}, "bridge": "xenbr77"})
    assert d == ["INVALID_VALUE", "bridge", "xenbr77"]
    assert len(x.network.get_all()) == before
    assert len(x.PIF.get_all()) >= 6  # still serving


def test_persistence_across_restart_and_kill9(host):
    s = login()
    x = s.xenapi
    net = new_net(x, "survives")
    uuid = x.network.get_uuid(net)
    snapshot = {k: v for k, v in x.network.get_all_records().items()}
    s.xenapi.session.logout()
    host.restart(signal.SIGTERM)
    s = login()
    after = s.xenapi.network.get_all_records()
    assert after == snapshot
    assert s.xenapi.network.get_by_uuid(uuid) == net
    # kill -9 while a client writes: every acknowledged create survives.
    acked = []
    stop = threading.Event()

    def writer():
        w = login()
        i = 0
        while not stop.is_set():
            try:
                ref = new_net(w.xenapi, "k9-%d" % i)
                acked.append(ref)
                i += 1
            except Exception:
                return

    t = threading.Thread(target=writer)
    t.start()
    wait_for(lambda: len(acked) >= 20, timeout=30, what="writes")
    host.stop(signal.SIGKILL)
    stop.set()
    t.join(timeout=30)
    host.start()
    s = login()
    refs = set(s.xenapi.network.get_all())
    assert set(acked) <= refs, "acknowledged writes were lost"
    labels = [s.xenapi.network.get_name_label(r) for r in refs]
    assert len(labels) == len(refs)


def xe(host, *args):
    env = dict(os.environ, XNET_SOCKET=os.path.join(host.run, "xapi.sock"))
    return subprocess.run([os.path.join(BIN, "xe")] + list(args), capture_output=True, text=True, timeout=30, env=env)


def test_xe_cli(host, session):
    x = session.xenapi
    r = xe(host, "pif-list", "device=eth0", "--minimal")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == x.PIF.get_uuid(pif_by_device(x, "eth0"))
    r = xe(host, "network-create", "name-label=from xe")
    assert r.returncode == 0, r.stderr
    uuid = r.stdout.strip()
    ref = x.network.get_by_uuid(uuid)
    assert x.network.get_name_label(ref) == "from xe"
    r = xe(host, "network-list", "uuid=" + uuid)
    lines = r.stdout.split("\n")
    assert lines[0] == "uuid ( RO)                : " + uuid
    assert lines[1] == "          name-label ( RW): from xe"
    assert r.stdout.endswith("\n\n\n")
    r = xe(host, "network-param-get", "uuid=" + uuid, "param-name=bridge")
    assert r.stdout.strip() == x.network.get_bridge(ref)
    r = xe(host, "network-destroy", "uuid=no-such-uuid")
    assert r.returncode != 0 and "uuid" in r.stderr.lower()
    r = xe(host, "vlan-create", "pif-uuid=" + x.PIF.get_uuid(pif_by_device(x, "eth5")), "vlan=55",
           "network-uuid=" + uuid)
    assert r.returncode == 0, r.stderr
    assert x.PIF.get_VLAN(x.PIF.get_by_uuid(r.stdout.strip())) == "55"
    r = xe(host, "bogus-command")
    assert r.returncode != 0


def test_dhcp_pif_gets_a_lease(host, session):
    """A PIF in DHCP mode runs a real DHCP client; the lease shows in the PIF."""
    x = session.xenapi
    sh_sw = ["ip", "netns", "exec", host.sw]
    subprocess.run(sh_sw + ["ip", "addr", "add", "10.77.0.1/24", "dev", "p2"], check=True, timeout=30)
    host.switch_spawn(["dnsmasq", "--no-daemon", "--interface=p2", "--bind-interfaces", "--port=0",
                       "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,1h", "--dhcp-option=3,10.77.0.1",
                       "--dhcp-leasefile=" + os.path.join(host.dir, "leases"), "--pid-file="])
    eth2 = pif_by_device(x, "eth2")
    x.PIF.reconfigure_ip(eth2, "DHCP", "", "", "", "")
    x.PIF.plug(eth2)
    wait_for(lambda: x.PIF.get_IP(eth2).startswith("10.77.0."), timeout=40, what="DHCP lease")
    r = x.PIF.get_record(eth2)
    assert r["netmask"] == "255.255.255.0" and r["gateway"] == "10.77.0.1"
    addrs = host.ns("ip", "-o", "-4", "addr", "show", "dev", "xenbr2").stdout
    assert r["IP"] + "/24" in addrs
    subprocess.run(sh_sw + ["ping", "-c", "1", "-W", "2", r["IP"]], check=True, timeout=30)
    x.PIF.reconfigure_ip(eth2, "None", "", "", "", "")
    wait_for(lambda: "10.77.0." not in host.ns("ip", "-o", "-4", "addr", "show", "dev", "xenbr2").stdout,
             what="address removed")
