"""Resume and re-query (SPEC "Resume and re-query", "Finishing an upload"),
checked from outside with independent clients: raw sockets, python3-websockets,
the `intake` CLI (through a proxy that cuts its connections), and a fake
FILDES scanner that holds, fails or finds what the test wants.

An interrupted upload resumes at the offset the server stored, on either
transport, after the connection is lost, the worker holding it is killed,
intaked is stopped and started again, reloaded or upgraded; the final STATUS
covers the whole file and the accepted file is byte-identical. START with the
id of a complete upload answers its STATUS (waiting for a scan still running),
the same every time, and the file is placed once."""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest
import websockets

from conftest import (EICAR, INTAKE, Client, alive, file_sha256, sha256, short_dir, wait_for)
from cutproxy import CuttingProxy

MIB = 1 << 20
EICAR_NAME = "Eicar-Test-Signature.UNOFFICIAL"


# --- clients ----------------------------------------------------------------------


def interrupted(d, uid, k):
    """Waits until the server has let go of upload uid after k bytes."""
    wait_for(lambda: "upload %s (" % uid in d.logs() and
             re.search(r"upload %s \(.*\): interrupted after %d of \d+ bytes" % (uid, k), d.logs()),
             10, what="upload %s interrupted after %d bytes" % (uid, k))


def tcp_begin(d, name, data, k, sha=False, **extra):
    """Raw TCP: START, the first k bytes, then the connection is lost. The id."""
    c = Client(d.tcp_port)
    try:
        c.start(name, len(data), sha256(data) if sha else None, **extra)
        ready = c.line()
        assert ready["type"] == "READY" and ready["offset"] == 0, ready
        c.send(data[:k])
    finally:
        c.close()
    interrupted(d, ready["id"], k)
    return ready["id"]


def tcp_open(d, name, data, k, sha=False):
    """Raw TCP: START and the first k bytes, once the server has them all
    in the spool; the connection stays open. (client, id)."""
    c = Client(d.tcp_port, timeout=30)
    c.start(name, len(data), sha256(data) if sha else None)
    ready = c.line()
    assert ready["type"] == "READY", ready
    c.send(data[:k])
    part = os.path.join(d.spool_dir, ready["id"] + ".part")
    wait_for(lambda: os.path.exists(part) and os.path.getsize(part) == k, 20,
             what="%d bytes in the spool" % k)
    return c, ready["id"]


def tcp_resume(d, uid, name, data, offset, sha=False, port=None, **extra):
    """Raw TCP: START with the id; READY must say offset; sends the rest.
    The STATUS."""
    c = Client(port or d.tcp_port, timeout=60)
    try:
        c.start(name, len(data), sha256(data) if sha else None, id=uid, **extra)
        ready = c.line()
        assert ready == {"type": "READY", "id": uid, "offset": offset}, ready
        c.send(data[offset:])
        st = c.line()
        assert st is not None, "connection closed without STATUS"
        return st
    finally:
        c.close()


def tcp_ask(d, uid, name, size, sha=None, timeout=30, **extra):
    """Raw TCP: START with the id; the first answer (STATUS, READY or ERROR)."""
    c = Client(d.tcp_port, timeout=timeout)
    try:
        c.start(name, size, sha, id=uid, **extra)
        return c.line()
    finally:
        c.close()


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_url(d):
    return "ws://127.0.0.1:%d/upload" % d.ws_port


async def _ws_send(w, data, start, end, chunk=MIB):
    """Sends data[start:end] in binary messages and waits for the ack of
    each (their offsets must count up to end)."""
    off = start
    n = 0
    for k in range(start, end, chunk):
        await w.send(data[k:min(k + chunk, end)])
        n += 1
    for _ in range(n):
        ack = json.loads(await w.recv())
        assert ack["type"] == "DATA" and ack["code"] == 200, ack
        off += ack["bytesRead"]
        assert ack["offset"] == off, (ack, off)
    assert off == end


def ws_begin(d, name, data, k, sha=False, abort=True):
    """WebSocket: START, the first k bytes (acknowledged), then the
    connection is lost (aborted, or closed cleanly). The id."""
    async def go():
        async with websockets.connect(ws_url(d), max_size=None) as w:
            start = {"type": "START", "filename": name, "size": len(data)}
            if sha:
                start["sha256"] = sha256(data)
            await w.send(json.dumps(start))
            first = json.loads(await w.recv())
            assert first["type"] == "DATA" and first["offset"] == 0, first
            assert first["message"] == "Upload initialized. Wait for data", first
            await _ws_send(w, data, 0, k)
            if abort:
                w.transport.abort()
            return first["id"]
    uid = run(go())
    interrupted(d, uid, k)
    return uid


def ws_resume(d, uid, name, data, offset, sha=False, port=None):
    """WebSocket: START with the id; the first DATA must say "Upload resumed"
    at offset; sends the rest, DONE; the STATUS."""
    async def go():
        url = "ws://127.0.0.1:%d/upload" % (port or d.ws_port)
        async with websockets.connect(url, max_size=None) as w:
            start = {"type": "START", "filename": name, "size": len(data), "id": uid}
            if sha:
                start["sha256"] = sha256(data)
            await w.send(json.dumps(start))
            first = json.loads(await w.recv())
            assert first == {"type": "DATA", "code": 200, "message": "Upload resumed",
                             "id": uid, "offset": offset}, first
            await _ws_send(w, data, offset, len(data))
            await w.send('{"type":"DONE"}')
            return json.loads(await w.recv())
    return run(go())


def ws_ask(d, uid, name, size, sha=None):
    """WebSocket: START with the id; the first answer."""
    async def go():
        async with websockets.connect(ws_url(d), max_size=None) as w:
            start = {"type": "START", "filename": name, "size": size, "id": uid}
            if sha:
                start["sha256"] = sha
            await w.send(json.dumps(start))
            return json.loads(await w.recv())
    return run(go())


def assert_whole(d, st, name, data, verdict="unscanned"):
    """STATUS for the whole file, and the file in accept_dir, byte for byte."""
    assert st["type"] == "STATUS", st
    assert st["size"] == len(data) and st["sha256"] == sha256(data), st
    assert st["verdict"] == verdict and st["stored_as"] == name, st
    path = os.path.join(d.accept_dir, name)
    assert os.path.getsize(path) == len(data)
    assert file_sha256(path) == sha256(data)


def spool_of(d, uid):
    return sorted(f for f in os.listdir(d.spool_dir) if f.startswith(uid))


def worker_holding(d, uid):
    """The worker process with upload uid's .part open."""
    for pid in d.workers():
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)).endswith(uid + ".part"):
                    return pid
        except OSError:
            continue
    return None


