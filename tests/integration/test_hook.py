"""The accept hook (accept_hook, hook_timeout, accept_dir off): run for a file
that passed, before STATUS, with one JSON line on stdin; exit 0 places it,
anything else is verdict error with the file kept and a re-query running the
hook again. Real hooks (small scripts), the real daemon, real clients."""
import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import EICAR, INTAKED, ROOT, alive, free_port, sha256, wait_for

PY = "/usr/bin/python3"

# A hook in Python: records its input, its descriptors and its process group
# in DIR/<n>.json, writes to stdout and stderr, and does what DIR/exit says
# (an exit status, or "sleep" to hang with a child in its group, or "wait"
# to wait for DIR/release).
HOOK = r'''
import json, os, sys, time, subprocess
d = sys.argv[1]
line = sys.stdin.buffer.read()
fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink("/proc/self/fd/" + fd)
    except OSError:
        pass
msg = json.loads(line)
data = open(msg["path"], "rb").read()
rec = {"input": line.decode(), "fds": fds, "pgid": os.getpgid(0), "pid": os.getpid(),
       "sha256_of_path": __import__("hashlib").sha256(data).hexdigest(),
       "argv": sys.argv[2:],
       "sigblk": [l.split()[1] for l in open("/proc/self/status") if l.startswith("SigBlk")][0]}
name = os.path.join(d, "%020d-%d" % (time.time_ns(), os.getpid()))
with open(name + ".tmp", "w") as f:
    json.dump(rec, f)
os.rename(name + ".tmp", name + ".json")  # whole, or not there
print("hook saw", msg["filename"], "\x1b[31mred")
print("to stderr", file=sys.stderr)
sys.stdout.flush()
what = open(os.path.join(d, "exit")).read().strip() if os.path.exists(os.path.join(d, "exit")) else "0"
if msg["filename"].startswith("slow"):
    while not os.path.exists(os.path.join(d, "release")):
        time.sleep(0.02)
if what == "sleep":
    child = subprocess.Popen(["sleep", "300"])
    with open(os.path.join(d, "pids"), "w") as f:
        f.write("%d %d\n" % (os.getpid(), child.pid))
    time.sleep(300)
sys.exit(int(what))
'''


@pytest.fixture
def hook(tmp_path):
    d = tmp_path / "hookrun"
    d.mkdir()
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    yield {"dir": str(d), "directive": "%s %s %s extra-arg" % (PY, script, d)}
    # A hook left running by a failed test (they run in groups of their own,
    # out of the daemon's reach once it is gone): not left behind.
    pids = os.path.join(str(d), "pids")
    if os.path.exists(pids):
        for p in open(pids).read().split():
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def runs(d):
    return [json.load(open(os.path.join(d, f))) for f in sorted(os.listdir(d)) if f.endswith(".json")]


def set_exit(d, what):
    with open(os.path.join(d, "exit"), "w") as f:
        f.write(what)


def requery(client_factory, port, name, data, upload_id):
    c = client_factory(port)
    c.start(name, len(data), id=upload_id)
    return c.line()


