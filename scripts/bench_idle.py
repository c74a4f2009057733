#!/usr/bin/python3
"""bench_idle.py: issue 12's second figure, worker memory per idle
connection. build/idleconns (C, epoll) opens CONNS connections to an intaked
with 2 workers (scanner off, max_connections and RLIMIT_NOFILE high enough,
header_timeout 1h so idle raw TCP connections stay) and holds them idle:
 - WebSocket, handshake done, nothing else (the figure);
 - WebSocket, after one 4 KiB upload finished on each (STATUS received);
 - raw TCP, connected, nothing sent (the baseline);
 - raw TCP, after one 4 KiB upload finished on each (baseline of the second).
Memory = the workers' summed RSS (and PSS, /proc/PID/smaps_rollup) with the
connections open (the workers' connection gauge in /metrics says all are
accepted) minus the same before, divided by CONNS. A fresh daemon for each
mode and run, so one mode's freed heap does not hide the next one's.
    scripts/bench_idle.py [CONNS] [RUNS]   (defaults 10000, 2;
                                            BENCH_QUICK=1: 2000, 1)"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

CONNS = int(sys.argv[1]) if len(sys.argv) > 1 else (2000 if B.QUICK else 10000)
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else (1 if B.QUICK else 2)
UPLOAD = 4096
MODES = [("ws", "WebSocket, handshake done", ["-w"]),
         ("ws+up", "WebSocket, after one 4 KiB upload", ["-w", "-u", str(UPLOAD)]),
         ("tcp", "raw TCP, nothing sent", []),
         ("tcp+up", "raw TCP, after one 4 KiB upload", ["-u", str(UPLOAD)])]


def memory(d):
    ws = d.workers()
    return (sum(B.status_kib(p, "VmRSS") for p in ws), sum(B.pss_kib(p) for p in ws))


def one(mode, args):
    d = B.Daemon("intake-bench-idle.", workers=2, scanner="off", max_connections=CONNS + 100,
                 header_timeout="1h")
    try:
        time.sleep(0.3)
        rss0, pss0 = memory(d)
        transport = "ws" if "-w" in args else "tcp"
        port = d.ws if transport == "ws" else d.tcp
        cl = subprocess.Popen([B.tool("idleconns"), "-c", str(CONNS)] + args +
                              ["127.0.0.1", str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = cl.stdout.readline().split()
        if not line or line[0] != "idle":
            raise SystemExit("bench_idle: idleconns failed (%s)" % cl.wait())
        setup = float(line[2])
        # Accepted by the workers, not only queued by the kernel (the
        # /metrics request is one more "ws" connection).
        want = CONNS + (1 if transport == "ws" else 0)
        deadline = time.monotonic() + 60
        while d.connections().get(transport, 0) < want:
            if time.monotonic() > deadline:
                raise SystemExit("bench_idle: the workers hold %s of %d connections"
                                 % (d.connections(), CONNS))
            time.sleep(0.2)
        time.sleep(0.5)
        rss1, pss1 = memory(d)
        cl.stdin.close()
        closed = int(cl.stdout.read().split()[-1])
        cl.wait()
        if closed:
            raise SystemExit("bench_idle: the server closed %d idle connections" % closed)
        return {"rss0": rss0, "rss1": rss1, "rss": (rss1 - rss0) / CONNS,
                "pss": (pss1 - pss0) / CONNS, "setup": setup}
    finally:
        d.stop()


def main():
    B.header("figure 2: worker memory per idle connection (%d connections, 2 workers, %d runs)"
             % (CONNS, RUNS),
             """build/idleconns holds the connections; memory = workers' summed RSS (PSS)
             with them open minus before, / connections; baseline: idle raw TCP""")
    print("%-4s %-36s %16s %13s %13s %8s" % ("run", "connections", "workers RSS MiB",
                                             "KiB/conn RSS", "KiB/conn PSS", "setup s"))
    res = {m: [] for m, _, _ in MODES}
    for run in range(RUNS):
        for mode, label, args in MODES:
            r = one(mode, args)
            res[mode].append(r)
            print("#%-3d %-36s %7.1f -> %6.1f %13.2f %13.2f %8.2f"
                  % (run + 1, label, r["rss0"] / 1024, r["rss1"] / 1024, r["rss"], r["pss"],
                     r["setup"]), flush=True)

    def med(mode, key):
        return B.median([r[key] for r in res[mode]])

    def ratio(a, b):
        return "%.1f" % (a / b) if b > 0.05 else "n/a (baseline ~0)"
    for mode, base, what, goal in (("ws", "tcp", "idle WebSocket (handshake done)", "<= 2 KiB"),
                                   ("ws+up", "tcp+up", "idle WebSocket after one upload",
                                    "<= 2 KiB")):
        B.figure("worker memory per %s, %d conns on 2 workers" % (what, CONNS),
                 "%.2f KiB RSS (%.2f KiB PSS)" % (med(mode, "rss"), med(mode, "pss")),
                 "the same idle over raw TCP" + (" after one upload" if "+" in mode else ""),
                 "%.2f KiB RSS" % med(base, "rss"), ratio(med(mode, "rss"), med(base, "rss")),
                 goal)


if __name__ == "__main__":
    main()
