#!/usr/bin/python3
"""bench_ws.py: issue 12's sixth figure. One large upload over WebSocket
(1 MiB binary messages, pipelined with up to 8 unacknowledged) next to the
same file over raw TCP, through the same intaked (1 worker, scanner off) in
the same run, both from C clients: build/intake (sendfile) and
build/wsbench.

The figure measures the daemon, so both clients cost the two shared cores
as little as they can: `wsbench -z` sends every frame with the key 0 and
its payload by sendfile, as build/intake does, and intaked unmasks it all
the same (an XOR pass over every byte; nothing in the daemon looks at the
key's value). A client that masks with random keys, as a browser does,
spends ~0.3 s of CPU per GiB reading, masking and copying on the cores the
daemon needs (on a real network that is the browser's machine): that
upload is measured once per run too and shown beside, not as the figure.

Each run uploads in ABBA order (raw TCP, WebSocket, WebSocket, raw TCP; the
next run the other way round) and compares the sums, so drift within a
run cancels; each upload after `sync` and with the file before it removed,
so all meet the same page cache: on a VM, a gigabyte of pages freed seconds
ago fills markedly faster than one the host has taken back. Python's
websockets is not used here: Debian's build masks in pure Python at
~80 MiB/s, which would measure the client.
    scripts/bench_ws.py [SIZE_MIB] [RUNS]   (defaults 1024, 5;
                                             BENCH_QUICK=1: 256, 3)"""
import hashlib
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


def ws_upload(port, path, masking, sha256):
    """The daemon must have received the file's very bytes, however sent."""
    cmd = [B.tool("wsbench")] + ([] if masking else ["-z"]) + ["127.0.0.1", str(port), path]
    st = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    assert st["type"] == "STATUS" and st["sha256"] == sha256, st


def main():
    tmp = tempfile.mkdtemp(prefix="intake-bench-ws.", dir=os.environ.get("TMPDIR", "/var/tmp"))
    src = os.path.join(tmp, "src.bin")
    B.make_file(src, SIZE)
    with open(src, "rb") as f:
        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
    d = B.Daemon("intake-bench-ws.", workers=1, scanner="off", max_file_size="64G")
    mib = SIZE >> 20

    def timed(how):
        os.sync()
        t0 = time.monotonic()
        if how == "tcp":
            tcp_upload(d.tcp, src)
        else:
            ws_upload(d.ws, src, how == "masking", sha256)
        t = time.monotonic() - t0
        d.clean()
        return t

    try:
        B.header("figure 6: a %d MiB upload over WebSocket next to raw TCP (%d runs)" % (mib, RUNS),
                 """1 worker, scanner off; build/wsbench -z (1 MiB binary messages, 8 in flight,
                 key 0, sendfile) and build/intake (sendfile), both until STATUS, ABBA
                 order per run; sync before each; then wsbench masking with random keys""")
        print("%-5s %14s %14s %8s %18s" % ("run", "raw TCP MiB/s", "WS MiB/s", "ws/tcp",
                                            "WS masking  ratio"))
        ratios, tcps, wss, masks, mratios = [], [], [], [], []
        for i in range(RUNS):
            t = {"tcp": 0.0, "ws": 0.0}
            for how in (("tcp", "ws", "ws", "tcp") if i % 2 == 0 else ("ws", "tcp", "tcp", "ws")):
                t[how] += timed(how)
            t_mask = timed("masking")
            tcps.append(2 * mib / t["tcp"])
            wss.append(2 * mib / t["ws"])
            ratios.append(t["tcp"] / t["ws"])
            masks.append(mib / t_mask)
            mratios.append(masks[-1] / tcps[-1])
            print("#%-4d %14.0f %14.0f %8.2f %12.0f %5.2f"
                  % (i + 1, tcps[-1], wss[-1], ratios[-1], masks[-1], mratios[-1]), flush=True)
        B.figure("%d MiB over WebSocket (1 MiB binary messages, 8 in flight)" % mib,
                 "%.0f MiB/s" % B.median(wss), "raw TCP, same daemon",
                 "%.0f MiB/s" % B.median(tcps),
                 "%.2f median, %.2f-%.2f, %d of %d runs >= 0.95"
                 % (B.median(ratios), min(ratios), max(ratios),
                    sum(r >= 0.95 for r in ratios), RUNS), ">= 0.95 in every run of 5")
        print("       the same with the client masking on the same cores: %.0f MiB/s, "
              "%.2f of raw TCP (%.2f-%.2f)"
              % (B.median(masks), B.median(mratios), min(mratios), max(mratios)))
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