def metric(d, name, **labels):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.ws_port, timeout=5) as r:
        text = r.read().decode()
    want = name + ("{" + ",".join('%s="%s"' % kv for kv in sorted(labels.items())) + "}"
                   if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return int(float(line.split()[-1]))
    raise AssertionError("%s not in /metrics" % want)


# --- a scanner the test controls --------------------------------------------------


class FakeScanner:
    """A FILDES scanner on a UNIX socket (clamd's z-protocol and its
    sessions, as intaked speaks them) that reads the file it is handed: EICAR is found, a file
    starting with SCANERROR fails, anything else is OK. While `hold` is set
    it answers only after release(). `scanned` lists each scanned file's
    SHA-256."""

    def __init__(self, path):
        self.path = path
        self.scanned = []
        self.scanning = threading.Event()
        self.go = threading.Event()
        self.hold = False
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(path)
        self.srv.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                s, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(s,), daemon=True).start()

    def _one(self, s):
        with s:
            s.settimeout(30)
            n = 0  # the request number in a session (zIDSESSION), 0 outside one
            while True:
                try:
                    data, fds, _, _ = socket.recv_fds(s, 64, 1)
                except OSError:
                    return
                if data.startswith(b"zIDSESSION\0"):
                    n, data = 1, data[11:]
                    if not data and not fds:
                        continue
                if not self._request(s, data, fds, b"%d: " % n if n else b"") or not n:
                    return
                n += 1

    def _request(self, s, data, fds, prefix):
        if data.startswith(b"zPING"):
            s.sendall(prefix + b"PONG\0")
            return True
        if not data.startswith(b"zFILDES") or not fds:
            return False
        with os.fdopen(fds[0], "rb") as f:
            f.seek(0)
            content = f.read()
        for fd in fds[1:]:
            os.close(fd)
        self.scanned.append(hashlib.sha256(content).hexdigest())
        self.scanning.set()
        if self.hold:
            self.go.wait(30)
        if content == EICAR:
            reply = b"fd[9]: Eicar-Test-Signature FOUND\0"
        elif content.startswith(b"SCANERROR"):
            reply = b"fd[9]: Fake failure ERROR\0"
        else:
            reply = b"fd[9]: OK\0"
        try:
            s.sendall(prefix + reply)
        except OSError:
            return False
        return True

    def release(self):
        self.go.set()

    def close(self):
        self.go.set()
        self.srv.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


@pytest.fixture
def scan_sock():
    """A path for a scanner socket, and the fake scanners made on it."""
    sd = short_dir()
    made = []

    class Place:
        path = os.path.join(sd, "scan.sock")

        def start(self):
            s = FakeScanner(self.path)
            made.append(s)
            return s
    yield Place()
    for s in made:
        s.close()
    subprocess.run(["rm", "-rf", sd])


# --- 1. resume at any offset after a lost connection ---------------------------


