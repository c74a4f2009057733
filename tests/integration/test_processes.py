"""The process model: titles, respawn after a crash (rate-limited), workers
dying with the master, TERM and QUIT with uploads in flight, -t, -s, pid file."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import (INTAKED, SIGNATURES, Client, alive, children, sha256, title,
                      wait_for)


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().split(b"\0")[0].decode()


def worker_of(daemon, upload_id):
    """The worker whose spool file for upload_id is open."""
    for pid in daemon.workers():
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)).endswith(upload_id + ".part"):
                    return pid
        except OSError:
            continue
    return None


def open_upload(daemon, name, size, first=b""):
    c = Client(daemon.tcp_port)
    c.start(name, size)
    c.send(first)
    return c, c.line()


def test_process_titles(daemon):
    assert cmdline(daemon.pid) == "intaked: master process"
    ws = daemon.workers()
    assert len(ws) == 2
    for w in ws:
        assert cmdline(w) == "intaked: worker process"
    # Every log line names its process: pid and role.
    logs = daemon.logs()
    assert re.search(r"\[info\] %d: master: master ready: 2 workers" % daemon.pid, logs)
    for w in ws:
        assert re.search(r"\[info\] %d: worker \d: started" % w, logs)


def test_pid_file_and_second_master_refused(daemon, daemon_factory, tmp_path):
    with open(daemon.dir["pid_file"]) as f:
        assert int(f.read()) == daemon.pid
    other = daemon_factory(start=False, pid_file=daemon.dir["pid_file"])
    other.start(wait=False)
    assert other.wait_exit(5) == 1
    assert "another intaked (pid %d)" % daemon.pid in other.logs()


def test_kill9_worker_mid_upload(daemon_factory):
    d = daemon_factory(workers=2)
    # One upload on each worker, both half sent.
    uploads = {}
    tries = []
    while len(uploads) < 2 and len(tries) < 40:
        c, ready = open_upload(d, "u%d.bin" % len(tries), 2_000_000, b"a" * 1000)
        tries.append(c)
        pid = wait_for(lambda: worker_of(d, ready["id"]), what="spool fd")
        uploads.setdefault(pid, (c, ready))
    assert len(uploads) == 2, "could not place an upload on each worker"
    (victim, (vc, vready)), (survivor, (sc, sready)) = list(uploads.items())
    os.kill(victim, signal.SIGKILL)
    # The victim's client loses its connection.
    assert vc.closed(), "connection of the killed worker stayed open"
    # The master respawns a worker in its place.
    wait_for(lambda: len(d.workers()) == 2 and victim not in d.workers(), what="respawn")
    assert "killed by signal 9" in d.logs()
    # The other worker's upload is unaffected: finish it.
    sc.send(b"a" * (2_000_000 - 1000))
    status = sc.line()
    assert status["type"] == "STATUS" and status["sha256"] == sha256(b"a" * 2_000_000)
    # Nothing partial was accepted; the victim's part stays in the spool.
    assert os.listdir(d.accept_dir) == [status["stored_as"]]
    assert vready["id"] + ".part" in d.spooled()
    # The respawned worker serves.
    c = Client(d.tcp_port)
    assert c.upload("after.bin", b"fine")[1]["verdict"] == "unscanned"
    for c in tries:
        c.close()


def test_repeated_crashes_are_rate_limited(daemon_factory):
    d = daemon_factory(workers=1)
    starts = []
    for _ in range(4):
        w = wait_for(lambda: d.workers(), what="a worker")[0]
        starts.append(time.monotonic())
        os.kill(w, signal.SIGKILL)
        wait_for(lambda: w not in d.workers() and d.workers(), timeout=5, what="respawn")
    # First respawn at once, then at most one a second.
    assert d.logs().count("respawning it") >= 4
    assert starts[-1] - starts[1] >= 1.5


def ping(path):
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(path)
            s.sendall(b"zPING\0")
            return s.recv(16) == b"PONG\0"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGWINCH], ids=["HUP", "WINCH"])
def test_scanner_respawn_survives_hup_and_winch(daemon_factory, tmp_path, sig):
    """A scanner respawn that is due when HUP or WINCH arrives still happens:
    "a scanner is wanted" is state the master reconciles, not an event."""
    sigdir = tmp_path / "signatures"
    shutil.copytree(SIGNATURES, sigdir)
    d = daemon_factory(start=False, workers=1)
    d.scanning(signature_dir=str(sigdir))
    d.start()
    # A scanner that cannot start: every respawn fails at once (no signatures),
    # and the next one is due a second later.
    aside = tmp_path / "aside"
    aside.mkdir()
    for f in os.listdir(sigdir):
        os.rename(sigdir / f, aside / f)
    os.kill(d.scanner(), signal.SIGKILL)
    # Freeze the master at a moment when the scanner is dead and reaped: no
    # child but the worker (a starting scanner, or a zombie, is another child).
    for _ in range(500):
        d.signal(signal.SIGSTOP)
        kids = children(d.pid)
        if kids and all(title(k).startswith("intaked: worker") and alive(k) for k in kids):
            break
        d.signal(signal.SIGCONT)
        time.sleep(0.01)
    else:
        raise AssertionError("never caught the master between two scanner respawns")
    # The respawn is pending. Repair the signatures, and signal the master.
    for f in os.listdir(aside):
        os.rename(aside / f, sigdir / f)
    d.signal(sig)
    d.signal(signal.SIGCONT)
    wait_for(lambda: d.scanner() and ping(d.dir["scanner_socket"]), 15,
             what="the scanner to come back")
    assert "respawning it (uploads wait for it" in d.logs()


def test_workers_exit_when_master_dies(daemon):
    ws = daemon.workers()
    os.kill(daemon.pid, signal.SIGKILL)
    wait_for(lambda: not any(alive(w) for w in ws), what="workers to exit")


def test_term_with_upload_in_flight(daemon_factory):
    d = daemon_factory()
    c, ready = open_upload(d, "inflight.bin", 1 << 20, b"x" * 5000)
    ws = d.workers()
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(5) == 0
    assert time.monotonic() - t0 < 5
    assert not any(alive(w) for w in ws)
    assert c.closed()
    assert d.accepted() == []
    assert os.path.getsize(os.path.join(d.spool_dir, ready["id"] + ".part")) == 5000
    assert not os.path.exists(d.dir["pid_file"])


def test_quit_finishes_uploads_in_flight(daemon_factory):
    d = daemon_factory()
    c, ready = open_upload(d, "drain.bin", 300000, b"y" * 1000)
    fresh = Client(d.tcp_port)  # accepted before QUIT, its upload not sent yet
    between = Client(d.tcp_port)  # idle between two uploads
    assert between.upload("first.txt", b"1")[1]["type"] == "STATUS"
    time.sleep(0.2)
    d.signal(signal.SIGQUIT)
    wait_for(lambda: "graceful shutdown" in d.logs(), what="QUIT to be logged")
    assert between.closed(), "connection idle between uploads kept open during QUIT"
    # An accepted connection still gets its upload served, then is closed.
    assert fresh.upload("fresh.txt", b"fresh")[1]["verdict"] == "unscanned"
    assert fresh.closed()
    # New connections are refused once the listeners are closed.
    time.sleep(0.2)
    with pytest.raises(OSError):
        Client(d.tcp_port, timeout=1).upload("late.bin", b"z")
    # The upload in flight completes and is acknowledged.
    time.sleep(0.3)
    c.send(b"y" * 299000)
    status = c.line()
    assert status["type"] == "STATUS" and status["verdict"] == "unscanned"
    assert status["sha256"] == sha256(b"y" * 300000)
    assert d.wait_exit(10) == 0
    assert d.accepted() == ["drain.bin", "first.txt", "fresh.txt"]


def test_quit_respects_shutdown_timeout(daemon_factory):
    d = daemon_factory(shutdown_timeout="1s")
    c, ready = open_upload(d, "stuck.bin", 1 << 20, b"s" * 10)
    t0 = time.monotonic()
    d.signal(signal.SIGQUIT)
    assert d.wait_exit(8) == 0
    assert 0.8 < time.monotonic() - t0 < 8
    assert "shutdown_timeout reached" in d.logs()
    assert d.accepted() == []
    assert ready["id"] + ".part" in d.spooled()


def test_s_stop_and_quit(daemon_factory):
    for sig in ("stop", "quit"):
        d = daemon_factory()
        r = subprocess.run([INTAKED, "-c", d.conf, "-s", sig], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert d.wait_exit(10) == 0


def test_s_without_running_master(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("pid_file %s/none.pid\n" % tmp_path)
    r = subprocess.run([INTAKED, "-c", str(conf), "-s", "stop"], capture_output=True, text=True)
    assert r.returncode == 1 and "none.pid" in r.stderr


def test_usr1_reopens_error_log(daemon_factory, tmp_path):
    log = tmp_path / "error.log.file"
    d = daemon_factory(error_log=str(log))
    os.rename(str(log), str(log) + ".1")
    d.signal(signal.SIGUSR1)
    wait_for(lambda: log.exists() and "reopened" in log.read_text(), what="log reopen")
    c = Client(d.tcp_port)
    c.upload("after-rotate.txt", b"x")
    wait_for(lambda: "after-rotate.txt" in log.read_text(), what="worker to log to the new file")


def test_usr1_moves_the_scanners_stderr_too(daemon_factory, tmp_path):
    """intake-scand's stderr (where libclamav may write) is the error log; after
    a rotation and USR1 it is the new file, not the rotated one (which it kept
    open before, so the space was never freed)."""
    log = tmp_path / "error.log.file"
    d = daemon_factory(start=False, error_log=str(log), workers=1)
    d.scanning()
    d.start()
    scanner = d.scanner()
    assert os.readlink("/proc/%d/fd/2" % scanner) == str(log)
    os.rename(str(log), str(log) + ".1")
    d.signal(signal.SIGUSR1)
    wait_for(lambda: log.exists() and "scanner: log reopened" in log.read_text(),
             what="the scanner's reopen")
    assert os.readlink("/proc/%d/fd/2" % scanner) == str(log)


def test_spool_is_swept_after_resume_timeout(daemon_factory):
    d = daemon_factory(resume_timeout="2s", idle_timeout="1s")
    c, ready = open_upload(d, "abandoned.bin", 1 << 20, b"a" * 1000)
    c.close()
    part = os.path.join(d.spool_dir, ready["id"] + ".part")
    wait_for(lambda: "interrupted after" in d.logs(), what="the interruption")
    assert os.path.exists(part)
    # Something else in the spool is not the sweeper's business.
    other = os.path.join(d.spool_dir, "operator-notes.txt")
    with open(other, "w") as f:
        f.write("keep me")
    os.utime(other, (0, 0))
    wait_for(lambda: not os.path.exists(part), 10, what="the sweep")
    # The sweep removes the files, then says so: the line may come a moment later.
    wait_for(lambda: "upload %s: not resumed within resume_timeout (2 s); 1000 bytes removed"
             % ready["id"] in d.logs(), 5, what="the sweep's log line")
    assert os.path.exists(other)


def test_out_of_file_descriptors(daemon_factory):
    """EMFILE on accept: the worker pauses accepting instead of spinning on a
    readable listener, says why, and serves again once fds are free."""
    import socket as so
    d = daemon_factory(start=False, workers=1)
    d.nofile = 48
    d.start()
    idle = []
    for _ in range(80):
        try:
            idle.append(so.create_connection(("127.0.0.1", d.tcp_port), timeout=2))
        except OSError:
            break
    wait_for(lambda: "pausing accepts for 1 s" in d.logs(), 10, what="EMFILE to be reported")
    worker = d.workers()[0]

    def cpu_ticks():
        with open("/proc/%d/stat" % worker) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    t0 = cpu_ticks()
    time.sleep(1.0)
    assert cpu_ticks() - t0 < 30, "the worker spins while out of descriptors"
    for s in idle:
        s.close()
    st = Client(d.tcp_port, timeout=20).upload("after-emfile.txt", b"ok")[1]
    assert st["type"] == "STATUS"
    assert alive(worker)


def test_a_second_intaked_does_not_take_the_first_ones_scanner(tmp_path):
    """Two intakeds given one scanner_socket: the second refuses to start
    (its scanner took the socket path over, and when it stopped the first
    one's scanner was unreachable for good); a reload onto another's socket
    fails the same way. The first keeps scanning."""
    from conftest import EICAR, Daemon
    made = []

    def daemon(name, **scanning):
        (tmp_path / name).mkdir()
        d = Daemon(tmp_path / name, workers=1)
        d.scanning(**scanning)
        made.append(d)
        return d
    try:
        a = daemon("a").start()
        b = daemon("b", scanner_socket=a.dir["scanner_socket"])
        b.start(wait=False)
        assert b.wait_exit(15) == 1
        assert ("scanner_socket %s is the scanner socket of another intaked (master pid %d)"
                % (a.dir["scanner_socket"], a.pid)) in b.logs()
        c = daemon("c").start()
        c.reload(scanner_socket=a.dir["scanner_socket"])
        wait_for(lambda: "reload failed: scanner_socket" in c.logs(), 10, what="the refusal")
        for d in (a, c):
            st = Client(d.tcp_port).upload("e.com", EICAR)[1]
            assert st["verdict"] == "infected", st
    finally:
        for d in made:
            d.stop()


def test_reload_with_a_broken_database_keeps_the_scanner(daemon_factory, tmp_path):
    """A reload whose signature_dir holds a database libclamav refuses: the
    scanner that works goes on scanning (it was stopped first, the new one
    never came up, and every upload waited scan_timeout for verdict error).
    A reload with a good database then replaces it without a gap."""
    from conftest import EICAR
    d = daemon_factory(start=False, workers=1)
    d.scanning()
    d.start()
    first = d.scanner()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.ndb").write_text("junk\n")
    d.reload(signature_dir=str(broken))
    wait_for(lambda: "before it could serve; the previous scanner goes on scanning" in d.logs(),
             15, what="the failed successor")
    t0 = time.monotonic()
    st = Client(d.tcp_port).upload("e.com", EICAR)[1]
    assert st["verdict"] == "infected" and time.monotonic() - t0 < 10, st
    assert alive(first)
    # Not tried again and again (each try loads a whole database).
    time.sleep(2.5)
    assert d.logs().count("before it could serve") == 1, d.logs()[-3000:]
    good = tmp_path / "good"
    shutil.copytree(SIGNATURES, good)
    d.reload(signature_dir=str(good))
    wait_for(lambda: "stopping the previous one (pid %d)" % first in d.logs(), 15,
             what="the new scanner to take over")
    wait_for(lambda: not alive(first), 10, what="the previous scanner to stop")
    assert d.scanner() not in (None, first)
    st = Client(d.tcp_port).upload("e2.com", EICAR)[1]
    assert st["verdict"] == "infected", st


def test_reload_to_scanner_off_lets_the_old_scans_finish(daemon_factory):
    """A reload from the builtin scanner to scanner off: the scanner stays
    until the old workers, whose uploads are being scanned, are gone, so
    those uploads get their verdicts (it was stopped at once, and they got
    503 at shutdown_timeout); then it stops, and new uploads are unscanned."""
    from conftest import EICAR
    d = daemon_factory(start=False, workers=1, shutdown_timeout="30s")
    d.scanning(scan_timeout="60s")
    d.start()
    scanner = d.scanner()
    os.kill(scanner, signal.SIGSTOP)
    try:
        c = Client(d.tcp_port, timeout=30)
        c.start("in-flight.com", len(EICAR))
        c.send(EICAR)
        assert c.line()["type"] == "READY"
        time.sleep(0.3)  # the scan is waiting on the stopped scanner
        d.reload(scanner="off")
        wait_for(lambda: "the previous scanner serves the old workers' scans" in d.logs(), 10,
                 what="the reload")
        time.sleep(0.5)
    finally:
        os.kill(scanner, signal.SIGCONT)
    st = c.line()
    assert st["type"] == "STATUS" and st["verdict"] == "infected", st
    wait_for(lambda: "are gone; stopping it" in d.logs(), 40, what="the scanner to be retired")
    wait_for(lambda: not alive(scanner), 10, what="the scanner to stop")
    st = Client(d.tcp_port).upload("later.txt", b"new")[1]
    assert st["verdict"] == "unscanned", st


def _peer_pid(path):
    import struct
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", cred)[0]
    except OSError:
        return None
    finally:
        s.close()


def test_a_new_scanner_that_dies_after_taking_over_is_replaced(daemon_factory, tmp_path):
    """A reload's new scanner takes the socket over and dies before the
    master stopped the previous one: that one can no longer be reached, so
    it goes and a scanner starts again (none was started until the next
    reload: the death was taken for a database that would not load)."""
    from conftest import EICAR
    d = daemon_factory(start=False, workers=1)
    d.scanning(scan_timeout="20s")
    d.start()
    first = d.scanner()
    sock = d.dir["scanner_socket"]
    good = tmp_path / "good"
    shutil.copytree(SIGNATURES, good)
    d.reload(signature_dir=str(good))
    wait_for(lambda: "starting a new scanner" in d.logs(), 10, what="the reload")
    d.signal(signal.SIGSTOP)  # no retire turn until the successor is dead
    try:
        new = wait_for(lambda: (lambda p: p if p not in (None, first) else None)(_peer_pid(sock)),
                       15, what="the new scanner to take the socket over")
        os.kill(new, signal.SIGKILL)
    finally:
        d.signal(signal.SIGCONT)
    t0 = time.monotonic()
    st = Client(d.tcp_port, timeout=30).upload("e.com", EICAR)[1]
    assert st["verdict"] == "infected", (st, time.monotonic() - t0)
    wait_for(lambda: not alive(first), 10, what="the unreachable previous scanner to go")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_user_does_not_follow_a_symlinked_accept_dir(daemon_factory, tmp_path):
    """accept_dir inside spool_dir (which the user owns), swapped for a
    symlink to a root directory: the start does not give that directory to
    the user (chown followed the link)."""
    from conftest import short_dir
    base = short_dir()
    os.chmod(base, 0o755)
    try:
        secret = base + "/secret"
        os.mkdir(secret, 0o700)
        os.makedirs(base + "/spool")
        os.symlink(secret, base + "/spool/accepted")
        d = daemon_factory(start=False, user="nobody", spool_dir=base + "/spool",
                           accept_dir=base + "/spool/accepted", quarantine_dir=base + "/q")
        d.start(wait=False)
        wait_for(lambda: "cannot give %s/spool/accepted" % base in d.logs(), 10,
                 what="the refusal")
        assert os.stat(secret).st_uid == 0
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", base])
