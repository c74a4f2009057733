"""TLS on both listeners (SPEC "TLS"), with a throwaway CA this test makes
with the openssl CLI: Python ssl clients on raw TCP and HTTPS, python3-
websockets over wss, openssl s_client for protocol versions and key updates,
the intake CLI's verification, plain-text and silent clients, and the
certificate and key re-read at HUP (and checked at -t)."""
import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import urllib.request

import pytest
import websockets

from conftest import INTAKE, INTAKED, NGINX, ROOT, file_sha256, free_ports, start_nginx, wait_for

SERIAL_A, SERIAL_B = "1001", "2002"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def leaf(d, name, serial, san):
    """A P-256 key and a certificate for it, signed by d's CA."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % san)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-set_serial", "0x" + serial, "-days", "2", "-extfile", name + ".ext",
            "-out", name + ".pem", cwd=d)
    return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=intake test CA",
            cwd=d)
    p = {"dir": d, "ca": os.path.join(d, "ca.pem")}
    p["a"] = leaf(d, "a", SERIAL_A, "DNS:localhost,IP:127.0.0.1")
    p["b"] = leaf(d, "b", SERIAL_B, "DNS:localhost,IP:127.0.0.1")
    p["other"] = leaf(d, "other", "3003", "DNS:intake.example")
    return p


def tls_daemon(daemon_factory, tmp_path, pair, start=True, **directives):
    """intaked with tls on both listeners, serving a copy of pair (so a test
    may overwrite it and HUP)."""
    cert, key = str(tmp_path / "server.pem"), str(tmp_path / "server.key")
    shutil.copy(pair[0], cert)
    shutil.copy(pair[1], key)
    d = daemon_factory(start=False, **directives)
    d.dir.update({"listen_ws": "127.0.0.1:%d tls" % d.ws_port,
                  "listen_tcp": "127.0.0.1:%d tls" % d.tcp_port,
                  "tls_certificate": cert, "tls_certificate_key": key})
    with open(d.conf, "w") as f:
        for k, v in d.dir.items():
            f.write("%s %s\n" % (k, v))
    d.cert, d.key = cert, key
    return d.start() if start else d


def client_ctx(pki, **versions):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    for k, v in versions.items():
        setattr(ctx, k, v)
    return ctx


def connect(d, ctx, session=None, host="localhost"):
    raw = socket.create_connection(("127.0.0.1", d.tcp_port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=host, session=session)


def lines(s):
    f = s.makefile("rb")
    return lambda: json.loads(f.readline())


def served_serial(d, ctx):
    with connect(d, ctx) as s:
        return s.getpeercert()["serialNumber"]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_raw_tcp_uploads_and_a_resumed_session(daemon_factory, tmp_path, pki, version):
    d = tls_daemon(daemon_factory, tmp_path, pki["a"])
    ctx = client_ctx(pki, minimum_version=version, maximum_version=version)
    big = os.urandom(5 * (1 << 20) + 17)
    small = b"second upload on the same connection\n"
    s = connect(d, ctx)
    assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    assert s.getpeercert()["serialNumber"] == SERIAL_A
    # Two uploads pipelined in one write: the second header arrives while
    # the first is finishing and waits decrypted inside TLS, not in the socket.
    s.sendall(json.dumps({"type": "START", "filename": "big.bin", "size": len(big)}).encode()
              + b"\n" + big + b"%d small.txt\n" % len(small) + small)
    read = lines(s)
    r1, st1, r2, st2 = read(), read(), read(), read()
    assert (r1["type"], st1["type"], r2["type"], st2["type"]) == ("READY", "STATUS", "READY", "STATUS")
    assert st1["sha256"] == hashlib.sha256(big).hexdigest() and st1["verdict"] == "unscanned"
    assert st2["sha256"] == hashlib.sha256(small).hexdigest()
    assert file_sha256(os.path.join(d.accept_dir, "big.bin")) == st1["sha256"]
    session = s.session
    s.close()
    # A reconnecting client resumes with its ticket (no full handshake).
    with connect(d, ctx, session=session) as s2:
        assert s2.session_reused
        s2.sendall(b"3 again.txt\nabc")
        read = lines(s2)
        assert read()["type"] == "READY" and read()["verdict"] == "unscanned"
    assert open(os.path.join(d.accept_dir, "again.txt"), "rb").read() == b"abc"
    # An ERROR goes out before the close (and TLS's close_notify after it).
    with connect(d, ctx) as s3:
        s3.sendall(b"not a header\n")
        f = s3.makefile("rb")
        err = json.loads(f.readline())
        assert err["type"] == "ERROR" and err["code"] == 400
        assert f.read() == b""


def test_reading_paused_for_the_hash_resumes_with_what_tls_holds(daemon_factory, tmp_path, pki):
    """A big upload outruns the hash, so reading pauses (more than 16 MiB
    unhashed) and goes on when the hash catches up. The next upload's header
    and body, sent in the same write, wait decrypted inside TLS meanwhile:
    they must be read when reading resumes, not left until the client sends
    more (it never does), and the pause is not the client's silence."""
    d = tls_daemon(daemon_factory, tmp_path, pki["a"], idle_timeout="2s", max_file_size="1G")
    ctx = client_ctx(pki)
    big = os.urandom(96 * (1 << 20) + 5)
    small = b"after the big one\n"
    with connect(d, ctx) as s:
        s.sendall(b"%d big.bin\n" % len(big) + big + b"%d small.txt\n" % len(small) + small)
        read = lines(s)
        r1, st1, r2, st2 = read(), read(), read(), read()
    assert (r1["type"], st1["type"], r2["type"], st2["type"]) == ("READY", "STATUS", "READY", "STATUS")
    assert st1["sha256"] == hashlib.sha256(big).hexdigest()
    assert file_sha256(os.path.join(d.accept_dir, "big.bin")) == st1["sha256"]
    assert open(os.path.join(d.accept_dir, "small.txt"), "rb").read() == small