def test_hook_gets_the_status_line_and_only_three_descriptors(daemon_factory, client_factory, hook):
    d = daemon_factory(accept_hook=hook["directive"], node_name="gw-1")
    data = b"hello hook\n" * 100
    ready, status = client_factory(d.tcp_port).upload("report.txt", data)
    assert status["verdict"] == "unscanned" and status["stored_as"] == "report.txt"
    assert d.accepted() == ["report.txt"]
    [run] = runs(hook["dir"])
    msg = json.loads(run["input"])
    assert run["input"].endswith("\n") and run["input"].count("\n") == 1
    # The STATUS the client heard, plus path, remote, transport, node.
    for k in ("type", "id", "filename", "stored_as", "size", "sha256", "verdict", "virus", "status"):
        assert msg[k] == status[k], k
    assert msg["path"] == os.path.join(d.spool_dir, status["id"] + ".part")
    assert run["sha256_of_path"] == sha256(data)  # readable, complete
    assert msg["remote"] == "127.0.0.1" and msg["transport"] == "tcp" and msg["node"] == "gw-1"
    assert run["argv"] == ["extra-arg"]
    # Only 0, 1, 2 (and the directory listing's own descriptor).
    others = {fd: t for fd, t in run["fds"].items() if fd not in ("0", "1", "2")}
    assert all(t.startswith("/proc/") for t in others.values()), run["fds"]
    assert len(others) <= 1, run["fds"]
    assert run["fds"]["0"].startswith("pipe:") and run["fds"]["1"].startswith("pipe:")
    # Its own process group, no signal blocked.
    assert run["pgid"] == run["pid"]
    assert int(run["sigblk"], 16) == 0
    # Its output in the error log with the upload id, escaped.
    logs = wait_for(lambda: (lambda t: t if "accept hook stderr" in t else None)(d.logs()),
                    what="the hook's output in the log")
    assert "upload %s: accept hook stdout: hook saw report.txt \\x1b[31mred" % status["id"] in logs
    assert "upload %s: accept hook stderr: to stderr" % status["id"] in logs
    assert "\x1b" not in logs


def test_hook_sees_websocket_transport(daemon_factory, hook):
    import asyncio
    import websockets
    d = daemon_factory(accept_hook=hook["directive"])

    async def go():
        async with websockets.connect("ws://127.0.0.1:%d/" % d.ws_port) as ws:
            await ws.send(json.dumps({"type": "START", "filename": "w.bin", "size": 3}))
            await ws.recv()
            await ws.send(b"abc")
            await ws.recv()
            await ws.send(json.dumps({"type": "DONE"}))
            return json.loads(await ws.recv())
    status = asyncio.run(go())
    assert status["type"] == "STATUS" and status["verdict"] == "unscanned"
    assert json.loads(runs(hook["dir"])[0]["input"])["transport"] == "ws"


def test_pings_are_answered_while_the_upload_finishes(daemon_factory, hook):
    """A WebSocket client's keepalive pings are answered while its upload
    waits for a slow hook (and while a START with an id is looked up): the
    client stays and hears STATUS. Before, nothing was read until then, and
    a client with keepalive (python-websockets: a pong within 20 s) gave up
    and lost its STATUS."""
    import asyncio
    import websockets
    d = daemon_factory(accept_hook=hook["directive"])

    async def go():
        async with websockets.connect("ws://127.0.0.1:%d/" % d.ws_port, ping_interval=0.2,
                                      ping_timeout=1) as ws:
            await ws.send(json.dumps({"type": "START", "filename": "slow-ws.bin", "size": 3}))
            await ws.recv()
            await ws.send(b"abc")
            await ws.recv()
            await ws.send(json.dumps({"type": "DONE"}))
            await asyncio.sleep(3)  # the hook waits; 15 pings go out meanwhile
            assert not os.listdir(d.accept_dir)
            with open(os.path.join(hook["dir"], "release"), "w"):
                pass
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
    status = asyncio.run(go())
    assert status["type"] == "STATUS" and status["verdict"] == "unscanned", status
    assert status["stored_as"] == "slow-ws.bin"


