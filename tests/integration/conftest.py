"""A six-NIC host in a network namespace running its own Open vSwitch and
xnetd, driven from this process (which joins the namespace) with the official
XenAPI SDK and with JSON-RPC. Everything is torn down even when tests fail."""

import ctypes
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request

import pytest
import XenAPI

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("XNET_BIN_DIR", os.path.join(ROOT, "target", "debug"))
CLONE_NEWNET = 0x40000000
PASSWORD = "it-root-pw"
VIEWER_PASSWORD = "it-viewer-pw"
HTTPS_PORT = 8443
HTTP_PORT = 8080


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=60, **kw)


def setns_fd(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        setns_fd(fd)
    finally:
        os.close(fd)


def wait_for(pred, timeout=20.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError("timed out waiting for " + what)


class Host:
    """The namespace, its OVS and its xnetd."""

    def __init__(self, tag="", mgmt_ip="10.99.0.2", listen="127.0.0.1", mac_byte=0x12):
        self.name = "xnt%d%s" % (os.getpid(), tag)
        self.mgmt_ip, self.listen, self.mac_byte = mgmt_ip, listen, mac_byte
        self.sw = self.name + "s"
        self.dir = tempfile.mkdtemp(prefix="xnet-it-")
        self.state = os.path.join(self.dir, "state")
        self.run = os.path.join(self.dir, "run")
        self.ovs = os.path.join(self.dir, "ovs")
        self.procs = []
        self.vms = []
        self.xnetd = None
        self.root_ns = os.open("/proc/self/ns/net", os.O_RDONLY)

    def ns(self, *args, check=True):
        return sh("ip", "netns", "exec", self.name, *args, check=check)

    def setup(self):
        os.makedirs(self.ovs)
        os.makedirs(self.run)
        sh("ip", "netns", "add", self.name)
        sh("ip", "netns", "add", self.sw)
        self.ns("ip", "link", "set", "lo", "up")
        for i in range(6):
            mac = "52:54:00:%02x:00:%02x" % (self.mac_byte, i)
            sh("ip", "link", "add", "eth%d" % i, "netns", self.name, "address", mac,
               "type", "veth", "peer", "name", "p%d" % i, "netns", self.sw)
            self.ns("ip", "link", "set", "eth%d" % i, "up")
            sh("ip", "netns", "exec", self.sw, "ip", "link", "set", "p%d" % i, "up")
            # The userspace datapath needs checksums computed by the sender.
            sh("ip", "netns", "exec", self.sw, "ethtool", "-K", "p%d" % i, "tx", "off", check=False)
            self.ns("ethtool", "-K", "eth%d" % i, "tx", "off", check=False)
        db = os.path.join(self.ovs, "conf.db")
        sh("ovsdb-tool", "create", db, "/usr/share/openvswitch/vswitch.ovsschema")
        env = dict(os.environ, OVS_RUNDIR=self.ovs, OVS_DBDIR=self.ovs, OVS_LOGDIR=self.ovs)
        sock = "unix:" + os.path.join(self.ovs, "db.sock")
        self.ovs_env = env
        self.ovs_argv = {
            "ovsdb-server": ["ovsdb-server", db, "--remote=p" + sock, "--unixctl=" + os.path.join(self.ovs, "db.ctl"),
                             "--no-chdir", "--log-file=" + os.path.join(self.ovs, "ovsdb.log")],
            "ovs-vswitchd": ["ovs-vswitchd", sock, "--unixctl=" + os.path.join(self.ovs, "vswitchd.ctl"),
                             "--no-chdir", "--log-file=" + os.path.join(self.ovs, "vswitchd.log")],
        }
        self.ovs_procs = {}
        self.start_ovs("ovsdb-server")
        sh("ovs-vsctl", "--db=" + sock, "--no-wait", "init")
        self.start_ovs("ovs-vswitchd")
        pwf = os.path.join(self.dir, "pw")
        with open(pwf, "w") as f:
            f.write(PASSWORD + "\n")
        vwf = os.path.join(self.dir, "vw")
        with open(vwf, "w") as f:
            f.write(VIEWER_PASSWORD + "\n")
        sh(os.path.join(BIN, "xnetd"), "user-add", "viewer", "--role", "read-only",
           "--password-file", vwf, "--state-dir", self.state)
        self.start()

    def start_ovs(self, which):
        ctl = {"ovsdb-server": "db.sock", "ovs-vswitchd": "vswitchd.ctl"}[which]
        self.ovs_procs[which] = self.spawn(self.ovs_argv[which], self.ovs_env)
        wait_for(lambda: os.path.exists(os.path.join(self.ovs, ctl)), what=which)

    def kill_ovs(self, which):
        """kill -9, as a crash would; the socket file stays behind."""
        p = self.ovs_procs.pop(which)
        p.kill()
        p.wait(timeout=10)
        self.procs.remove(p)
        ctl = {"ovsdb-server": "db.sock", "ovs-vswitchd": "vswitchd.ctl"}[which]
        try:
            os.unlink(os.path.join(self.ovs, ctl))
        except FileNotFoundError:
            pass

    def appctl(self, *args):
        return self.ns("ovs-appctl", "-t", os.path.join(self.ovs, "vswitchd.ctl"), *args).stdout

    def spawn(self, argv, env=None):
        p = subprocess.Popen(["ip", "netns", "exec", self.name] + argv, env=env,
                             stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, os.path.basename(argv[0]) + ".err"), "a"))
        self.procs.append(p)
        return p

    def xnetd_args(self):
        return [os.path.join(BIN, "xnetd"), "--state-dir", self.state, "--run-dir", self.run,
                "--listen", "%s:%d" % (self.listen, HTTPS_PORT), "--http-listen", "127.0.0.1:%d" % HTTP_PORT,
                "--ovsdb", "unix:" + os.path.join(self.ovs, "db.sock"), "--datapath", "netdev",
                "--hostname", "it-host" + self.name[len("xnt%d" % os.getpid()):], "--resolv-conf", os.path.join(self.dir, "resolv.conf"),
                "--root-password-file", os.path.join(self.dir, "pw"),
                "--mgmt-device", "eth0", "--mgmt-mode", "static", "--mgmt-ip", self.mgmt_ip,
                "--mgmt-netmask", "255.255.255.0", "--mgmt-dns", "10.99.0.53", "--mgmt-domain", "it.example"]

    def start(self):
        self.xnetd = self.spawn(self.xnetd_args())
        wait_for(self.answers, timeout=30, what="xnetd")

    def answers(self):
        # Through the unix socket: it works from any network namespace.
        import socket
        path = os.path.join(self.run, "xapi.sock")
        if not os.path.exists(path):
            return False
        body = json.dumps({"method": "system.listMethods", "params": [], "id": 1}).encode()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(path)
            s.sendall(b"POST /jsonrpc HTTP/1.1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            return s.recv(12).startswith(b"HTTP/1.1 200")
        finally:
            s.close()

    def stop(self, sig=signal.SIGTERM):
        if self.xnetd is None:
            return
        # `ip netns exec` execs the program, so the pid is xnetd's own.
        try:
            os.kill(self.xnetd.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.xnetd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.xnetd.pid, signal.SIGKILL)
            self.xnetd.wait(timeout=10)
        self.procs.remove(self.xnetd)
        self.xnetd = None

    def restart(self, sig=signal.SIGTERM):
        self.stop(sig)
        self.start()

    def switch_spawn(self, argv):
        p = subprocess.Popen(["ip", "netns", "exec", self.sw] + argv, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(self.dir, "switch.err"), "a"))
        self.procs.append(p)
        return p

    def vsctl(self, *args):
        return self.ns("ovs-vsctl", "--db=unix:" + os.path.join(self.ovs, "db.sock"), *args).stdout

    def teardown(self):
        for p in reversed(self.procs):
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=5)
            except Exception:
                try:
                    p.kill()
                    p.wait(timeout=5)
                except Exception:
                    pass
        setns_fd(self.root_ns)
        for vm in self.vms:
            vm.remove()
        sh("ip", "netns", "del", self.name, check=False)
        sh("ip", "netns", "del", self.sw, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def host():
    h = Host()
    try:
        h.setup()
        setns("/run/netns/" + h.name)
        yield h
    finally:
        h.teardown()


def login(user="root", password=PASSWORD):
    s = XenAPI.Session("https://127.0.0.1:%d" % HTTPS_PORT, ignore_ssl=True)
    s.xenapi.login_with_password(user, password, "2.23", "xnet-it")
    return s


@pytest.fixture()
def session(host):
    s = login()
    yield s
    try:
        s.xenapi.session.logout()
    except Exception:
        pass


def jsonrpc(payload, port=HTTP_PORT):
    req = urllib.request.Request("http://127.0.0.1:%d/jsonrpc" % port, method="POST",
                                 data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def https_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Vm:
    """A VM as a namespace whose backend veth end is vif<domid>.<devid> in the host."""

    def __init__(self, host, domid, devid=0, backend=None):
        self.host, self.domid = host, domid
        self.ns = "%sv%d" % (host.name, domid)
        self.backend = backend or "vif%d.%d" % (domid, devid)
        sh("ip", "netns", "add", self.ns)
        host.vms.append(self)
        sh("ip", "link", "add", self.backend, "netns", host.name, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", "eth0", "up")
        sh("ip", "netns", "exec", self.ns, "ethtool", "-K", "eth0", "tx", "off", check=False)
        host.ns("ip", "link", "set", self.backend, "up")

    def sh(self, *args, check=True):
        return sh("ip", "netns", "exec", self.ns, *args, check=check)

    def mac(self):
        return self.sh("cat", "/sys/class/net/eth0/address").stdout.strip()

    def ping(self, ip, count=2):
        return self.sh("ping", "-c", str(count), "-W", "1", "-i", "0.2", ip, check=False).returncode == 0

    def remove(self):
        sh("ip", "netns", "del", self.ns, check=False)