@pytest.mark.parametrize("where", ["1", "middle", "size-1"])
def test_resume_at_an_offset_over_raw_tcp(daemon, where):
    data = os.urandom(300000)
    k = {"1": 1, "middle": len(data) // 2, "size-1": len(data) - 1}[where]
    name = "at-%s.bin" % where
    uid = tcp_begin(daemon, name, data, k, sha=True)
    assert os.path.getsize(os.path.join(daemon.spool_dir, uid + ".part")) == k
    st = tcp_resume(daemon, uid, name, data, k, sha=True)
    assert st["id"] == uid and st["filename"] == name
    assert_whole(daemon, st, name, data)
    assert spool_of(daemon, uid) == [uid + ".state"]  # the verdict, kept for re-queries


@pytest.mark.parametrize("where", ["1", "middle", "size-1"])
def test_resume_at_an_offset_over_websocket(daemon, where):
    data = os.urandom(3 * MIB + 12345)
    k = {"1": 1, "middle": len(data) // 2, "size-1": len(data) - 1}[where]
    name = "ws-at-%s.bin" % where
    uid = ws_begin(daemon, name, data, k)
    st = ws_resume(daemon, uid, name, data, k)
    assert_whole(daemon, st, name, data)


def test_resume_64_mib_twice(daemon_factory):
    """64 MiB, lost twice (past the 32 MiB durability checkpoint, and
    before it on the other transport), resumed each time from the byte the
    server stored."""
    d = daemon_factory(max_file_size="1G")
    data = os.urandom(64 * MIB)
    first, second = 40 * MIB + 7, 52 * MIB + 3
    uid = tcp_begin(d, "big64.bin", data, first, sha=True)
    st_partial = os.path.getsize(os.path.join(d.spool_dir, uid + ".part"))
    assert st_partial == first

    async def go():
        async with websockets.connect(ws_url(d), max_size=None) as w:
            await w.send(json.dumps({"type": "START", "filename": "big64.bin", "size": len(data),
                                     "sha256": sha256(data), "id": uid}))
            m = json.loads(await w.recv())
            assert m["message"] == "Upload resumed" and m["offset"] == first, m
            await _ws_send(w, data, first, second)
            w.transport.abort()
    run(go())
    interrupted(d, uid, second)
    st = tcp_resume(d, uid, "big64.bin", data, second, sha=True)
    assert_whole(d, st, "big64.bin", data)


def test_all_bytes_arrived_then_lost(daemon):
    """Every byte arrived over WebSocket but DONE did not: the upload is
    complete, so a resume, over either transport, is answered with its
    STATUS once the finishing steps end (no READY, no "Upload resumed", no
    DONE owed)."""
    for i, (resume, name) in enumerate([("tcp", "all-tcp.bin"), ("ws", "all-ws.bin")]):
        data = os.urandom(200000 + i)
        uid = ws_begin(daemon, name, data, len(data))
        assert daemon.accepted().count(name) == 0  # not finished without DONE
        ask = tcp_ask if resume == "tcp" else ws_ask
        st = ask(daemon, uid, name, len(data))
        assert st["type"] == "STATUS", st
        assert_whole(daemon, st, name, data)
        assert "upload %s (%s) from" % (uid, name) in daemon.logs()
        assert re.search(r"upload %s \(%s\) from \S+: resumed at byte %d of %d: every byte is "
                         r"in; finishing it" % (uid, re.escape(name), len(data), len(data)),
                         daemon.logs())
        # Asked again, the same STATUS, and the file placed once.
        assert ask(daemon, uid, name, len(data)) == st
        assert daemon.accepted().count(name) == 1


# --- 2. resume after a crash, a restart, a reload, an upgrade ----------------------


def test_resume_after_kill9_of_the_worker(daemon_factory):
    d = daemon_factory(workers=2)
    data = os.urandom(2 * MIB)
    k = 777777
    c, uid = tcp_open(d, "killed.bin", data, k)
    victim = wait_for(lambda: worker_holding(d, uid), what="the worker holding the upload")
    os.kill(victim, signal.SIGKILL)
    assert c.closed(), "connection of the killed worker stayed open"
    c.close()
    wait_for(lambda: len(d.workers()) == 2 and victim not in d.workers(), 10, what="respawn")
    st = tcp_resume(d, uid, "killed.bin", data, k)
    assert_whole(d, st, "killed.bin", data)


def test_resume_after_term_and_a_new_start(daemon_factory):
    d = daemon_factory(workers=2)
    data = os.urandom(MIB + 3)
    k = 400001
    c, uid = tcp_open(d, "restarted.bin", data, k, sha=True)
    d.signal(signal.SIGTERM)
    assert d.wait_exit(6) == 0
    assert c.closed()
    c.close()
    d.stop()
    d.start()  # the same configuration: the same spool and ports
    st = tcp_resume(d, uid, "restarted.bin", data, k, sha=True)
    assert_whole(d, st, "restarted.bin", data)


def test_resume_after_hup(daemon_factory):
    """The connection survives the reload on the old worker, which drops it
    when its shutdown_timeout ends; the upload resumes on a new worker."""
    d = daemon_factory(workers=1, shutdown_timeout="1s", idle_timeout="20s")
    old = d.workers()
    data = os.urandom(MIB)
    k = 123457
    c, uid = tcp_open(d, "reloaded.bin", data, k)
    d.signal(signal.SIGHUP)
    wait_for(lambda: len(d.workers()) >= 1 and not set(old) & set(d.workers()), 15,
             what="the old worker gone")
    assert c.closed()
    c.close()
    wait_for(lambda: worker_holding(d, uid) is None, what="the upload let go")
    st = tcp_resume(d, uid, "reloaded.bin", data, k)
    assert_whole(d, st, "reloaded.bin", data)


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.read())
    except (FileNotFoundError, ValueError):
        return None


def _kids(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_resume_after_usr2_winch_quit(daemon_factory):
    d = daemon_factory(workers=1, shutdown_timeout="1s", idle_timeout="20s")
    pidf = d.dir["pid_file"]
    old, old_workers = d.pid, d.workers()
    data = os.urandom(MIB + 99)
    k = 654321
    c, uid = tcp_open(d, "upgraded.bin", data, k, sha=True)
    new = None
    try:
        d.signal(signal.SIGUSR2)
        wait_for(lambda: _read_pid(pidf) not in (None, old), 10, what="the new master")
        new = _read_pid(pidf)
        wait_for(lambda: any(alive(p) and "worker" in open("/proc/%d/cmdline" % p).read()
                             for p in _kids(new)), 10, what="the new master's worker")
        os.kill(old, signal.SIGWINCH)
        wait_for(lambda: not any(alive(p) for p in old_workers), 15, what="old workers gone")
        assert c.closed()
        c.close()
        os.kill(old, signal.SIGQUIT)
        d.wait_exit(15)
        st = tcp_resume(d, uid, "upgraded.bin", data, k, sha=True)
        assert_whole(d, st, "upgraded.bin", data)
        assert "resumed at byte %d of %d" % (k, len(data)) in d.logs()
    finally:
        if new and alive(new):
            os.kill(new, signal.SIGTERM)
            wait_for(lambda: not alive(new), 10, what="the new master to stop")


# --- 3. one session store for both transports --------------------------------------


def test_begun_over_tcp_resumed_over_websocket(daemon):
    data = os.urandom(2 * MIB + 1)
    k = MIB // 3
    uid = tcp_begin(daemon, "t2w.bin", data, k, sha=True)
    st = ws_resume(daemon, uid, "t2w.bin", data, k, sha=True)
    assert st["id"] == uid
    assert_whole(daemon, st, "t2w.bin", data)


def test_begun_over_websocket_resumed_over_tcp(daemon):
    data = os.urandom(2 * MIB + 2)
    k = MIB + 5
    uid = ws_begin(daemon, "w2t.bin", data, k, sha=True, abort=False)
    st = tcp_resume(daemon, uid, "w2t.bin", data, k, sha=True)
    assert st["id"] == uid
    assert_whole(daemon, st, "w2t.bin", data)


# --- 4. re-query ------------------------------------------------------------------


def test_requery_answers_the_same_status_and_places_once(daemon):
    data = b"asked twice\n" * 1000
    ready, st = Client(daemon.tcp_port).upload("twice.txt", data, sha=True)
    assert st["verdict"] == "unscanned" and st["stored_as"] == "twice.txt"
    uid = ready["id"]
    again = tcp_ask(daemon, uid, "twice.txt", len(data), sha256(data))
    assert again == st
    assert ws_ask(daemon, uid, "twice.txt", len(data), sha256(data)) == st
    assert tcp_ask(daemon, uid, "twice.txt", len(data), sha256(data)) == st
    assert daemon.accepted() == ["twice.txt"]
    # A second upload of the same name is placed beside it, not over it.
    st2 = Client(daemon.tcp_port).upload("twice.txt", b"other")[1]
    assert st2["stored_as"] == "twice-1.txt"
    assert tcp_ask(daemon, uid, "twice.txt", len(data), sha256(data))["stored_as"] == "twice.txt"
    assert daemon.accepted() == ["twice-1.txt", "twice.txt"]
    with open(os.path.join(daemon.accept_dir, "twice.txt"), "rb") as f:
        assert f.read() == data


@pytest.mark.parametrize("workers", [1, 2])
def test_client_gone_mid_scan_learns_its_verdict(daemon_factory, scan_sock, workers):
    scanner = scan_sock.start()
    scanner.hold = True
    d = daemon_factory(workers=workers, scanner="unix:" + scan_sock.path, scan_timeout="30s",
                       resume_timeout="5m")
    data = os.urandom(300000)
    c = Client(d.tcp_port)
    c.start("vanished.bin", len(data))
    c.send(data)
    uid = c.line()["id"]
    assert scanner.scanning.wait(20), "the file never reached the scanner"
    c.close()  # the client vanishes while its file is being scanned
    # Its re-queries wait for the verdict: nothing yet, while the scan holds.
    asks = []
    for _ in range(2):
        q = Client(d.tcp_port, timeout=30)
        q.start("vanished.bin", len(data), id=uid)
        asks.append(q)
    ws_answer = {}

    async def ws_wait():
        async with websockets.connect(ws_url(d)) as w:
            await w.send(json.dumps({"type": "START", "filename": "vanished.bin",
                                     "size": len(data), "id": uid}))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(w.recv(), 0.6)
            ws_answer["early"] = False
            ws_answer["st"] = json.loads(await w.recv())
    t = threading.Thread(target=lambda: run(ws_wait()))
    t.start()
    for q in asks:
        q.sock.settimeout(0.6)
        with pytest.raises(socket.timeout):
            q.sock.recv(1)
        q.sock.settimeout(30)
    wait_for(lambda: "early" in ws_answer or not t.is_alive(), 10, what="the WebSocket asker")
    scanner.release()
    answers = [q.line() for q in asks]
    t.join(30)
    for q in asks:
        q.close()
    st = answers[0]
    assert st["type"] == "STATUS" and st["id"] == uid and st["verdict"] == "clean", st
    assert st["sha256"] == sha256(data) and st["stored_as"] == "vanished.bin"
    assert st["status"] == "./vanished.bin: OK"
    assert answers[1] == st and ws_answer.get("st") == st, (answers, ws_answer)
    assert tcp_ask(d, uid, "vanished.bin", len(data)) == st
    assert d.accepted() == ["vanished.bin"] and scanner.scanned == [sha256(data)]
    assert file_sha256(os.path.join(d.accept_dir, "vanished.bin")) == sha256(data)


def test_verdict_error_then_scanner_back_scans_again(daemon_factory, scan_sock):
    """Scanner down: verdict error, the file kept in the spool. A re-query
    while it is still down: error again. Scanner back: the re-query scans
    (once), places the file; asked again, the same STATUS, no new scan."""
    d = daemon_factory(scanner="unix:" + scan_sock.path, scan_timeout="1s", resume_timeout="5m")
    data = os.urandom(100000)
    ready, st = Client(d.tcp_port, timeout=30).upload("retry.bin", data)
    uid = ready["id"]
    assert st["verdict"] == "error" and st["stored_as"] is None, st
    assert st["status"] == "./retry.bin: scanner unavailable ERROR"
    assert d.accepted() == [] and uid + ".part" in spool_of(d, uid)
    st1 = tcp_ask(d, uid, "retry.bin", len(data))
    assert st1["verdict"] == "error" and st1["status"] == st["status"], st1
    scanner = scan_sock.start()
    st2 = tcp_ask(d, uid, "retry.bin", len(data))
    assert st2["type"] == "STATUS" and st2["verdict"] == "clean", st2
    assert st2["stored_as"] == "retry.bin" and st2["sha256"] == sha256(data)
    assert scanner.scanned == [sha256(data)]
    assert ws_ask(d, uid, "retry.bin", len(data)) == st2
    assert tcp_ask(d, uid, "retry.bin", len(data)) == st2
    assert scanner.scanned == [sha256(data)], "scanned again after a clean verdict"
    assert d.accepted() == ["retry.bin"] and spool_of(d, uid) == [uid + ".state"]
    assert file_sha256(os.path.join(d.accept_dir, "retry.bin")) == sha256(data)


def test_scanner_error_reply_then_requery(daemon_factory, scan_sock):
    """A scanner that answers ERROR: verdict error; a re-query asks it again
    (this fake fails the same file again), and the file stays in the spool."""
    scanner = scan_sock.start()
    d = daemon_factory(scanner="unix:" + scan_sock.path, scan_timeout="5s", resume_timeout="5m")
    data = b"SCANERROR" + os.urandom(1000)
    ready, st = Client(d.tcp_port).upload("fails.bin", data)
    uid = ready["id"]
    assert st["verdict"] == "error" and st["stored_as"] is None, st
    assert st["status"].startswith("./fails.bin: ") and st["status"].endswith("Fake failure ERROR")
    again = tcp_ask(d, uid, "fails.bin", len(data))
    assert again == st
    assert scanner.scanned == [sha256(data)] * 2
    assert d.accepted() == [] and uid + ".part" in spool_of(d, uid)


def test_eicar_requeried_is_infected_and_quarantined_once(daemon_factory):
    d = daemon_factory(scan=True)
    ready, st = Client(d.tcp_port, timeout=30).upload("eicar.com", EICAR)
    uid = ready["id"]
    assert st["verdict"] == "infected" and st["virus"] == EICAR_NAME and st["stored_as"] is None
    assert tcp_ask(d, uid, "eicar.com", len(EICAR)) == st
    assert ws_ask(d, uid, "eicar.com", len(EICAR)) == st
    assert os.listdir(d.dir["quarantine_dir"]) == ["%s-eicar.com" % uid]
    assert d.accepted() == []



def test_requery_of_an_infected_upload_writes_no_second_access_line(daemon_factory, tmp_path):
    """A re-query answered from the record is not an upload: it writes no
    access log line, neither when it is answered nor when its connection
    closes (the upload has no stored_as, which once read as unfinished)."""
    log = str(tmp_path / "access.log")
    d = daemon_factory(scan=True, access_log=log)
    ready, st = Client(d.tcp_port, timeout=30).upload("eicar.com", EICAR)
    uid = ready["id"]
    assert st["verdict"] == "infected"
    assert tcp_ask(d, uid, "eicar.com", len(EICAR)) == st  # its connection closes after

    def lines():
        with open(log) as f:
            return [json.loads(x) for x in f if uid in x]
    wait_for(lambda: len(lines()) >= 1, 5, what="the upload's access line")
    time.sleep(0.5)  # the re-query's connection has closed by now
    assert [(x["verdict"], x["code"]) for x in lines()] == [("infected", 200)]


def test_a_refused_resume_is_logged_with_the_id_it_asked_for(daemon_factory, tmp_path):
    """The access line of a resume refused with 404 names the id the client
    asked for, the one thing an operator looks for (it was null: an audit
    found it)."""
    log = str(tmp_path / "access.log")
    d = daemon_factory(access_log=log)
    unknown = "0123456789abcdef" * 2
    assert tcp_ask(d, unknown, "gone.bin", 10)["code"] == 404

    def lines():
        with open(log) as f:
            return [json.loads(x) for x in f]
    wait_for(lambda: len(lines()) == 1, 5, what="the refusal's access line")
    [line] = lines()
    assert (line["id"], line["filename"], line["code"]) == (unknown, "gone.bin", 404), line


# --- 5. errors ---------------------------------------------------------------------


def expect_error(msg, code, text=None):
    assert msg is not None and msg["type"] == "ERROR" and msg["code"] == code, msg
    if text:
        assert msg["message"].startswith(text), msg
    if code == 409:
        # SPEC quotes these two messages: a client may compare them whole.
        assert msg["message"] in ("resume does not match", "upload in use"), msg


def test_404_unknown_and_422_ids(daemon):
    expect_error(tcp_ask(daemon, "0123456789abcdef" * 2, "a.bin", 10), 404)
    expect_error(ws_ask(daemon, "fedcba9876543210" * 2, "a.bin", 10), 404)
    # An upload that ended with 422 is not resumable, nor askable.
    data = b"checked" * 100
    c = Client(daemon.tcp_port)
    c.start("bad-sum.bin", len(data), "0" * 64)
    c.send(data)
    ready, err = c.line(), c.line()
    c.close()
    expect_error(err, 422)
    uid = ready["id"]
    expect_error(tcp_ask(daemon, uid, "bad-sum.bin", len(data), "0" * 64), 404)
    expect_error(ws_ask(daemon, uid, "bad-sum.bin", len(data), "0" * 64), 404)
    assert spool_of(daemon, uid) == [] and daemon.accepted() == []


def test_404_expired_id(daemon_factory):
    d = daemon_factory(idle_timeout="1s", resume_timeout="2s")
    data = os.urandom(5000)
    uid = tcp_begin(d, "late.bin", data, 100)
    wait_for(lambda: spool_of(d, uid) == [], 15, step=0.1, what="the upload to expire")
    expect_error(tcp_ask(d, uid, "late.bin", len(data)), 404)


def test_409_resume_does_not_match(daemon):
    data = os.urandom(10000)
    digest = sha256(data)
    other = sha256(b"something else")
    with_sha = tcp_begin(daemon, "match.bin", data, 10, sha=True)
    without = tcp_begin(daemon, "plain.bin", data, 20)
    for uid, name, size, sha in [
            (with_sha, "other.bin", len(data), digest),        # filename
            (with_sha, "Match.bin", len(data), digest),        # filename, by case
            (with_sha, "match.bin", len(data) + 1, digest),    # size
            (with_sha, "match.bin", len(data), other),         # sha256
            (with_sha, "match.bin", len(data), None),          # sha256 absent
            (without, "plain.bin", len(data), digest)]:        # sha256 present
        expect_error(tcp_ask(daemon, uid, name, size, sha), 409, "resume does not match")
    expect_error(ws_ask(daemon, with_sha, "match.bin", len(data), None), 409,
                 "resume does not match")
    # Refusals change nothing: both still resume where they were.
    assert_whole(daemon, tcp_resume(daemon, with_sha, "match.bin", data, 10, sha=True),
                 "match.bin", data)
    assert_whole(daemon, ws_resume(daemon, without, "plain.bin", data, 20), "plain.bin", data)


@pytest.mark.parametrize("workers", [1, 2])
def test_409_upload_in_use_until_idle_timeout(daemon_factory, workers):
    d = daemon_factory(workers=workers, idle_timeout="1s", resume_timeout="30s")
    data = os.urandom(50000)
    holder, uid = tcp_open(d, "busy.bin", data, 3000)
    expect_error(tcp_ask(d, uid, "busy.bin", len(data)), 409, "upload in use")
    expect_error(ws_ask(d, uid, "busy.bin", len(data)), 409, "upload in use")
    # The holder is dropped after idle_timeout; then the upload is free.
    expect_error(holder.line(), 408)
    holder.close()
    interrupted(d, uid, 3000)
    st = tcp_resume(d, uid, "busy.bin", data, 3000)
    assert_whole(d, st, "busy.bin", data)


def test_every_byte_in_but_no_done_is_in_use_and_waiters_that_leave_go(daemon_factory):
    """A WebSocket sender has sent every byte but not DONE, and keeps its
    connection (pings): a re-query elsewhere is answered 409 "upload in
    use" within seconds (it waited for ever before), and a re-query whose
    client leaves while it waits is let go at once (its connection was held
    until the verdict). Then DONE finishes the upload as usual."""
    d = daemon_factory(workers=1)
    data = os.urandom(300000)
    name = "no-done.bin"
    worker = d.workers()[0]

    def fds():
        return len(os.listdir("/proc/%d/fd" % worker))

    async def go():
        async with websockets.connect(ws_url(d), max_size=None, ping_interval=0.5) as w:
            await w.send(json.dumps({"type": "START", "filename": name, "size": len(data)}))
            uid = json.loads(await w.recv())["id"]
            await _ws_send(w, data, 0, len(data))
            before = fds()
            # Clients that ask and leave at once, half of them having sent
            # something more first (still unread when they go).
            loop = asyncio.get_running_loop()
            for i in range(20):
                c = Client(d.tcp_port)
                c.start(name, len(data), id=uid)
                await asyncio.sleep(0.05)
                if i % 2:
                    c.send(b"x")
                c.close()
            # And one over WebSocket, which says goodbye with a close frame.
            async with websockets.connect(ws_url(d), max_size=None, close_timeout=0.3) as gone:
                await gone.send(json.dumps({"type": "START", "filename": name,
                                            "size": len(data), "id": uid}))
                await asyncio.sleep(0.05)
            # Let go within 2 s: well before the 5 s after which a waiting
            # re-query is told "upload in use" anyway.
            for _ in range(40):
                if fds() <= before:
                    break
                await asyncio.sleep(0.05)
            assert fds() <= before, (fds(), before)
            # One that sends more than the 64 KiB held while it waits: it
            # still gets its answer (a full stash stopped its retries).
            async with websockets.connect(ws_url(d), max_size=None) as more:
                await more.send(json.dumps({"type": "START", "filename": name,
                                            "size": len(data), "id": uid}))
                await asyncio.sleep(0.3)  # it waits now, and reads on
                await more.send(os.urandom(70000))
                expect_error(json.loads(await asyncio.wait_for(more.recv(), 15)), 409,
                             "upload in use")
            # One that stays: told the upload is in use.
            t0 = time.monotonic()
            answer = await loop.run_in_executor(None, lambda: tcp_ask(d, uid, name, len(data)))
            waited = time.monotonic() - t0
            expect_error(answer, 409, "upload in use")
            assert waited < 15, waited
            await w.send('{"type":"DONE"}')
            return uid, json.loads(await w.recv())
    uid, st = run(go())
    assert_whole(d, st, name, data)
    assert "left before it was finished" in d.logs()
    assert tcp_ask(d, uid, name, len(data)) == st


SECRET = b"resume-test-secret-resume-test-secret-01"


def make_token(expiry, max_size=0):
    msg = b"v1.%d.%d" % (expiry, max_size)
    sig = base64.urlsafe_b64encode(hmac.new(SECRET, msg, hashlib.sha256).digest()).rstrip(b"=")
    return (msg + b"." + sig).decode()


def test_expired_token_resumes_but_does_not_start(daemon_factory, tmp_path):
    sec = tmp_path / "secrets"
    sec.write_bytes(SECRET + b"\n")
    os.chmod(str(sec), 0o600)
    d = daemon_factory(auth_secret_file=str(sec))
    expiry = int(time.time()) + 2
    tok = make_token(expiry)
    data = os.urandom(40000)
    uid = tcp_begin(d, "tok.bin", data, 1000, token=tok)
    wait_for(lambda: time.time() > expiry + 1, 5, step=0.1, what="the token to expire")
    c = Client(d.tcp_port)
    c.start("fresh.bin", 10, token=tok)
    expect_error(c.line(), 401)
    c.close()
    # Without a token, even a resume is refused.
    expect_error(tcp_ask(d, uid, "tok.bin", len(data)), 401)
    st = tcp_resume(d, uid, "tok.bin", data, 1000, token=tok)
    assert_whole(d, st, "tok.bin", data)
    # And re-queried with the expired token, the same STATUS.
    assert tcp_ask(d, uid, "tok.bin", len(data), token=tok) == st
    assert tok not in d.logs()


def test_concurrent_resumes_one_wins(daemon_factory):
    """Several clients resume the same upload at once: one is answered
    READY, every other 409 "upload in use"; the winner finishes it."""
    d = daemon_factory(workers=2)
    data = os.urandom(200000)
    uid = tcp_begin(d, "race.bin", data, 5000)
    cs = [Client(d.tcp_port, timeout=30) for _ in range(6)]
    for c in cs:
        c.start("race.bin", len(data), id=uid)
    answers = [c.line() for c in cs]
    winners = [c for c, a in zip(cs, answers) if a["type"] == "READY"]
    assert len(winners) == 1, answers
    for a in answers:
        if a["type"] != "READY":
            expect_error(a, 409, "upload in use")
        else:
            assert a["offset"] == 5000
    winners[0].send(data[5000:])
    st = winners[0].line()
    for c in cs:
        c.close()
    assert_whole(d, st, "race.bin", data)


def test_client_leaving_during_the_lookup_leaves_it_resumable(daemon_factory):
    d = daemon_factory(workers=2)
    data = os.urandom(3 * MIB)
    uid = tcp_begin(d, "left.bin", data, 2 * MIB + 1)  # the lookup rehashes 2 MiB
    for i in range(20):
        c = Client(d.tcp_port)
        c.start("left.bin", len(data), id=uid)
        if i % 2:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        c.close()
    wait_for(lambda: worker_holding(d, uid) is None, 10, what="the lookups to let go")
    # The lookups may still be on their way out: an "in use" answer is retried.
    st = None
    for _ in range(50):
        c = Client(d.tcp_port, timeout=30)
        c.start("left.bin", len(data), id=uid)
        ready = c.line()
        if ready["type"] == "READY":
            assert ready["offset"] == 2 * MIB + 1, ready
            c.send(data[2 * MIB + 1:])
            st = c.line()
            c.close()
            break
        expect_error(ready, 409, "upload in use")
        c.close()
        time.sleep(0.1)
    assert st is not None, "never released"
    assert_whole(d, st, "left.bin", data)
    assert len(d.workers()) == 2 and "killed by signal" not in d.logs()


def test_resume_and_requery_on_a_connection_that_uploaded_before(daemon):
    """After STATUS the client may START again: a resume, then a re-query,
    on the same connection, on both transports."""
    data = os.urandom(100000)
    uid = tcp_begin(daemon, "later.bin", data, 777)
    c = Client(daemon.tcp_port)
    ready, first = c.upload("first.txt", b"one")
    assert first["type"] == "STATUS"
    c.start("later.bin", len(data), id=uid)
    assert c.line() == {"type": "READY", "id": uid, "offset": 777}
    c.send(data[777:])
    st = c.line()
    assert_whole(daemon, st, "later.bin", data)
    c.start("first.txt", 3, id=ready["id"])
    assert c.line() == first
    c.close()
    uid2 = tcp_begin(daemon, "later2.bin", data, 1)

    async def go():
        async with websockets.connect(ws_url(daemon)) as w:
            await w.send(json.dumps({"type": "START", "filename": "x.txt", "size": 1}))
            await w.recv()
            await w.send(b"x")
            await w.recv()
            await w.send('{"type":"DONE"}')
            assert json.loads(await w.recv())["type"] == "STATUS"
            await w.send(json.dumps({"type": "START", "filename": "later2.bin",
                                     "size": len(data), "id": uid2}))
            m = json.loads(await w.recv())
            assert m["message"] == "Upload resumed" and m["offset"] == 1, m
            await _ws_send(w, data, 1, len(data))
            await w.send('{"type":"DONE"}')
            st2 = json.loads(await w.recv())
            await w.send(json.dumps({"type": "START", "filename": "later.bin",
                                     "size": len(data), "id": uid}))
            return st2, json.loads(await w.recv())
    st2, again = run(go())
    assert_whole(daemon, st2, "later2.bin", data)
    assert again == st


def test_unreadable_record_is_404_never_a_crash(daemon_factory):
    """A truncated or garbled record makes its upload unknown."""
    d = daemon_factory(workers=1)
    worker = d.workers()
    data = os.urandom(10000)
    ids = [tcp_begin(d, "rec%d.bin" % i, data, 100) for i in range(4)]
    path = lambda uid: os.path.join(d.spool_dir, uid + ".state")
    with open(path(ids[0]), "rb") as f:
        good = f.read()
    with open(path(ids[0]), "wb") as f:
        f.write(good[:len(good) // 2])                 # truncated
    with open(path(ids[1]), "wb") as f:
        f.write(b"\xff" * 100000)                     # garbage, too long
    with open(path(ids[2]), "wb") as f:
        f.write(good)                                  # another upload's record
    for i, uid in enumerate(ids[:3]):
        expect_error(tcp_ask(d, uid, "rec%d.bin" % i, len(data)), 404)
    expect_error(tcp_ask(d, ids[3], "rec3.bin", len(data) + 1), 409)
    assert d.workers() == worker, "the worker died"
    assert "its record in the spool is unreadable; answering 404" in d.logs()
    assert_whole(d, tcp_resume(d, ids[3], "rec3.bin", data, 100), "rec3.bin", data)


def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


RECORD_SLOT = 16384 + 4096  # record.h: a record file's two slots


def newest_record(path):
    """The text of the newest sealed slot of a record file."""
    with open(path, "rb") as f:
        raw = f.read()
    best = None
    for k in (0, 1):
        slot = raw[k * RECORD_SLOT:(k + 1) * RECORD_SLOT]
        end = slot.find(b"\nend\n")
        m = re.match(rb"seal (\d+) ", slot[end + 5:]) if end >= 0 else None
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), slot[:end + 5].decode())
    assert best, raw[:200]
    return best[1]


def test_after_a_machine_restart_only_durable_bytes_count(daemon_factory):
    """An upload recorded on another boot (what a crash of the machine
    leaves) resumes from the offset its last fdatasync made durable, never
    from the .part's size (its tail could be zeros)."""
    d = daemon_factory(max_file_size="1G")
    data = os.urandom(48 * MIB)
    k = 40 * MIB + 11
    c, uid = tcp_open(d, "reboot.bin", data, k)
    state = os.path.join(d.spool_dir, uid + ".state")

    def durable():
        m = re.search(r"^durable (\d+)$", newest_record(state), re.M)
        return int(m.group(1)) if m else 0
    # The hashing that trails the writes makes 32 MiB durable and records it.
    wait_for(lambda: durable() > 0, 20, what="the first durability checkpoint")
    c.close()
    interrupted(d, uid, k)
    rec = newest_record(state)
    assert 0 < durable() <= k, rec
    # Say the machine crashed: another boot, and (to be sure the cut is
    # seen) an older checkpoint than the last one, past which the .part's
    # tail is zeros.
    other = "00000000-1111-2222-3333-444444444444"
    assert boot_id() in rec
    durable = 33 * MIB + 5
    with open(state, "w") as f:  # as an intake from before the slots wrote it
        f.write(re.sub(r"^durable \d+$", "durable %d" % durable, rec.replace(boot_id(), other),
                       flags=re.M))
    with open(os.path.join(d.spool_dir, uid + ".part"), "r+b") as f:
        f.seek(durable)
        f.write(b"\0" * (k - durable))
    st = tcp_resume(d, uid, "reboot.bin", data, durable)
    assert_whole(d, st, "reboot.bin", data)
    assert "written before a restart of the machine" in d.logs()


def strace_events(path):
    """(call, fd, text) in the order the calls returned, from strace -f -o:
    a call split by another thread's counts where it resumed."""
    pending, events = {}, []
    with open(path) as f:
        for line in f:
            pid, _, rest = line.rstrip("\n").partition(" ")
            rest = rest.lstrip()
            if rest.endswith("<unfinished ...>"):
                pending[pid] = rest[:-len("<unfinished ...>")]
                continue
            m = re.match(r"<\.\.\. (\w+) resumed>(.*)", rest)
            if m:
                rest = pending.pop(pid, m.group(1) + "(") + m.group(2)
            m = re.match(r"(\w+)\((\d+)?(.*)", rest)
            if m:
                events.append((m.group(1), m.group(2), m.group(3)))
    return events


def test_the_record_is_synced_before_the_file_is_placed(daemon_factory, tmp_path):
    """The placement links the .part into accept_dir before its own save, so
    the save made after the fsync step, which says every byte is there, must
    be synced before that link (strace of the worker). Left unsynced once, a
    machine crash in between left a checkpoint or nothing as the record: a
    resume then cut back the very inode in accept_dir, or a 404 had the file
    placed twice (a review found it)."""
    d = daemon_factory(workers=1)
    worker = d.workers()[0]
    out = tmp_path / "strace.txt"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-s", "16", "-o", str(out), "-e",
                               "trace=pwrite64,fdatasync,fsync,linkat", "-p", str(worker)],
                              stderr=subprocess.DEVNULL)
    try:
        def traced():  # uploads until strace, once attached, has seen one
            Client(d.tcp_port).upload("probe.txt", b"p")
            return out.exists() and out.stat().st_size > 0
        wait_for(traced, 10, what="strace to attach")
        ready, st = Client(d.tcp_port).upload("ordered.bin", os.urandom(5000))
        assert st["stored_as"] == "ordered.bin"
    finally:
        tracer.terminate()
        tracer.wait(10)
    events = strace_events(out)
    link = [i for i, e in enumerate(events)
            if e[0] == "linkat" and '"ordered.bin"' in e[2]]
    assert len(link) == 1, events
    records = {e[1] for e in events if e[0] == "pwrite64" and '"intake-record' in e[2]}
    before = events[:link[0]]
    last = max(i for i, e in enumerate(before) if e[0] == "pwrite64" and e[1] in records)
    fd = before[last][1]
    assert any(e[0] in ("fdatasync", "fsync") and e[1] == fd for e in before[last:]), \
        before[last:]


