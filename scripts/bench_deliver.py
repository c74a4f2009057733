#!/usr/bin/python3
"""bench_deliver: what delivery costs, each figure next to its baseline
measured in the same run: small uploads per second (raw TCP, CONC clients
at once, scanner off) without an accept hook and with a no-op one
(/bin/true); then without publish and with publish acknowledged by a 3-node
JetStream cluster (Debian's nats-server on loopback, a stream with 3
replicas).
  scripts/bench_deliver.py [UPLOADS] [CONC]   (defaults: 400 uploads, 8 at once)"""
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from benchlib import start_intaked  # noqa: E402
from natslib import Cluster  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 400
CONC = int(sys.argv[2]) if len(sys.argv) > 2 else 8
DATA = os.urandom(4096)


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("intaked did not start")


def one(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(json.dumps({"type": "START", "filename": "b.bin", "size": len(DATA)}).encode()
              + b"\n" + DATA)
    buf = b""
    while buf.count(b"\n") < 2:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    s.close()
    status = json.loads(buf.split(b"\n")[1])
    if status.get("verdict") != "unscanned":
        raise SystemExit("bench: unexpected STATUS %s" % status)


def rate(port):
    left = [N]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            one(port)
    for _ in range(20):  # warm up
        one(port)
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(CONC)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return N / (time.monotonic() - t0)


def measure(prefix, **directives):
    proc, tmp, tcp, _ = start_intaked(prefix, workers=2, scanner="off", **directives)
    try:
        wait_port(tcp)
        return rate(tcp)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    print("bench_deliver: %d uploads of 4 KiB, %d at once, raw TCP, scanner off, 2 workers"
          % (N, CONC))
    base = measure("intake-bench-nohook-")
    hook = measure("intake-bench-hook-", accept_hook="/bin/true")
    print("  no accept hook          %7.0f uploads/s" % base)
    print("  no-op accept hook       %7.0f uploads/s  (%.0f%% of the baseline)"
          % (hook, 100 * hook / base))
    ntmp = tempfile.mkdtemp(prefix="intake-bench-nats-")
    cluster = Cluster(ntmp).start()
    try:
        cluster.add_stream("BENCH", "bench.uploads")
        base = measure("intake-bench-nopub-")
        pub = measure("intake-bench-pub-", publish="%s bench.uploads" % cluster.urls)
        print("  no publish              %7.0f uploads/s" % base)
        print("  publish, 3-node JetStream (R3) acknowledged before STATUS %7.0f uploads/s  "
              "(%.0f%% of the baseline)" % (pub, 100 * pub / base))
    finally:
        cluster.stop()
        shutil.rmtree(ntmp, ignore_errors=True)


if __name__ == "__main__":
    main()