def test_next_upload_sent_while_the_last_one_finishes(daemon_factory, hook):
    """What a WebSocket client sends while its upload finishes (here the
    whole next upload, 256 KiB, behind a slow hook) is held, up to 64 KiB,
    the rest left to the socket, and served in order once STATUS is out."""
    import asyncio
    import websockets
    d = daemon_factory(accept_hook=hook["directive"])
    nxt = os.urandom(256 << 10)

    async def go():
        async with websockets.connect("ws://127.0.0.1:%d/" % d.ws_port, max_size=None) as ws:
            await ws.send(json.dumps({"type": "START", "filename": "slow-first.bin", "size": 3}))
            await ws.recv()
            await ws.send(b"abc")
            await ws.recv()
            await ws.send(json.dumps({"type": "DONE"}))
            await ws.send(json.dumps({"type": "START", "filename": "next.bin", "size": len(nxt)}))
            for k in range(0, len(nxt), 32 << 10):
                await ws.send(nxt[k:k + (32 << 10)])
            await ws.send(json.dumps({"type": "DONE"}))
            await asyncio.sleep(1)
            with open(os.path.join(hook["dir"], "release"), "w"):
                pass
            got = []
            while len([m for m in got if m["type"] == "STATUS"]) < 2:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            return got
    got = asyncio.run(go())
    statuses = [m for m in got if m["type"] == "STATUS"]
    assert [m["filename"] for m in statuses] == ["slow-first.bin", "next.bin"], got
    assert statuses[1]["sha256"] == sha256(nxt)
    assert got.index(statuses[0]) < got.index(statuses[1])
    with open(os.path.join(d.accept_dir, "next.bin"), "rb") as f:
        assert f.read() == nxt


def test_failed_hook_keeps_the_file_and_a_requery_runs_it_again_once(daemon_factory, client_factory,
                                                                     hook):
    d = daemon_factory(accept_hook=hook["directive"])
    set_exit(hook["dir"], "3")
    data = b"x" * 5000
    _, status = client_factory(d.tcp_port).upload("a.txt", data)
    assert status["verdict"] == "error"
    assert status["status"] == "./a.txt: accept hook failed ERROR"
    assert status["stored_as"] is None
    assert d.accepted() == []
    assert status["id"] + ".part" in d.spooled()
    assert "exited with status 3" in d.logs()
    # Meanwhile another upload of the same name takes the next name: the
    # failed one's name stays promised to it.
    set_exit(hook["dir"], "0")
    _, other = client_factory(d.tcp_port).upload("a.txt", b"other")
    assert other["verdict"] == "unscanned" and other["stored_as"] == "a-1.txt"
    # The re-query runs the hook again, which now succeeds.
    again = requery(client_factory, d.tcp_port, "a.txt", data, status["id"])
    assert again["type"] == "STATUS" and again["verdict"] == "unscanned"
    assert again["stored_as"] == "a.txt"
    with open(os.path.join(d.accept_dir, "a.txt"), "rb") as f:
        assert f.read() == data
    names = [json.loads(r["input"])["stored_as"] for r in runs(hook["dir"])]
    assert names == ["a.txt", "a-1.txt", "a.txt"]  # the same name both times
    # Asked once more: the same answer, and the hook does not run again.
    third = requery(client_factory, d.tcp_port, "a.txt", data, status["id"])
    assert third == again
    assert len(runs(hook["dir"])) == 3
    assert not [f for f in d.spooled() if f.endswith(".part")]


def test_hook_timeout_kills_its_process_group(daemon_factory, client_factory, hook):
    d = daemon_factory(accept_hook=hook["directive"], hook_timeout="1s")
    set_exit(hook["dir"], "sleep")
    _, status = client_factory(d.tcp_port).upload("t.txt", b"tick")
    assert status["verdict"] == "error"
    assert status["status"] == "./t.txt: accept hook failed ERROR"
    pids = [int(x) for x in open(os.path.join(hook["dir"], "pids")).read().split()]
    # The hook and the child it left in its group: both gone, no orphan.
    wait_for(lambda: not any(alive(p) for p in pids), what="the hook's group to be killed")
    assert "timed out after 1000 ms (killed with its process group)" in d.logs()
    assert d.accepted() == []


def test_unstartable_hook_is_an_error(daemon_factory, client_factory, tmp_path):
    """A hook that was there at start and is gone since: every upload that
    passes gets verdict error, its file kept, and the log says why."""
    prog = tmp_path / "gone-hook"
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(0o755)
    d = daemon_factory(accept_hook=str(prog))
    prog.unlink()
    _, status = client_factory(d.tcp_port).upload("n.txt", b"n")
    assert status["verdict"] == "error" and "accept hook failed" in status["status"]
    assert "cannot start the accept hook" in d.logs()


