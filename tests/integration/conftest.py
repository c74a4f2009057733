"""Integration test harness: starts the real build/intaked with a temporary
configuration on free loopback ports, talks to it as clients do, and stops
every process it started (the master runs in its own session so the whole
process group can be killed whatever happens)."""
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# INTAKED=build/asan/intaked runs the suite against the sanitizer build.
INTAKED = os.path.abspath(os.environ.get("INTAKED", os.path.join(ROOT, "build", "intaked")))
INTAKE = os.path.join(ROOT, "build", "intake")


# Ports come from a range below the kernel's ephemeral ports (where every
# client connection's own port comes from; 32768 and up by default), so no
# connection can take a port between its choice here and the daemon's bind.
# Runs at once are given ranges that do not overlap: INTAKE_TEST_PORTS=LOW-HIGH
# (make test gives its two suites 20000-25999 and 26000-31999; a run by hand
# takes 12000-19999).
_PORT_LO, _PORT_HI = (int(x) for x in os.environ.get("INTAKE_TEST_PORTS", "12000-19999").split("-"))
with open("/proc/sys/net/ipv4/ip_local_port_range") as _f:
    _EPH_LO, _EPH_HI = (int(x) for x in _f.read().split())
if _PORT_LO <= _EPH_HI and _EPH_LO <= _PORT_HI:
    raise RuntimeError("test ports %d-%d overlap the kernel's ephemeral ports %d-%d "
                       "(net.ipv4.ip_local_port_range): set INTAKE_TEST_PORTS=LOW-HIGH outside it"
                       % (_PORT_LO, _PORT_HI, _EPH_LO, _EPH_HI))
_port_next = [_PORT_LO + (os.getpid() * 7919) % (_PORT_HI - _PORT_LO + 1)]


def free_ports(n):
    """n distinct loopback ports of this run's range that are free now (each
    is bound while the others are chosen); the next call goes on from there,
    so a port is not handed out again until the range has come round."""
    socks, ports = [], []
    try:
        for _ in range(_PORT_HI - _PORT_LO + 1):
            if len(ports) == n:
                return ports
            p = _port_next[0]
            _port_next[0] = p + 1 if p < _PORT_HI else _PORT_LO
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(p)
        if len(ports) == n:
            return ports
        raise RuntimeError("no %d free ports in %d-%d" % (n, _PORT_LO, _PORT_HI))
    finally:
        for s in socks:
            s.close()


def free_port():
    return free_ports(1)[0]


def wait_for(pred, timeout=5.0, step=0.02, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)



def frozen_scanner(daemon_factory, scanning=None, **directives):
    """One worker, shutdown_timeout 1s, the builtin scanner with scan_timeout
    120s, stopped (SIGSTOP): scans wait on it. Returns (daemon, scanner pid);
    the caller SIGCONTs it when done."""
    import signal
    d = daemon_factory(start=False, workers=1, shutdown_timeout="1s", log_level="debug",
                       **directives)
    d.scanning(scan_timeout="120s", **(scanning or {}))
    d.start()
    scanner = d.scanner()
    os.kill(scanner, signal.SIGSTOP)
    return d, scanner

