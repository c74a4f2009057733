"""What an attack run and a code review found (issue 10), each through the
real daemon: names with NUL and control characters, bytes after a START
object, forged error-log lines, access-log lines that must stay JSON, STATUS
that must fit whatever the name, placement across filesystems, clients that
do not read, uploads finished after their client left."""
import json
import os
import socket
import struct
import subprocess
import threading

import pytest

from conftest import Client, sha256, wait_for
from wsraw import WS

OP_TEXT, OP_BINARY, OP_CLOSE = 0x1, 0x2, 0x8


def access_lines(path):
    """Every line of the access log, each parsed (a line that is not JSON fails)."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        raw = f.read()
    out = []
    for line in raw.split(b"\n")[:-1]:
        out.append(json.loads(line.decode("utf-8")))  # strict: UTF-8 and JSON
    return out


# --- item 1: a NUL in a JSON filename -------------------------------------------

def test_nul_in_json_filename_is_removed_not_a_string_end(daemon_factory, tmp_path):
    log = tmp_path / "access.log"
    d = daemon_factory(access_log=str(log))
    c = Client(d.tcp_port)
    c.send(b'{"type":"START","filename":"shell.php\\u0000.jpg","size":2}\nok')
    ready = c.line()
    assert ready["type"] == "READY", ready
    st = c.line()
    assert st["stored_as"] == "shell.php.jpg"
    assert st["filename"] == "shell.php\x00.jpg"
    assert st["status"] == "./shell.php\x00.jpg: OK (not scanned)"
    assert d.accepted() == ["shell.php.jpg"]
    line = wait_for(lambda: access_lines(log), what="the access log line")[0]
    assert line["filename"] == "shell.php\x00.jpg" and line["stored_as"] == "shell.php.jpg"
    assert "shell.php\\x00.jpg" in d.logs()


@pytest.mark.parametrize("start", [
    b'{"type":"START\\u0000junk","filename":"a","size":1}',
    b'{"type":"START","filename":"a","size":1,"id":"0123456789abcdef0123456789abcdef\\u0000"}',
    b'{"type":"START","filename":"a","size":1,"token":"t\\u0000u"}',
])
def test_nul_in_other_json_strings_is_refused(daemon, start):
    c = Client(daemon.tcp_port)
    c.send(start + b"\n")
    err = c.line()
    assert err["type"] == "ERROR" and err["code"] == 400, err
    assert daemon.spooled() == []


# --- item 2: one JSON object per START line --------------------------------------

@pytest.mark.parametrize("tail", [b" trailing", b'{"type":"START"}', b"\x00", b",", b"\x01"])
def test_bytes_after_the_start_object_are_400(daemon, tail):
    c = Client(daemon.tcp_port)
    c.send(b'{"type":"START","filename":"a.txt","size":1}' + tail + b"\nx")
    err = c.line()
    assert err["type"] == "ERROR" and err["code"] == 400, err
    assert c.closed()
    assert daemon.spooled() == [] and daemon.accepted() == []


def test_whitespace_around_the_start_object_is_fine(daemon):
    c = Client(daemon.tcp_port)
    c.send(b' \t{"type":"START","filename":"a.txt","size":1} \t\r\nx')
    assert c.line()["type"] == "READY"
    assert c.line()["stored_as"] == "a.txt"


@pytest.mark.parametrize("msg", [
    b'{"type":"START","filename":"a.txt","size":1} x',
    b'{"type":"START","filename":"a.txt","size":1}\x00',
])
def test_websocket_control_message_with_trailing_bytes_is_400(daemon, msg):
    ws = WS(daemon.ws_port, path="/")
    ws.send(OP_TEXT, msg)
    f = ws.recv()
    assert f[1] == OP_TEXT and json.loads(f[2])["code"] == 400, f
    ws.expect_close(1008)
    assert daemon.spooled() == []


# --- item 3: client strings cannot forge error-log lines -------------------------

def test_filename_cannot_forge_error_log_lines(daemon):
    forged = "x\n2030-01-01T00:00:00.000Z [error] 1: master: FORGED\x1b[31m.txt"
    c = Client(daemon.tcp_port)
    c.start(forged, 1)
    c.send(b"x")
    assert c.line()["type"] == "READY"
    assert c.line()["filename"] == forged
    # A refused plain-form name (not UTF-8) with a line break and ESC, too.
    c2 = Client(daemon.tcp_port)
    c2.send(b"1 bad\xff\n2030-01-01T00:00:00.000Z [error] 1: master: FORGED2\x1b\n")
    assert c2.line()["code"] == 400
    # WebSocket: an unknown type is echoed in the ERROR and the log.
    ws = WS(daemon.ws_port, path="/")
    ws.send(OP_TEXT, json.dumps({"type": "X\n2030-01-01T00:00 FORGED3"}).encode())
    assert json.loads(ws.recv()[2])["code"] == 400
    wait_for(lambda: "FORGED3" in daemon.logs(), what="the refusal logged")
    text = open(daemon.log_path, "rb").read()
    assert b"\x1b" not in text
    for line in text.split(b"\n"):
        assert b"FORGED" not in line or not line.startswith(b"2030-"), line
    assert b"\\x0a2030-01-01T00:00:00.000Z [error] 1: master: FORGED\\x1b[31m.txt" in text


# --- item 4: the access log stays JSON for names that are not UTF-8 -------------

def test_access_log_is_json_for_a_refused_non_utf8_name(daemon_factory, tmp_path):
    log = tmp_path / "access.log"
    d = daemon_factory(access_log=str(log))
    c = Client(d.tcp_port)
    c.send(b"3 caf\xe9\x01\"\\.txt\n")
    assert c.line()["code"] == 400
    line = wait_for(lambda: access_lines(log), what="the access log line")[0]
    assert line["code"] == 400
    assert line["filename"] == "caf\ufffd\x01\"\\.txt"
    assert bytes.fromhex(line["filename_hex"]) == b"caf\xe9\x01\"\\.txt"
    # A good name has no filename_hex.
    Client(d.tcp_port).upload("fine.txt", b"ok")
    wait_for(lambda: len(access_lines(log)) == 2, what="the second line")
    assert "filename_hex" not in access_lines(log)[1]


# --- item 9: STATUS fits whatever the name ---------------------------------------

def test_status_of_a_long_control_character_name(daemon):
    name = b"a" + b"\x01" * 4000 + b".txt"
    c = Client(daemon.tcp_port)
    c.send(b"2 " + name + b"\nok")
    assert c.line()["type"] == "READY"
    st = c.line()
    assert st is not None, "closed without STATUS"
    assert st["type"] == "STATUS" and st["stored_as"] == "a.txt"
    assert st["filename"] == name.decode()
    assert st["status"] == "./" + name.decode() + ": OK (not scanned)"


# --- item 6: spool and accept/quarantine on different filesystems ----------------

@pytest.fixture
def other_fs(tmp_path):
    """A small tmpfs: another filesystem than tmp_path's (needs root)."""
    from conftest import small_tmpfs
    with small_tmpfs(tmp_path / "otherfs", "16m") as mnt:
        yield mnt