def test_a_crash_between_the_link_and_its_record_places_the_file_once(daemon_factory):
    """What a machine crash after the placement's link and before its save
    leaves (the file in accept_dir and, as the same inode, the .part; the
    record as the fsync step synced it; another boot): the re-query finds
    the link, answers STATUS with that name and leaves the file whole."""
    d = daemon_factory(workers=1, max_file_size="1G")
    data = os.urandom(3 * MIB + 7)
    c = Client(d.tcp_port)
    c.start("once.bin", len(data))
    uid = c.line()["id"]
    state = os.path.join(d.spool_dir, uid + ".state")
    c.send(data)
    assert c.line()["stored_as"] == "once.bin"
    final = newest_record(state)
    d.stop()
    acc = os.path.join(d.accept_dir, "once.bin")
    os.link(acc, os.path.join(d.spool_dir, uid + ".part"))
    synced = re.sub(r"^(stored|verdict) .*\n", "", final, flags=re.M)
    synced = synced.replace(" scanned", "").replace(" placed", "")
    assert "steps received hashed synced\n" in synced, synced
    with open(state, "w") as f:  # as an intake from before the slots wrote it
        f.write(synced.replace(boot_id(), "00000000-1111-2222-3333-444444444444"))
    d.start()
    c = Client(d.tcp_port)
    c.start("once.bin", len(data), id=uid)
    st = c.line()
    assert st["type"] == "STATUS" and st["stored_as"] == "once.bin", st
    assert d.accepted() == ["once.bin"] and file_sha256(acc) == sha256(data)
    assert not os.path.exists(os.path.join(d.spool_dir, uid + ".part"))