def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(x) for x in out.split()]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive for our purposes.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def title(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[0].decode("utf-8", "replace")
    except OSError:
        return ""


SIGNATURES = os.path.join(ROOT, "etc", "signatures")
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@contextlib.contextmanager
def small_tmpfs(path, size):
    """A tmpfs of size ("3m", "64k") mounted at path, a new directory, for
    tests of a full disk or another filesystem; the test is skipped where a
    tmpfs cannot be mounted (not root). Unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount tmpfs here: " + r.stderr.strip())
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)])


def short_dir():
    """A short directory for UNIX sockets (sun_path holds 107 bytes)."""
    import tempfile
    return tempfile.mkdtemp(prefix="intake-", dir="/tmp")


class Daemon:
    def __init__(self, tmp, **directives):
        self.tmp = str(tmp)
        self.tcp_port, self.ws_port = free_ports(2)
        self.dir = {
            "workers": "2",
            "listen_ws": "127.0.0.1:%d" % self.ws_port,
            "listen_tcp": "127.0.0.1:%d" % self.tcp_port,
            "pid_file": os.path.join(self.tmp, "run", "intaked.pid"),
            "spool_dir": os.path.join(self.tmp, "spool"),
            "accept_dir": os.path.join(self.tmp, "accepted"),
            "quarantine_dir": os.path.join(self.tmp, "quarantine"),
            "scanner": "off",
            "min_free_space": "0",
            "log_level": "info",
        }
        self.conf = os.path.join(self.tmp, "intake.conf")
        self.reconfigure(**directives)
        self.log_path = os.path.join(self.tmp, "error.log")
        self.proc = None
        self.nofile = None  # RLIMIT_NOFILE for the daemon, to test running out of fds

    @property
    def accept_dir(self):
        return self.dir["accept_dir"]

    @property
    def spool_dir(self):
        return self.dir["spool_dir"]

    def scanning(self, **directives):
        """Switch this (not yet started) daemon to the builtin scanner."""
        self.sockdir = short_dir()
        self.dir.update({"scanner": "builtin", "signature_dir": SIGNATURES,
                         "scanner_socket": os.path.join(self.sockdir, "scand.sock")})
        return self.reconfigure(**directives)

    def reconfigure(self, extra="", **directives):
        """Rewrites the configuration file with these directives changed
        (and the lines in extra added); a HUP applies it."""
        self.dir.update({k: str(v) for k, v in directives.items()})
        with open(self.conf, "w") as f:
            for k, v in self.dir.items():
                f.write("%s %s\n" % (k, v))
            f.write(extra)
        return self

    def reload(self, extra="", **directives):
        """reconfigure, then HUP."""
        self.reconfigure(extra, **directives)
        self.signal(signal.SIGHUP)

    def health(self):
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % self.ws_port, timeout=5) as r:
            return json.loads(r.read())

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        env = dict(os.environ)
        # Sanitizer reports go to files that stop() turns into a failure.
        env["ASAN_OPTIONS"] = "detect_leaks=0:log_path=%s/asan" % self.tmp
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:log_path=%s/ubsan" % self.tmp
        def limits():
            if self.nofile:
                import resource
                resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        self.proc = subprocess.Popen([INTAKED, "-c", self.conf], stdout=self.log,
                                     stderr=self.log, cwd=self.tmp, start_new_session=True,
                                     env=env, preexec_fn=limits)
        if wait:
            n = int(self.dir["workers"]) if self.dir["workers"] != "auto" else os.cpu_count()
            wait_for(lambda: len(self.workers()) >= n and self._accepting(), 10,
                     what="intaked to start")
            if self.dir["scanner"] == "builtin":
                wait_for(lambda: self.health()["scanner"] == "up", 15, what="the scanner")
        return self

    def _accepting(self):
        try:
            socket.create_connection(("127.0.0.1", self.tcp_port), timeout=1).close()
            return True
        except OSError:
            return False

    @property
    def pid(self):
        return self.proc.pid

    def workers(self):
        return [p for p in children(self.pid) if alive(p) and title(p).startswith("intaked: worker")]

    def scanner(self):
        found = [p for p in children(self.pid) if alive(p) and title(p) == "intake-scand"]
        return found[0] if found else None

    def signal(self, sig):
        os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        return self.proc.wait(timeout=timeout)

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def accepted(self):
        return sorted(os.listdir(self.accept_dir)) if os.path.isdir(self.accept_dir) else []

    def spooled(self):
        """Upload data in the spool: everything but the records (<id>.state)
        that keep an upload resumable and its verdict askable."""
        return [f for f in self._spool() if not f.endswith(".state")]

    def records(self):
        return [f for f in self._spool() if f.endswith(".state")]

    def _spool(self):
        """The spool's entries but the builtin scanner's temp directory."""
        if not os.path.isdir(self.spool_dir):
            return []
        return sorted(n for n in os.listdir(self.spool_dir) if n != "intake-scand")

    def stop(self):
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=6)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            self.log.close()
            self.proc = None
        reports = [f for f in os.listdir(self.tmp) if f.startswith(("asan.", "ubsan."))]
        if getattr(self, "sockdir", None):
            subprocess.run(["rm", "-rf", self.sockdir])
            self.sockdir = None
        if reports:
            with open(os.path.join(self.tmp, reports[0])) as f:
                raise AssertionError("sanitizer report from intaked:\n" + f.read()[:4000])


@pytest.fixture
def daemon_factory(tmp_path):
    made = []

    def make(start=True, scan=False, **directives):
        d = Daemon(tmp_path, **directives)
        made.append(d)
        if scan:
            d.scanning()
        return d.start() if start else d

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory()


class Client:
    """A raw TCP upload client speaking SPEC's protocol line by line."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def start(self, name, size, sha256=None, **extra):
        msg = {"type": "START", "filename": name, "size": size}
        if sha256:
            msg["sha256"] = sha256
        msg.update(extra)
        self.send(json.dumps(msg).encode() + b"\n")

    def line(self):
        """The next message as a dict, or None when the server closed."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def closed(self, timeout=5):
        """True if the server closes the connection (EOF or reset) in time."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def upload(self, name, data, sha=False):
        self.start(name, len(data), hashlib.sha256(data).hexdigest() if sha else None)
        self.send(data)
        ready = self.line()
        status = self.line()
        return ready, status

    def close(self):
        self.sock.close()


@pytest.fixture
def client_factory():
    made = []

    def make(port, timeout=10):
        c = Client(port, timeout)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def upload_worker_pids(log_text):
    """Pids of the processes that logged a stored upload."""
    return set(int(m) for m in re.findall(r"\] (\d+): (?:worker \d+: )?upload [0-9a-f]{32} .* stored as ", log_text))


NGINX = "/usr/sbin/nginx"


def start_nginx(tmp_path, http_conf, stream_conf="", wait_ports=(), access_log_off=False):
    """Debian's nginx in the foreground on a configuration made of an http
    block and, if given, a stream block (the shipped samples rewritten for
    the test's ports), with its pid, error log and temp files under tmp_path.
    Returns the process once every port in wait_ports accepts; the caller
    stops it."""
    conf = os.path.join(str(tmp_path), "nginx.conf")
    with open(conf, "w") as f:
        f.write(("load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
                 if stream_conf else "") +
                "pid %s/nginx.pid;\nerror_log %s/nginx-error.log;\nuser root;\nevents {}\n"
                "%s\nhttp {\n%s client_body_temp_path %s;\n proxy_temp_path %s;\n%s\n}\n"
                % (tmp_path, tmp_path, stream_conf, " access_log off;\n" if access_log_off else "",
                   tmp_path, tmp_path, http_conf))
    nginx = subprocess.Popen([NGINX, "-c", conf, "-g", "daemon off;"], stderr=subprocess.PIPE)

    def up():
        try:
            for port in wait_ports:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    try:
        wait_for(lambda: up() or nginx.poll() is not None, 10, what="nginx")
        assert nginx.poll() is None, nginx.stderr.read().decode()
    except BaseException:
        nginx.kill()
        nginx.wait()
        raise
    return nginx