def test_placing_across_filesystems(daemon_factory, other_fs):
    from conftest import EICAR
    d = daemon_factory(start=False, accept_dir=str(other_fs / "accepted"),
                       quarantine_dir=str(other_fs / "quarantine"))
    d.scanning().start()
    try:
        assert os.stat(d.spool_dir).st_dev != os.stat(d.accept_dir).st_dev
        data = os.urandom(3 << 20)
        st = Client(d.tcp_port).upload("big.bin", data, sha=True)[1]
        assert st["verdict"] == "clean" and st["stored_as"] == "big.bin", st
        st = Client(d.tcp_port).upload("big.bin", b"second")[1]
        assert st["stored_as"] == "big-1.bin"
        from conftest import file_sha256
        assert file_sha256(os.path.join(d.accept_dir, "big.bin")) == sha256(data)
        # The copy says whose it is (how a retry after a crash knows it).
        first = Client(d.tcp_port).upload("mark.bin", b"marked")[1]
        assert os.getxattr(os.path.join(d.accept_dir, "mark.bin"),
                           "user.intake.upload") == first["id"].encode(), first
        st = Client(d.tcp_port).upload("eicar.com", EICAR)[1]
        assert st["verdict"] == "infected", st
        q = os.listdir(other_fs / "quarantine")
        assert len(q) == 1 and q[0].endswith("-eicar.com")
        # Only final names, nothing left in the spool.
        assert d.accepted() == ["big-1.bin", "big.bin", "mark.bin"]
        assert d.spooled() == []
    finally:
        d.stop()


# --- item 10: an upload finished after its client left still gets its line -------

