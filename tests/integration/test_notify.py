"""systemd's notification protocol (Type=notify), checked through a fake
NOTIFY_SOCKET: a unix datagram socket the test binds, with SO_PASSCRED so
that every message comes with its sender's pid. READY=1 once the workers
and the scanner are up, RELOADING=1 / READY=1 around HUP, STOPPING=1, and
the binary upgrade handing the service over with MAINPID= (and back on a
roll back) without the old master ever saying STOPPING=1."""
import os
import signal
import socket
import struct

import pytest

from conftest import Client, alive, short_dir, wait_for


class Notifications:
    def __init__(self):
        self.dir = short_dir()
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.seen = []  # (pid, {name: value}) in arrival order

    def _recv(self, timeout):
        self.sock.settimeout(timeout)
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", cdata[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
        self.seen.append((pid, fields))
        return pid, fields

    def expect(self, pred, what, timeout=20):
        """The next message (from now on) that satisfies pred(pid, fields)."""
        while True:
            try:
                pid, f = self._recv(timeout)
            except socket.timeout:
                raise AssertionError("no notification: " + what)
            if pred(pid, f):
                return pid, f

    def pending(self):
        """Every message already queued."""
        out = []
        while True:
            try:
                out.append(self._recv(0.05))
            except socket.timeout:
                return out

    def close(self):
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


@pytest.fixture
def notes(monkeypatch):
    n = Notifications()
    monkeypatch.setenv("NOTIFY_SOCKET", n.path)
    yield n
    n.close()


def ready_from(pid):
    return lambda p, f: p == pid and f.get("READY") == "1"


def test_ready_reload_stopping(daemon_factory, notes):
    d = daemon_factory(start=False, workers=2, scan=True).start(wait=False)
    pid, f = notes.expect(ready_from(d.pid), "READY=1 from the master")
    # Ready means ready: a worker answers, both workers run, the scanner is up.
    assert d.health() == {"status": "ok", "workers": 2, "scanner": "up",
                          "node": socket.gethostname()}
    assert f["MAINPID"] == str(d.pid)
    assert "\n" not in f["STATUS"] and "2 workers" in f["STATUS"] and "scanner up" in f["STATUS"]
    # Nothing before READY claimed readiness, and nobody else spoke.
    assert [p for p, _ in notes.seen] == [d.pid] * len(notes.seen)

    d.signal(signal.SIGHUP)
    notes.expect(lambda p, f: p == d.pid and f.get("RELOADING") == "1", "RELOADING=1")
    pid, f = notes.expect(ready_from(d.pid), "READY=1 after the reload")
    assert "generation 2" in f["STATUS"]
    assert Client(d.tcp_port).upload("after-hup.txt", b"x")[1]["verdict"] == "clean"

    d.signal(signal.SIGQUIT)
    notes.expect(lambda p, f: p == d.pid and f.get("STOPPING") == "1", "STOPPING=1")
    d.wait_exit(20)


def test_binary_upgrade_hands_the_service_over(daemon_factory, notes):
    d = daemon_factory(start=False, workers=1, scan=True).start(wait=False)
    old = d.pid
    notes.expect(ready_from(old), "READY=1 from the first master")
    d.signal(signal.SIGUSR2)
    new, f = notes.expect(lambda p, f: p != old and f.get("READY") == "1",
                          "READY=1 from the new master")
    assert f["MAINPID"] == str(new) and alive(new)
    try:
        os.kill(old, signal.SIGWINCH)
        os.kill(old, signal.SIGQUIT)
        d.wait_exit(20)
        # The old master left without a word to systemd: STOPPING=1 from it
        # would stop the service the new master now runs.
        after = [f for p, f in notes.pending() if p == old]
        assert after == []
        assert not any(p == old and "STOPPING" in f for p, f in notes.seen)
        # The new master serves, and is the one that says STOPPING=1 later.
        assert Client(d.tcp_port).upload("after-upgrade.txt", b"x")[1]["verdict"] == "clean"
        os.kill(new, signal.SIGTERM)
        notes.expect(lambda p, f: p == new and f.get("STOPPING") == "1", "STOPPING=1 from new")
        wait_for(lambda: not alive(new), 10, what="the new master to stop")
    finally:
        if alive(new):
            os.kill(new, signal.SIGKILL)


def test_upgrade_rolled_back_returns_the_service(daemon_factory, notes):
    d = daemon_factory(start=False, workers=1, scan=True).start(wait=False)
    old = d.pid
    notes.expect(ready_from(old), "READY=1 from the first master")
    d.signal(signal.SIGUSR2)
    new, _ = notes.expect(lambda p, f: p != old and f.get("READY") == "1",
                          "READY=1 from the new master")
    os.kill(new, signal.SIGTERM)
    # The new binary gives the service back instead of stopping it...
    pid, f = notes.expect(lambda p, f: p == new and "MAINPID" in f, "MAINPID= from new")
    assert f["MAINPID"] == str(old) and "STOPPING" not in f
    # ...and the old master says it is the main process, and ready, again.
    pid, f = notes.expect(ready_from(old), "READY=1 from the old master again")
    assert f["MAINPID"] == str(old)
    assert not any(p == new and "STOPPING" in f for p, f in notes.seen)
    assert Client(d.tcp_port).upload("rolled-back.txt", b"x")[1]["verdict"] == "clean"


def test_unreachable_notify_socket_changes_nothing(daemon_factory, monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    d = daemon_factory(workers=1)
    assert Client(d.tcp_port).upload("a.txt", b"x")[1]["verdict"] == "unscanned"
    d.signal(signal.SIGHUP)
    wait_for(lambda: "applied" in d.logs(), what="the reload")
    assert Client(d.tcp_port).upload("b.txt", b"x")[1]["verdict"] == "unscanned"