def test_https_page_healthz_and_metrics(daemon_factory, tmp_path, pki):
    d = tls_daemon(daemon_factory, tmp_path, pki["a"])
    ctx = client_ctx(pki)
    base = "https://localhost:%d" % d.ws_port
    with urllib.request.urlopen(base + "/", context=ctx, timeout=10) as r:
        assert r.status == 200 and b"<title>intake: upload files</title>" in r.read()
    with urllib.request.urlopen(base + "/healthz", context=ctx, timeout=10) as r:
        assert json.loads(r.read())["status"] == "ok"
    with urllib.request.urlopen(base + "/metrics", context=ctx, timeout=10) as r:
        assert b"intake_" in r.read()
    # Plain HTTP on the TLS port gets nothing back, not a page.
    with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
        urllib.request.urlopen("http://127.0.0.1:%d/healthz" % d.ws_port, timeout=10).read()


def http_client_errors():
    import http.client
    return http.client.HTTPException


def test_wss_uploads(daemon_factory, tmp_path, pki):
    d = tls_daemon(daemon_factory, tmp_path, pki["a"])
    data = os.urandom(3 * (1 << 20) + 5)
    second = b"x" * 1000

    async def go():
        url = "wss://localhost:%d/upload" % d.ws_port
        async with websockets.connect(url, ssl=client_ctx(pki), max_size=None) as ws:
            await ws.send(json.dumps({"type": "START", "filename": "w.bin", "size": len(data)}))
            init = json.loads(await ws.recv())
            assert init["type"] == "DATA" and init["code"] == 200
            for i in range(0, len(data), 1 << 20):
                await ws.send(data[i:i + (1 << 20)])
            # The next upload's frames follow DONE at once (pipelined).
            await ws.send(json.dumps({"type": "DONE"}))
            await ws.send(json.dumps({"type": "START", "filename": "w2.bin", "size": len(second)}))
            await ws.send(second)
            await ws.send(json.dumps({"type": "DONE"}))
            statuses = []
            while len(statuses) < 2:
                m = json.loads(await ws.recv())
                assert m["type"] in ("DATA", "STATUS"), m
                if m["type"] == "STATUS":
                    statuses.append(m)
            return statuses

    statuses = asyncio.run(asyncio.wait_for(go(), 60))
    assert [s["filename"] for s in statuses] == ["w.bin", "w2.bin"]
    assert statuses[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert file_sha256(os.path.join(d.accept_dir, "w.bin")) == statuses[0]["sha256"]
    assert open(os.path.join(d.accept_dir, "w2.bin"), "rb").read() == second


def s_client(d, *args, stdin=b""):
    # SECLEVEL=0 lets this client offer TLS 1.1 at all: the refusal tested is the server's.
    return subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % d.tcp_port,
                           "-servername", "localhost", "-cipher", "DEFAULT@SECLEVEL=0", *args],
                          input=stdin, capture_output=True, timeout=30)