def test_slow_hook_delays_no_other_upload(daemon_factory, client_factory, hook):
    d = daemon_factory(accept_hook=hook["directive"], workers=1)
    slow = client_factory(d.tcp_port)
    slow.start("slow.txt", 4)
    slow.send(b"slow")
    assert slow.line()["type"] == "READY"
    wait_for(lambda: runs(hook["dir"]), what="the slow hook to start")
    # The slow hook waits for "release"; others finish meanwhile, on the
    # same worker, each with a name of its own.
    statuses = [client_factory(d.tcp_port).upload("f.txt", b"fast")[1]
                for _ in range(3)]
    assert [s["stored_as"] for s in statuses] == ["f.txt", "f-1.txt", "f-2.txt"]
    assert all(s["verdict"] == "unscanned" for s in statuses)
    open(os.path.join(hook["dir"], "release"), "w").close()
    status = slow.line()
    assert status["verdict"] == "unscanned" and status["stored_as"] == "slow.txt"


def test_concurrent_same_name_uploads_get_distinct_names(daemon_factory, client_factory, hook):
    d = daemon_factory(accept_hook=hook["directive"], workers=2)
    clients = [client_factory(d.tcp_port) for _ in range(6)]
    for i, c in enumerate(clients):
        c.start("slow.txt", 2)
        c.send(b"%02d" % i)
        assert c.line()["type"] == "READY"
    wait_for(lambda: len(runs(hook["dir"])) == 6, what="six hooks running at once")
    told = sorted(json.loads(r["input"])["stored_as"] for r in runs(hook["dir"]))
    assert told == ["slow-%d.txt" % i for i in range(1, 6)] + ["slow.txt"]
    open(os.path.join(hook["dir"], "release"), "w").close()
    statuses = [c.line() for c in clients]
    assert sorted(s["stored_as"] for s in statuses) == told
    for s in statuses:  # each under the name its hook was told
        run = [r for r in runs(hook["dir"]) if json.loads(r["input"])["id"] == s["id"]][0]
        assert json.loads(run["input"])["stored_as"] == s["stored_as"]
    assert d.accepted() == told
    assert os.listdir(os.path.join(d.spool_dir, ".names")) == []


def test_accept_dir_off_removes_the_file_after_the_hook(daemon_factory, client_factory, hook):
    d = daemon_factory(accept_hook=hook["directive"], accept_dir="off")
    _, status = client_factory(d.tcp_port).upload("gone.txt", b"delivered elsewhere")
    assert status["verdict"] == "unscanned" and status["stored_as"] is None
    msg = json.loads(runs(hook["dir"])[0]["input"])
    assert msg["stored_as"] is None
    assert not [f for f in d.spooled() if f.endswith(".part")]
    assert "removed from the spool (accept_dir off)" in d.logs()
    # A failed hook keeps it, as ever.
    set_exit(hook["dir"], "1")
    _, st2 = client_factory(d.tcp_port).upload("kept.txt", b"kept")
    assert st2["verdict"] == "error" and st2["id"] + ".part" in d.spooled()


def check_config(tmp_path, lines, env=None):
    conf = tmp_path / "check.conf"
    conf.write_text("\n".join(lines) + "\nscanner off\n")
    return subprocess.run([INTAKED, "-t", "-c", str(conf)], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path))


