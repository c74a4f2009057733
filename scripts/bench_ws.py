#!/usr/bin/python3
"""bench_ws.py: one large upload over WebSocket (1 MiB binary messages,
pipelined with up to 8 unacknowledged) next to the same file over raw TCP,
through the same intaked in the same run, both from C clients: build/intake
(sendfile) and build/wsbench (masks a word at a time). Python's websockets
is not used here: Debian's build masks in pure Python at ~80 MiB/s, which
would measure the client.
    scripts/bench_ws.py SIZE_MIB RUNS"""
import json
import os
import subprocess
import sys
import tempfile
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, start_intaked  # noqa: E402

SIZE = int(sys.argv[1] if len(sys.argv) > 1 else 1024) << 20
RUNS = int(sys.argv[2] if len(sys.argv) > 2 else 3)
CHUNK = 1 << 20



def tcp_upload(port, path):
    subprocess.run([os.path.join(ROOT, "build", "intake"), "-q", "127.0.0.1:%d" % port, path],
                   check=True)


def ws_upload(port, path):
    out = subprocess.run([os.path.join(ROOT, "build", "wsbench"), "127.0.0.1", str(port), path],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    tmp = tempfile.mkdtemp(prefix="intake-bench-ws.", dir=os.environ.get("TMPDIR", "/var/tmp"))
    src = os.path.join(tmp, "src.bin")
    with open(src, "wb") as f:
        for _ in range(SIZE // CHUNK):
            f.write(os.urandom(CHUNK))
    d, dtmp, tcp, wsp = start_intaked("intake-bench-ws.", workers=1, scanner="off",
                                      max_file_size="64G")
    try:
        time.sleep(0.5)
        print("\n%-36s %10s %10s" % ("run (%d MiB)" % (SIZE >> 20), "MiB/s", "ws/tcp"))
        for i in range(RUNS):
            os.sync()
            t0 = time.monotonic()
            tcp_upload(tcp, src)
            t_tcp = time.monotonic() - t0
            os.sync()
            t0 = time.monotonic()
            st = ws_upload(wsp, src)
            t_ws = time.monotonic() - t0
            assert st["type"] == "STATUS", st
            for n in os.listdir(os.path.join(dtmp, "accepted")):
                os.unlink(os.path.join(dtmp, "accepted", n))
            mib = SIZE >> 20
            print("%-36s %10.0f" % ("raw TCP (intake CLI, sendfile) #%d" % (i + 1), mib / t_tcp))
            print("%-36s %10.0f %9.0f%%" % ("WebSocket (wsbench, 1 MiB x 8) #%d" % (i + 1),
                                           mib / t_ws, 100 * t_tcp / t_ws))
    finally:
        d.terminate()
        d.wait()
        subprocess.run(["rm", "-rf", tmp, dtmp])


if __name__ == "__main__":
    main()
