"""IPv6 on a PIF's bridge device: a static address that answers from the
switch side and a default route, router advertisements only where asked."""

import subprocess

import XenAPI

from conftest import wait_for
from test_api import pif_by_device


def sysctl(host, dev, key):
    return host.ns("cat", "/proc/sys/net/ipv6/conf/%s/%s" % (dev, key)).stdout.strip()


def v6_addrs(host, dev):
    return host.ns("ip", "-o", "-6", "addr", "show", "dev", dev).stdout


def test_ipv6_static_autoconf_none(host, session):
    x = session.xenapi
    eth5 = pif_by_device(x, "eth5")
    x.PIF.plug(eth5)
    br = x.network.get_bridge(x.PIF.get_network(eth5))
    wait_for(lambda: sysctl(host, br, "accept_ra") == "0", what="RAs off on an xnet bridge")
    assert sysctl(host, br, "autoconf") == "0"
    sw = ["ip", "netns", "exec", host.sw]
    subprocess.run(sw + ["ip", "addr", "add", "2001:db8:55::1/64", "dev", "p5", "nodad"], check=True, timeout=30)
    try:
        x.PIF.add_to_other_config(eth5, "defaultroute", "true")
        x.PIF.reconfigure_ipv6(eth5, "Static", "2001:db8:55::2/64", "2001:db8:55::1", "")
        assert x.PIF.get_IPv6(eth5) == ["2001:db8:55::2/64"]
        wait_for(lambda: "2001:db8:55::2/64" in v6_addrs(host, br), what="static IPv6 address")
        wait_for(lambda: subprocess.run(sw + ["ping", "-6", "-c", "1", "-W", "1", "2001:db8:55::2"],
                                        timeout=30).returncode == 0, timeout=15, what="IPv6 ping")
        routes = host.ns("ip", "-6", "route", "show", "default").stdout
        assert "via 2001:db8:55::1 dev " + br in routes, routes
        x.PIF.reconfigure_ipv6(eth5, "Autoconf", "", "", "")
        wait_for(lambda: "2001:db8:55::2" not in v6_addrs(host, br), what="static address removed")
        assert sysctl(host, br, "accept_ra") == "1" and sysctl(host, br, "autoconf") == "1"
        assert "2001:db8:55::1" not in host.ns("ip", "-6", "route", "show", "default").stdout
        # No DHCPv6 client is run: refused with the reason, and rolled back.
        try:
            x.PIF.reconfigure_ipv6(eth5, "DHCP", "", "", "")
            raise AssertionError("IPv6 DHCP accepted")
        except XenAPI.Failure as e:
            assert e.details[0] == "PIF_CONFIGURATION_ERROR" and "DHCPv6" in e.details[2], e.details
        assert x.PIF.get_ipv6_configuration_mode(eth5) == "Autoconf"
        x.PIF.reconfigure_ipv6(eth5, "None", "", "", "")
        wait_for(lambda: sysctl(host, br, "autoconf") == "0", what="RAs off again")
    finally:
        x.PIF.remove_from_other_config(eth5, "defaultroute")
        subprocess.run(sw + ["ip", "addr", "del", "2001:db8:55::1/64", "dev", "p5"], timeout=30)
