"""VIF MACs through xe and the API: XAPI's seed-derived MAC, mac=random,
the pool's xnet-mac-prefix, and MAC_ALREADY_IN_USE on one network."""

import hashlib

import pytest
import XenAPI

from test_api import new_net, xe

KEY = "xnet-mac-prefix"


def seed_mac(seed, device):
    """§9 of the reference, independently of the Rust code."""
    h = seed.encode()
    for _ in range(2 * device + 1):
        h = hashlib.md5(h).digest()
    h2 = hashlib.md5(h).digest()
    m = [h[0], h[1], h[2], h[3], h2[1], h2[2]]
    m[0] = (m[0] | 2) & 0xFE
    return ":".join("%02x" % b for b in m)


def vif_create(host, net_uuid, vm_uuid, device, *extra):
    return xe(host, "vif-create", "device=%d" % device, "network-uuid=" + net_uuid,
              "vm-uuid=" + vm_uuid, *extra)


def test_vif_macs(host, session):
    x = session.xenapi
    pool = x.pool.get_all()[0]
    net = new_net(x, "mac net")
    net_uuid = x.network.get_uuid(net)
    vm = x.VM.create({"name_label": "mac vm"})
    vm_uuid = x.VM.get_uuid(vm)
    seed = x.VM.get_other_config(vm)["mac_seed"]
    mac_of = lambda out: x.VIF.get_MAC(x.VIF.get_by_uuid(out.strip()))
    try:
        # No mac: the server derives it from the VM's mac_seed (XAPI's §9).
        r = vif_create(host, net_uuid, vm_uuid, 0)
        assert r.returncode == 0, r.stderr
        assert mac_of(r.stdout) == seed_mac(seed, 0)
        # mac=random: six independent random bytes, local and unicast.
        r = vif_create(host, net_uuid, vm_uuid, 1, "mac=random")
        assert r.returncode == 0, r.stderr
        m = [int(b, 16) for b in mac_of(r.stdout).split(":")]
        assert m[0] & 3 == 2 and len(set(m[1:])) > 1, m

        # The Xen OUI for both kinds of generated MACs.
        x.pool.add_to_other_config(pool, KEY, "00:16:3e")
        r = vif_create(host, net_uuid, vm_uuid, 2)
        assert r.returncode == 0, r.stderr
        assert mac_of(r.stdout) == "00:16:3e" + seed_mac(seed, 2)[8:]
        r = vif_create(host, net_uuid, vm_uuid, 3, "mac=random")
        assert r.returncode == 0, r.stderr
        assert mac_of(r.stdout).startswith("00:16:3e:")

        # A MAC already on the network: a clear error, nothing created.
        taken = mac_of(r.stdout)
        n = len(x.VIF.get_all())
        r = vif_create(host, net_uuid, vm_uuid, 4, "mac=" + taken.upper())
        assert r.returncode == 1
        assert "Another VIF on this network already has this MAC address." in r.stderr, r.stderr
        assert "MAC: " + taken in r.stderr and "network: " + net_uuid in r.stderr
        assert len(x.VIF.get_all()) == n
        with pytest.raises(XenAPI.Failure) as e:
            x.VIF.create({"device": "4", "network": net, "VM": vm, "MAC": taken, "MTU": "1500",
                          "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
        assert e.value.details[0] == "MAC_ALREADY_IN_USE"
        r = vif_create(host, net_uuid, vm_uuid, 4, "mac=02:00:00:00:00:zz")
        assert r.returncode == 1 and "The MAC address specified is not valid." in r.stderr

        # A malformed prefix is refused where it is used.
        x.pool.remove_from_other_config(pool, KEY)
        x.pool.add_to_other_config(pool, KEY, "01:16:3e")
        r = vif_create(host, net_uuid, vm_uuid, 5, "mac=random")
        assert r.returncode == 1 and KEY in r.stderr and "01:16:3e" in r.stderr, r.stderr
        r = vif_create(host, net_uuid, vm_uuid, 5)
        assert r.returncode == 1 and "The value given is invalid" in r.stderr, r.stderr
        assert len(x.VIF.get_all()) == n
    finally:
        x.pool.remove_from_other_config(pool, KEY)
        for v in x.VM.get_VIFs(vm):
            x.VIF.destroy(v)
        x.VM.destroy(vm)
        x.network.destroy(net)
