"""benchlib: what the benchmark and soak scripts share: free loopback ports,
an intaked started on a temporary configuration, the C load clients, the
server's CPU time and memory read from /proc, and the "figure:" lines.

BENCH_QUICK=1 in the environment asks every bench script for its quick
settings (smaller sizes, fewer runs); each script says which it used."""
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
TICK = os.sysconf("SC_CLK_TCK")


def ports(n):
    """n distinct free loopback ports (held open together while chosen)."""
    ss = [socket.socket() for _ in range(n)]
    for s in ss:
        s.bind(("127.0.0.1", 0))
    out = [s.getsockname()[1] for s in ss]
    for s in ss:
        s.close()
    return out


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_intaked(prefix, **directives):
    """Starts build/intaked on a fresh temporary directory. Returns (process,
    tmp dir, raw TCP port, WebSocket port). Directives override the base
    configuration: log_level error (no "scanner off" warning in the
    output), no free-space reserve, everything under tmp.
    The daemon runs with RLIMIT_NOFILE raised to its hard limit."""
    tmp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    tcp, ws = ports(2)
    conf = {"listen_tcp": "127.0.0.1:%d" % tcp, "listen_ws": "127.0.0.1:%d" % ws,
            "min_free_space": "0", "log_level": "error", "pid_file": tmp + "/pid",
            "spool_dir": tmp + "/spool", "accept_dir": tmp + "/accepted",
            "quarantine_dir": tmp + "/q", "scanner_socket": tmp + "/s.sock",
            "signature_dir": ROOT + "/etc/signatures"}
    conf.update({k: str(v).replace("{tmp}", tmp) for k, v in directives.items()})
    path = os.path.join(tmp, "intake.conf")
    with open(path, "w") as f:
        f.write("".join("%s %s\n" % kv for kv in conf.items()))
    proc = subprocess.Popen([os.path.join(BUILD, "intaked"), "-c", path],
                            preexec_fn=_raise_nofile)
    return proc, tmp, tcp, ws


class Daemon:
    """An intaked for one benchmark: started on a temporary configuration,
    ready when its workers exist, it accepts, and (builtin) the scanner is
    up; stopped and its directory removed by stop()."""

    def __init__(self, prefix, **directives):
        self.n_workers = directives.get("workers", "auto")
        self.scanner_on = directives.get("scanner", "builtin") == "builtin"
        self.proc, self.tmp, self.tcp, self.ws = start_intaked(prefix, **directives)
        self.accept_dir = os.path.join(self.tmp, "accepted")
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self):
        n = os.cpu_count() if self.n_workers == "auto" else int(self.n_workers)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("bench: intaked exited with %s" % self.proc.returncode)
            try:
                socket.create_connection(("127.0.0.1", self.tcp), timeout=1).close()
                h = self.health()
                if len(self.workers()) >= n and h["workers"] >= n and \
                        (not self.scanner_on or h["scanner"] == "up"):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("bench: intaked did not become ready in 30 s")

    def _get(self, path):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.ws, path), timeout=10) as r:
            return r.read().decode()

    def health(self):
        return json.loads(self._get("/healthz"))

    def connections(self):
        """Open client connections by transport, from /metrics (this request
        itself counts as one "ws" connection)."""
        out = {}
        for line in self._get("/metrics").splitlines():
            if line.startswith("intake_connections{"):
                t = line.split('"')[1]
                out[t] = int(float(line.split()[-1]))
        return out

    def workers(self):
        return [p for p in children(self.proc.pid) if title(p).startswith("intaked: worker")]

    def clean(self):
        """Removes the accepted files (each run writes gigabytes)."""
        for n in os.listdir(self.accept_dir):
            os.unlink(os.path.join(self.accept_dir, n))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    out.append(int(d))
            except (OSError, IndexError):
                pass
    return out


def title(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[0].decode("utf-8", "replace")
    except OSError:
        return ""


def cpu_seconds(pid):
    """utime + stime of one process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid, key):
    """A kB field of /proc/PID/status (VmRSS, VmHWM, ...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def pss_kib(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def reset_hwm(pid):
    """Resets VmHWM to the current RSS (clear_refs 5)."""
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")


def tool(name):
    path = os.path.join(BUILD, name)
    if not os.access(path, os.X_OK):
        raise SystemExit("bench: %s missing (make bench builds it)" % path)
    return path


def tcpload(port, conns, uploads, size, *args, capture=True):
    """Runs build/tcpload (raw TCP uploads from C) to completion; returns its
    JSON summary."""
    cmd = [tool("tcpload"), "-c", str(conns), "-n", str(uploads), "-s", str(size)] + \
        [str(a) for a in args] + ["127.0.0.1", str(port)]
    out = subprocess.run(cmd, check=True, capture_output=capture, text=True).stdout
    return json.loads(out)


def make_file(path, size):
    """size bytes of random data (written 1 MiB at a time)."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n


def median(xs):
    return statistics.median(xs)


def machine_load():
    """The load average and the I/O pressure (PSI "some", last 10 s): on a
    shared machine they say how far to trust a figure."""
    out = "load average %s" % " ".join(open("/proc/loadavg").read().split()[:3])
    try:
        with open("/proc/pressure/io") as f:
            out += ", I/O pressure %s%%" % f.readline().split()[1].split("=")[1]
    except (OSError, IndexError):
        pass
    return out


def header(title_line, what):
    """The opening of a script's output: its title, what it measures, and
    how busy the machine is."""
    print("\n== %s%s" % (title_line, " (BENCH_QUICK: quick settings)" if QUICK else ""))
    for line in what.strip().splitlines():
        print("   " + line.strip())
    print("   machine: %s" % machine_load())


def figure(name, value, baseline_name, baseline, ratio, goal=""):
    """The summary line of a figure next to its baseline from the same run."""
    print("figure: %s: %s (baseline %s: %s, ratio %s)%s"
          % (name, value, baseline_name, baseline, ratio,
             ("  [issue 12 goal: %s]" % goal) if goal else ""))