# --- 6. expiry ---------------------------------------------------------------------


def expire_three(d):
    """An interrupted upload, a file held after verdict error and a finished
    verdict; waits until every spool file of each is gone. Their ids."""
    data = os.urandom(30000)
    cut = tcp_begin(d, "cut.bin", data, 1234)
    bad = b"SCANERROR" + os.urandom(2000)
    ready, st = Client(d.tcp_port).upload("err.bin", bad)
    err = ready["id"]
    assert st["verdict"] == "error"
    ready, st = Client(d.tcp_port).upload("fine.bin", data)
    fine = ready["id"]
    assert st["verdict"] == "clean"
    assert spool_of(d, cut) == [cut + ".part", cut + ".state"]
    assert spool_of(d, err) == [err + ".part", err + ".state"]
    assert spool_of(d, fine) == [fine + ".state"]
    wait_for(lambda: not any(spool_of(d, u) for u in (cut, err, fine)), 20, step=0.1,
             what="all three expired")
    assert os.listdir(d.spool_dir) == []
    for uid, name, size in ((cut, "cut.bin", len(data)), (err, "err.bin", len(bad)),
                            (fine, "fine.bin", len(data))):
        expect_error(tcp_ask(d, uid, name, size), 404)
    assert d.accepted() == ["fine.bin"]
    return cut, err, fine