class FakeScanner:
    """A scanner on a UNIX socket that answers PING at once and holds each
    FILDES scan until release() (clamd's protocol, as scan.c speaks it)."""

    def __init__(self, path):
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(path)
        self.srv.listen(16)
        self.scanning = threading.Event()
        self.go = threading.Event()
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
            n = 0  # the request number in a session (zIDSESSION), 0 outside one
            while True:
                data, fds, _, _ = socket.recv_fds(s, 64, 1)
                for fd in fds:
                    os.close(fd)
                if data.startswith(b"zIDSESSION\0"):
                    n, data = 1, data[11:]
                    if not data and not fds:
                        continue
                prefix = b"%d: " % n if n else b""
                if data.startswith(b"zPING"):
                    s.sendall(prefix + b"PONG\0")
                elif data.startswith(b"zFILDES"):
                    self.scanning.set()
                    self.go.wait(30)
                    s.sendall(prefix + b"fd[1]: OK\0")
                if not n or not data:
                    return
                n += 1

    def release(self):
        self.go.set()

    def close(self):
        self.go.set()
        self.srv.close()


def unix_ws(path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    ws = WS.__new__(WS)
    ws.sock, ws.buf = s, b""
    return ws


def ws_connections(sockpath):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sockpath)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    body = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    s.close()
    for line in body.decode().splitlines():
        if line.startswith('intake_connections{transport="ws"}'):
            return int(float(line.split()[-1]))
    return None


def test_upload_finished_after_its_client_left_has_one_access_line(daemon_factory, tmp_path):
    from conftest import short_dir
    sd = short_dir()
    scanner = FakeScanner(os.path.join(sd, "scan.sock"))
    log = tmp_path / "access.log"
    wsock = os.path.join(sd, "ws.sock")
    d = daemon_factory(start=False, workers=1, access_log=str(log),
                       scanner="unix:" + os.path.join(sd, "scan.sock"))
    with open(d.conf, "a") as f:
        f.write("listen_ws unix:%s\n" % wsock)
    try:
        d.start()
        ws = unix_ws(wsock)
        ws.send(OP_TEXT, json.dumps({"type": "START", "filename": "late.txt", "size": 1}).encode())
        uid = json.loads(ws.recv()[2])["id"]
        # Many empty data messages, each acknowledged, and never read: over
        # a UNIX socket a few hundred acks fill the server's send buffer, so
        # the worker still has output queued when DONE starts the job.
        batch = b"".join(ws.frame(OP_BINARY, b"") for _ in range(5000))
        batch += ws.frame(OP_BINARY, b"x") + ws.frame(OP_TEXT, b'{"type":"DONE"}')
        ws.sock.sendall(batch)
        assert scanner.scanning.wait(20), "DONE was not processed"
        ws.sock.close()  # the client leaves while its file is being scanned
        wait_for(lambda: ws_connections(wsock) == 1, 10,
                 what="the worker to notice the client left")  # (1: this request)
        scanner.release()
        wait_for(lambda: d.accepted() == ["late.txt"], what="the file placed")
        lines = wait_for(lambda: [l for l in access_lines(log) if l["id"] == uid], 10,
                         what="the upload's access log line")
        assert len(lines) == 1, lines
        assert lines[0]["code"] == 499 and lines[0]["stored_as"] == "late.txt"
        assert lines[0]["verdict"] == "clean"
        assert "after its client had gone" in d.logs()
        d.stop()
        assert len([l for l in access_lines(log) if l["id"] == uid]) == 1
    finally:
        scanner.close()
        subprocess.run(["rm", "-rf", sd])


# --- item 8: a WebSocket client that sends but never reads ----------------------

def test_client_that_never_reads_its_acks(daemon_factory):
    d = daemon_factory(workers=1, idle_timeout="1s", max_file_size="2G")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    s.settimeout(30)
    s.connect(("127.0.0.1", d.ws_port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    ws = WS.__new__(WS)
    ws.sock, ws.buf = s, b""
    ws.send(OP_TEXT, json.dumps({"type": "START", "filename": "flood.bin", "size": 1 << 30}).encode())
    assert json.loads(ws.recv()[2])["code"] == 200
    batch = b"".join(ws.frame(OP_BINARY, b"") for _ in range(2000))
    sent = [0]

    def flood():  # keeps sending, never reads, until the server lets go
        try:
            while True:
                s.sendall(batch)
                sent[0] += len(batch)
        except OSError:
            pass

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    wait_for(lambda: "has not read the server's messages" in d.logs(), 20,
             what="the stalled client noticed")
    logs = d.logs()
    assert "a client must read its acknowledgements" in logs
    assert "no data received" not in logs
    # Closed at once, not lingering over what it keeps sending: only the
    # metrics request itself is left.
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.ws_port, timeout=5) as r:
        text = r.read().decode()
    assert 'intake_connections{transport="ws"} 1' in text, [
        l for l in text.splitlines() if l.startswith("intake_connections")]
    t.join(20)
    assert not t.is_alive()
    s.close()
