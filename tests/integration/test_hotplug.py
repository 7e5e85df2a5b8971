"""vif-xnet, the Xen vif hotplug script, run as libxl runs it (command,
XENBUS_PATH, vif) against a fed xenstore directory: the backend devices of
VM namespaces get attached, locked and limited, and detached again.
Domids 91-95 are this file's."""

import os
import subprocess
import uuid

import pytest

from conftest import BIN, Vm, login, sh, wait_for

BRIDGE = "xenbr3"


@pytest.fixture(scope="module")
def xs(host):
    root = os.path.join(host.dir, "xenstore")
    os.makedirs(root, exist_ok=True)
    return root


def feed(root, domid, devid=0, bridge=BRIDGE, mac=None, **keys):
    """What libxl writes before it runs the script; returns the VM uuid."""
    vm_uuid = str(uuid.uuid4())
    home = os.path.join(root, "local", "domain", str(domid))
    be = os.path.join(root, "local", "domain", "0", "backend", "vif", str(domid), str(devid))
    os.makedirs(home, exist_ok=True)
    os.makedirs(be, exist_ok=True)
    vals = {"frontend-id": str(domid), "handle": str(devid), "mac": mac, "bridge": bridge}
    vals.update(keys)
    for k, v in vals.items():
        if v is not None:
            with open(os.path.join(be, k), "w") as f:
                f.write(v)
    for k, v in {"name": "hp%d" % domid, "vm": "/vm/" + vm_uuid}.items():
        with open(os.path.join(home, k), "w") as f:
            f.write(v)
    return vm_uuid


def backend_key(root, domid, key, devid=0):
    p = os.path.join(root, "local", "domain", "0", "backend", "vif", str(domid), str(devid), key)
    try:
        with open(p) as f:
            return f.read()
    except FileNotFoundError:
        return None


def script(host, root, command, domid, dev, devid=0, type_if="vif"):
    env = {"PATH": os.environ["PATH"], "XNET_XENSTORE_DIR": root,
           "XNET_SOCKET": os.path.join(host.run, "xapi.sock"),
           "XENBUS_PATH": "backend/vif/%d/%d" % (domid, devid), "vif": dev}
    return subprocess.run([os.path.join(BIN, "vif-xnet"), command, "type_if=" + type_if],
                          env=env, capture_output=True, text=True, timeout=40)


def plug(host, root, domid, ip_addr, backend=None, **keys):
    vm = Vm(host, domid, backend=backend)
    vm_uuid = feed(root, domid, mac=vm.mac(), **keys)
    r = script(host, root, "online", domid, vm.backend)
    assert r.returncode == 0, r.stderr
    assert backend_key(root, domid, "hotplug-status") == "connected"
    vm.sh("ip", "addr", "add", ip_addr, "dev", "eth0")
    return vm, vm_uuid


def vif_of(x, vm_uuid):
    vm = x.VM.get_by_uuid(vm_uuid)
    return vm, x.VM.get_VIFs(vm)[0]


def test_online_attaches_locks_limits_and_offline_detaches(host, xs):
    x = login().xenapi
    a, a_uuid = plug(host, xs, 91, "10.63.0.91/24", rate="1250000,1000000")
    b, b_uuid = plug(host, xs, 92, "10.63.0.92/24", ip="10.63.0.92")
    # Attached as XAPI attaches VIFs: on the bridge, with its external_ids.
    ports = host.vsctl("list-ports", BRIDGE).split()
    assert {"vif91.0", "vif92.0"} <= set(ports), ports
    ids = host.vsctl("get", "interface", "vif91.0", "external_ids")
    assert a_uuid in ids and "attached-mac" in ids, ids
    assert a.ping("10.63.0.92")
    # The records: a VM by the domain's uuid and name, running as its domid.
    vm, vif = vif_of(x, a_uuid)
    assert x.VM.get_name_label(vm) == "hp91"
    assert x.VM.get_domid(vm) == "91"
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VIF.get_currently_attached(vif)
    assert x.VIF.get_other_config(vif).get("xnet-origin") == "hotplug"
    assert x.network.get_bridge(x.VIF.get_network(vif)) == BRIDGE
    # rate= (1250000 bytes per second) is a ratelimit of 1220 KiB/s.
    assert x.VIF.get_qos_algorithm_type(vif) == "ratelimit"
    assert x.VIF.get_qos_algorithm_params(vif)["kbps"] == "1220"
    # ip= locks the VIF to its addresses.
    _, bvif = vif_of(x, b_uuid)
    assert x.VIF.get_locking_mode(bvif) == "locked"
    assert x.VIF.get_ipv4_allowed(bvif) == ["10.63.0.92"]
    b.sh("ip", "addr", "add", "10.63.0.192/24", "dev", "eth0")
    spoofed = b.sh("ping", "-c", "1", "-W", "1", "-I", "10.63.0.192", "10.63.0.91", check=False)
    assert spoofed.returncode != 0, "a source address not in ip= is dropped"
    assert b.ping("10.63.0.91")
    # The domain is destroyed: its device goes, then libxl runs offline.
    sh("rm", "-f", os.path.join(xs, "local", "domain", "91", "name"))
    a.remove()
    wait_for(lambda: not host.vsctl("--columns=name", "find", "interface", "name=vif91.0").strip(),
             timeout=5, what="port gone with the device")
    r = script(host, xs, "offline", 91, "vif91.0")
    assert r.returncode == 0, r.stderr
    assert not [v for v in x.VM.get_all() if x.VM.get_uuid(v) == a_uuid], "hotplug VM removed"
    # offline of a device whose domain lives on only detaches.
    r = script(host, xs, "offline", 92, "vif92.0")
    assert r.returncode == 0, r.stderr
    assert not x.VIF.get_currently_attached(bvif)
    # (The bridge of eth3's unplugged PIF goes too with its last VIF.)
    wait_for(lambda: not host.vsctl("--columns=name", "find", "interface", "name=vif92.0").strip(),
             timeout=5, what="detached port removed")