def expiring_daemon(daemon_factory, scan_sock):
    scan_sock.start()
    return daemon_factory(scanner="unix:" + scan_sock.path, scan_timeout="1s",
                          idle_timeout="1s", resume_timeout="3s")


def test_everything_expires_after_resume_timeout(daemon_factory, scan_sock):
    """Each upload's every spool file is removed after resume_timeout; the
    accepted file stays; the interrupted upload's removal is logged."""
    d = expiring_daemon(daemon_factory, scan_sock)
    cut, err, fine = expire_three(d)
    assert "upload %s: not resumed within resume_timeout (3 s); 1234 bytes removed" % cut \
        in d.logs()


def test_expiry_of_an_error_file_and_a_verdict_is_logged_as_such(daemon_factory, scan_sock):
    d = expiring_daemon(daemon_factory, scan_sock)
    cut, err, fine = expire_three(d)
    logs = d.logs()
    assert re.search(r"\[warn\] \d+: master: upload %s: kept in the spool after verdict error "
                     r"\(scanner error: Fake failure\) and not asked for again within "
                     r"resume_timeout \(3 s\); 2009 bytes removed" % err, logs), logs
    assert "upload %s: not resumed" % err not in logs
    assert "upload %s: not resumed" % fine not in logs  # it was not interrupted


