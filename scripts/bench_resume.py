#!/usr/bin/python3
"""bench_resume: what resuming costs. A SIZE MiB upload is cut one MiB short
of its end; then START with its id is timed until READY (the server finds
the upload, takes its lock and hashes the kept bytes again: OpenSSL cannot
resume a SHA-256), next to a fresh upload's START -> READY in the same run,
and next to hashing the same bytes in this process (sha256 of the file,
the floor for the rehash).
    scripts/bench_resume.py [SIZE_MIB] [RUNS]   (defaults: 1024, 3;
                                                 BENCH_QUICK=1: 256, 2)"""
import hashlib
import json
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import QUICK, machine_load, start_intaked  # noqa: E402


def line(s, buf):
    while b"\n" not in buf[0]:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("bench_resume: server closed: %r" % buf[0])
        buf[0] += chunk
    out, buf[0] = buf[0].split(b"\n", 1)
    return json.loads(out)


def start(port, size, upload_id=None):
    s = socket.create_connection(("127.0.0.1", port))
    msg = {"type": "START", "filename": "big.bin", "size": size}
    if upload_id:
        msg["id"] = upload_id
    t0 = time.monotonic()
    s.sendall(json.dumps(msg).encode() + b"\n")
    buf = [b""]
    ready = line(s, buf)
    return s, ready, time.monotonic() - t0, buf


def main():
    size_mib = int(sys.argv[1]) if len(sys.argv) > 1 else (256 if QUICK else 1024)
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else (2 if QUICK else 3)
    size = size_mib << 20
    proc, tmp, tcp, _ = start_intaked("intake-bench-resume-", scanner="off", workers=1,
                                      idle_timeout="5s", resume_timeout="10m")
    src = os.path.join(tmp, "src.bin")
    with open(src, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", tcp)).close()
            break
        except OSError:
            time.sleep(0.05)
    print("\n== resuming: a %d MiB upload cut 1 MiB short, then resumed (%d runs)"
          % (size_mib, runs))
    print("   machine: %s" % machine_load())
    print("%-5s %14s %16s %18s" % ("run", "fresh START", "resume START", "sha256 here"))
    rows = []
    for run in range(runs):
        s, ready, fresh, _ = start(tcp, size)
        with open(src, "rb") as f:
            left = size - (1 << 20)
            while left:
                chunk = f.read(min(left, 4 << 20))
                s.sendall(chunk)
                left -= len(chunk)
        time.sleep(0.5)  # the server has read what was sent
        s.close()
        time.sleep(0.5)
        s, again, resume, buf = start(tcp, size, ready["id"])
        assert again["type"] == "READY" and again["offset"] == size - (1 << 20), again
        with open(src, "rb") as f:
            f.seek(again["offset"])
            s.sendall(f.read())
        status = line(s, buf)
        assert status["type"] == "STATUS", status
        s.close()
        t0 = time.monotonic()
        h = hashlib.sha256()
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        local = time.monotonic() - t0
        assert status["sha256"] == h.hexdigest()
        os.unlink(os.path.join(tmp, "accepted", status["stored_as"]))
        print("%-5d %12.1f ms %14.1f ms %16.1f ms" % (run + 1, fresh * 1e3, resume * 1e3,
                                                     local * 1e3))
        rows.append((fresh, resume, local))
    med = [statistics.median(r[k] for r in rows) * 1e3 for k in range(3)]
    print("figure: resume START -> READY after %d MiB: %.1f ms (baseline sha256 of the same bytes "
          "here: %.1f ms, ratio %.2f; a fresh START: %.1f ms)"
          % (size_mib, med[1], med[2], med[1] / med[2], med[0]))
    proc.terminate()
    proc.wait()
    os.system("rm -rf " + tmp)


if __name__ == "__main__":
    main()
