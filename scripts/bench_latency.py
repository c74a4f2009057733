#!/usr/bin/python3
"""bench_latency.py: issue 12's fourth figure, small-upload latency while a
big upload on the same worker finishes. intaked with 1 worker, scanner off.
build/tcpload (C) makes 4 KiB uploads back to back on one raw TCP
connection for the whole run, timing each from its first byte to its STATUS
with CLOCK_MONOTONIC. Each run:
 - the unloaded baseline: the small uploads that start in BASE seconds with
   nothing else going on (after a `sync` and half a second of warm-up);
 - then one BIG upload (the file is in the page cache; sent with sendfile
   from this script, which waits in the kernel and costs no Python time per
   byte); the loaded window holds the small uploads that start from LAST
   seconds before its last byte was sent until its STATUS arrived (the
   big file's sha256 check, fsync, rename and directory fsync).
Percentiles are nearest-rank over the window's uploads.
    scripts/bench_latency.py [BIG_MIB] [RUNS]   (defaults 1024, 3;
                                                 BENCH_QUICK=1: 256, 2)"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

BIG_MIB = int(sys.argv[1]) if len(sys.argv) > 1 else (256 if B.QUICK else 1024)
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else (2 if B.QUICK else 3)
BASE = 3.0
LAST = 2.0


def pct(sorted_ms, p):
    if not sorted_ms:
        return float("nan")
    k = max(1, min(len(sorted_ms), int(p * len(sorted_ms) + 0.999999)))
    return sorted_ms[k - 1]


def stats(lats, t_from, t_to):
    ms = sorted((e - s) / 1e6 for s, e in lats if t_from <= s / 1e9 <= t_to)
    return {"n": len(ms), "p50": pct(ms, .5), "p99": pct(ms, .99), "p999": pct(ms, .999),
            "max": ms[-1] if ms else float("nan")}


def line(s, buf):
    while b"\n" not in buf[0]:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("bench_latency: the server closed the big upload: %r" % buf[0])
        buf[0] += chunk
    out, buf[0] = buf[0].split(b"\n", 1)
    return out


def big_upload(port, path, size):
    """Returns (t_start, t_last_byte_sent, t_status), time.monotonic()."""
    s = socket.create_connection(("127.0.0.1", port))
    t0 = time.monotonic()
    s.sendall(b"%d big.bin\n" % size)
    with open(path, "rb") as f:
        off = 0
        while off < size:
            off += os.sendfile(s.fileno(), f.fileno(), off, size - off)
    t1 = time.monotonic()
    buf = [b""]
    ready = line(s, buf)
    status = line(s, buf)
    t2 = time.monotonic()
    s.close()
    if b'"READY"' not in ready or b'"STATUS"' not in status:
        raise SystemExit("bench_latency: big upload: %r %r" % (ready, status))
    return t0, t1, t2


def run_once(d, src, size, latfile):
    os.sync()
    cl = subprocess.Popen([B.tool("tcpload"), "-c", "1", "-n", "0", "-s", "4096", "-l", latfile,
                           "127.0.0.1", str(d.tcp)], stdout=subprocess.DEVNULL)
    tb0 = time.monotonic() + 0.5
    time.sleep(0.5 + BASE)
    tb1 = time.monotonic()
    t0, t1, t2 = big_upload(d.tcp, src, size)
    time.sleep(0.3)
    cl.send_signal(signal.SIGTERM)
    if cl.wait(60) != 0:
        raise SystemExit("bench_latency: tcpload failed")
    with open(latfile) as f:
        lats = [tuple(int(x) for x in ln.split()) for ln in f]
    d.clean()
    return (stats(lats, tb0, tb1), stats(lats, max(t0, t1 - LAST), t2),
            {"send": t1 - t0, "finish": t2 - t1})


def main():
    size = BIG_MIB << 20
    tmp = tempfile.mkdtemp(prefix="intake-bench-lat.", dir="/tmp")
    src = os.path.join(tmp, "big.bin")
    B.make_file(src, size)
    d = B.Daemon("intake-bench-lat-d.", workers=1, scanner="off", max_file_size="64G")
    try:
        B.header("figure 4: 4 KiB upload latency while a %d MiB upload on the same worker "
                 "finishes (%d runs)" % (BIG_MIB, RUNS),
                 """1 worker, scanner off; build/tcpload: one connection, 4 KiB uploads back to back;
                 unloaded: %.0f s alone; loaded: from %.0f s before the big upload's last byte
                 to its STATUS (its fsync)""" % (BASE, LAST))
        print("%-4s %-10s %6s %9s %9s %9s %9s %18s" % ("run", "window", "n", "p50 ms", "p99 ms",
                                                      "p99.9 ms", "max ms", "big: send/finish s"))
        base, load = [], []
        for run in range(RUNS):
            b, l, big = run_once(d, src, size, os.path.join(tmp, "lat"))
            base.append(b)
            load.append(l)
            for name, st, extra in (("unloaded", b, ""),
                                    ("loaded", l, "%.2f / %.2f" % (big["send"], big["finish"]))):
                print("#%-3d %-10s %6d %9.2f %9.2f %9.2f %9.2f %18s"
                      % (run + 1, name, st["n"], st["p50"], st["p99"], st["p999"], st["max"],
                         extra), flush=True)

        def med(rows, k):
            return B.median([r[k] for r in rows])
        B.figure("4 KiB upload p99.9 while a %d MiB upload finishes (1 worker)" % BIG_MIB,
                 "%.1f ms (p99 %.1f, max %.1f)" % (med(load, "p999"), med(load, "p99"),
                                                   max(r["max"] for r in load)),
                 "unloaded", "%.1f ms (p99 %.1f, max %.1f)"
                 % (med(base, "p999"), med(base, "p99"), max(r["max"] for r in base)),
                 "%.1f, medians of %d runs" % (med(load, "p999") / med(base, "p999"), RUNS),
                 "p99.9 < 50 ms")
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
