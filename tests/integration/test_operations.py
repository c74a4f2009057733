"""Operations: every signal under load with every byte checked (HUP, TTIN,
TTOU, USR2 -> WINCH -> QUIT, USR2 rollback), a bad reload, listener
changes, user, daemon + -s stop, the access log and its trust rules, and
real nginx in front running the shipped samples."""
import asyncio
import hashlib
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
import websockets

from conftest import (EICAR, INTAKE, INTAKED, NGINX, ROOT, Client, alive, free_port, free_ports, sha256,
                      short_dir, small_tmpfs, start_nginx, wait_for)


class Load:
    """Concurrent slow uploads: each spans several hundred milliseconds, so
    signals land in the middle of them. Every STATUS and every stored byte is
    checked; a failure is anything but a correct STATUS."""

    def __init__(self, d, clients=10, size=192 * 1024, chunks=12, pause=0.03, refused_ends=False):
        self.d, self.size, self.chunks, self.pause = d, size, chunks, pause
        self.refused_ends = refused_ends
        self.stop = threading.Event()
        self.ok, self.failed, self.lock = [], [], threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]

    def run(self, i):
        n = 0
        while not self.stop.is_set():
            n += 1
            name = "load-%02d-%04d.bin" % (i, n)
            data = os.urandom(self.size)
            try:
                c = Client(self.d.tcp_port, timeout=30)
            except ConnectionRefusedError:
                if self.refused_ends:
                    return  # the listeners are closed (QUIT): no new uploads
                raise
            try:
                c.start(name, len(data), sha256(data))
                step = len(data) // self.chunks
                for k in range(0, len(data), step):
                    c.send(data[k:k + step])
                    time.sleep(self.pause)
                ready, st = c.line(), c.line()
                c.close()
                assert ready["type"] == "READY" and st["type"] == "STATUS", (ready, st)
                assert st["sha256"] == sha256(data) and st["stored_as"] == name, st
                with self.lock:
                    self.ok.append((name, data))
            except Exception as e:  # counted, reported by the test
                with self.lock:
                    self.failed.append("%s: %r" % (name, e))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def verify(self, what):
        for name, data in self.ok:
            with open(os.path.join(self.d.accept_dir, name), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == sha256(data), name
        print("\n%s: %d uploads completed, %d failed" % (what, len(self.ok), len(self.failed)))
        assert self.failed == [], self.failed[:5]
        assert len(self.ok) >= 10


def rewrite(d, **changes):
    d.dir.update({k: str(v) for k, v in changes.items()})
    with open(d.conf, "w") as f:
        for k, v in d.dir.items():
            f.write("%s %s\n" % (k, v))


def test_hup_under_load(daemon_factory):
    d = daemon_factory(workers=2)
    first = set(d.workers())
    with Load(d) as load:
        time.sleep(0.8)
        rewrite(d, workers=3)
        d.signal(signal.SIGHUP)
        wait_for(lambda: "reload: configuration" in d.logs(), what="the reload")
        time.sleep(0.8)
        d.signal(signal.SIGHUP)  # a second reload, same configuration
        time.sleep(0.8)
    load.verify("across two reloads")
    wait_for(lambda: len(d.workers()) == 3 and not first & set(d.workers()), 10,
             what="old workers gone, three new ones")
    assert d.logs().count("old ones draining") == 2


def test_hup_with_bad_configuration_changes_nothing(daemon_factory):
    d = daemon_factory(workers=2)
    before = sorted(d.workers())
    with open(d.conf, "a") as f:
        f.write("max_file_size lots\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in d.logs(), what="the failed reload")
    assert re.search(r"reload failed: .*intake\.conf:\d+: invalid size \"lots\"", d.logs())
    time.sleep(0.3)
    assert sorted(d.workers()) == before
    assert Client(d.tcp_port).upload("still.txt", b"up")[1]["type"] == "STATUS"


def test_hup_keeps_listening_fds_and_changes_listeners(daemon_factory):
    d = daemon_factory(workers=1)
    master_fds = lambda: {os.readlink("/proc/%d/fd/%s" % (d.pid, f))
                          for f in os.listdir("/proc/%d/fd" % d.pid)}
    before = master_fds()
    new_port = free_port()
    old_ws = d.ws_port
    d.dir["listen_tcp"] = "127.0.0.1:%d" % d.tcp_port
    rewrite(d)
    with open(d.conf, "a") as f:
        f.write("listen_tcp 127.0.0.1:%d\n" % new_port)
    d.dir.pop("listen_ws")
    rewrite(d)
    with open(d.conf, "a") as f:
        f.write("listen_tcp 127.0.0.1:%d\nlisten_ws 127.0.0.1:%d\n" % (new_port, free_port()))
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reload: configuration" in d.logs(), what="the reload")
    # The unchanged raw TCP socket is the same socket (same inode in the master).
    tcp_inode = [s for s in before if s.startswith("socket:")]
    assert set(tcp_inode) & master_fds()
    assert Client(d.tcp_port).upload("old-port.txt", b"1")[1]["type"] == "STATUS"
    assert Client(new_port).upload("new-port.txt", b"2")[1]["type"] == "STATUS"
    wait_for(lambda: "no longer listening on 127.0.0.1:%d" % old_ws in d.logs(), what="ws removed")
    time.sleep(0.5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", old_ws), timeout=1)


def test_quit_under_load(daemon_factory):
    d = daemon_factory(workers=2)
    with Load(d, refused_ends=True) as load:
        time.sleep(0.8)
        d.signal(signal.SIGQUIT)
        assert d.wait_exit(15) == 0
    load.verify("across QUIT (uploads in flight finish, then no new ones)")
    assert d.spooled() == []  # nothing left half-done


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGHUP], ids=["QUIT", "HUP"])
def test_drain_serves_a_pipelined_upload(daemon_factory, sig):
    """A draining worker (QUIT, or HUP's reload) serves the upload in flight
    and also the next one the client had already sent on that connection
    but the worker had not read yet (it was reset before: neither READY nor
    ERROR, and not stored); then the connection ends cleanly."""
    d = daemon_factory(workers=1)
    c = Client(d.tcp_port)
    c.send(b"4 first.txt\nxx")
    assert c.line()["type"] == "READY"
    d.signal(sig)
    wait_for(lambda: "draining" in d.logs(), what="the worker to drain")
    time.sleep(0.2)
    # The rest of the first body and, behind it, a second upload.
    c.send(b"xx" + b"3 second.txt\nyyy")
    st = c.line()
    assert st["type"] == "STATUS" and st["filename"] == "first.txt", st
    assert c.line()["type"] == "READY"
    st = c.line()
    assert st["type"] == "STATUS" and st["filename"] == "second.txt", st
    c.sock.settimeout(10)
    assert c.sock.recv(100) == b""  # end of stream, not a reset
    c.close()
    if sig == signal.SIGQUIT:
        assert d.wait_exit(15) == 0
    assert sorted(d.accepted()) == ["first.txt", "second.txt"]


def test_shutdown_timeout_with_uploads_pipelined_without_end(daemon_factory, tmp_path):
    """A client that pipelines uploads without waiting keeps a draining worker
    busy until shutdown_timeout: then the leg in progress ends (its file
    placed, its STATUS and access line written), the next upload is told
    ERROR 503, and the stream ends cleanly. Every file in accept_dir was
    acknowledged and logged (one was placed silently, or the connection
    reset, before)."""
    alog = tmp_path / "access.log"
    d = daemon_factory(workers=1, shutdown_timeout="1s", access_log=str(alog))
    sock = socket.create_connection(("127.0.0.1", d.tcp_port), timeout=20)
    stop = threading.Event()

    def send():
        body = b"z" * 1000
        try:
            for i in range(100000):
                if stop.is_set():
                    return
                sock.sendall(b"1000 p%05d.bin\n" % i + body)
        except OSError:
            pass
    sender = threading.Thread(target=send)
    sender.start()
    acked, errors, buf, end = set(), [], b"", "eof"
    quit_at = time.monotonic() + 0.5
    try:
        while True:
            if quit_at and time.monotonic() > quit_at:
                d.signal(signal.SIGQUIT)
                quit_at = None
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                m = json.loads(line)
                if m["type"] == "STATUS":
                    acked.add(m["stored_as"])
                elif m["type"] == "ERROR":
                    errors.append(m)
                    stop.set()
    except ConnectionResetError:
        end = "reset"
    finally:
        stop.set()
        sender.join()
        sock.close()
    assert d.wait_exit(20) == 0
    assert end == "eof", (end, errors)
    assert [e["code"] for e in errors] == [503], errors
    placed = set(d.accepted())
    assert placed == acked, (sorted(placed - acked), sorted(acked - placed))
    logged = {json.loads(x)["stored_as"] for x in alog.read_text().splitlines()}
    assert placed <= logged, sorted(placed - logged)


def test_quit_closes_a_websocket_that_never_started_an_upload(daemon_factory):
    """An idle WebSocket is let go at once by a draining worker (close 1001),
    also one that has sent nothing since its handshake (it held QUIT up for
    the whole shutdown_timeout before)."""
    d = daemon_factory(workers=1, shutdown_timeout="20s")

    async def go():
        async with websockets.connect("ws://127.0.0.1:%d/" % d.ws_port) as w:
            await asyncio.sleep(0.3)
            d.signal(signal.SIGQUIT)
            t0 = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed) as e:
                await asyncio.wait_for(w.recv(), 10)
            return e.value.rcvd.code, time.monotonic() - t0
    code, waited = asyncio.run(go())
    assert code == 1001 and waited < 5, (code, waited)
    assert d.wait_exit(10) == 0


