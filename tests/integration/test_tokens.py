"""Upload tokens (auth_secret_file): `intake token`, the token matrix on raw
TCP (a Python socket client and the CLI) and on WebSocket (python3-websockets,
token in START or in the handshake URL), expiry counted only at an upload's
first START, MAXSIZE, key rotation by HUP, the secret file's permissions at
-t, start and reload, and tokens kept out of intake's logs. Tokens are made
here with Python's hmac module, independently of intake's own code."""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import time

import pytest
import websockets

from conftest import INTAKE, INTAKED, Client, free_port, wait_for

K1 = b"first-secret-first-secret-first-secret-01"
K2 = b"second-secret-second-secret-0002"
K3 = b"third-secret-third-secret-third-0003"
TOKEN_RE = re.compile(r"v1\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.[A-Za-z0-9_-]{43}")
USED = set()  # every token handed to intaked, to look for in the logs


def token(key, expiry=None, max_size=0):
    if expiry is None:
        expiry = int(time.time()) + 3600
    msg = b"v1.%d.%d" % (expiry, max_size)
    sig = base64.urlsafe_b64encode(hmac.new(key, msg, hashlib.sha256).digest()).rstrip(b"=")
    t = (msg + b"." + sig).decode()
    USED.add(t)
    return t


def secret_file(path, keys, mode=0o600, newline=b"\n"):
    path.write_bytes(b"".join(k + newline for k in keys))
    os.chmod(str(path), mode)
    return str(path)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture
def authed(daemon_factory, tmp_path):
    """A daemon requiring tokens signed with K1 or K2, with an access log."""
    sec = secret_file(tmp_path / "secrets", [K1, K2])
    return daemon_factory(auth_secret_file=sec, access_log=str(tmp_path / "access.log"))


def tcp_start(d, **start):
    """One START on a fresh raw TCP connection: the first reply."""
    c = Client(d.tcp_port)
    try:
        c.start(start.pop("name", "t.bin"), start.pop("size", 3), **start)
        return c.line()
    finally:
        c.close()


def assert_no_tokens_logged(d, tmp_path):
    logs = d.logs()
    alog = tmp_path / "access.log"
    logs += alog.read_text() if alog.exists() else ""
    for t in USED:
        assert t not in logs and t.rsplit(".", 1)[1] not in logs, "token in the logs: " + t


# --- intake token ---------------------------------------------------------------


def test_intake_token_prints_a_token_signed_with_the_first_secret(tmp_path):
    sec = secret_file(tmp_path / "s", [K1, K2])
    before = int(time.time())
    r = subprocess.run([INTAKE, "token", "--secret-file", sec], capture_output=True, text=True)
    after = int(time.time())
    assert r.returncode == 0 and r.stderr == ""
    t = r.stdout.rstrip("\n")
    assert r.stdout == t + "\n" and TOKEN_RE.fullmatch(t), r.stdout
    _, exp, size, sig = t.split(".")
    assert before + 3600 <= int(exp) <= after + 3600 and size == "0"  # default ttl 1h, no limit
    assert t == token(K1, int(exp), 0)

    r = subprocess.run([INTAKE, "token", "--secret-file", sec, "--ttl", "90s", "--max-size", "1M"],
                       capture_output=True, text=True)
    _, exp, size, _ = r.stdout.strip().split(".")
    assert r.returncode == 0 and size == "1048576" and int(exp) - before in range(90, 90 + 10)


def test_intake_token_refuses_what_intaked_would(tmp_path):
    cases = [
        (secret_file(tmp_path / "open", [K1], mode=0o644), "group or others may access it"),
        (secret_file(tmp_path / "short", [b"x" * 31]), "line 1: a secret of 31 bytes"),
        (secret_file(tmp_path / "empty", []), "holds no secret"),
        (str(tmp_path / "missing"), "cannot open"),
    ]
    for path, words in cases:
        r = subprocess.run([INTAKE, "token", "--secret-file", path], capture_output=True, text=True)
        assert r.returncode == 2 and r.stdout == "" and words in r.stderr, (path, r.stderr)
    ok = secret_file(tmp_path / "ok", [K1])
    for args in (["token"], ["token", "--secret-file", ok, "--ttl", "0"],
                 ["token", "--secret-file", ok, "--ttl", "1d"],
                 ["token", "--secret-file", ok, "--max-size", "-1"],
                 ["token", "--secret-file", ok, "extra"]):
        r = subprocess.run([INTAKE] + args, capture_output=True, text=True)
        assert r.returncode == 2 and r.stdout == "", args