def test_config_rules(tmp_path):
    r = check_config(tmp_path, ["accept_dir off"])
    assert r.returncode != 0 and "needs accept_hook" in r.stderr and "check.conf:1" in r.stderr
    r = check_config(tmp_path, ["accept_dir off", "accept_hook /bin/true", "scan_fail accept"])
    assert r.returncode != 0 and "cannot be combined" in r.stderr
    r = check_config(tmp_path, ["accept_dir off", "accept_hook /bin/true"])
    assert r.returncode == 0, r.stderr
    r = check_config(tmp_path, ["accept_hook /bin/true", "hook_timeout 5x"])
    assert r.returncode != 0 and "hook_timeout" in r.stderr
    # The program must be there to be started (-t said ok before, and then
    # every clean upload failed with "accept hook failed").
    r = check_config(tmp_path, ["workers 1", "accept_hook %s x" % (tmp_path / "no-such-hook")])
    assert r.returncode == 1 and "check.conf:2: accept_hook %s: No such file or directory" \
        % (tmp_path / "no-such-hook") in r.stderr, r.stderr
    plain = tmp_path / "not-executable"
    plain.write_text("exit 0\n")
    plain.chmod(0o644)
    r = check_config(tmp_path, ["accept_hook %s" % plain])
    assert r.returncode == 1 and "Permission denied" in r.stderr, r.stderr
    r = check_config(tmp_path, ["accept_hook no-such-hook-in-path"])
    assert r.returncode == 1 and "not found in PATH" in r.stderr, r.stderr
    r = check_config(tmp_path, ["accept_hook true"])  # through PATH
    assert r.returncode == 0, r.stderr
    # As posix_spawnp looks: no PATH at all is /usr/bin:/bin, an empty one
    # the current directory only.
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    r = check_config(tmp_path, ["accept_hook true"], env=env)
    assert r.returncode == 0, r.stderr
    r = check_config(tmp_path, ["accept_hook true"], env=dict(env, PATH=""))
    assert r.returncode == 1 and "not found in PATH" in r.stderr, r.stderr
    if os.geteuid() == 0:
        # The hook runs as `user`: looked at as that user (a script only
        # root may run passed, and then every upload failed).
        import shutil
        import tempfile
        shared = tempfile.mkdtemp(prefix="intake-hook-")  # pytest's tmp is root's alone
        try:
            os.chmod(shared, 0o755)
            mine = os.path.join(shared, "root-only")
            with open(mine, "w") as f:
                f.write("#!/bin/sh\nexit 0\n")
            os.chmod(mine, 0o700)
            r = check_config(tmp_path, ["user nobody", "accept_hook %s" % mine])
            assert r.returncode == 1 and \
                "Permission denied to user nobody, who runs it" in r.stderr, r.stderr
            os.chmod(mine, 0o755)
            r = check_config(tmp_path, ["user nobody", "accept_hook %s" % mine])
            assert r.returncode == 0, r.stderr
        finally:
            shutil.rmtree(shared)


def test_infected_file_is_never_hooked(daemon_factory, client_factory, hook):
    d = daemon_factory(start=False, accept_hook=hook["directive"])
    d.scanning().start()
    _, status = client_factory(d.tcp_port).upload("eicar.com", EICAR)
    assert status["verdict"] == "infected"
    _, clean = client_factory(d.tcp_port).upload("fine.txt", b"fine")
    assert clean["verdict"] == "clean"
    inputs = [json.loads(r["input"]) for r in runs(hook["dir"])]
    assert [m["filename"] for m in inputs] == ["fine.txt"]
    assert inputs[0]["verdict"] == "clean" and inputs[0]["status"] == "./fine.txt: OK"


def test_hook_metrics(daemon_factory, client_factory, hook):
    import urllib.request
    d = daemon_factory(accept_hook=hook["directive"])
    client_factory(d.tcp_port).upload("m.txt", b"m")
    set_exit(hook["dir"], "2")
    client_factory(d.tcp_port).upload("m.txt", b"m")
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.ws_port, timeout=5) as r:
        text = r.read().decode()
    assert 'intake_hook_runs_total{result="ok"} 1' in text
    assert 'intake_hook_runs_total{result="failed"} 1' in text
    assert "intake_hook_duration_seconds_count 2" in text


# --- the sample hooks ------------------------------------------------------------------------