def test_shutdown_timeout_tells_the_client_503(daemon_factory):
    """An upload still in flight when shutdown_timeout strikes is told why it
    ends (ERROR 503, with what was kept and how to resume), not just cut."""
    d = daemon_factory(workers=1, shutdown_timeout="1s")
    c = Client(d.tcp_port)
    c.send(b"10 slow.txt\nabc")
    ready = c.line()
    assert ready["type"] == "READY"
    wait_for(lambda: any(n.endswith(".part") for n in os.listdir(d.spool_dir)),
             what="the spool file")
    time.sleep(0.3)  # the 3 bytes are in
    d.signal(signal.SIGQUIT)
    err = c.line()
    assert err["type"] == "ERROR" and err["code"] == 503, err
    assert err["message"] == ("server is shutting down: the 3 bytes received are kept; resume "
                              "(START with id %s) on a new connection" % ready["id"]), err
    assert d.wait_exit(15) == 0
    c.close()


def test_access_log_on_a_full_disk_keeps_whole_lines(daemon_factory, tmp_path):
    """A line cut short by a full disk stays alone on its line: the lines
    after it are whole JSON objects again (the next one was glued to it)."""
    with small_tmpfs(tmp_path / "tiny", "64k") as tiny:
        alog = tiny / "access.log"
        d = daemon_factory(workers=1, access_log=str(alog))
        try:
            # A first line gives the log a page; then the rest of the disk is
            # filled, so a later line is cut where that page ends.
            assert Client(d.tcp_port).upload("first.txt", b"0")[1]["type"] == "STATUS"
            wait_for(lambda: alog.exists() and alog.stat().st_size > 0, what="the first line")
            filler = tiny / "filler"
            fd = os.open(str(filler), os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while os.write(fd, b"\0" * 4096) > 0:
                    pass
            except OSError:
                pass
            os.close(fd)
            for i in range(12):
                name = "n%02d-%s.txt" % (i, "x" * 200)
                assert Client(d.tcp_port).upload(name, b"1")[1]["type"] == "STATUS"
            wait_for(lambda: "access log line cut short" in d.logs(), what="a line cut short")
            os.unlink(filler)
            assert Client(d.tcp_port).upload("after.txt", b"2")[1]["type"] == "STATUS"
            wait_for(lambda: b"after.txt" in alog.read_bytes(), what="the line after")
            lines = alog.read_bytes().split(b"\n")
            assert lines[-1] == b""
            bad = 0
            for line in lines[:-1]:
                try:
                    json.loads(line)
                except ValueError:
                    bad += 1
            assert bad <= 1, lines
            assert json.loads(lines[-2])["stored_as"] == "after.txt"
        finally:
            d.stop()


def test_ttin_ttou_under_load(daemon_factory):
    d = daemon_factory(workers=2)
    with Load(d) as load:
        time.sleep(0.5)
        d.signal(signal.SIGTTIN)
        wait_for(lambda: len(d.workers()) == 3, what="a third worker")
        time.sleep(0.5)
        d.signal(signal.SIGTTOU)
        time.sleep(0.3)  # signals of one kind do not queue: one at a time
        d.signal(signal.SIGTTOU)
        wait_for(lambda: len(d.workers()) == 1, 10, what="one worker left")
        time.sleep(0.5)
        d.signal(signal.SIGTTOU)  # refused: one must stay
        time.sleep(0.5)
    load.verify("across TTIN, TTOU, TTOU")
    assert len(d.workers()) == 1 and "at least one worker must run" in d.logs()


def read_pid(path):
    """The pid in path, or None while it is being renamed or rewritten."""
    try:
        with open(path) as f:
            return int(f.read())
    except (FileNotFoundError, ValueError):
        return None


def test_usr2_winch_quit_under_load(daemon_factory):
    d = daemon_factory(workers=2, scan=True)
    pidf = d.dir["pid_file"]
    old = d.pid
    old_workers = set(d.workers())
    with Load(d) as load:
        time.sleep(0.6)
        d.signal(signal.SIGUSR2)
        wait_for(lambda: read_pid(pidf) not in (None, old), 10, what="new master")
        new = read_pid(pidf)
        assert read_pid(pidf + ".oldbin") == old
        wait_for(lambda: "inherited 2 listening sockets" in d.logs(), what="inheritance")
        wait_for(lambda: len([p for p in _tree(new) if _title(p) == "intaked: worker process"]) == 2,
                 what="the new master's workers")
        time.sleep(0.6)  # both generations serve
        os.kill(old, signal.SIGWINCH)
        wait_for(lambda: not any(alive(p) for p in old_workers), 15, what="old workers drained")
        time.sleep(0.6)  # only the new binary serves
        os.kill(old, signal.SIGQUIT)
        d.wait_exit(15)
        time.sleep(0.4)
    load.verify("across USR2, WINCH, QUIT")
    assert alive(new) and read_pid(pidf) == new and not os.path.exists(pidf + ".oldbin")
    st = Client(d.tcp_port).upload("after-upgrade.com", b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-"
                                   b"STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")[1]
    assert st["verdict"] == "infected"  # the new master's scanner serves
    os.kill(new, signal.SIGTERM)
    wait_for(lambda: not alive(new), 10, what="new master to stop")


def test_usr2_rollback_with_term(daemon_factory):
    d = daemon_factory(workers=1)
    pidf = d.dir["pid_file"]
    d.signal(signal.SIGUSR2)
    wait_for(lambda: read_pid(pidf) not in (None, d.pid), 10, what="new master")
    new = read_pid(pidf)
    wait_for(lambda: "inherited" in d.logs(), what="the new master up")
    # A second upgrade from the new master while the old one runs is refused
    # (a third master would leave the first in no pid file at all).
    kids = set(_tree(new))
    os.kill(new, signal.SIGUSR2)
    wait_for(lambda: "USR2 ignored: the old master (pid %d) is still running" % d.pid in d.logs(),
             what="the second USR2 refused")
    assert read_pid(pidf) == new and read_pid(pidf + ".oldbin") == d.pid
    assert not [p for p in set(_tree(new)) - kids if _title(p).startswith("intaked: master")]
    os.kill(new, signal.SIGTERM)
    wait_for(lambda: read_pid(pidf) == d.pid, 10, what="the pid file restored")
    assert not os.path.exists(pidf + ".oldbin")
    assert "restoring" in d.logs()
    assert Client(d.tcp_port).upload("rolled-back.txt", b"ok")[1]["type"] == "STATUS"


def _title(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[0].decode()
    except OSError:
        return ""


def _tree(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _uid(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_nobody(daemon_factory):
    base = short_dir()
    os.chmod(base, 0o755)
    try:
        d = daemon_factory(start=False, user="nobody", spool_dir=base + "/spool",
                           accept_dir=base + "/accepted", quarantine_dir=base + "/q")
        d.scanning(scanner_socket=base + "/run/scand.sock")
        d.start()
        nobody = pwd.getpwnam("nobody").pw_uid
        assert _uid(d.pid) == 0
        assert all(_uid(w) == nobody for w in d.workers())
        assert _uid(d.scanner()) == nobody
        st = Client(d.tcp_port).upload("as-nobody.txt", b"data")[1]
        assert st["verdict"] == "clean"
        assert os.stat(os.path.join(base, "accepted", "as-nobody.txt")).st_uid == nobody
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", base])


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_nobody_on_a_fresh_tree(daemon_factory):
    """With user, the data directories' missing parents (var/ on a fresh
    checkout) are made 0755, as mkdir -p does: made 0750 and root's, they
    kept the workers from their spool, which then restarted for ever."""
    base = short_dir()
    os.chmod(base, 0o755)
    try:
        d = daemon_factory(start=False, user="nobody", spool_dir=base + "/var/spool",
                           accept_dir=base + "/var/accepted", quarantine_dir=base + "/var/q")
        d.start()
        assert os.stat(base + "/var").st_mode & 0o777 == 0o755
        assert os.stat(base + "/var/spool").st_mode & 0o777 == 0o750
        st = Client(d.tcp_port).upload("fresh.txt", b"data")[1]
        assert st["type"] == "STATUS" and st["stored_as"] == "fresh.txt", st
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", base])


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_nobody_cannot_replace_the_pid_file(daemon_factory):
    """With user, the directory of the pid file and the scanner socket
    (run/ by default) stays root's: the scanner gets to make its socket
    through the group, and the sticky bit keeps the root-owned pid file
    from being replaced. Owning the directory, the user (a compromised
    worker or scanner) could point root's intaked -s stop at any process."""
    base = short_dir()
    os.chmod(base, 0o755)
    victim = subprocess.Popen(["sleep", "60"])
    try:
        run = base + "/run"
        d = daemon_factory(start=False, user="nobody", spool_dir=base + "/spool",
                           accept_dir=base + "/accepted", quarantine_dir=base + "/q",
                           pid_file=run + "/intaked.pid")
        d.scanning(scanner_socket=run + "/scand.sock")
        d.start()
        st = os.stat(run)
        assert st.st_uid == 0 and st.st_mode & 0o1000, oct(st.st_mode)
        assert Client(d.tcp_port).upload("e.com", EICAR)[1]["verdict"] == "infected"
        swap = ("echo %d > %s/forged && mv -f %s/forged %s/intaked.pid"
                % (victim.pid, run, run, run))
        r = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", swap], capture_output=True,
                           text=True)
        assert r.returncode != 0, "nobody replaced the pid file"
        with open(run + "/intaked.pid") as f:
            assert int(f.read()) == d.pid
        # The scanner, restarted, still takes its socket over.
        old = d.scanner()
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: d.scanner() not in (None, old), 10, what="a new scanner")
        wait_for(lambda: d.health()["scanner"] == "up", 15, what="the scanner up")
        assert Client(d.tcp_port).upload("e2.com", EICAR)[1]["verdict"] == "infected"
    finally:
        victim.kill()
        d.stop()
        subprocess.run(["rm", "-rf", base])


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_leaves_a_shared_socket_directory_alone(daemon_factory):
    """scanner_socket in a directory that holds other programs' files (as
    /run itself would): intaked does not change its owner or mode, and says
    what to do (it made /run group-writable for the user)."""
    base = short_dir()
    os.chmod(base, 0o755)
    shared = base + "/shared"
    os.mkdir(shared, 0o755)
    open(shared + "/another-daemon.pid", "w").close()
    try:
        d = daemon_factory(start=False, user="nobody", spool_dir=base + "/spool",
                           accept_dir=base + "/accepted", quarantine_dir=base + "/q")
        d.scanning(scanner_socket=shared + "/scand.sock")
        d.start(wait=False)
        wait_for(lambda: "holds files that are not intaked's" in d.logs(), 10, what="the warning")
        st = os.stat(shared)
        assert st.st_uid == 0 and st.st_gid == 0 and st.st_mode & 0o7777 == 0o755, oct(st.st_mode)
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", base])


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_nobody_usr1_after_a_rename(daemon_factory):
    """With user, logrotate renames the logs and sends USR1: the master makes
    them again and gives them to the user, so the workers and the scanner
    reopen them (they were made root's, and those went on writing to the
    renamed files)."""
    base = short_dir()
    os.chmod(base, 0o755)
    try:
        d = daemon_factory(start=False, user="nobody", spool_dir=base + "/spool",
                           accept_dir=base + "/accepted", quarantine_dir=base + "/q",
                           error_log=base + "/error.log", access_log=base + "/access.log")
        d.scanning(scanner_socket=base + "/run/scand.sock")
        d.start()
        assert Client(d.tcp_port).upload("before.txt", b"x")[1]["type"] == "STATUS"
        for f in ("error.log", "access.log"):
            os.rename(base + "/" + f, base + "/" + f + ".1")
        d.signal(signal.SIGUSR1)
        nobody = pwd.getpwnam("nobody").pw_uid
        wait_for(lambda: os.path.exists(base + "/access.log"), 10, what="access.log again")
        assert os.stat(base + "/error.log").st_uid == nobody
        assert os.stat(base + "/access.log").st_uid == nobody
        assert Client(d.tcp_port).upload("after.txt", b"y")[1]["type"] == "STATUS"
        wait_for(lambda: "after.txt" in open(base + "/access.log").read(), 10,
                 what="the access line in the new file")
        old = open(base + "/error.log.1").read()
        assert "Permission denied" not in old, old[-2000:]
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", base])


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_nobody_processes_die_with_the_master(daemon_factory):
    """setuid clears PR_SET_PDEATHSIG: the scanner must set it afterwards."""
    base = short_dir()
    os.chmod(base, 0o755)
    try:
        d = daemon_factory(start=False, user="nobody", spool_dir=base + "/spool",
                           accept_dir=base + "/accepted", quarantine_dir=base + "/q")
        d.scanning(scanner_socket=base + "/run/scand.sock")
        d.start()
        scanner, workers = d.scanner(), d.workers()
        assert scanner and workers
        os.kill(d.pid, signal.SIGKILL)
        wait_for(lambda: not any(alive(p) for p in workers + [scanner]), 10,
                 what="the workers and the scanner to follow the master")
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", base])


def _daemon_on_conf(tmp_path, workers):
    """A configuration with daemon on, everything under tmp_path (pid file
    run/d.pid, error_log error.log). Its path and raw TCP port."""
    tcp, ws = free_ports(2)
    conf = tmp_path / "d.conf"
    conf.write_text("daemon on\nworkers %d\nscanner off\nlisten_tcp 127.0.0.1:%d\n"
                    "listen_ws 127.0.0.1:%d\npid_file %s/run/d.pid\nerror_log %s/error.log\n"
                    "spool_dir %s/s\naccept_dir %s/a\nquarantine_dir %s/q\nmin_free_space 0\n"
                    % (workers, tcp, ws, tmp_path, tmp_path, tmp_path, tmp_path, tmp_path))
    return conf, tcp


def test_daemon_on_and_s_stop(tmp_path):
    conf, tcp = _daemon_on_conf(tmp_path, workers=2)
    t0 = time.monotonic()
    r = subprocess.run([INTAKED, "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and time.monotonic() - t0 < 5
    pidf = tmp_path / "run" / "d.pid"
    wait_for(pidf.exists, what="the pid file")
    master = int(pidf.read_text())
    try:
        assert alive(master) and _title(master) == "intaked: master process"
        assert os.getsid(master) == master  # detached: its own session
        wait_for(lambda: len(_tree(master)) == 2, what="workers")
        assert Client(tcp).upload("daemon.txt", b"d")[1]["type"] == "STATUS"
        # A second one refuses, saying why, before detaching.
        r = subprocess.run([INTAKED, "-c", str(conf)], capture_output=True, text=True, timeout=10)
        assert r.returncode == 1
        assert "another intaked (pid %d)" % master in (tmp_path / "error.log").read_text()
        # A reload to error_log stderr is warned about in the log it leaves.
        conf.write_text(conf.read_text().replace("error_log %s/error.log" % tmp_path,
                                                 "error_log stderr"))
        os.kill(master, signal.SIGHUP)
        wait_for(lambda: "this master has detached" in (tmp_path / "error.log").read_text(),
                 what="the warning")
        wait_for(lambda: len(_tree(master)) == 2, what="the new workers")
        workers = _tree(master)
        r = subprocess.run([INTAKED, "-c", str(conf), "-s", "stop"], capture_output=True, text=True)
        assert r.returncode == 0
        wait_for(lambda: not alive(master) and not any(alive(w) for w in workers), 6,
                 what="everything to stop")
        assert not pidf.exists()
    finally:
        if alive(master):
            os.kill(master, signal.SIGKILL)


def test_rollback_after_winch_starts_workers_again(daemon_factory):
    """USR2, WINCH to the old master (its workers stop), then the new binary
    dies: the old master starts workers again by itself (it served nothing
    until someone sent HUP)."""
    d = daemon_factory(workers=2)
    pidf = d.dir["pid_file"]
    d.signal(signal.SIGUSR2)
    wait_for(lambda: read_pid(pidf) not in (None, d.pid), 10, what="new master")
    new = read_pid(pidf)
    wait_for(lambda: "inherited" in d.logs(), what="the new master up")
    old_workers = set(d.workers())
    d.signal(signal.SIGWINCH)
    wait_for(lambda: not any(alive(p) for p in old_workers), 15, what="old workers gone")
    os.kill(new, signal.SIGKILL)
    wait_for(lambda: read_pid(pidf) == d.pid, 10, what="the pid file restored")
    wait_for(lambda: len(d.workers()) == 2, 10, what="workers again")
    assert "starting workers again" in d.logs()
    assert Client(d.tcp_port).upload("after-rollback.txt", b"ok")[1]["type"] == "STATUS"


def test_window_resize_on_a_terminal_stops_nothing(daemon_factory):
    """intaked in the foreground on a terminal (make run): resizing the
    window sends WINCH, which must not stop the workers (it did, and the
    service hung until HUP)."""
    import fcntl
    import pty
    import struct
    import termios
    d = daemon_factory(start=False, workers=2)
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(INTAKED, [INTAKED, "-c", d.conf])
    try:
        def workers():
            return [p for p in _tree(pid) if _title(p) == "intaked: worker process"]
        wait_for(lambda: len(workers()) == 2, 10, what="workers")
        before = set(workers())
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        out = b""

        def said():
            nonlocal out
            import select
            while select.select([fd], [], [], 0.05)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    break
            return b"SIGWINCH ignored" in out
        wait_for(said, 10, step=0, what="the note")
        assert set(workers()) == before
        assert Client(d.tcp_port).upload("resized.txt", b"ok")[1]["type"] == "STATUS"
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(fd)


def test_upgrade_with_daemon_on(tmp_path):
    """USR2 to a master that detached (daemon on): the new binary does not
    detach again, so the old master keeps it as its upgrade (.oldbin names
    the old master, the pid file the new one) until QUIT to the old one. It
    detached again: its first process ended at once, and the old master took
    that for a failed upgrade and rolled back, leaving two masters."""
    conf, tcp = _daemon_on_conf(tmp_path, workers=1)
    assert subprocess.run([INTAKED, "-c", str(conf)], timeout=10).returncode == 0
    pidf, oldbin = tmp_path / "run" / "d.pid", tmp_path / "run" / "d.pid.oldbin"
    wait_for(pidf.exists, what="the pid file")
    old = int(pidf.read_text())
    new = None
    try:
        wait_for(lambda: len(_tree(old)) == 1, what="the worker")
        r = subprocess.run([INTAKED, "-c", str(conf), "-s", "upgrade"], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: oldbin.exists() and pidf.exists() and int(pidf.read_text()) != old,
                 10, what="the new master's pid file")
        new = int(pidf.read_text())
        assert int(oldbin.read_text()) == old
        time.sleep(1)  # the rollback came at once
        assert alive(old) and alive(new) and oldbin.exists() and int(pidf.read_text()) == new
        assert "restoring" not in (tmp_path / "error.log").read_text()
        os.kill(old, signal.SIGQUIT)
        wait_for(lambda: not alive(old), 10, what="the old master to leave")
        assert Client(tcp).upload("after.txt", b"new binary")[1]["type"] == "STATUS"
        r = subprocess.run([INTAKED, "-c", str(conf), "-s", "stop"], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: not alive(new), 10, what="the new master to stop")
        assert not pidf.exists() and not oldbin.exists()
    finally:
        # Whoever the pid files name too (a master that detached twice is
        # nobody's child).
        others = [int(f.read_text()) for f in (pidf, oldbin) if f.exists()]
        for p in [old, new] + others:
            if p and alive(p):
                os.kill(p, signal.SIGKILL)


def test_a_failed_start_says_why_on_stderr_too(daemon, tmp_path):
    """error_log a file, and the start fails (the port is taken): the reason
    is on stderr as well as in the log (it was only in the file, and a
    terminal or systemd saw exit 1 and nothing else)."""
    log = tmp_path / "other.log"
    r = subprocess.run([INTAKED, "-c", "/dev/null", "-o", "scanner=off",
                        "-o", "listen_tcp=127.0.0.1:%d" % daemon.tcp_port,
                        "-o", "listen_ws=127.0.0.1:%d" % free_port(),
                        "-o", "pid_file=%s/o.pid" % tmp_path, "-o", "spool_dir=%s/os" % tmp_path,
                        "-o", "accept_dir=%s/oa" % tmp_path, "-o", "quarantine_dir=%s/oq" % tmp_path,
                        "-o", "error_log=%s" % log], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "intaked: " in r.stderr and "Address already in use" in r.stderr, r.stderr
    assert "Address already in use" in log.read_text()


def test_upgrade_refused_by_the_new_binary_says_why_in_the_log(tmp_path):
    """daemon on, and USR2 with a configuration the new binary refuses: its
    reason reaches the error log (its stderr was /dev/null; the log only
    said it exited with status 1)."""
    conf, tcp = _daemon_on_conf(tmp_path, workers=1)
    assert subprocess.run([INTAKED, "-c", str(conf)], timeout=10).returncode == 0
    pidf = tmp_path / "run" / "d.pid"
    wait_for(pidf.exists, what="the pid file")
    master = int(pidf.read_text())
    conf_text = conf.read_text()
    try:
        with open(conf, "a") as f:
            f.write("no_such_directive 1\n")
        os.kill(master, signal.SIGUSR2)
        log = tmp_path / "error.log"
        wait_for(lambda: "restoring" in log.read_text(), 10, what="the rollback")
        assert 'unknown directive "no_such_directive"' in log.read_text()
        assert alive(master) and int(pidf.read_text()) == master
        # One that fails after opening the log (a new address already
        # taken) says so once, not twice (its stderr is that log too).
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with open(conf, "w") as f:
            f.write(conf_text + "listen_tcp 127.0.0.1:%d\n" % taken.getsockname()[1])
        os.kill(master, signal.SIGUSR2)
        wait_for(lambda: log.read_text().count("restoring") == 2, 10, what="the second rollback")
        taken.close()
        assert log.read_text().count("Address already in use") == 1, log.read_text()[-2000:]
    finally:
        os.kill(master, signal.SIGTERM)
        wait_for(lambda: not alive(master), 10, what="the master to stop")


def test_operator_lines_for_listeners_ttin_and_a_failed_upgrade(daemon_factory, tmp_path):
    """A reload that adds a listener says so (only removals were logged);
    TTIN after WINCH says it is ignored (it was dropped without a word); a
    new binary that fails leaves the old master's scanner running (it was
    restarted for nothing)."""
    d = daemon_factory(start=False, workers=1)
    d.scanning()
    d.start()
    scanner = d.scanner()
    extra = free_port()
    d.reload(extra="listen_tcp 127.0.0.1:%d\n" % d.tcp_port,
             listen_tcp="127.0.0.1:%d" % extra)
    wait_for(lambda: "reload: now listening on 127.0.0.1:%d (raw TCP)" % extra in d.logs(), 10,
             what="the new listener's line")
    assert "now listening on 127.0.0.1:%d" % d.tcp_port not in d.logs()
    assert Client(extra).upload("extra.txt", b"x")[1]["type"] == "STATUS"
    # A new binary that refuses its configuration.
    with open(d.conf, "a") as f:
        f.write("no_such_directive 1\n")
    d.signal(signal.SIGUSR2)
    wait_for(lambda: "restoring" in d.logs(), 10, what="the failed upgrade")
    time.sleep(0.5)
    assert d.scanner() == scanner
    d.signal(signal.SIGWINCH)
    wait_for(lambda: not d.workers(), 10, what="the workers to stop")
    d.signal(signal.SIGTTIN)
    wait_for(lambda: "SIGTTIN ignored: the workers are stopped (WINCH)" in d.logs(), 10,
             what="the note")


def test_a_stale_pid_of_another_program_does_not_block_the_start(daemon_factory, tmp_path):
    """The pid file names a live process that is not an intaked master (its
    name only has intaked in it; a stale pid is reused by any process): the
    start goes on (it was refused)."""
    other = subprocess.Popen(["/usr/sbin/intaked-lookalike", "60"], executable="/bin/sleep")
    try:
        d = daemon_factory(start=False)
        os.makedirs(os.path.dirname(d.dir["pid_file"]), exist_ok=True)
        with open(d.dir["pid_file"], "w") as f:
            f.write("%d\n" % other.pid)
        d.start()
        assert read_pid(d.dir["pid_file"]) == d.pid
    finally:
        other.kill()


def test_signals_go_only_to_an_intaked_master(daemon, tmp_path):
    """intaked -s and the shipped logrotate script signal the pid in the
    pid file only if it is an intaked master: a stale or planted pid file
    naming another process (USR1 kills by default) is refused."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        with open(ROOT + "/etc/logrotate.d/intake") as f:
            text = f.read()
        post = text.split("postrotate")[1].split("endscript")[0]
        post = post.replace("/run/intake/intaked.pid", daemon.dir["pid_file"])
        subprocess.run(["sh", "-c", post], check=True)
        wait_for(lambda: "SIGUSR1: log files reopened" in daemon.logs(), 10, what="the reopen")
        planted = tmp_path / "planted.conf"
        planted.write_text(open(daemon.conf).read().replace(daemon.dir["pid_file"],
                                                            str(tmp_path / "planted.pid")))
        (tmp_path / "planted.pid").write_text("%d\n" % victim.pid)
        r = subprocess.run([INTAKED, "-c", str(planted), "-s", "reopen"], capture_output=True,
                           text=True)
        assert r.returncode == 1 and "not an intaked master" in r.stderr, r.stderr
        subprocess.run(["sh", "-c", post.replace(daemon.dir["pid_file"],
                                                 str(tmp_path / "planted.pid"))], check=True)
        time.sleep(0.3)
        assert victim.poll() is None, "the victim was signalled"
        r = subprocess.run([INTAKED, "-c", daemon.conf, "-s", "reopen"], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
    finally:
        victim.kill()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root and another user")
def test_a_pid_file_planted_by_the_user_is_not_believed(daemon_factory, tmp_path):
    """While no master runs, the user (whose group may write the pid file's
    directory) plants a pid file naming a process of its own titled like a
    master: root's intaked -s does not signal it, the logrotate script does
    not either, and intaked still starts (it refused, and -s signalled
    the user's process)."""
    nobody = pwd.getpwnam("nobody")
    fake = subprocess.Popen(["intaked: master process", "60"], executable="/bin/sleep",
                            preexec_fn=lambda: (os.setgid(nobody.pw_gid), os.setuid(nobody.pw_uid)))
    try:
        d = daemon_factory(start=False)
        pidf = d.dir["pid_file"]
        os.makedirs(os.path.dirname(pidf), exist_ok=True)
        with open(pidf, "w") as f:
            f.write("%d\n" % fake.pid)
        os.chown(pidf, nobody.pw_uid, nobody.pw_gid)
        r = subprocess.run([INTAKED, "-c", d.conf, "-s", "reopen"], capture_output=True, text=True)
        assert r.returncode == 1 and "nothing signalled" in r.stderr, r.stderr
        with open(ROOT + "/etc/logrotate.d/intake") as f:
            post = f.read().split("postrotate")[1].split("endscript")[0]
        subprocess.run(["sh", "-c", post.replace("/run/intake/intaked.pid", pidf)], check=True)
        time.sleep(0.3)
        assert fake.poll() is None, "the user's process was signalled"
        d.start()
        assert read_pid(pidf) == d.pid
    finally:
        fake.kill()


def test_daemon_on_with_error_log_stderr_is_warned(tmp_path):
    """daemon on with the default error_log stderr writes every line to
    /dev/null after the detach: -t warns (and still passes)."""
    base = ["-c", "/dev/null", "-o", "scanner=off", "-o", "pid_file=%s/p.pid" % tmp_path,
            "-o", "spool_dir=%s/s" % tmp_path, "-o", "accept_dir=%s/a" % tmp_path,
            "-o", "quarantine_dir=%s/q" % tmp_path, "-o", "daemon=on", "-t"]
    r = subprocess.run([INTAKED] + base, capture_output=True, text=True)
    assert r.returncode == 0 and "configuration ok" in r.stdout
    assert "daemon on with error_log stderr" in r.stderr and "every log line is lost" in r.stderr
    r = subprocess.run([INTAKED] + base + ["-o", "error_log=%s/e.log" % tmp_path],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr


def test_reload_moves_the_pid_file(daemon, tmp_path):
    """A reload that names another pid_file writes it and removes the old
    one, so intaked -s and USR2 find the master there (they looked for a
    file that was never written)."""
    old = daemon.dir["pid_file"]
    new = str(tmp_path / "elsewhere" / "moved.pid")
    daemon.reload(pid_file=new)
    wait_for(lambda: os.path.exists(new) and not os.path.exists(old), 10,
             what="the pid file to move")
    with open(new) as f:
        assert int(f.read()) == daemon.pid
    assert "the pid file is now %s (was %s)" % (new, old) in daemon.logs()
    r = subprocess.run([INTAKED, "-c", daemon.conf, "-s", "reopen"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    # One that cannot be written (its directory would be under a file):
    # the master stays in the file it has, and says so.
    (tmp_path / "plain").write_text("x")
    daemon.reload(pid_file=str(tmp_path / "plain" / "p.pid"))
    wait_for(lambda: "not applied" in daemon.logs(), 10, what="the refusal")
    assert "the pid file stays %s" % new in daemon.logs()
    with open(new) as f:
        assert int(f.read()) == daemon.pid
    # Another name of the same file (through a symlinked directory): the
    # file stays (it was written, then removed under its old name).
    os.symlink(os.path.dirname(new), str(tmp_path / "link"))
    daemon.reload(pid_file=str(tmp_path / "link" / "moved.pid"))
    wait_for(lambda: "now %s/link/moved.pid" % tmp_path in daemon.logs(), 10, what="the move")
    with open(new) as f:
        assert int(f.read()) == daemon.pid
    # Back where it started: the reload after that one still moves it.
    daemon.reload(pid_file=old)
    wait_for(lambda: os.path.exists(old) and not os.path.exists(new), 10,
             what="the pid file to move back")
    assert daemon.workers()


def test_reload_says_the_scanner_keeps_its_log(daemon_factory):
    """A reload that changes error_log or log_level does not restart the
    builtin scanner (a signature reload): the log says it keeps the old
    ones until it restarts, instead of leaving the operator to wonder."""
    d = daemon_factory(start=False, workers=1)
    d.scanning()
    d.start()
    scanner = d.scanner()
    d.reload(log_level="debug")
    wait_for(lambda: "builtin scanner keeps error_log stderr and its log level until it "
             "restarts" in d.logs(), 10, what="the note")
    assert d.scanner() == scanner


def test_syslog_reaches_the_scanner_too(daemon_factory, tmp_path):
    """error_log syslog: the builtin scanner logs to syslog as the master and
    the workers do (its lines went to intaked's standard error)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to stand in for a syslog daemon on /dev/log")
    if os.path.exists("/dev/log"):
        # A socket nobody reads (a run of this test killed before it could
        # remove it) is taken over; a live one belongs to a syslog daemon.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.connect("/dev/log")
            pytest.skip("a syslog daemon owns /dev/log")
        except ConnectionRefusedError:
            os.unlink("/dev/log")
        except OSError as e:
            pytest.skip("/dev/log is in the way: %s" % e)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("/dev/log")
    except OSError as e:
        pytest.skip("cannot bind /dev/log: %s" % e)
    got = []
    try:
        sock.settimeout(0.2)
        d = daemon_factory(start=False, workers=1, error_log="syslog")
        d.scanning()
        d.start()

        def heard(what):
            try:
                while True:
                    got.append(sock.recv(65536).decode(errors="replace"))
            except socket.timeout:
                pass
            return any(what in g for g in got)
        wait_for(lambda: heard("scanner: intake-scand ready"), 15, step=0,
                 what="the scanner's line in syslog")
        ours = [g for g in got if "intaked[" in g]  # anything else is another program's
        assert any("master: master ready" in g for g in ours), got[:5]
        assert all(g.startswith("<") for g in ours), ours[:5]
        # And none of it on intaked's standard error.
        d.stop()
        assert "intake-scand ready" not in d.logs()
    finally:
        sock.close()
        os.unlink("/dev/log")


def access_lines(path):
    with open(path) as f:
        return [json.loads(l) for l in f]


def test_access_log_and_trust(daemon_factory, tmp_path):
    log = tmp_path / "access.log"
    d = daemon_factory(access_log=str(log), max_file_size="1K", idle_timeout="1s")
    c = Client(d.tcp_port)
    c.upload("ok.txt", b"fine")
    Client(d.tcp_port).upload("big.bin", b"x" * 2000)  # 413
    cut = Client(d.tcp_port)
    cut.start("cut.bin", 500)
    cut.send(b"x" * 100)
    assert cut.line()["type"] == "READY"
    cut.close()

    async def ws(headers):
        async with websockets.connect("ws://127.0.0.1:%d/u" % d.ws_port,
                                      extra_headers=headers) as w:
            await w.send(json.dumps({"type": "START", "filename": "via-proxy.txt", "size": 2}))
            await w.recv()
            await w.send(b"hi")
            await w.recv()
            await w.send('{"type":"DONE"}')
            return json.loads(await w.recv())
    asyncio.run(ws({"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}))
    asyncio.run(ws({"X-Real-IP": "198.51.100.9"}))
    wait_for(lambda: log.exists() and len(access_lines(log)) == 5, what="five access lines")
    lines = access_lines(log)
    by = {(l["filename"], l["code"]): l for l in lines}
    ok = by[("ok.txt", 200)]
    assert ok["remote"] == "127.0.0.1" and ok["transport"] == "tcp" and ok["verdict"] == "unscanned"
    assert ok["sha256"] == sha256(b"fine") and ok["size"] == ok["received"] == 4
    assert ok["stored_as"] == "ok.txt" and re.fullmatch(r"[0-9a-f]{32}", ok["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ok["time"])
    assert isinstance(ok["duration_ms"], int) and ok["virus"] is None
    big = by[("big.bin", 413)]
    assert big["verdict"] is None and big["stored_as"] is None and big["size"] == 2000
    cutl = by[("cut.bin", 499)]
    assert cutl["received"] == 100 and cutl["size"] == 500 and cutl["sha256"] is None
    proxied = [l for l in lines if l["filename"] == "via-proxy.txt"]
    assert sorted(l["remote"] for l in proxied) == ["198.51.100.7", "198.51.100.9"]
    assert all(set(l) == {"time", "remote", "transport", "id", "filename", "stored_as", "size",
                          "received", "sha256", "verdict", "virus", "code", "duration_ms"}
               for l in lines)


def test_untrusted_peer_cannot_claim_an_address(daemon_factory, tmp_path):
    log = tmp_path / "access.log"
    d = daemon_factory(access_log=str(log), trusted_proxies="10.0.0.0/8")

    async def ws():
        async with websockets.connect("ws://127.0.0.1:%d/u" % d.ws_port,
                                      extra_headers={"X-Forwarded-For": "198.51.100.7",
                                                     "X-Real-IP": "198.51.100.8"}) as w:
            await w.send(json.dumps({"type": "START", "filename": "x", "size": 0}))
            await w.recv()
            await w.send('{"type":"DONE"}')
            await w.recv()
    asyncio.run(ws())
    wait_for(lambda: log.exists() and access_lines(log), what="the access line")
    assert access_lines(log)[0]["remote"] == "127.0.0.1"


def test_usr1_rotates_access_and_error_logs(daemon_factory, tmp_path):
    alog, elog = tmp_path / "access.log", tmp_path / "error.log.file"
    d = daemon_factory(access_log=str(alog), error_log=str(elog), scan=False)
    Client(d.tcp_port).upload("before.txt", b"1")
    wait_for(lambda: alog.exists() and "before.txt" in alog.read_text(), what="first line")
    os.rename(str(alog), str(alog) + ".1")
    os.rename(str(elog), str(elog) + ".1")
    d.signal(signal.SIGUSR1)
    wait_for(lambda: elog.exists() and "reopened" in elog.read_text(), what="error log reopened")
    Client(d.tcp_port).upload("after.txt", b"2")
    wait_for(lambda: alog.exists() and "after.txt" in alog.read_text(), what="access log reopened")
    assert "after.txt" not in open(str(alog) + ".1").read()




def test_real_nginx_in_front(daemon_factory, tmp_path):
    assert os.path.exists(NGINX), "nginx missing: run scripts/deps.sh"
    alog = tmp_path / "access.log"
    d = daemon_factory(access_log=str(alog), scan=True)
    http_port, stream_port = free_ports(2)
    with open(os.path.join(ROOT, "etc", "nginx", "intake-http.conf")) as f:
        http_conf = f.read().replace("127.0.0.1:8080", "127.0.0.1:%d" % d.ws_port) \
            .replace("listen 80;", "listen 127.0.0.1:%d;" % http_port) \
            .replace("/var/log/nginx/", "%s/nginx-" % tmp_path)
    with open(os.path.join(ROOT, "etc", "nginx", "intake-stream.conf")) as f:
        stream_conf = f.read().replace("127.0.0.1:9090", "127.0.0.1:%d" % d.tcp_port) \
            .replace("listen 9000;", "listen 127.0.0.1:%d;" % stream_port)
    nginx = start_nginx(tmp_path, http_conf, stream_conf, (http_port,), access_log_off=True)
    try:
        from wsraw import http_request
        status, h, body = http_request(http_port, b"GET / HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
        assert status == 200 and b"Upload files" in body
        data = os.urandom(3 << 20)

        async def ws():
            async with websockets.connect("ws://127.0.0.1:%d/upload" % http_port, max_size=None,
                                          extra_headers={"X-Forwarded-For": "203.0.113.9"}) as w:
                await w.send(json.dumps({"type": "START", "filename": "via-nginx.bin",
                                         "size": len(data)}))
                await w.recv()
                for k in range(0, len(data), 1 << 20):
                    await w.send(data[k:k + (1 << 20)])
                for _ in range(3):
                    await w.recv()
                await w.send('{"type":"DONE"}')
                return json.loads(await w.recv())
        st = asyncio.run(ws())
        assert st["verdict"] == "clean" and st["sha256"] == sha256(data)
        f = tmp_path / "cli.txt"
        f.write_bytes(b"through the stream block\n")
        r = subprocess.run([INTAKE, "127.0.0.1:%d" % stream_port, str(f)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and r.stdout == "%s: OK\n" % f
        assert sorted(d.accepted()) == ["cli.txt", "via-nginx.bin"]
        wait_for(lambda: alog.exists() and len(access_lines(alog)) == 2, what="access lines")
        via = [l for l in access_lines(alog) if l["filename"] == "via-nginx.bin"][0]
        assert via["remote"] == "203.0.113.9" and via["transport"] == "ws"
    finally:
        nginx.terminate()
        nginx.wait(10)