def age(d, uid, seconds):
    """Makes every spool file of uid look last touched `seconds` ago."""
    t = time.time() - seconds
    for f in spool_of(d, uid):
        os.utime(os.path.join(d.spool_dir, f), (t, t))


def test_resumed_upload_gets_a_new_resume_timeout(daemon_factory):
    """resume_timeout counts from an upload's last resume: one that waited
    58 of its 60 minutes and is resumed (READY, and not a byte more) is
    still there after a sweep that removes one 61 minutes old."""
    d = daemon_factory(resume_timeout="1h")
    data = os.urandom(9000)
    kept = tcp_begin(d, "renewed.bin", data, 100)
    age(d, kept, 58 * 60)
    c = Client(d.tcp_port)
    c.start("renewed.bin", len(data), id=kept)
    assert c.line()["offset"] == 100
    c.close()
    wait_for(lambda: d.logs().count("upload %s (renewed.bin): interrupted after 100 of" % kept)
             == 2, what="the resume to end")
    gone = tcp_begin(d, "old.bin", data, 10)
    age(d, gone, 61 * 60)
    wait_for(lambda: spool_of(d, gone) == [], 10, step=0.1, what="the old upload swept")
    assert spool_of(d, kept) == [kept + ".part", kept + ".state"], \
        "swept although resumed within resume_timeout"
    assert_whole(d, tcp_resume(d, kept, "renewed.bin", data, 100), "renewed.bin", data)


def log_time(line):
    """The wall-clock time of an error log line, in Unix seconds."""
    import calendar
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z", line)
    y, mo, dd, h, mi, sec, ms = map(int, m.groups())
    return calendar.timegm((y, mo, dd, h, mi, sec)) + ms / 1000.0


def test_never_removed_before_resume_timeout(daemon_factory):
    """The sweep's own log line says when it removed an upload: never before
    resume_timeout has passed since its files were last written. (The
    upload is interrupted late in a wall-clock second, where truncating
    times to whole seconds shows most.)"""
    d = daemon_factory(idle_timeout="1s", resume_timeout="2s")
    data = os.urandom(5000)
    wait_for(lambda: time.time() % 1 > 0.85, 2, step=0.005, what="late in a second")
    uid = tcp_begin(d, "edge.bin", data, 10)
    touched = max(os.stat(os.path.join(d.spool_dir, f)).st_mtime_ns for f in spool_of(d, uid))
    line = wait_for(lambda: [l for l in d.logs().splitlines()
                             if "upload %s: not resumed within" % uid in l], 10,
                    what="the sweep")[0]
    early = touched / 1e9 + 2 - log_time(line)
    assert early <= 0, "removed %.3f s before its resume_timeout: %s" % (early, line)


# --- 7. metrics --------------------------------------------------------------------


