#!/usr/bin/python3
"""bench_scan.py: scanning throughput, each figure next to a baseline
measured in the same run.
 1. End-to-end uploads per second of 4 KiB files through intaked with the
    builtin scanner, from many concurrent raw TCP clients; next to the
    original prototype's approach, one `clamscan` process per file (same
    signatures, as many in parallel as there are CPUs).
 2. Time for intake-scand to scan one 100 MiB file passed by FILDES, next to
    the same file sent by INSTREAM.
 3. Uploads (scans) per second of 4 KiB files through intaked and one
    Debian clamd, with `scanner tcp:...` (INSTREAM) next to `scanner
    unix:...` (FILDES) on the same clamd, alternating, best of 2 each.
    scripts/bench_scan.py [FILES] [CLIENTS] [pool]   (pool: section 3 only)"""
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
from benchlib import ROOT, ports, start_intaked  # noqa: E402

SIGS = os.path.join(ROOT, "etc", "signatures")
N_FILES = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
CLIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 32
ONLY = sys.argv[3] if len(sys.argv) > 3 else ""



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
    if ONLY == "pool":
        try:
            clamd_tcp_vs_unix(tmp)
        finally:
            subprocess.run(["rm", "-rf", tmp])
        return
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
        clamd_tcp_vs_unix(tmp)
    finally:
        subprocess.run(["rm", "-rf", tmp, dtmp])


def clamd_tcp_vs_unix(tmp):
    """Section 3: one clamd listening on TCP and on a UNIX socket."""
    cdir = os.path.join(tmp, "clamd")
    os.mkdir(cdir)
    port = ports(1)[0]
    sock = os.path.join(cdir, "clamd.sock")
    conf = os.path.join(cdir, "clamd.conf")
    lines = ["Foreground yes", "LocalSocket " + sock, "TCPSocket %d" % port,
             "TCPAddr 127.0.0.1", "DatabaseDirectory " + SIGS, "TemporaryDirectory " + cdir,
             "LogFile %s/clamd.log" % cdir, "MaxThreads 16"]
    if os.geteuid() == 0:
        lines.append("User root")
    with open(conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    clamd = subprocess.Popen(["clamd", "--config-file", conf], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                if os.path.exists(sock):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        n = max(200, N_FILES // 2)
        files = [("c%05d.bin" % i, os.urandom(4096)) for i in range(n)]
        best = {}
        for mode in ("tcp", "unix") * 2:
            addr = "tcp:127.0.0.1:%d" % port if mode == "tcp" else "unix:" + sock
            d, dtmp, tcp, _ = start_intaked("intake-bench-pool.", workers="auto", scanner=addr)
            try:
                for _ in range(100):
                    try:
                        socket.create_connection(("127.0.0.1", tcp), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                time.sleep(1.0)  # the master's probe marks the scanner up
                t0 = time.monotonic()
                verdicts = asyncio.run(upload_all(tcp, files))
                rate = n / (time.monotonic() - t0)
                assert verdicts.count("clean") == n, set(verdicts)
                best[mode] = max(best.get(mode, 0), rate)
            finally:
                d.terminate()
                d.wait(10)
                subprocess.run(["rm", "-rf", dtmp])
        print("\n%-58s %12s" % ("4 KiB uploads through one clamd (best of 2)", "scans/s"))
        print("%-58s %12.0f" % ("scanner unix:%s (FILDES)" % "clamd.sock", best["unix"]))
        print("%-58s %12.0f" % ("scanner tcp:127.0.0.1:PORT (INSTREAM, 64 KiB chunks)",
                                best["tcp"]))
        print("%-58s %11.2fx" % ("ratio tcp/unix", best["tcp"] / best["unix"]))
    finally:
        clamd.terminate()
        clamd.wait(10)


if __name__ == "__main__":
    main()