def test_secret_lines_crlf_and_blank_lines(tmp_path, daemon_factory):
    """A CRLF file: the \\r is not part of a key; blank lines are skipped."""
    sec = tmp_path / "crlf"
    sec.write_bytes(b"\r\n" + K1 + b"\r\n\n" + K2)  # no newline at the end
    os.chmod(str(sec), 0o400)
    d = daemon_factory(auth_secret_file=str(sec))
    t = subprocess.run([INTAKE, "token", "--secret-file", str(sec)], capture_output=True,
                       text=True).stdout.strip()
    assert t == token(K1, int(t.split(".")[1]))
    assert tcp_start(d, token=token(K2))["type"] == "READY"


# --- raw TCP ---------------------------------------------------------------------


def test_tcp_token_matrix(authed, tmp_path):
    d = authed
    now = int(time.time())
    cases = [
        ({}, 401, "upload token required"),
        ({"token": ""}, 401, "upload token required"),
        ({"token": "not-a-token"}, 401, "malformed"),
        ({"token": token(K1) + "="}, 401, "malformed"),
        ({"token": " " + token(K1)}, 401, "malformed"),
        ({"token": token(K3)}, 401, "bad signature"),
        ({"token": token(K1, now - 5)}, 401, "expired at"),
        ({"token": token(K1, max_size=2)}, 413, "larger than the upload token allows"),
    ]
    for start, code, words in cases:
        r = tcp_start(d, **start)
        assert r["type"] == "ERROR" and r["code"] == code and words in r["message"], (start, r)

    # The plain header form cannot carry a token.
    c = Client(d.tcp_port)
    c.send(b"3 plain.txt\n")
    r = c.line()
    c.close()
    assert r["code"] == 401

    # Valid: signed by either secret, size within MAXSIZE (equal is fine).
    for t in (token(K1), token(K2, max_size=3), token(K1, now + 2)):
        c = Client(d.tcp_port)
        c.start("ok.bin", 3, token=t)
        c.send(b"abc")
        ready, status = c.line(), c.line()
        c.close()
        assert ready["type"] == "READY" and status["verdict"] == "unscanned", (t, status)

    # Several uploads on one connection: each START needs its own token.
    c = Client(d.tcp_port)
    c.start("one.bin", 1, token=token(K1))
    c.send(b"1")
    assert c.line()["type"] == "READY" and c.line()["type"] == "STATUS"
    c.start("two.bin", 1)
    assert c.line()["code"] == 401
    c.close()
    assert_no_tokens_logged(d, tmp_path)


def test_expiry_counts_only_at_the_first_start(authed, tmp_path):
    """A START with an id (resume, re-query) passes an expired token on to the
    resume logic (which does not know this id: 404), never 401; a bad
    signature is 401 there too."""
    d = authed
    expired = token(K1, int(time.time()) - 60)
    rid = "0123456789abcdef0123456789abcdef"
    assert tcp_start(d, token=expired)["code"] == 401
    r = tcp_start(d, token=expired, id=rid)
    assert r["type"] == "ERROR" and r["code"] == 404, r
    for bad in ({}, {"token": token(K3)}, {"token": "v1.1.0"}):
        r = tcp_start(d, id=rid, **bad)
        assert r["code"] == 401, (bad, r)
    # MAXSIZE still holds at a resume.
    r = tcp_start(d, token=token(K1, max_size=1), id=rid)
    assert r["code"] == 413
    assert_no_tokens_logged(d, tmp_path)


