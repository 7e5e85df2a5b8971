"""The agent keeps what it applied: static routes and DNS search domains
through an agent restart and until their key goes; a restart under live
traffic loses no packet and writes nothing to OVS."""

import json
import os
import signal
import subprocess
import time

from conftest import login, wait_for
from test_api import new_net, pif_by_device
from test_guests import ovs_versions, vm_with_vif


def routes(host):
    return host.ns("ip", "-4", "route", "show", "table", "main").stdout


def resolv(host):
    with open(os.path.join(host.dir, "resolv.conf")) as f:
        return f.read()


def test_static_routes_and_search_domains(host, session):
    x = session.xenapi
    eth0 = pif_by_device(x, "eth0")
    net = x.PIF.get_network(eth0)
    want = "10.200.0.0/24 via 10.99.0.254 dev xenbr0"
    x.network.add_to_other_config(net, "static-routes", "10.200.0.0/24/10.99.0.254,10.201.0.0/16/10.99.0.253")
    old_domain = x.PIF.get_other_config(eth0).get("domain")
    if old_domain is not None:
        x.PIF.remove_from_other_config(eth0, "domain")
    x.PIF.add_to_other_config(eth0, "domain", "lab.example,corp.example")
    try:
        wait_for(lambda: want in routes(host), timeout=5, what="static route")
        assert "10.201.0.0/16 via 10.99.0.253 dev xenbr0" in routes(host)
        wait_for(lambda: "search lab.example corp.example\n" in resolv(host), timeout=5, what="search domains")
        host.restart(signal.SIGTERM)
        x = login().xenapi  # the old connection went with the old xnetd
        time.sleep(2)
        assert want in routes(host) and "search lab.example corp.example\n" in resolv(host)
        # A route removed by hand (or lost in a reboot) comes back.
        host.ns("ip", "route", "del", "10.200.0.0/24")
        wait_for(lambda: want in routes(host), timeout=5, what="route restored")
        # Dropping one entry removes exactly that route.
        x.network.remove_from_other_config(net, "static-routes")
        x.network.add_to_other_config(net, "static-routes", "10.201.0.0/16/10.99.0.253")
        wait_for(lambda: "10.200.0.0/24" not in routes(host), timeout=5, what="route removed")
        assert "10.201.0.0/16 via 10.99.0.253" in routes(host)
    finally:
        x.network.remove_from_other_config(net, "static-routes")
        x.PIF.remove_from_other_config(eth0, "domain")
    wait_for(lambda: "10.201.0.0/16" not in routes(host), timeout=5, what="all static routes gone")
    wait_for(lambda: "search lab.example" not in resolv(host), timeout=5, what="search line gone")
    if old_domain is not None:
        x.PIF.add_to_other_config(eth0, "domain", old_domain)


def test_restart_under_traffic_loses_nothing(host, session):
    x = session.xenapi
    net = new_net(x, "restart traffic")
    a, _, _ = vm_with_vif(x, host, 71, net, "10.53.0.71/24")
    b, _, _ = vm_with_vif(x, host, 72, net, "10.53.0.72/24")
    br = x.network.get_bridge(net)
    wait_for(lambda: {"vif71.0", "vif72.0"} <= set(host.vsctl("list-ports", br).split()), what="VIF ports")
    wait_for(lambda: a.ping("10.53.0.72", count=1), timeout=10, what="VMs talk")
    srv = subprocess.Popen(["ip", "netns", "exec", b.ns, "iperf3", "-s", "-1", "-B", "10.53.0.72"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        before = ovs_versions(host)
        cli = subprocess.Popen(["ip", "netns", "exec", a.ns, "iperf3", "-c", "10.53.0.72", "-u", "-b", "20M",
                                "-l", "1200", "-t", "5", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.5)
        host.restart(signal.SIGTERM)
        out, err = cli.communicate(timeout=30)
        assert cli.returncode == 0, err
        end = json.loads(out)["end"]["sum"]
        assert end["packets"] > 5000, end
        assert end["lost_packets"] == 0, "packets lost across the agent restart: %s" % end
        after = ovs_versions(host)
        assert after["Bridge"] == before["Bridge"] and after["Port"] == before["Port"]
    finally:
        srv.kill()
        srv.wait(timeout=10)