def test_rclone_sample_ships_to_webdav(daemon_factory, client_factory, tmp_path):
    store = tmp_path / "webdav"
    store.mkdir()
    port = free_port()
    srv = subprocess.Popen(["rclone", "serve", "webdav", str(store), "--addr", "127.0.0.1:%d" % port],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, 15, what="rclone serve webdav")
        os.environ["RCLONE_CONFIG_DAV_TYPE"] = "webdav"
        os.environ["RCLONE_CONFIG_DAV_URL"] = "http://127.0.0.1:%d" % port
        os.environ["RCLONE_CONFIG"] = str(tmp_path / "rclone.conf")  # none: env only
        try:
            d = daemon_factory(accept_hook="%s dav:inbox" % os.path.join(ROOT, "etc/hooks/rclone-copy"))
        finally:
            for k in ("RCLONE_CONFIG_DAV_TYPE", "RCLONE_CONFIG_DAV_URL", "RCLONE_CONFIG"):
                del os.environ[k]
        data = os.urandom(200000)
        _, status = client_factory(d.tcp_port).upload("photo one.jpg", data)
        assert status["verdict"] == "unscanned", d.logs()[-2000:]
        with open(store / "inbox" / "photo one.jpg", "rb") as f:
            assert f.read() == data
        assert d.accepted() == ["photo one.jpg"]
        # The store going away fails the hook: the file is kept.
        srv.terminate()
        srv.wait(10)
        _, status = client_factory(d.tcp_port).upload("second.jpg", b"2")
        assert status["verdict"] == "error" and "accept hook failed" in status["status"]
        assert d.accepted() == ["photo one.jpg"]
    finally:
        if srv.poll() is None:
            os.killpg(srv.pid, signal.SIGKILL)
            srv.wait()