def test_cli_sends_its_token(authed, tmp_path):
    d = authed
    f = tmp_path / "cli.txt"
    f.write_bytes(b"hello\n")
    target = "127.0.0.1:%d" % d.tcp_port
    env = dict(os.environ)
    env.pop("INTAKE_TOKEN", None)
    r = subprocess.run([INTAKE, "-q", "--retries", "0", target, str(f)], capture_output=True,
                       text=True, env=env, timeout=30)
    assert r.returncode == 2 and "(401) ERROR" in r.stdout, r.stdout
    t = subprocess.run([INTAKE, "token", "--secret-file", d.dir["auth_secret_file"]],
                       capture_output=True, text=True).stdout.strip()
    USED.add(t)
    r = subprocess.run([INTAKE, "--token", t, target, str(f)], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.returncode == 0 and r.stdout == "%s: OK (not scanned)\n" % f, r.stdout + r.stderr
    env["INTAKE_TOKEN"] = token(K2, max_size=3)
    r = subprocess.run([INTAKE, "--retries", "0", target, str(f)], capture_output=True, text=True,
                       env=env, timeout=30)
    assert r.returncode == 2 and "(413) ERROR" in r.stdout, r.stdout
    env["INTAKE_TOKEN"] = token(K2)
    r = subprocess.run([INTAKE, "--name", "env.txt", target, str(f)], capture_output=True,
                       text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(d.accepted()) == ["cli.txt", "env.txt"]
    assert_no_tokens_logged(d, tmp_path)


# --- WebSocket ---------------------------------------------------------------------


async def ws_start(d, path, **start):
    """Connects to path, sends one START: (first reply, close code or None)."""
    async with websockets.connect("ws://127.0.0.1:%d%s" % (d.ws_port, path)) as ws:
        msg = {"type": "START", "filename": "w.bin", "size": 2}
        msg.update(start)
        await ws.send(json.dumps(msg))
        reply = json.loads(await ws.recv())
        if reply["type"] == "ERROR":
            try:
                await ws.recv()
            except websockets.ConnectionClosed as e:
                return reply, e.rcvd.code if e.rcvd else None
        return reply, None


def test_ws_token_matrix(authed, tmp_path):
    d = authed
    good, other = token(K1), token(K2)
    expired, foreign = token(K1, int(time.time()) - 1), token(K3)
    enc = "".join("%%%02X" % ord(ch) for ch in good)  # every byte escaped
    cases = [
        ("/upload", {}, 401, 1008),
        ("/upload", {"token": "x"}, 401, 1008),
        ("/upload", {"token": foreign}, 401, 1008),
        ("/upload", {"token": expired}, 401, 1008),
        ("/upload", {"token": token(K1, max_size=1)}, 413, 1009),
        ("/upload", {"token": good}, 200, None),
        ("/upload?token=" + good, {}, 200, None),
        ("/?token=" + other, {}, 200, None),
        ("/upload?a=1&token=" + enc + "&b=2", {}, 200, None),
        ("/upload?token=" + good[:-1] + "%2", {}, 401, 1008),  # bad escape
        ("/upload?token=" + good + "%00", {}, 401, 1008),
        ("/upload?token=" + good + "x", {}, 401, 1008),
        ("/upload?token=" + expired, {}, 401, 1008),
        ("/upload?tok=" + good, {}, 401, 1008),
        ("/upload?token=" + foreign + "&token=" + good, {}, 401, 1008),  # the first counts
        # A START's own token wins over the URL's, both ways.
        ("/upload?token=" + foreign, {"token": good}, 200, None),
        ("/upload?token=" + good, {"token": foreign}, 401, 1008),
        ("/upload?token=" + good, {"size": 5, "token": token(K1, max_size=4)}, 413, 1009),
        # An id: the expiry no longer counts (404: no such upload here).
        ("/upload?token=" + expired, {"id": "0" * 32}, 404, 1008),
        ("/upload?token=" + foreign, {"id": "0" * 32}, 401, 1008),
    ]
    for path, start, code, close in cases:
        reply, closed = run(ws_start(d, path, **start))
        got = reply.get("code")
        assert got == code and closed == close, (path, start, reply, closed)
        if code == 200:
            assert reply["type"] == "DATA" and reply["offset"] == 0
    assert_no_tokens_logged(d, tmp_path)
    assert "expired at" in d.logs()


def test_ws_url_token_covers_every_start_on_the_connection(authed, tmp_path):
    d = authed

    async def go():
        url = "ws://127.0.0.1:%d/upload?token=%s" % (d.ws_port, token(K2))
        async with websockets.connect(url) as ws:
            verdicts = []
            for i in range(3):
                await ws.send(json.dumps({"type": "START", "filename": "u%d" % i, "size": 1}))
                assert json.loads(await ws.recv())["type"] == "DATA"
                await ws.send(b"x")
                assert json.loads(await ws.recv())["offset"] == 1
                await ws.send('{"type":"DONE"}')
                verdicts.append(json.loads(await ws.recv())["verdict"])
            return verdicts
    assert run(go()) == ["unscanned"] * 3
    assert d.accepted() == ["u0", "u1", "u2"]
    assert_no_tokens_logged(d, tmp_path)


# --- the secret file: rotation, permissions ---------------------------------------


def test_key_rotation_by_hup(daemon_factory, tmp_path):
    path = tmp_path / "secrets"
    sec = secret_file(path, [K1])
    d = daemon_factory(auth_secret_file=sec)
    t1, t2, t3 = token(K1), token(K2), token(K3)
    assert tcp_start(d, token=t1)["type"] == "READY"
    assert tcp_start(d, token=t2)["code"] == 401
    # Rotate: K2 signs from now on, K1 still verifies tokens already handed out.
    secret_file(path, [K2, K1])
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reload: upload tokens required: 2 secrets" in d.logs(), 10, what="reload")
    wait_for(lambda: tcp_start(d, token=t2)["type"] == "READY", 10, what="new workers")
    assert tcp_start(d, token=t1)["type"] == "READY"
    new = subprocess.run([INTAKE, "token", "--secret-file", sec], capture_output=True,
                         text=True).stdout.strip()
    assert new == token(K2, int(new.split(".")[1]))
    assert tcp_start(d, token=new)["type"] == "READY"
    # Retire K1.
    secret_file(path, [K2, K3])
    d.signal(signal.SIGHUP)
    wait_for(lambda: d.logs().count("reload: upload tokens required: 2 secrets") == 2, 10,
             what="second reload")
    wait_for(lambda: tcp_start(d, token=t1).get("code") == 401, 10, what="K1 retired")
    assert tcp_start(d, token=t3)["type"] == "READY"


def test_secret_file_permissions_and_content_at_check_and_start(tmp_path):
    base = ("scanner off\npid_file {t}/p.pid\nspool_dir {t}/s\naccept_dir {t}/a\n"
            "quarantine_dir {t}/q\nlisten_ws 127.0.0.1:{w}\nlisten_tcp 127.0.0.1:{p}\n"
            .format(t=tmp_path, w=free_port(), p=free_port()))
    conf = tmp_path / "c.conf"
    cases = [
        (0o640, [K1], "group or others may access it (mode 0640)"),
        (0o604, [K1], "(mode 0604)"),
        (0o620, [K1], "(mode 0620)"),
        (0o600, [K1, b"short"], "line 2: a secret of 5 bytes; each needs at least 32"),
        (0o600, [], "holds no secret"),
    ]
    for mode, keys, words in cases:
        sec = secret_file(tmp_path / "secret", keys, mode=mode)
        conf.write_text(base + "auth_secret_file secret\n")
        for args in (["-t"], []):
            r = subprocess.run([INTAKED, "-c", str(conf)] + args, capture_output=True, text=True,
                               cwd=str(tmp_path), timeout=20)
            assert r.returncode == 1, (mode, args, r.stdout, r.stderr)
            assert "c.conf:8: auth_secret_file %s: " % sec in r.stderr and words in r.stderr, \
                r.stderr
            assert K1.decode() not in r.stderr
    os.remove(str(tmp_path / "secret"))
    os.mkdir(str(tmp_path / "secret"), 0o700)
    r = subprocess.run([INTAKED, "-c", str(conf), "-t"], capture_output=True, text=True,
                       cwd=str(tmp_path))
    assert r.returncode == 1 and "not a regular file" in r.stderr
    os.rmdir(str(tmp_path / "secret"))
    secret_file(tmp_path / "secret", [K1], mode=0o400)
    r = subprocess.run([INTAKED, "-c", str(conf), "-t"], capture_output=True, text=True,
                       cwd=str(tmp_path))
    assert r.returncode == 0 and r.stdout == "configuration ok\n"
    r = subprocess.run([INTAKED, "-c", str(conf), "-t", "-o", "auth_secret_file=nowhere"],
                       capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 1 and "-o auth_secret_file=nowhere: auth_secret_file" in r.stderr
    assert "cannot open: No such file or directory" in r.stderr


def test_bad_secret_file_on_hup_is_a_failed_reload(daemon_factory, tmp_path):
    path = tmp_path / "secrets"
    sec = secret_file(path, [K1])
    d = daemon_factory(auth_secret_file=sec)
    workers = sorted(d.workers())
    for mode, keys, words in [(0o644, [K2], "group or others may access it"),
                              (0o600, [b"too short"], "a secret of 9 bytes")]:
        secret_file(path, keys, mode=mode)
        d.signal(signal.SIGHUP)
        wait_for(lambda: words in d.logs(), 10, what="the reload to fail")
        assert "still running with the previous configuration" in d.logs()
        # Old configuration kept: same workers, and K1 still verifies.
        assert sorted(d.workers()) == workers
        assert tcp_start(d, token=token(K1))["type"] == "READY"
        assert tcp_start(d, token=token(K2))["code"] == 401
    assert "reload: configuration" not in d.logs()


# --- the upload page ---------------------------------------------------------------


def page_items(d, tmp_path, query, f):
    """Uploads f through the page at /QUERY in headless Chromium: its items."""
    browser_dir = os.path.join(os.path.dirname(INTAKE), "..", "tests", "browser")
    assert os.path.exists("/usr/bin/chromium"), "chromium missing: run scripts/deps.sh"
    r = subprocess.run(["node", "upload_page.mjs", "http://127.0.0.1:%d/%s" % (d.ws_port, query),
                        str(f)], cwd=browser_dir, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["items"]


def test_upload_link_through_the_page(authed, tmp_path):
    """An upload link: the page passes its own ?token= on to its WebSocket,
    and its same-origin handshake passes the default allowed_origins."""
    f = tmp_path / "linked.txt"
    f.write_bytes(b"sent through an upload link\n")
    items = page_items(authed, tmp_path, "?token=" + token(K2), f)
    assert items[0]["verdict"] == "unscanned", items
    assert authed.accepted() == ["linked.txt"]
    items = page_items(authed, tmp_path, "", f)
    assert items[0]["verdict"] == "error" and "token" in items[0]["state"], items
    assert_no_tokens_logged(authed, tmp_path)
