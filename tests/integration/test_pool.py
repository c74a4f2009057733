"""A pool of scanners: Debian's clamd on TCP (INSTREAM) and on a UNIX socket
(FILDES) in one `scanner` directive, round-robin, failing over when one goes
away, /healthz and /metrics per address."""
import os
import re
import socket
import subprocess
import threading
import urllib.request

import pytest

from conftest import EICAR, INTAKED, Client, free_port, wait_for
from test_scanner import Clamd

EICAR_NAME = "Eicar-Test-Signature.UNOFFICIAL"


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def tcp_clamd(tmp_path, port, extra=""):
    """clamd on 127.0.0.1:port (it has a UNIX socket too, unused here)."""
    d = tmp_path / ("clamd-tcp-%d" % len(list(tmp_path.glob("clamd-tcp-*"))))
    d.mkdir()
    c = Clamd(d, "TCPSocket %d\nTCPAddr 127.0.0.1\n%s" % (port, extra)).ready()
    wait_for(lambda: listening(port), 30, what="clamd on TCP")
    return c


def unix_clamd(tmp_path):
    d = tmp_path / "clamd-unix"
    d.mkdir(exist_ok=True)
    return Clamd(d, "").ready()


def scans(d):
    """intake_scans_total as {(scanner, result): n}."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.ws_port, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r'^intake_scans_total\{scanner="([^"]*)",result="(ok|error)"\} (\d+)$',
                         text, re.M):
        out[(m.group(1), m.group(2))] = int(m.group(3))
    return out


@pytest.fixture
def pool(daemon_factory, tmp_path):
    """One intaked worker with scanner = a TCP clamd and a UNIX clamd."""
    port = free_port()
    made = {"tcp": tcp_clamd(tmp_path, port, "StreamMaxLength 1M\n"), "unix": unix_clamd(tmp_path)}
    try:
        tcp_addr, unix_addr = "tcp:127.0.0.1:%d" % port, "unix:" + made["unix"].sock
        d = daemon_factory(workers=1, scanner="%s %s" % (tcp_addr, unix_addr), scan_timeout="3s")
        wait_for(lambda: all("scanner at %s is up" % a in d.logs() for a in (tcp_addr, unix_addr)),
                 10, what="both scanners up")
        assert d.health()["scanner"] == "up"
        yield d, made, tcp_addr, unix_addr, port
    finally:
        for c in made.values():
            c.stop()


def clamd_log(c):
    with open(os.path.join(c.dir, "clamd.log")) as f:
        return f.read()


def test_round_robin_and_eicar_through_each(pool):
    d, clamds, tcp_addr, unix_addr, _ = pool
    c = Client(d.tcp_port)
    for i in range(6):
        assert c.upload("ok%d.txt" % i, b"fine %d\n" % i)[1]["verdict"] == "clean"
    s = scans(d)
    # One worker: strictly one, then the other.
    assert s[(tcp_addr, "ok")] == 3 and s[(unix_addr, "ok")] == 3, s
    assert s[(tcp_addr, "error")] == 0 and s[(unix_addr, "error")] == 0, s
    for i in range(2):
        st = c.upload("e%d.com" % i, EICAR)[1]
        assert st["verdict"] == "infected" and st["virus"] == EICAR_NAME, st
    s = scans(d)
    assert s[(tcp_addr, "ok")] == 4 and s[(unix_addr, "ok")] == 4, s
    # Each clamd found it: streamed (INSTREAM), and the spool file (FILDES).
    assert re.search(r"stream\S*: %s FOUND" % EICAR_NAME, clamd_log(clamds["tcp"]))
    assert re.search(r"\.part: %s FOUND" % EICAR_NAME, clamd_log(clamds["unix"]))
    assert sorted(d.accepted()) == ["ok%d.txt" % i for i in range(6)]
    c.close()


def test_over_stream_max_length_is_an_error(pool):
    """clamd's INSTREAM limit: never clean, the file kept in the spool; the
    FILDES scanner next in turn gets the small file after it."""
    d, _, tcp_addr, unix_addr, _ = pool
    c = Client(d.tcp_port)
    big = os.urandom(3 << 20)  # StreamMaxLength 1M on the TCP clamd
    ready, st = c.upload("big.bin", big)  # the first scan goes to the first address: TCP
    assert st["verdict"] == "error", st
    assert st["status"] == ("./big.bin: file could not be fully scanned (INSTREAM size limit "
                            "exceeded: the scanner's StreamMaxLength is smaller than the file) "
                            "ERROR"), st
    assert d.accepted() == [] and d.spooled() == [ready["id"] + ".part"]
    assert scans(d)[(tcp_addr, "error")] == 1
    assert c.upload("small.txt", b"x")[1]["verdict"] == "clean"
    assert scans(d)[(unix_addr, "ok")] == 1
    c.close()


def test_one_killed_then_both_then_back(pool, tmp_path):
    d, clamds, tcp_addr, unix_addr, port = pool
    results, errors = [], []

    def uploader(k):
        try:
            c = Client(d.tcp_port)
            for i in range(15):
                results.append(c.upload("f%d-%d.bin" % (k, i), os.urandom(4096))[1]["verdict"])
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=uploader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(results) >= 10, 30, what="uploads under way")
    clamds["tcp"].proc.kill()  # kill -9, in the middle of the uploads
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert results == ["clean"] * 60, results
    assert len(d.accepted()) == 60
    s = scans(d)
    assert s[(tcp_addr, "ok")] > 0 and s[(unix_addr, "ok")] > 30, s
    # Logged once, whoever saw it first; /healthz stays up with one left.
    wait_for(lambda: ("scanner at %s is down" % tcp_addr) in d.logs(), 10, what="the down log")
    assert d.logs().count("scanner at %s is down" % tcp_addr) == 1
    assert "scans go to the other scanners" in d.logs()
    assert d.health()["scanner"] == "up"
    c = Client(d.tcp_port)
    assert c.upload("after.txt", b"after")[1]["verdict"] == "clean"
    assert d.logs().count("scanner at %s is down" % tcp_addr) == 1  # not per upload

    # Both down: verdict error within scan_timeout, /healthz down.
    clamds["unix"].stop()
    wait_for(lambda: d.health()["scanner"] == "down", 10, what="/healthz scanner down")
    ready, st = c.upload("none.txt", b"nobody scans me")
    assert st["verdict"] == "error" and st["status"] == "./none.txt: scanner unavailable ERROR"
    assert ready["id"] + ".part" in d.spooled()

    # The TCP one is back on its port: up again, said once.
    clamds["tcp"] = tcp_clamd(tmp_path, port, "StreamMaxLength 1M\n")
    wait_for(lambda: d.health()["scanner"] == "up", 15, what="/healthz scanner up again")
    wait_for(lambda: d.logs().count("scanner at %s is up" % tcp_addr) == 2, 10,
             what="the back-up log")
    c = Client(d.tcp_port)
    for i in range(3):
        assert c.upload("back%d.txt" % i, b"back")[1]["verdict"] == "clean"
    assert d.logs().count("scanner at %s is up" % tcp_addr) == 2
    c.close()


def test_bad_scanner_addresses_fail_check(tmp_path):
    """intaked -t names the file and line of a bad address."""
    conf = tmp_path / "bad.conf"
    conf.write_text("scanner off\n")
    for line, why in [("scanner tcp:127.0.0.1\n", "expected host:port"),
                      ("scanner tcp:127.0.0.1:99999\n", "bad port"),
                      ("scanner unix:/a unix:/a\n", "unix:/a is given twice"),
                      ("scanner clamd:3310\n", "expected unix:/path or tcp:HOST:PORT")]:
        conf.write_text("log_level info\n" + line)
        r = subprocess.run([INTAKED, "-t", "-c", str(conf)], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode != 0, line
        assert "%s:2: " % conf in r.stderr and why in r.stderr, r.stderr
    conf.write_text("scanner tcp:127.0.0.1:3310 tcp:[::1]:3310 unix:/run/clamav/clamd.ctl\n"
                    "scan_timeout 5s\nnode_name gw-a\n")
    r = subprocess.run([INTAKED, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr


def test_addresses_down_from_the_start_are_logged_once(daemon_factory, tmp_path):
    """A pool address that never answered is said to be down, once, like one
    that went away (before, only an address that had been up got a line:
    a mistyped address went unheard while the others did the scanning)."""
    live = unix_clamd(tmp_path)
    try:
        refused = "tcp:127.0.0.1:%d" % free_port()
        missing = "unix:%s" % (tmp_path / "no-such.sock")
        good = "unix:" + live.sock
        d = daemon_factory(workers=1, scanner="%s %s %s" % (refused, good, missing),
                           scan_timeout="3s")
        wait_for(lambda: all("scanner at %s is down" % a in d.logs() for a in (refused, missing)),
                 10, what="the down lines")
        assert "scanner at %s is up" % good in d.logs()
        c = Client(d.tcp_port)
        for i in range(4):  # round-robin would reach the dead ones: skipped, not logged again
            assert c.upload("p%d.txt" % i, b"pool %d" % i)[1]["verdict"] == "clean"
        c.close()
        logs = d.logs()
        for a in (refused, missing):
            assert logs.count("scanner at %s is down" % a) == 1, logs
            assert "scanner at %s is up" % a not in logs
        assert d.health()["scanner"] == "up"
    finally:
        live.stop()
