"""A 1 GiB upload end to end, its SHA-256 checked on both sides, and the
worker's memory staying bounded while the client sends as fast as it can."""
import hashlib
import os
import time

from conftest import Client, file_sha256, wait_for

GIB = 1 << 30


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test_one_gib_upload(daemon_factory):
    d = daemon_factory(workers=1, max_file_size="2G")
    worker = d.workers()[0]
    block = bytearray(os.urandom(1 << 20))
    h = hashlib.sha256()
    c = Client(d.tcp_port, timeout=120)
    c.start("one-gib.bin", GIB)
    t0 = time.monotonic()
    for i in range(GIB >> 20):
        block[0:8] = i.to_bytes(8, "little")  # every MiB differs
        h.update(block)
        c.send(block)
    ready = c.line()
    status = c.line()
    elapsed = time.monotonic() - t0
    assert ready["type"] == "READY"
    assert status["type"] == "STATUS" and status["size"] == GIB
    assert status["sha256"] == h.hexdigest()
    path = os.path.join(d.accept_dir, "one-gib.bin")
    assert os.path.getsize(path) == GIB
    assert file_sha256(path) == h.hexdigest()
    # Bounded memory: the worker never held more than a few buffers.
    hwm = vm_hwm_kib(worker)
    print("1 GiB in %.1f s (%.0f MiB/s), worker VmHWM %d KiB" % (elapsed, 1024 / elapsed, hwm))
    assert hwm < 64 * 1024, "worker peak RSS %d KiB for one upload" % hwm
    os.unlink(path)
