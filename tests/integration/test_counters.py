"""VIF backends as Xen leaves them (MAC fe:ff:ff:ff:ff:ff, ARP off), and
traffic counters: iperf3 between two VMs shows in VIF_metrics, PIF_metrics
and xe, in the guest's direction and at the rate sent."""

import signal
import subprocess
import time

from conftest import login, wait_for
from test_api import pif_by_device, xe
from test_guests import vm_with_vif

RATE_BPS = 8_000_000  # iperf3 UDP target, bits/s
SECONDS = 12  # long enough to hold two whole 5 s samples
KEYS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_dropped", "tx_dropped", "rx_errors", "tx_errors")


def link_show(dev):
    return subprocess.run(["ip", "-o", "link", "show", "dev", dev], capture_output=True,
                          text=True, timeout=10).stdout


def backend_ready(dev):
    out = link_show(dev)
    return "link/ether fe:ff:ff:ff:ff:ff" in out and "NOARP" in out.split(">")[0]


def metrics(x, vif):
    return x.VIF_metrics.get_record(x.VIF.get_metrics(vif))


def counter(rec, key):
    return int(rec["other_config"].get(key, "0"))


def test_backend_device_and_counters(host, session):
    x = session.xenapi
    eth1 = pif_by_device(x, "eth1")
    x.PIF.plug(eth1)
    net = x.PIF.get_network(eth1)
    a, _, vif_a = vm_with_vif(x, host, 31, net, "10.53.0.31/24")
    b, _, vif_b = vm_with_vif(x, host, 32, net, "10.53.0.32/24")
    server = client = monitor = None
    try:
        br = x.network.get_bridge(net)
        wait_for(lambda: {"vif31.0", "vif32.0"} <= set(host.vsctl("list-ports", br).split()),
                 what="VIF ports")
        wait_for(lambda: backend_ready("vif31.0") and backend_ready("vif32.0"), timeout=10,
                 what="backend MAC fe:ff:ff:ff:ff:ff and NOARP")
        # The guest keeps its own MAC; the port records it.
        assert a.mac() != "fe:ff:ff:ff:ff:ff"
        assert a.mac() in host.vsctl("get", "interface", "vif31.0", "external_ids") + \
            host.vsctl("get", "port", "vif31.0", "external_ids")
        assert a.ping("10.53.0.32"), "VMs talk with dummy-MAC backends"

        # VIF other_config:ethtool-* reaches the backend device.
        def gso():
            out = subprocess.run(["ethtool", "-k", "vif31.0"], capture_output=True, text=True,
                                 timeout=10).stdout
            return [l.split(":")[1].split()[0] for l in out.splitlines()
                    if l.startswith("generic-segmentation-offload:")][0]
        x.VIF.add_to_other_config(vif_a, "ethtool-gso", "off")
        wait_for(lambda: gso() == "off", timeout=10, what="backend gso off")
        x.VIF.remove_from_other_config(vif_a, "ethtool-gso")
        x.VIF.add_to_other_config(vif_a, "ethtool-gso", "on")
        wait_for(lambda: gso() == "on", timeout=10, what="backend gso on")

        # An agent restart on this unchanged host changes no link.
        monitor = subprocess.Popen(["ip", "monitor", "link"], stdout=subprocess.PIPE, text=True)
        host.restart(signal.SIGTERM)
        time.sleep(3)
        monitor.terminate()
        events = monitor.communicate(timeout=5)[0]
        monitor = None
        x = login().xenapi  # sessions do not survive a restart (as with XAPI)
        assert not [l for l in events.splitlines() if "vif31.0" in l or "vif32.0" in l], events

        before_a, before_b = metrics(x, vif_a), metrics(x, vif_b)
        server = subprocess.Popen(["ip", "netns", "exec", b.ns, "iperf3", "-s", "-1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        client = subprocess.Popen(["ip", "netns", "exec", a.ns, "iperf3", "-c", "10.53.0.32", "-u",
                                   "-b", str(RATE_BPS), "-l", "1400", "-t", str(SECONDS)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak_read_b = peak_write_a = 0.0
        peak_read_a = 0.0
        deadline = time.time() + SECONDS + 2
        while time.time() < deadline:
            mb, ma = metrics(x, vif_b), metrics(x, vif_a)
            peak_read_b = max(peak_read_b, mb["io_read_kbs"])
            peak_write_a = max(peak_write_a, ma["io_write_kbs"])
            peak_read_a = max(peak_read_a, ma["io_read_kbs"])
            time.sleep(0.5)
        out = client.communicate(timeout=20)[0]
        assert client.returncode == 0, out
        client = None
        time.sleep(5.5)  # one more sample after the traffic
        after_a, after_b = metrics(x, vif_a), metrics(x, vif_b)

        # UDP payload at 8 Mbit/s is 977 KiB/s; on the wire (Ethernet, IP and
        # UDP headers) about 3% more.
        want = RATE_BPS / 8 / 1024 * 1442 / 1400
        print("peak KiB/s: b reads %.1f, a writes %.1f (sent %.1f); a reads %.1f"
              % (peak_read_b, peak_write_a, want, peak_read_a))
        assert 0.8 * want <= peak_read_b <= 1.25 * want
        assert 0.8 * want <= peak_write_a <= 1.25 * want
        # The direction is the guest's: a sends, so what it reads is small.
        assert peak_read_a < 0.1 * want
        sent = RATE_BPS / 8 * SECONDS
        got_b = counter(after_b, "rx_bytes") - counter(before_b, "rx_bytes")
        sent_a = counter(after_a, "tx_bytes") - counter(before_a, "tx_bytes")
        print("bytes: b received %d, a sent %d (iperf3 payload %d)" % (got_b, sent_a, sent))
        assert 0.9 * sent <= got_b <= 1.2 * sent
        assert 0.9 * sent <= sent_a <= 1.2 * sent
        assert counter(after_b, "rx_packets") - counter(before_b, "rx_packets") >= 0.9 * sent / 1442
        for k in ("rx_dropped", "tx_dropped", "rx_errors", "tx_errors"):
            assert k in after_b["other_config"]
        assert after_b["last_updated"] != before_b["last_updated"]
        # Idle again: the rate falls back (other guests' broadcasts and IPv6
        # router solicitations still trickle in).
        wait_for(lambda: metrics(x, vif_b)["io_read_kbs"] < 1.0, timeout=12, what="idle rate")

        # Idle: at most one write per record per 5 s sample, and only of a
        # record whose counters or rates moved (the lab's switch still sends
        # a frame now and then, so a NIC is never entirely silent).
        def values(rec):
            return ({k: rec["other_config"].get(k) for k in KEYS}, rec["io_read_kbs"], rec["io_write_kbs"])
        classes = ["vif_metrics", "pif_metrics"]
        token = x.event_from(classes, "", 0.0)["token"]
        last = {r: values(v) for r, v in list(x.VIF_metrics.get_all_records().items())
                + list(x.PIF_metrics.get_all_records().items())}
        t0, events = time.time(), []
        while time.time() - t0 < 10.5:
            got = x.event_from(classes, token, 1.0)
            token = got["token"]
            events += got["events"]
        print("idle: %d metrics events in 10.5 s (%d records)" % (len(events), len(last)))
        assert len(events) <= 3 * len(last)
        for e in events:
            v = values(e["snapshot"])
            assert v != last.get(e["ref"]), ("written without a change", e)
            last[e["ref"]] = v
        # PIF_metrics of the NICs carry counters too.
        for dev in ("eth0", "eth1"):
            pm = x.PIF_metrics.get_record(x.PIF.get_metrics(pif_by_device(x, dev)))
            assert counter(pm, "rx_packets") > 0 and "tx_bytes" in pm["other_config"], (dev, pm)
            assert isinstance(pm["io_read_kbs"], float)

        # xe: param-get and param-list compute the rate; -list does not.
        uuid_b = x.VIF.get_uuid(vif_b)
        r = xe(host, "vif-param-get", "uuid=" + uuid_b, "param-name=io_read_kbs")
        assert r.returncode == 0, r.stderr
        assert float(r.stdout) == metrics(x, vif_b)["io_read_kbs"]
        r = xe(host, "vif-param-list", "uuid=" + uuid_b)
        assert "io_write_kbs ( RO): " in r.stdout and "<expensive field>" not in r.stdout, r.stdout
        r = xe(host, "vif-list", "uuid=" + uuid_b, "params=io_read_kbs")
        assert "<expensive field>" in r.stdout, r.stdout
        r = xe(host, "pif-param-get", "uuid=" + x.PIF.get_uuid(eth1), "param-name=io_write_kbs")
        assert r.returncode == 0 and float(r.stdout) >= 0.0, r.stderr
    finally:
        for p in (client, server, monitor):
            if p is not None:
                p.kill()
                p.wait(timeout=5)
        for vm in (a, b):
            vm.remove()