def test_resume_and_requery_metrics(daemon):
    d = daemon
    assert metric(d, "intake_resumes_total", transport="tcp") == 0
    assert metric(d, "intake_requeries_total", transport="ws") == 0
    data = os.urandom(20000)
    uid = tcp_begin(d, "m1.bin", data, 10)
    st = ws_resume(d, uid, "m1.bin", data, 10)
    uid2 = ws_begin(d, "m2.bin", data, 20)
    uid2b = tcp_begin(d, "m2.bin", data, 0)
    tcp_resume(d, uid2, "m2.bin", data, 20)
    tcp_resume(d, uid2b, "m2.bin", data, 0)
    tcp_ask(d, uid, "m1.bin", len(data))
    ws_ask(d, uid, "m1.bin", len(data))
    ws_ask(d, uid, "m1.bin", len(data))
    tcp_ask(d, "0" * 32, "x", 1)  # refused: neither
    assert st["verdict"] == "unscanned"
    assert metric(d, "intake_resumes_total", transport="ws") == 1
    assert metric(d, "intake_resumes_total", transport="tcp") == 2
    assert metric(d, "intake_requeries_total", transport="tcp") == 1
    assert metric(d, "intake_requeries_total", transport="ws") == 2


# --- 8. intake --retries ----------------------------------------------------------


def run_cli(port, path, *args, timeout=90):
    return subprocess.run([INTAKE, *args, "127.0.0.1:%d" % port, str(path)], capture_output=True,
                          text=True, timeout=timeout)


def test_cli_resumes_through_a_proxy_that_cuts_twice(daemon, tmp_path):
    f = tmp_path / "cut-twice.bin"
    data = os.urandom(16 * MIB + 5)
    f.write_bytes(data)
    proxy = CuttingProxy(daemon.tcp_port, cuts=[6 * MIB, 5 * MIB])
    try:
        r = run_cli(proxy.port, f, "--sha256", "--retries", "3")
    finally:
        proxy.close()
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout == "%s: OK (not scanned)\n" % f
    assert proxy.cut_count == 2 and r.stderr.count("retrying") == 2, r.stderr
    assert proxy.connections == 3
    assert_whole(daemon, {"type": "STATUS", "size": len(data), "sha256": sha256(data),
                          "verdict": "unscanned", "stored_as": f.name}, f.name, data)
    print("forwarded %d bytes for a %d byte file (%.2fx)" %
          (proxy.forwarded, len(data), proxy.forwarded / len(data)))
    assert proxy.forwarded < 1.5 * len(data), proxy.forwarded
    assert daemon.logs().count("resumed at byte") == 2


def test_cli_starts_over_after_a_404(daemon, tmp_path):
    f = tmp_path / "wiped.bin"
    data = os.urandom(8 * MIB)
    f.write_bytes(data)

    def wipe():  # the server lost everything between two attempts
        wait_for(lambda: "interrupted after" in daemon.logs(), 10, what="the interruption")
        for name in os.listdir(daemon.spool_dir):
            os.unlink(os.path.join(daemon.spool_dir, name))
    proxy = CuttingProxy(daemon.tcp_port, cuts=[3 * MIB], on_cut=wipe)
    try:
        r = run_cli(proxy.port, f, "--retries", "2")
    finally:
        proxy.close()
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout == "%s: OK (not scanned)\n" % f
    assert "cannot resume it; starting over" in r.stderr, r.stderr
    assert daemon.accepted() == [f.name]
    assert file_sha256(os.path.join(daemon.accept_dir, f.name)) == sha256(data)


def test_cli_waits_while_the_server_holds_the_dead_connection(daemon_factory, tmp_path):
    """The client's network goes, the server's side of the connection stays
    open: the resume hears "upload in use" until idle_timeout drops it; the
    CLI keeps asking, then resumes."""
    d = daemon_factory(idle_timeout="2s", resume_timeout="30s")
    f = tmp_path / "held.bin"
    data = os.urandom(4 * MIB)
    f.write_bytes(data)
    proxy = CuttingProxy(d.tcp_port, cuts=[MIB], server_side=False)
    try:
        r = run_cli(proxy.port, f, "--retries", "2")
    finally:
        proxy.close()
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "waiting for it to let go" in r.stderr, r.stderr
    assert "resumed at byte" in d.logs()
    assert file_sha256(os.path.join(d.accept_dir, f.name)) == sha256(data)
    assert proxy.forwarded < 1.5 * len(data)


def test_no_record_is_left_open(daemon_factory):
    """An upload keeps its record (spool/<id>.state) open from the first save
    to its end, not reopened per save, and lets it go however it ends:
    placed, infected, a checksum mismatch, cut off, resumed and placed,
    asked again."""
    d = daemon_factory(scan=True, workers=1)
    worker = d.workers()[0]

    def open_records():
        out = []
        for fd in os.listdir("/proc/%d/fd" % worker):
            try:
                if os.readlink("/proc/%d/fd/%s" % (worker, fd)).endswith(".state"):
                    out.append(fd)
            except OSError:
                pass
        return out

    data = os.urandom(200000)
    ready, st = Client(d.tcp_port).upload("clean.bin", data, sha=True)
    assert st["verdict"] == "clean"
    assert Client(d.tcp_port).upload("e.com", EICAR)[1]["verdict"] == "infected"
    c = Client(d.tcp_port)
    c.start("bad.bin", 5, "0" * 64)
    c.send(b"hello")
    assert c.line()["type"] == "READY" and c.line()["code"] == 422
    c.close()
    uid = tcp_begin(d, "cut.bin", data, 1000, sha=True)
    # Held open while the upload waits to be resumed? No: an interrupted
    # upload holds nothing, its record included.
    wait_for(lambda: open_records() == [], 5, what="the cut upload's record closed")
    assert tcp_resume(d, uid, "cut.bin", data, 1000, sha=True)["verdict"] == "clean"
    assert tcp_ask(d, ready["id"], "clean.bin", len(data), sha256(data)) == st
    c, held = tcp_open(d, "open.bin", data, 5000)
    assert len(open_records()) == 1  # the one upload in progress: one record open
    c.close()
    interrupted(d, held, 5000)
    wait_for(lambda: open_records() == [], 5, what="every record closed")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_reload_that_sets_user_keeps_the_spool_resumable(daemon_factory):
    """Uploads written while intaked ran as root, then a reload that sets
    user: their records and files become the user's, so they resume (every
    one answered 404: the user's workers could not read the root-owned
    records)."""
    import subprocess
    from conftest import short_dir
    base = short_dir()
    os.chmod(base, 0o755)
    try:
        d = daemon_factory(spool_dir=base + "/spool", accept_dir=base + "/accepted",
                           quarantine_dir=base + "/q")
        data = os.urandom(300000)
        uid = tcp_begin(d, "as-root.bin", data, 100000)
        # What a user who owns the spool could leave there: a hard link to a
        # root file elsewhere, a symlink to a root directory. Neither may
        # change owner.
        outside = base + "/outside"
        os.mkdir(outside, 0o700)
        with open(outside + "/secret", "w") as f:
            f.write("root's")
        os.link(outside + "/secret", d.spool_dir + "/linked")
        os.symlink(outside, d.spool_dir + "/pointer")
        d.reload(user="nobody")
        wait_for(lambda: "applied" in d.logs(), 10, what="the reload")
        st = tcp_resume(d, uid, "as-root.bin", data, 100000)
        assert_whole(d, st, "as-root.bin", data)
        assert os.stat(outside).st_uid == 0 and os.stat(outside + "/secret").st_uid == 0
        # And a reload to another spool says what it leaves behind.
        d.reload(spool_dir=base + "/spool2")
        wait_for(lambda: "reload: spool_dir is now %s/spool2" % base in d.logs(), 10,
                 what="the warning")
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", base])