def test_vifname_and_errors(host, xs):
    x = login().xenapi
    vm, vm_uuid = plug(host, xs, 93, "10.63.0.93/24", backend="web93-eth0")
    assert "web93-eth0" in host.vsctl("list-ports", BRIDGE).split()
    _, vif = vif_of(x, vm_uuid)
    assert x.VIF.get_other_config(vif).get("xnet-vifname") == "web93-eth0"
    # An unknown bridge: libxl is told why, and nothing is recorded.
    bad = Vm(host, 94)
    bad_uuid = feed(xs, 94, mac=bad.mac(), bridge="nosuchbr")
    r = script(host, xs, "online", 94, "vif94.0")
    assert r.returncode != 0
    assert backend_key(xs, 94, "hotplug-status") == "error"
    assert "BRIDGE_NOT_AVAILABLE" in backend_key(xs, 94, "hotplug-error")
    assert not [v for v in x.VM.get_all() if x.VM.get_uuid(v) == bad_uuid]
    # A malformed rate string is refused before xnetd is asked.
    feed(xs, 95, mac="00:16:3e:00:00:95", rate="10Mb/s")
    r = script(host, xs, "online", 95, "vif95.0")
    assert r.returncode != 0 and "rate '10Mb/s' is malformed" in r.stderr, r.stderr
    assert backend_key(xs, 95, "hotplug-status") == "error"
    # Bad invocations say how to call it.
    r = subprocess.run([os.path.join(BIN, "vif-xnet")], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "usage" in r.stderr


def test_xe_vif_import_xl(host, tmp_path):
    """xl vif= strings become VIF records with `xe vif-import-xl`."""
    from test_api import xe
    x = login().xenapi
    vm = x.VM.create({"name_label": "xl-import"})
    vm_uuid = x.VM.get_uuid(vm)
    cfg = tmp_path / "web.cfg"
    cfg.write_text("name = 'web'\nmemory = 512\n# vif = [ 'bridge=commented' ]\n"
                   "vif = [ 'mac=00:16:3e:00:01:01,bridge=xenbr4,ip=10.64.0.1,rate=10Mb/s@20ms',\n"
                   "        'bridge=xenbr5,vifname=web-eth1,mtu=1400', ]\n")
    r = xe(host, "vif-import-xl", "vm-uuid=" + vm_uuid, "filename=" + str(cfg))
    assert r.returncode == 0, r.stderr
    uuids = r.stdout.split()
    assert len(uuids) == 2
    a, b = (x.VIF.get_by_uuid(u) for u in uuids)
    assert x.VIF.get_device(a) == "0" and x.VIF.get_device(b) == "1"
    assert x.VIF.get_MAC(a) == "00:16:3e:00:01:01"
    assert x.network.get_bridge(x.VIF.get_network(a)) == "xenbr4"
    assert x.VIF.get_locking_mode(a) == "locked"
    assert x.VIF.get_ipv4_allowed(a) == ["10.64.0.1"]
    assert x.VIF.get_qos_algorithm_params(a) == {"kbps": "1221", "timeslice_us": "20000"}
    assert x.VIF.get_MAC_autogenerated(b), "no mac= gives the seed-derived MAC"
    assert x.VIF.get_MTU(b) == "1400"
    assert x.VIF.get_other_config(b)["xnet-vifname"] == "web-eth1"
    # Bad strings and unknown bridges give their errors and create nothing.
    for bad, msg in [("vif=mac=00:16:3e:00:01,bridge=xenbr4", "bad mac"),
                     ("vif=rate=10Mb@20ms", "rate '10Mb@20ms'"),
                     ("vif=bridge=nosuchbr", "No network has bridge nosuchbr"),
                     ("vif=model=e1000,colour=red", "unknown key 'colour'"),
                     ("vif=backend=netdom", "driver domains")]:
        r = xe(host, "vif-import-xl", "vm-uuid=" + vm_uuid, bad)
        assert r.returncode != 0 and msg in r.stdout + r.stderr, (bad, r.stdout, r.stderr)
    # A device number in use: the whole import is undone.
    r = xe(host, "vif-import-xl", "vm-uuid=" + vm_uuid, "vif=devid=7,bridge=xenbr4")
    assert r.returncode == 0, r.stderr
    cfg.write_text("vif = [ 'devid=6,bridge=xenbr4', 'devid=7,bridge=xenbr4' ]\n")
    r = xe(host, "vif-import-xl", "vm-uuid=" + vm_uuid, "filename=" + str(cfg))
    assert r.returncode != 0
    assert sorted(x.VIF.get_device(v) for v in x.VM.get_VIFs(vm)) == ["0", "1", "7"]
