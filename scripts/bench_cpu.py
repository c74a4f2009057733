#!/usr/bin/python3
"""bench_cpu.py: issue 12's fifth figure, server CPU per GiB received when
many uploads run at once, next to 2 at once. intaked with 2 workers, scanner
off. build/tcpload (C) sends CONNS concurrent raw TCP uploads of SIZE MiB
each (one per connection, all started together), and as the baseline 2
connections each sending SIZE MiB uploads back to back, at least 512 MiB
in all (so the 10 ms ticks of the CPU clock do not matter); CPU = utime + stime of
the master and the workers (/proc/PID/stat) after minus before, divided by
the GiB received. Kernel work done for the workers (loopback, page cache,
writeback in the workers' context) counts, what kernel threads do does not.
Also each worker's peak RSS (VmHWM, reset with clear_refs before) during the
CONNS-concurrent phase. `sync` before each phase; accepted files removed
after each.
    scripts/bench_cpu.py [CONNS] [SIZE_MIB] [RUNS]   (defaults 100, 100, 2;
                                                      BENCH_QUICK=1: 100, 20, 1)"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

CONNS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
SIZE_MIB = int(sys.argv[2]) if len(sys.argv) > 2 else (20 if B.QUICK else 100)
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else (1 if B.QUICK else 2)
FEW = 2
FEW_UPLOADS = max(1, -(-512 // (FEW * SIZE_MIB)))


def phase(d, conns, uploads):
    pids = [d.proc.pid] + d.workers()
    for p in pids[1:]:
        B.reset_hwm(p)
    os.sync()
    c0 = sum(B.cpu_seconds(p) for p in pids)
    t0 = time.monotonic()
    r = B.tcpload(d.tcp, conns, uploads, "%dM" % SIZE_MIB)
    dt = time.monotonic() - t0
    c1 = sum(B.cpu_seconds(p) for p in pids)
    hwm = max(B.status_kib(p, "VmHWM") for p in pids[1:])
    d.clean()
    gib = r["bytes"] / (1 << 30)
    return {"cpu": (c1 - c0) / gib, "mibs": r["bytes"] / (1 << 20) / dt, "hwm": hwm / 1024,
            "gib": gib}


def main():
    d = B.Daemon("intake-bench-cpu.", workers=2, scanner="off", max_file_size="64G")
    try:
        B.header("figure 5: server CPU per GiB, %d concurrent uploads vs %d (%d MiB each, %d runs)"
                 % (CONNS, FEW, SIZE_MIB, RUNS),
                 """2 workers, scanner off; build/tcpload: %d connections x 1 upload, all at once,
                 next to %d connections x %d uploads back to back; CPU = utime+stime of
                 master and workers; peak = largest worker VmHWM in the phase"""
                 % (CONNS, FEW, FEW_UPLOADS))
        print("%-4s %-16s %8s %12s %10s %14s" % ("run", "uploads at once", "GiB", "CPU s/GiB",
                                                "MiB/s", "worker VmHWM"))
        few, many = [], []
        B.tcpload(d.tcp, FEW, 1, "1M")  # warm-up
        d.clean()
        for run in range(RUNS):
            for conns, n, rows in ((FEW, FEW_UPLOADS, few), (CONNS, 1, many)):
                r = phase(d, conns, n)
                rows.append(r)
                print("#%-3d %-16d %8.2f %12.3f %10.0f %10.1f MiB"
                      % (run + 1, conns, r["gib"], r["cpu"], r["mibs"], r["hwm"]), flush=True)
        m = B.median([r["cpu"] for r in many])
        f = B.median([r["cpu"] for r in few])
        B.figure("server CPU per GiB, %d concurrent %d MiB uploads" % (CONNS, SIZE_MIB),
                 "%.2f s" % m, "%d concurrent" % FEW, "%.2f s" % f,
                 "%.2f, medians of %d runs" % (m / f, RUNS), "<= 1.5")
        print("figure: worker peak memory (VmHWM) during the %d concurrent uploads: %.1f MiB "
              "(largest worker, largest run)  [issue 12 goal: <= 16 MiB]"
              % (CONNS, max(r["hwm"] for r in many)))
    finally:
        d.stop()


if __name__ == "__main__":
    main()
