"""Several intaked hosts behind real nginx, configured with the shipped
multi-host samples (etc/nginx/intake-hosts-*.conf): clients spread by
address, a stopped host's clients go to the other, and a resume that
reaches the other host gets 404 and the CLI starts over there."""
import hashlib
import json
import os
import signal
import socket
import subprocess

from conftest import INTAKE, NGINX, ROOT, Daemon, free_ports, start_nginx, wait_for

SOURCES = ["127.0.0.%d" % i for i in range(2, 18)]


def sample(name):
    with open(os.path.join(ROOT, "etc", "nginx", name)) as f:
        return f.read()


def healthz_from(src, port):
    """GET /healthz through nginx from source address src."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    return json.loads(body)


def upload_from(src, port, name, data):
    """A raw TCP upload (plain header form) through nginx from src."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(src, 0))
    s.sendall(b"%d %s\n" % (len(data), name.encode()) + data)
    f = s.makefile("rb")
    ready = json.loads(f.readline())
    st = json.loads(f.readline())
    s.close()
    assert ready["type"] == "READY", ready
    return st


def test_two_hosts_behind_nginx(tmp_path):
    assert os.path.exists(NGINX), "nginx missing: run scripts/deps.sh"
    hosts = {}
    try:
        for n in ("a", "b"):
            (tmp_path / n).mkdir()
            hosts[n] = Daemon(tmp_path / n, node_name=n, workers=1).start()
        behind_nginx(hosts, tmp_path)
    finally:
        for d in hosts.values():
            d.stop()


def behind_nginx(hosts, tmp_path):
    assert {n: d.health()["node"] for n, d in hosts.items()} == {"a": "a", "b": "b"}
    http_port, stream_port = free_ports(2)
    a, b = hosts["a"], hosts["b"]
    http_conf = sample("intake-hosts-http.conf") \
        .replace("10.0.0.11:8080", "127.0.0.1:%d" % a.ws_port) \
        .replace("10.0.0.12:8080", "127.0.0.1:%d" % b.ws_port) \
        .replace("listen 80;", "listen 127.0.0.1:%d;" % http_port) \
        .replace("/var/log/nginx/", "%s/nginx-" % tmp_path)
    # The test's one change beyond addresses: clients read at 8 MiB/s, so
    # that an upload is still running when its host is killed.
    stream_conf = sample("intake-hosts-stream.conf") \
        .replace("10.0.0.11:9090", "127.0.0.1:%d" % a.tcp_port) \
        .replace("10.0.0.12:9090", "127.0.0.1:%d" % b.tcp_port) \
        .replace("listen 9000;", "listen 127.0.0.1:%d;\n        proxy_upload_rate 8m;" % stream_port)
    assert "hash $remote_addr consistent" in http_conf and "127.0.0.1:%d" % b.ws_port in http_conf
    assert "hash $remote_addr consistent" in stream_conf and "proxy_upload_rate" in stream_conf
    nginx = start_nginx(tmp_path, http_conf, stream_conf, (stream_port, http_port))
    try:

        # Clients from different addresses spread over both hosts, each
        # address always to the same host.
        node_of = {src: healthz_from(src, http_port)["node"] for src in SOURCES}
        assert set(node_of.values()) == {"a", "b"}, node_of
        assert all(healthz_from(src, http_port)["node"] == node_of[src] for src in SOURCES)
        for i, src in enumerate(SOURCES):
            st = upload_from(src, stream_port, "s%02d.txt" % i, b"from %s\n" % src.encode())
            assert st["verdict"] == "unscanned", st
        spread = {n: d.accepted() for n, d in hosts.items()}
        assert spread["a"] and spread["b"], spread
        assert len(spread["a"]) + len(spread["b"]) == len(SOURCES)

        # The CLI (from 127.0.0.1): which host is its own?
        small = tmp_path / "small.txt"
        small.write_bytes(b"which host?\n")
        r = subprocess.run([INTAKE, "-q", "127.0.0.1:%d" % stream_port, str(small)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        mine = "a" if "small.txt" in a.accepted() else "b"
        other = "b" if mine == "a" else "a"
        assert "small.txt" in hosts[mine].accepted()

        # A big upload; its host is killed (-9) in the middle: the CLI's
        # resume reaches the other host, gets 404, starts over there.
        big = tmp_path / "big.bin"
        data = os.urandom(24 << 20)
        big.write_bytes(data)
        cli = subprocess.Popen([INTAKE, "--retries", "3", "127.0.0.1:%d" % stream_port,
                                str(big)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        try:
            def part_size():
                parts = [p for p in hosts[mine].spooled() if p.endswith(".part")]
                return os.path.getsize(os.path.join(hosts[mine].spool_dir, parts[0])) \
                    if parts else 0
            wait_for(lambda: part_size() >= 2 << 20, 30, what="the upload under way")
            os.killpg(hosts[mine].pid, signal.SIGKILL)
            out, err = cli.communicate(timeout=60)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        assert cli.returncode == 0, (out, err)
        assert "the server cannot resume it; starting over" in err, err
        got = os.path.join(hosts[other].accept_dir, "big.bin")
        with open(got, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == hashlib.sha256(data).hexdigest()
        # The half upload stays in the dead host's spool (the spool is per host).
        assert any(p.endswith(".part") for p in hosts[mine].spooled())

        # The host is down: every client goes to the other one.
        for i, src in enumerate(SOURCES):
            assert healthz_from(src, http_port)["node"] == other
            st = upload_from(src, stream_port, "after%02d.txt" % i, b"after\n")
            assert st["verdict"] == "unscanned", st
        assert sum(n.startswith("after") for n in hosts[other].accepted()) == len(SOURCES)
    finally:
        nginx.terminate()
        nginx.wait(10)
