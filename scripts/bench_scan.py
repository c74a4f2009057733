#!/usr/bin/python3
"""bench_scan.py: scanning throughput, each figure next to a baseline
measured in the same run.
 1. End-to-end uploads per second of 4 KiB files through intaked with the
    builtin scanner, from many concurrent raw TCP clients; next to the
    original prototype's approach, one `clamscan` process per file (same
    signatures, as many in parallel as there are CPUs).
 2. Time for intake-scand to scan one 100 MiB file passed by FILDES, next to
    the same file sent by INSTREAM.
    scripts/bench_scan.py [FILES] [CLIENTS]"""
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, start_intaked  # noqa: E402

SIGS = os.path.join(ROOT, "etc", "signatures")
N_FILES = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 32



async def client(port, files, results):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for name, data in files:
        w.write(b"%d %s\n" % (len(data), name.encode()) + data)
        await w.drain()
        await r.readline()  # READY
        st = json.loads(await r.readline())
        results.append(st["verdict"])
    w.close()


async def upload_all(port, files):
    results = []
    shares = [files[i::CLIENTS] for i in range(CLIENTS)]
    await asyncio.gather(*(client(port, s, results) for s in shares))
    return results


def main():
    tmp = tempfile.mkdtemp(prefix="intake-bench-scan.", dir="/tmp")
    try:
        d, dtmp, tcp, ws = start_intaked("intake-bench-scan-d.", workers="auto",
                                         scanner="builtin")
        try:
            for _ in range(100):
                if os.path.exists(os.path.join(dtmp, "s.sock")):
                    break
                time.sleep(0.1)
            time.sleep(0.5)
            files = [("f%05d.bin" % i, os.urandom(4096)) for i in range(N_FILES)]
            t0 = time.monotonic()
            verdicts = asyncio.run(upload_all(tcp, files))
            dt = time.monotonic() - t0
            assert verdicts.count("clean") == N_FILES, set(verdicts)
            ours = N_FILES / dt

            # The prototype: one clamscan process per file.
            n_proto = max(20, min(100, N_FILES // 20))
            pdir = os.path.join(tmp, "proto")
            os.mkdir(pdir)
            paths = []
            for name, data in files[:n_proto]:
                p = os.path.join(pdir, name)
                with open(p, "wb") as f:
                    f.write(data)
                paths.append(p)
            t0 = time.monotonic()
            with ThreadPoolExecutor(os.cpu_count()) as ex:
                codes = list(ex.map(lambda p: subprocess.run(
                    ["clamscan", "--no-summary", "-d", SIGS, p], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL).returncode, paths))
            proto = n_proto / (time.monotonic() - t0)
            assert codes.count(0) == n_proto, codes
            print("\n%-58s %12s" % ("4 KiB uploads, scanned, acknowledged", "uploads/s"))
            print("%-58s %12.0f" % ("intaked + intake-scand, %d files, %d clients" % (N_FILES, CLIENTS), ours))
            print("%-58s %12.1f" % ("prototype: clamscan per file, %d files, %d in parallel"
                                    % (n_proto, os.cpu_count()), proto))
            print("%-58s %11.0fx" % ("ratio", ours / proto))

            # FILDES vs INSTREAM on 100 MiB.
            big = os.path.join(tmp, "big.bin")
            with open(big, "wb") as f:
                for _ in range(100):
                    f.write(os.urandom(1 << 20))
            sock = os.path.join(dtmp, "s.sock")
            best = {}
            for mode in ("FILDES", "INSTREAM") * 3:
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock)
                t0 = time.monotonic()
                with open(big, "rb") as f:
                    if mode == "FILDES":
                        s.sendmsg([b"zFILDES\0\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                      struct.pack("i", f.fileno()))])
                    else:
                        s.sendall(b"zINSTREAM\0")
                        while True:
                            chunk = f.read(1 << 20)
                            if not chunk:
                                break
                            s.sendall(struct.pack("!I", len(chunk)) + chunk)
                        s.sendall(struct.pack("!I", 0))
                    reply = s.recv(4096)
                dt = time.monotonic() - t0
                s.close()
                assert reply.endswith(b"OK\0"), reply
                best[mode] = min(best.get(mode, 1e9), dt)
            print("\n%-58s %12s" % ("one 100 MiB file through intake-scand (best of 3)", "seconds"))
            print("%-58s %12.3f" % ("FILDES (the descriptor is passed, no copy)", best["FILDES"]))
            print("%-58s %12.3f" % ("INSTREAM (streamed in 1 MiB chunks)", best["INSTREAM"]))
            print("%-58s %11.1fx" % ("ratio", best["INSTREAM"] / best["FILDES"]))
        finally:
            d.terminate()
            d.wait(10)
    finally:
        subprocess.run(["rm", "-rf", tmp, dtmp])


if __name__ == "__main__":
    main()