def test_curl_sample_posts_the_line(daemon_factory, client_factory):
    got = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append((self.path, self.headers.get("Content-Type"),
                        self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204 if len(got) == 1 else 500)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = "http://127.0.0.1:%d/in" % srv.server_address[1]
        d = daemon_factory(accept_hook="%s %s" % (os.path.join(ROOT, "etc/hooks/webhook-curl"), url))
        _, status = client_factory(d.tcp_port).upload("w.txt", b"web")
        assert status["verdict"] == "unscanned"
        path, ctype, body = got[0]
        assert path == "/in" and ctype == "application/json"
        assert json.loads(body)["id"] == status["id"]
        _, status = client_factory(d.tcp_port).upload("w.txt", b"web2")  # answered 500
        assert status["verdict"] == "error"
    finally:
        srv.shutdown()
        srv.server_close()


def test_hook_holds_no_log_or_listening_descriptor(daemon_factory, client_factory, hook, tmp_path):
    # Log files opened (and reopened with USR1) by the daemon, listeners,
    # the spool: none of it reaches the hook.
    d = daemon_factory(accept_hook=hook["directive"], error_log=str(tmp_path / "err.log"),
                       access_log=str(tmp_path / "access.log"))
    d.signal(signal.SIGUSR1)
    for i in range(2):
        _, status = client_factory(d.tcp_port).upload("fd%d.txt" % i, b"fd")
        assert status["verdict"] == "unscanned"
    for run in runs(hook["dir"]):
        others = {fd: t for fd, t in run["fds"].items() if fd not in ("0", "1", "2")}
        assert all(t.startswith("/proc/") for t in others.values()), run["fds"]
    assert "accept hook stdout" in open(tmp_path / "err.log").read()


def hook_pids(d):
    wait_for(lambda: os.path.exists(os.path.join(d, "pids")), what="the hook to start its child")
    return [int(x) for x in open(os.path.join(d, "pids")).read().split()]


def hanging_hook(daemon_factory, client_factory, hook, name, body, **directives):
    """One worker whose hook, for an upload of name, hangs with a child in its
    group: the daemon, the client (READY read), READY, the hook's pids."""
    d = daemon_factory(accept_hook=hook["directive"], hook_timeout="60s", workers=1, **directives)
    set_exit(hook["dir"], "sleep")
    c = client_factory(d.tcp_port)
    c.start(name, len(body))
    c.send(body)
    ready = c.line()
    return d, c, ready, hook_pids(hook["dir"])


def test_shutdown_timeout_stops_a_running_hook_and_tells_the_client(daemon_factory, client_factory,
                                                                   hook, tmp_path):
    """QUIT while a hook runs longer than shutdown_timeout: at the deadline the
    hook's whole group is killed, the client hears 503 with the id to ask
    again (it got a bare close before, and the hook ran on past intaked's
    exit, unstoppable), the master exits without having to kill its worker,
    and a re-query after the restart runs the hook again and places it."""
    log = tmp_path / "access.log"
    d, c, ready, pids = hanging_hook(daemon_factory, client_factory, hook, "q.txt", b"quit",
                                     shutdown_timeout="1s", access_log=str(log))
    d.signal(signal.SIGQUIT)
    answer = c.line()
    assert answer is not None and answer["type"] == "ERROR" and answer["code"] == 503, answer
    assert ready["id"] in answer["message"] and "verdict" in answer["message"], answer
    wait_for(lambda: not any(alive(p) for p in pids), what="the hook's group to be killed")
    assert d.wait_exit(5) == 0
    logs = d.logs()
    assert "shutdown_timeout reached while its accept hook runs" in logs
    assert "grace period" not in logs and "killed by signal" not in logs  # it ended on its own
    # The 503's access line has no verdict and nothing stored (it said clean
    # and the reserved name: a soak found it).
    [line] = [json.loads(x) for x in log.read_text().splitlines()]
    assert (line["code"], line["verdict"], line["stored_as"]) == (503, None, None), line
    d.log.close()
    set_exit(hook["dir"], "0")
    d.start()
    again = requery(client_factory, d.tcp_port, "q.txt", b"quit", ready["id"])
    assert again["type"] == "STATUS" and again["verdict"] == "unscanned", again
    assert again["stored_as"] == "q.txt" and d.accepted() == ["q.txt"]
    assert len(runs(hook["dir"])) == 2
    # Nothing failed: the log says the steps were cut short (it said
    # "from the step that failed before ()").
    assert "finishing it from where its finishing steps were cut short" in d.logs()
    assert "failed before ()" not in d.logs()


def test_worker_killed_while_its_hook_runs_takes_the_hook_along(daemon_factory, client_factory,
                                                               hook):
    """A worker killed (-9) while its hook runs cannot kill the hook: the
    master does, as it reaps the worker (before, the hook ran on, past
    hook_timeout and intaked's own exit, and a re-query started a second one
    beside it: the file shipped twice at once)."""
    d, c, ready, pids = hanging_hook(daemon_factory, client_factory, hook, "k.txt", b"kill")
    worker = d.workers()[0]
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in pids), what="the orphaned hook's group to be killed")
    assert "ended with an accept hook running; killed the hook's process group %d" % pids[0] \
        in d.logs()
    assert c.line() is None  # its worker is gone: nothing could answer
    set_exit(hook["dir"], "0")
    wait_for(lambda: len(d.workers()) == 1 and d.workers()[0] != worker, what="a new worker")
    again = requery(client_factory, d.tcp_port, "k.txt", b"kill", ready["id"])
    assert again["type"] == "STATUS" and again["verdict"] == "unscanned", again
    assert d.accepted() == ["k.txt"] and len(runs(hook["dir"])) == 2


def test_term_kills_a_running_hook_with_its_group(daemon_factory, client_factory, hook):
    """TERM: every process gone within 5 s, hooks and what they started
    included (they run in groups of their own, out of a killpg's reach)."""
    d, c, ready, pids = hanging_hook(daemon_factory, client_factory, hook, "t.txt", b"term")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(5) == 0
    wait_for(lambda: not any(alive(p) for p in pids), what="the hook's group to be gone")
    logs = d.logs()
    assert "the worker is exiting; killing its accept hook" in logs
    assert "ended with an accept hook running" not in logs  # the worker saw to it itself
    assert ready["id"] + ".part" in d.spooled()


