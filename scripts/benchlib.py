"""benchlib: what the benchmark and soak scripts share: free loopback ports
and an intaked started on a temporary configuration."""
import os
import socket
import subprocess
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def ports(n):
    """n distinct free loopback ports (held open together while chosen)."""
    ss = [socket.socket() for _ in range(n)]
    for s in ss:
        s.bind(("127.0.0.1", 0))
    out = [s.getsockname()[1] for s in ss]
    for s in ss:
        s.close()
    return out


def start_intaked(prefix, **directives):
    """Starts build/intaked on a fresh temporary directory. Returns (process,
    tmp dir, raw TCP port, WebSocket port). Directives override the base
    configuration: quiet log, no free-space reserve, everything under tmp."""
    tmp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    tcp, ws = ports(2)
    conf = {"listen_tcp": "127.0.0.1:%d" % tcp, "listen_ws": "127.0.0.1:%d" % ws,
            "min_free_space": "0", "log_level": "warn", "pid_file": tmp + "/pid",
            "spool_dir": tmp + "/spool", "accept_dir": tmp + "/accepted",
            "quarantine_dir": tmp + "/q", "scanner_socket": tmp + "/s.sock",
            "signature_dir": ROOT + "/etc/signatures"}
    conf.update({k: str(v).replace("{tmp}", tmp) for k, v in directives.items()})
    path = os.path.join(tmp, "intake.conf")
    with open(path, "w") as f:
        f.write("".join("%s %s\n" % kv for kv in conf.items()))
    proc = subprocess.Popen([os.path.join(ROOT, "build", "intaked"), "-c", path])
    return proc, tmp, tcp, ws