def test_protocol_versions(daemon_factory, tmp_path, pki):
    d = tls_daemon(daemon_factory, tmp_path, pki["a"])
    old = s_client(d, "-tls1_1")
    assert old.returncode != 0
    assert b"alert protocol version" in old.stdout + old.stderr, old.stdout + old.stderr
    for flag, name in [("-tls1_2", b"TLSv1.2"), ("-tls1_3", b"TLSv1.3")]:
        r = s_client(d, flag, "-CAfile", pki["ca"], "-verify_return_error")
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert b"Protocol  : " + name in out or b"New, " + name in out, out
        assert b"Verify return code: 0 (ok)" in out
    # TLS 1.2 offers only ECDHE with AEAD ciphers.
    weak = s_client(d, "-tls1_2", "-cipher", "AES128-SHA:ECDHE-RSA-AES128-SHA:DHE-RSA-AES128-GCM-SHA256@SECLEVEL=0")
    assert weak.returncode != 0


def test_key_updates(daemon_factory, tmp_path, pki):
    """The client asks for key updates between uploads (the server must
    answer with its own) and the uploads go on."""
    d = tls_daemon(daemon_factory, tmp_path, pki["a"])
    p = subprocess.Popen(["openssl", "s_client", "-tls1_3", "-connect", "127.0.0.1:%d" % d.tcp_port,
                          "-servername", "localhost", "-CAfile", pki["ca"]],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = b""

        def until(word, count=1):
            nonlocal out
            while out.count(word) < count:
                chunk = os.read(p.stdout.fileno(), 65536)
                assert chunk, out
                out += chunk

        until(b"Verify return code")
        for n, (cmd, name) in enumerate([(b"K\n", b"ku1.txt"), (b"k\n", b"ku2.txt")], 1):
            # s_client: K updates its keys and requests the server's update; k does not.
            p.stdin.write(cmd)
            p.stdin.flush()
            until(b"KEYUPDATE", n)
            p.stdin.write(b"5 %s\nhello" % name)
            p.stdin.flush()
            until(b'"filename":"%s"' % name)
    finally:
        p.stdin.close()
        p.kill()
        p.wait()
    assert sorted(d.accepted()) == ["ku1.txt", "ku2.txt"]


def run_cli(*args):
    return subprocess.run([INTAKE, *args], capture_output=True, text=True, timeout=60)


def test_cli_verifies_the_server(daemon_factory, tmp_path, pki):
    d = tls_daemon(daemon_factory, tmp_path, pki["a"])
    f = tmp_path / "report.txt"
    f.write_bytes(os.urandom(2 * (1 << 20) + 3))
    for target in ("127.0.0.1:%d" % d.tcp_port, "localhost:%d" % d.tcp_port):
        r = run_cli("--cacert", pki["ca"], target, str(f))
        assert r.returncode == 0 and r.stdout == "%s: OK (not scanned)\n" % f, r
    # Not in the system's trust store.
    r = run_cli("--tls", "127.0.0.1:%d" % d.tcp_port, str(f))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1
    assert "certificate cannot be verified" in r.stderr and "--cacert" in r.stderr, r.stderr
    r = run_cli("--insecure", "127.0.0.1:%d" % d.tcp_port, str(f))
    assert r.returncode == 0, r
    # Without --tls the CLI speaks plain text to a TLS port: closed at once.
    r = run_cli("--retries", "0", "127.0.0.1:%d" % d.tcp_port, str(f))
    assert r.returncode == 2
    assert "not a TLS client on 127.0.0.1:%d" % d.tcp_port in d.logs()
    r = run_cli("--cacert", str(tmp_path / "missing.pem"), "127.0.0.1:%d" % d.tcp_port, str(f))
    assert r.returncode == 2 and "missing.pem: No such file or directory" in r.stderr


def test_cli_resumes_its_session_after_an_error(daemon_factory, tmp_path, pki):
    """The server closes after an ERROR; the CLI reconnects for the next file
    and resumes its TLS session."""
    d = tls_daemon(daemon_factory, tmp_path, pki["a"], max_file_size="1M", log_level="debug")
    big, small = tmp_path / "big.bin", tmp_path / "small.txt"
    big.write_bytes(b"x" * (2 << 20))
    small.write_text("fits\n")
    r = run_cli("--cacert", pki["ca"], "localhost:%d" % d.tcp_port, str(big), str(small))
    assert r.returncode == 2
    assert r.stdout.splitlines()[1] == "%s: OK (not scanned)" % small, r
    log = d.logs()
    assert log.count(": TLSv1.3 TLS_AES_128_GCM_SHA256") == 2
    assert log.count(": TLSv1.3 TLS_AES_128_GCM_SHA256, session resumed") == 1


def test_cli_refuses_a_certificate_for_another_name(daemon_factory, tmp_path, pki):
    d = tls_daemon(daemon_factory, tmp_path, pki["other"])
    f = tmp_path / "a.txt"
    f.write_text("hello\n")
    for target, name in [("127.0.0.1:%d" % d.tcp_port, "127.0.0.1"),
                         ("localhost:%d" % d.tcp_port, "localhost")]:
        r = run_cli("--cacert", pki["ca"], target, str(f))
        assert r.returncode == 2 and r.stdout == "", r
        assert r.stderr.count("\n") == 1
        assert "certificate is not valid for %s" % name in r.stderr, r.stderr
    assert d.accepted() == []
    r = run_cli("--insecure", "localhost:%d" % d.tcp_port, str(f))
    assert r.returncode == 0, r


def wait_closed(sock, timeout, got=None):
    """True if the peer closes (EOF or reset) before timeout; what it sent
    meanwhile goes to got."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
            if got is not None:
                got.append(chunk)
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_plain_text_and_garbage_are_closed_at_once(daemon_factory, tmp_path, pki):
    """Long before header_timeout (10 minutes here) and without a reply."""
    d = tls_daemon(daemon_factory, tmp_path, pki["a"], header_timeout="10m")
    for port in (d.tcp_port, d.ws_port):
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"5 a.txt\n", b"\x00\xff" * 100):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(junk)
            got = []
            assert wait_closed(s, 30, got), "still open: %r on %d" % (junk, port)
            assert b"HTTP/" not in b"".join(got) and b"ERROR" not in b"".join(got)
            s.close()
    log = d.logs()
    assert log.count("not a TLS client") == 6
    assert "(first byte 0x47, plain text)" in log and "(first byte 0x00)" in log
    # The worker is none the worse.
    with connect(d, client_ctx(pki)) as s:
        s.sendall(b"2 ok.txt\nok")
        read = lines(s)
        assert read()["type"] == "READY" and read()["verdict"] == "unscanned"


def test_handshake_bounded_by_header_timeout(daemon_factory, tmp_path, pki):
    d = tls_daemon(daemon_factory, tmp_path, pki["a"], header_timeout="1s")
    s = socket.create_connection(("127.0.0.1", d.tcp_port), timeout=10)
    s.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then silence
    assert wait_closed(s, 30)
    s.close()
    wait_for(lambda: "TLS handshake on 127.0.0.1:%d not completed within 1000 ms" % d.tcp_port
             in d.logs(), what="the timeout log line")


def test_hup_serves_a_new_certificate(daemon_factory, tmp_path, pki):
    d = tls_daemon(daemon_factory, tmp_path, pki["a"])
    ctx = client_ctx(pki)
    assert served_serial(d, ctx) == SERIAL_A
    # An upload in flight on the old pair finishes on it.
    old = connect(d, ctx)
    old.sendall(b"10 inflight.txt\n01234")
    read = lines(old)
    assert read()["type"] == "READY"
    shutil.copy(pki["b"][0], d.cert)
    shutil.copy(pki["b"][1], d.key)
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reload: TLS certificate CN=b (serial %s" % SERIAL_B in d.logs(),
             what="the reload")
    wait_for(lambda: served_serial(d, ctx) == SERIAL_B, what="the new certificate")
    old.sendall(b"56789")
    assert read()["verdict"] == "unscanned"
    assert old.getpeercert()["serialNumber"] == SERIAL_A
    old.close()


def test_hup_with_a_broken_pair_keeps_the_old_one(daemon_factory, tmp_path, pki):
    d = tls_daemon(daemon_factory, tmp_path, pki["a"])
    ctx = client_ctx(pki)
    assert served_serial(d, ctx) == SERIAL_A
    workers = sorted(d.workers())
    # B's certificate with A's key: does not match.
    shutil.copy(pki["b"][0], d.cert)
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed: %s: tls_certificate_key %s does not match tls_certificate %s"
             % (where(d.conf, "tls_certificate_key"), d.key, d.cert) in d.logs(),
             what="the failed reload")
    # A certificate file that is no certificate.
    with open(d.cert, "w") as f:
        f.write("not a certificate\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed: %s: tls_certificate %s: cannot load"
             % (where(d.conf, "tls_certificate"), d.cert) in d.logs(),
             what="the second failed reload")
    assert "still running with the previous configuration and certificate" in d.logs()
    assert sorted(d.workers()) == workers  # no new generation
    for _ in range(4):
        assert served_serial(d, ctx) == SERIAL_A


def check(conf):
    return subprocess.run([INTAKED, "-c", str(conf), "-t"], capture_output=True, text=True,
                          timeout=30)


def where(conf, directive):
    """FILE:LINE of directive in conf, as intaked's errors name it."""
    with open(conf) as f:
        for i, line in enumerate(f, 1):
            if line.split()[:1] == [directive]:
                return "%s:%d" % (conf, i)
    raise AssertionError("%s not in %s" % (directive, conf))


def test_t_loads_and_matches_the_pair(daemon_factory, tmp_path, pki):
    d = tls_daemon(daemon_factory, tmp_path, pki["a"], start=False)
    r = check(d.conf)
    assert r.returncode == 0 and r.stdout == "configuration ok\n", r
    shutil.copy(pki["b"][1], d.key)  # B's key with A's certificate
    r = check(d.conf)
    assert r.returncode == 1
    assert r.stderr == "intaked: %s: tls_certificate_key %s does not match tls_certificate %s\n" % (
        where(d.conf, "tls_certificate_key"), d.key, d.cert)
    # intaked does not start with it either, and says why.
    p = subprocess.run([INTAKED, "-c", d.conf], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "does not match tls_certificate" in p.stderr
    os.unlink(d.key)
    r = check(d.conf)
    assert r.returncode == 1
    assert "intaked: %s: tls_certificate_key %s: cannot open: No such file or directory" % (
        where(d.conf, "tls_certificate_key"), d.key) in r.stderr
    with open(d.cert, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    shutil.copy(pki["a"][1], d.key)
    r = check(d.conf)
    assert r.returncode == 1 and "intaked: %s: tls_certificate %s: cannot load" % (
        where(d.conf, "tls_certificate"), d.cert) in r.stderr, r.stderr


def test_upload_page_over_https(daemon_factory, tmp_path, pki):
    """The page in Chromium over HTTPS (the test CA is not in its store:
    ignoreHTTPSErrors), uploading over wss."""
    browser_dir = os.path.join(ROOT, "tests", "browser")
    assert os.path.exists("/usr/bin/chromium"), "chromium missing: run scripts/deps.sh"
    d = tls_daemon(daemon_factory, tmp_path, pki["a"])
    f = tmp_path / "secure.bin"
    f.write_bytes(os.urandom((1 << 20) * 2 + 99))
    r = subprocess.run(["node", "upload_page.mjs", "https://localhost:%d/" % d.ws_port, str(f)],
                       cwd=browser_dir, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)
    assert page["errors"] == []
    assert page["items"] == [{"name": "secure.bin", "verdict": "unscanned",
                              "state": page["items"][0]["state"]}]
    assert "stored as secure.bin" in page["items"][0]["state"]
    assert file_sha256(os.path.join(d.accept_dir, "secure.bin")) == file_sha256(str(f))


def test_tls_at_nginx_in_front_of_plain_intaked(daemon_factory, tmp_path, pki):
    """The shipped samples etc/nginx/intake-{http,stream}-tls.conf with real
    nginx: HTTPS page and wss upload, and intake --tls through the stream
    block, to a plain intaked."""
    assert os.path.exists(NGINX), "nginx missing: run scripts/deps.sh"
    d = daemon_factory()
    https_port, http_port, stream_port = free_ports(3)
    cert, key = pki["a"]

    def sample(name, repl):
        with open(os.path.join(ROOT, "etc", "nginx", name)) as f:
            text = f.read()
        repl = dict(repl, **{"/etc/ssl/intake/fullchain.pem": cert,
                             "/etc/ssl/intake/privkey.pem": key})
        for a, b in repl.items():
            assert a in text, a
            text = text.replace(a, b)
        return text

    http_conf = sample("intake-http-tls.conf", {
        "127.0.0.1:8080": "127.0.0.1:%d" % d.ws_port,
        "listen 443 ssl;": "listen 127.0.0.1:%d ssl;" % https_port,
        "listen 80;": "listen 127.0.0.1:%d;" % http_port,
        "/var/log/nginx/": "%s/nginx-" % tmp_path})
    stream_conf = sample("intake-stream-tls.conf", {
        "127.0.0.1:9090": "127.0.0.1:%d" % d.tcp_port,
        "listen 9443 ssl;": "listen 127.0.0.1:%d ssl;" % stream_port})
    nginx = start_nginx(tmp_path, http_conf, stream_conf, (stream_port,), access_log_off=True)
    try:
        ctx = client_ctx(pki)
        with urllib.request.urlopen("https://localhost:%d/" % https_port, context=ctx,
                                    timeout=10) as r:
            assert r.status == 200 and b"<title>intake: upload files</title>" in r.read()
        data = os.urandom(2 << 20)

        async def wss():
            async with websockets.connect("wss://localhost:%d/upload" % https_port, ssl=ctx,
                                          max_size=None) as w:
                await w.send(json.dumps({"type": "START", "filename": "via-nginx.bin",
                                         "size": len(data)}))
                await w.recv()
                await w.send(data)
                await w.recv()
                await w.send('{"type":"DONE"}')
                return json.loads(await w.recv())
        st = asyncio.run(asyncio.wait_for(wss(), 60))
        assert st["verdict"] == "unscanned" and st["sha256"] == hashlib.sha256(data).hexdigest()
        f = tmp_path / "cli.txt"
        f.write_bytes(b"through the stream block over TLS\n")
        r = run_cli("--cacert", pki["ca"], "localhost:%d" % stream_port, str(f))
        assert r.returncode == 0 and r.stdout == "%s: OK (not scanned)\n" % f, r
        assert sorted(d.accepted()) == ["cli.txt", "via-nginx.bin"]
    finally:
        nginx.terminate()
        nginx.wait(10)
