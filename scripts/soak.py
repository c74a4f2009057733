#!/usr/bin/python3
"""soak.py: many small scanned uploads through one intaked (raw TCP from 20
clients and WebSocket from 4), printing the workers' and the scanner's RSS
after each round: memory must stay flat (no leak in long-running
processes), and the access log must count every upload.
    scripts/soak.py [ROUNDS] [TCP_PER_CLIENT] [WS_PER_CLIENT]"""
import asyncio
import json
import os
import subprocess
import sys
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, start_intaked  # noqa: E402

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
TCP_N = int(sys.argv[2]) if len(sys.argv) > 2 else 200
WS_N = int(sys.argv[3]) if len(sys.argv) > 3 else 75



async def tcp_client(port, n):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(n):
        data = os.urandom(4096)
        w.write(b"%d soak.bin\n" % len(data) + data)
        await w.drain()
        await r.readline()
        assert json.loads(await r.readline())["verdict"] == "clean"
    w.close()


async def ws_client(port, n):
    for _ in range(n):
        async with websockets.connect("ws://127.0.0.1:%d/" % port) as c:
            await c.send(json.dumps({"type": "START", "filename": "soak.bin", "size": 4096}))
            await c.recv()
            await c.send(os.urandom(4096))
            await c.recv()
            await c.send('{"type":"DONE"}')
            assert json.loads(await c.recv())["verdict"] == "clean"


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def main():
    d, tmp, tcp, ws = start_intaked("intake-soak.", workers=2, scanner="builtin",
                                     access_log="{tmp}/access.log")
    try:
        time.sleep(1.5)
        kids = subprocess.run(["pgrep", "-P", str(d.pid)], capture_output=True,
                              text=True).stdout.split()
        kids = [int(k) for k in kids]
        total = 0
        print("%-8s %-10s %s" % ("round", "uploads", "RSS KiB per process (workers, scanner)"))
        for r in range(1, ROUNDS + 1):
            async def round_():
                await asyncio.gather(*[tcp_client(tcp, TCP_N) for _ in range(20)],
                                     *[ws_client(ws, WS_N) for _ in range(4)])
            asyncio.run(round_())
            total += 20 * TCP_N + 4 * WS_N
            print("%-8d %-10d %s" % (r, total, " ".join("%d" % rss(k) for k in kids)))
            for n in os.listdir(os.path.join(tmp, "accepted")):
                os.unlink(os.path.join(tmp, "accepted", n))
        with open(os.path.join(tmp, "access.log")) as f:
            lines = sum(1 for _ in f)
        print("access log lines: %d (uploads: %d)" % (lines, total))
        assert lines == total
    finally:
        d.terminate()
        d.wait(10)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
