"""The intake CLI as a user runs it: result lines, --json, exit codes, stdin,
--sha256, errors, the progress bar on a terminal and none elsewhere."""
import hashlib
import json
import os
import pty
import re
import subprocess

from conftest import INTAKE, sha256


def run(args, **kw):
    return subprocess.run([INTAKE] + args, capture_output=True, timeout=60, **kw)


def make(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def test_result_lines_and_exit_0(daemon, tmp_path):
    a = make(tmp_path, "a.txt", b"alpha")
    b = make(tmp_path, "b.bin", os.urandom(300000))
    r = run(["127.0.0.1:%d" % daemon.tcp_port, a, b])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == ["%s: OK (not scanned)" % a,
                                              "%s: OK (not scanned)" % b]
    assert r.stderr == b""  # not a terminal: no progress bar
    assert daemon.accepted() == ["a.txt", "b.bin"]
    with open(os.path.join(daemon.accept_dir, "b.bin"), "rb") as f, open(b, "rb") as g:
        assert f.read() == g.read()


def test_json_prints_status_objects(daemon, tmp_path):
    a = make(tmp_path, "j.txt", b"json")
    r = run(["--json", "--sha256", "127.0.0.1:%d" % daemon.tcp_port, a])
    assert r.returncode == 0
    st = json.loads(r.stdout)
    assert st["type"] == "STATUS" and st["sha256"] == sha256(b"json")
    assert st["verdict"] == "unscanned" and st["stored_as"] == "j.txt"


def test_stdin_with_name(daemon):
    r = run(["-n", "from-pipe.log", "127.0.0.1:%d" % daemon.tcp_port, "-"],
            input=b"piped bytes\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "-: OK (not scanned)\n"
    with open(os.path.join(daemon.accept_dir, "from-pipe.log"), "rb") as f:
        assert f.read() == b"piped bytes\n"


def test_errors_exit_2_and_other_files_still_go(daemon_factory, tmp_path):
    d = daemon_factory(max_file_size="10")
    big = make(tmp_path, "big.bin", b"x" * 11)
    small = make(tmp_path, "small.txt", b"ok")
    missing = str(tmp_path / "missing.txt")
    r = run(["127.0.0.1:%d" % d.tcp_port, big, missing, small])
    assert r.returncode == 2
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith(big + ": ") and lines[0].endswith("(413) ERROR")
    assert lines[1] == missing + ": No such file or directory ERROR"
    assert lines[2] == small + ": OK (not scanned)"
    assert d.accepted() == ["small.txt"]


def test_json_error_object(daemon_factory, tmp_path):
    d = daemon_factory(max_file_size="1")
    r = run(["--json", "127.0.0.1:%d" % d.tcp_port, make(tmp_path, "x", b"xx")])
    assert r.returncode == 2
    e = json.loads(r.stdout)
    assert e["type"] == "ERROR" and e["code"] == 413 and e["file"].endswith("/x")


def test_quiet_prints_only_problems(daemon, tmp_path):
    a = make(tmp_path, "q.txt", b"q")
    r = run(["-q", "127.0.0.1:%d" % daemon.tcp_port, a, str(tmp_path / "nope")])
    assert r.returncode == 2
    assert r.stdout.decode().splitlines() == ["%s: No such file or directory ERROR" %
                                              (tmp_path / "nope")]


def test_cannot_connect(tmp_path):
    from conftest import free_port
    a = make(tmp_path, "a", b"a")
    r = run(["127.0.0.1:%d" % free_port(), a])
    assert r.returncode == 2
    assert r.stdout == b""
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "cannot connect" in err[0] and "refused" in err[0]


def test_usage_errors():
    assert run([]).returncode == 2
    r = run(["-n", "x", "127.0.0.1:1", "a", "b"])
    assert r.returncode == 2 and b"--name needs exactly one FILE" in r.stderr
    r = run(["-V"])
    assert r.returncode == 0 and r.stdout.startswith(b"intake ")
    r = run(["-h"])
    assert r.returncode == 0 and b"HOST:PORT" in r.stdout


def test_progress_bar_on_a_terminal(daemon, tmp_path):
    a = make(tmp_path, "p.bin", os.urandom(20 << 20))
    master, slave = pty.openpty()
    r = subprocess.run([INTAKE, "127.0.0.1:%d" % daemon.tcp_port, a], stdout=subprocess.PIPE,
                       stderr=slave, timeout=60)
    os.close(slave)
    out = b""
    try:
        while True:
            chunk = os.read(master, 65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    os.close(master)
    assert r.returncode == 0
    assert b"\r" in out and b"p.bin" in out and b"%" in out and b"left" in out
    assert out.endswith(b"\r\x1b[K")  # the bar is erased before the result line
    assert r.stdout.decode() == "%s: OK (not scanned)\n" % a


def test_retries_after_the_worker_dies(daemon_factory, tmp_path):
    """--retries: a lost connection is retried; the server keeps no partial
    upload resumable yet (404), so the file starts over and arrives whole."""
    import signal
    import time
    from conftest import wait_for
    d = daemon_factory(workers=2)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(150 << 20))
    p = subprocess.Popen([INTAKE, "127.0.0.1:%d" % d.tcp_port, str(big)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def holder():
        for w in d.workers():
            try:
                if any(os.readlink("/proc/%d/fd/%s" % (w, fd)).endswith(".part")
                       for fd in os.listdir("/proc/%d/fd" % w)):
                    return w
            except OSError:
                pass
        return None
    victim = wait_for(holder, 20, step=0.005, what="the upload to start")
    os.kill(victim, signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, (out, err)
    assert out.decode() == "%s: OK (not scanned)\n" % big
    assert b"retrying" in err
    with open(os.path.join(d.accept_dir, "big.bin"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == hashlib.sha256(big.read_bytes()).hexdigest()


def _frames_on_a_terminal(args):
    """Runs intake with stderr on a pty; returns (result, the bar's frames)."""
    master, slave = pty.openpty()
    r = subprocess.run([INTAKE] + args, stdout=subprocess.PIPE, stderr=slave, timeout=60)
    os.close(slave)
    out = b""
    try:
        while True:
            chunk = os.read(master, 65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    os.close(master)
    return r, out.split(b"\r")


def test_progress_bar_says_scanning_with_the_average_rate(daemon, tmp_path):
    # Small enough to be sent before any running rate exists (that showed
    # "--/s" on the last frame), and an empty file that has no bytes at all.
    small = make(tmp_path, "small.bin", os.urandom(64 << 10))
    empty = make(tmp_path, "empty.bin", b"")
    for path, size in ((small, "64.0 KiB"), (empty, "0 B")):
        r, frames = _frames_on_a_terminal(["127.0.0.1:%d" % daemon.tcp_port, path])
        assert r.returncode == 0
        assert frames[-1] == b"\x1b[K"  # erased before the result line
        last = frames[-2].decode()
        assert "100%" in last and "scanning..." in last and size in last, last
        assert "--/s" not in last and "left" not in last, last
        assert re.search(r" [0-9.]+ (B|KiB|MiB|GiB|TiB)/s avg, scanning\.\.\.", last), last


def test_help_fits_one_screen():
    r = run(["-h"])
    assert r.returncode == 0
    lines = r.stdout.decode().splitlines()
    assert len(lines) <= 24 and max(len(l) for l in lines) <= 80


def test_retries_ask_again_after_a_reload_cut_the_scan_short(daemon_factory, tmp_path):
    """--retries: a reload whose shutdown_timeout ends while the file is
    being scanned tells the client 503 (the file kept, its id); the CLI asks
    again on a new connection, the new worker scans it, and the result is
    OK. The CLI took the 503 for final before: exit 2, and the file sat in
    the spool until resume_timeout (an audit found it)."""
    import signal
    from conftest import frozen_scanner, wait_for
    d, scanner = frozen_scanner(daemon_factory)
    path = make(tmp_path, "held.txt", b"held while scanning\n")
    p = subprocess.Popen([INTAKE, "--retries", "6", "127.0.0.1:%d" % d.tcp_port, path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: "handed to the scanner" in d.logs(), 30, what="the scan to start")
        old = d.workers()
        d.signal(signal.SIGHUP)
        wait_for(lambda: "shutdown_timeout reached before its scan was done" in d.logs(), 30,
                 what="the old worker's deadline")
    finally:
        os.kill(scanner, signal.SIGCONT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, (out, err)
    assert out.decode() == "%s: OK\n" % path
    assert b"server is shutting down" in err and b"retrying" in err, err
    assert d.accepted() == ["held.txt"]
    assert not any(w in d.workers() for w in old)


def test_the_websocket_port_is_named_not_retried(daemon, tmp_path):
    """intake pointed at the WebSocket listener: the server answers in HTTP,
    and the CLI says so at once, for every file (it said "connection closed
    by the server", after three retries: an audit found it; and the second
    file went out on the answered connection: a review found that)."""
    a = make(tmp_path, "a.txt", b"wrong port\n")
    b = make(tmp_path, "b.txt", b"still the wrong port\n")
    r = run(["127.0.0.1:%d" % daemon.ws_port, a, b])
    assert r.returncode == 2, r
    said = ("the server answered in HTTP, not intake's raw TCP protocol: is this its WebSocket "
            "port (listen_ws)? ERROR")
    assert r.stdout.decode() == "%s: %s\n%s: %s\n" % (a, said, b, said), r
    assert b"retrying" not in r.stderr, r.stderr


def test_a_503_from_a_server_that_then_stops_is_the_result(daemon_factory, tmp_path):
    """--retries after a 503 from a stop (QUIT past shutdown_timeout) with
    nothing coming back: the file's result line is the server's 503, then
    the CLI says it cannot connect (it printed no result line, and the 503's
    id was lost: a review found it)."""
    import signal
    from conftest import frozen_scanner, wait_for
    d, scanner = frozen_scanner(daemon_factory)
    a = make(tmp_path, "held.txt", b"held while scanning\n")
    p = subprocess.Popen([INTAKE, "--retries", "2", "127.0.0.1:%d" % d.tcp_port, a],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: "handed to the scanner" in d.logs(), 30, what="the scan to start")
        d.signal(signal.SIGQUIT)
        out, err = p.communicate(timeout=60)
    finally:
        os.kill(scanner, signal.SIGCONT)
    assert p.returncode == 2
    assert out.decode().startswith("%s: server is shutting down: the file is kept" % a), (out, err)
    assert out.decode().endswith("(503) ERROR\n") and out.decode().count("\n") == 1, out
    assert b"cannot connect" in err, err