def test_master_kills_only_groups_it_adopted(daemon_factory, client_factory, hook):
    """The worker's slot names its hooks' groups, but a worker is not
    trusted (it parses what clients send): a group id forged into its slot
    is not killed by the master (root), only the group of a hook the dead
    worker really left behind (before, the master killed whatever the slot
    named: any process group on the host)."""
    import struct
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        d, _, _, pids = hanging_hook(daemon_factory, client_factory, hook, "f.txt", b"forg")
        worker = d.workers()[0]
        # The hook's entry in the shared mapping; the free entry after it
        # gets the forged id, as a compromised worker could write it.
        want = struct.pack("<ii", pids[0], 0)
        spots = []
        with open("/proc/%d/mem" % worker, "r+b", buffering=0) as mem:
            for line in open("/proc/%d/maps" % worker):
                span, perms = line.split()[:2]
                if perms != "rw-s":
                    continue
                a, b = (int(x, 16) for x in span.split("-"))
                mem.seek(a)
                data = mem.read(b - a)
                spots += [a + i for i in range(0, len(data) - 7, 4) if data[i:i + 8] == want]
            assert len(spots) == 1, spots
            mem.seek(spots[0] + 4)
            mem.write(struct.pack("<i", victim.pid))
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: not any(alive(p) for p in pids), what="the real hook's group to be killed")
        time.sleep(0.5)
        assert victim.poll() is None, "the master killed a group it did not adopt"
        assert d.logs().count("ended with an accept hook running") == 1
    finally:
        victim.kill()
        victim.wait()


def test_hook_that_ended_well_just_before_the_deadline_counts(daemon_factory, client_factory,
                                                              hook):
    """The hook's exit and shutdown_timeout seen in one turn of a busy loop
    (the worker is held stopped across both): the exit 0 counts, the file is
    placed and STATUS sent (before, the stop won: 503, and the re-query ran
    the hook a second time, shipping the file twice)."""
    d = daemon_factory(accept_hook=hook["directive"], hook_timeout="60s", shutdown_timeout="1s",
                       workers=1)
    c = client_factory(d.tcp_port)
    c.start("slow-e.txt", 3)
    c.send(b"abc")
    c.line()
    wait_for(lambda: len(runs(hook["dir"])) == 1, what="the hook to start")
    worker = d.workers()[0]
    d.signal(signal.SIGQUIT)
    wait_for(lambda: "stopped accepting; draining" in d.logs(), what="the drain")
    os.kill(worker, signal.SIGSTOP)
    try:
        open(os.path.join(hook["dir"], "release"), "w").close()  # the hook exits 0
        time.sleep(1.5)  # and the deadline passes, both while the worker is stopped
    finally:
        os.kill(worker, signal.SIGCONT)
    status = c.line()
    assert status is not None and status["type"] == "STATUS", status
    assert status["verdict"] == "unscanned" and d.accepted() == ["slow-e.txt"]
    assert d.wait_exit(8) == 0
    assert len(runs(hook["dir"])) == 1


def test_hook_stopped_by_a_reload_is_not_counted_failed(daemon_factory, client_factory, hook):
    """A hook killed because its draining worker reached shutdown_timeout did
    not fail: intake_hook_runs_total does not count it as failed (it did, so
    every reload that stopped a hook raised hook-failure alerts)."""
    import urllib.request
    d, c, ready, pids = hanging_hook(daemon_factory, client_factory, hook, "r.txt", b"hup!",
                                     shutdown_timeout="1s")
    old = d.workers()
    d.signal(signal.SIGHUP)
    answer = c.line()
    assert answer is not None and answer["code"] == 503, answer
    wait_for(lambda: not any(alive(p) for p in pids + old), 10, what="the old worker and hook gone")
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.ws_port, timeout=5) as r:
        text = r.read().decode()
    assert 'intake_hook_runs_total{result="failed"} 0' in text, text
    assert 'intake_hook_runs_total{result="timeout"} 0' in text
