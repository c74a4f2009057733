#!/usr/bin/python3
"""bench_ws.py: issue 12's sixth figure. One large upload over WebSocket
(1 MiB binary messages, pipelined with up to 8 unacknowledged) next to the
same file over raw TCP, through the same intaked (1 worker, scanner off) in
the same run, both from C clients: build/intake (sendfile) and
build/wsbench (masks 16 bytes at a time). Each run uploads over both, in
turn first (raw TCP first in odd runs, WebSocket first in even ones), each
upload after `sync` and with the file before it removed, so both meet the
same page cache: on a VM, a gigabyte of pages freed seconds ago fills
markedly faster than one the host has taken back, and a fixed order gave
the second upload the worse pages in every run. Each run's ratio is
printed. Python's websockets is not used
here: Debian's build masks in pure Python at ~80 MiB/s, which would measure
the client.
    scripts/bench_ws.py [SIZE_MIB] [RUNS]   (defaults 1024, 5;
                                             BENCH_QUICK=1: 256, 3)"""
import json
import os
import subprocess
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

SIZE = int(sys.argv[1] if len(sys.argv) > 1 else (256 if B.QUICK else 1024)) << 20
RUNS = int(sys.argv[2] if len(sys.argv) > 2 else (3 if B.QUICK else 5))


def tcp_upload(port, path):
    subprocess.run([os.path.join(B.BUILD, "intake"), "-q", "127.0.0.1:%d" % port, path],
                   check=True)


def ws_upload(port, path):
    out = subprocess.run([B.tool("wsbench"), "127.0.0.1", str(port), path],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    tmp = tempfile.mkdtemp(prefix="intake-bench-ws.", dir=os.environ.get("TMPDIR", "/var/tmp"))
    src = os.path.join(tmp, "src.bin")
    B.make_file(src, SIZE)
    d = B.Daemon("intake-bench-ws.", workers=1, scanner="off", max_file_size="64G")
    mib = SIZE >> 20
    try:
        B.header("figure 6: a %d MiB upload over WebSocket next to raw TCP (%d runs)" % (mib, RUNS),
                 """1 worker, scanner off; build/wsbench (1 MiB binary messages, 8 in flight)
                 and build/intake (sendfile), both until STATUS; sync before each""")
        print("%-5s %14s %14s %8s" % ("run", "raw TCP MiB/s", "WS MiB/s", "ws/tcp"))
        ratios, tcps, wss = [], [], []
        for i in range(RUNS):
            t = {}
            for how in (("tcp", "ws") if i % 2 == 0 else ("ws", "tcp")):
                os.sync()
                t0 = time.monotonic()
                if how == "tcp":
                    tcp_upload(d.tcp, src)
                else:
                    st = ws_upload(d.ws, src)
                    assert st["type"] == "STATUS", st
                t[how] = time.monotonic() - t0
                d.clean()
            t_tcp, t_ws = t["tcp"], t["ws"]
            tcps.append(mib / t_tcp)
            wss.append(mib / t_ws)
            ratios.append(t_tcp / t_ws)
            print("#%-4d %14.0f %14.0f %8.2f" % (i + 1, tcps[-1], wss[-1], ratios[-1]), flush=True)
        B.figure("%d MiB over WebSocket (1 MiB binary messages, 8 in flight)" % mib,
                 "%.0f MiB/s" % B.median(wss), "raw TCP, same daemon",
                 "%.0f MiB/s" % B.median(tcps),
                 "%.2f median, %.2f-%.2f, %d of %d runs >= 0.95"
                 % (B.median(ratios), min(ratios), max(ratios),
                    sum(r >= 0.95 for r in ratios), RUNS), ">= 0.95 in every run of 5")
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
