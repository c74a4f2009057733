"""allowed_origins on the WebSocket handshake: the default `same` (Origin
against Host, default ports removed, scheme not compared), `*`, a list, a
list with `same`, no Origin at all; and the shipped nginx sample on a
non-default port, with a token in the upload link kept out of nginx's
access log."""
import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import time

import websockets

from conftest import NGINX, ROOT, free_ports, start_nginx


def handshake(port, host, origin=None, path="/upload"):
    """A WebSocket handshake with exactly these Host and Origin headers: the
    HTTP status the server answers."""
    head = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            % (path, host, base64.b64encode(os.urandom(16)).decode()))
    if origin is not None:
        head += "Origin: %s\r\n" % origin
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall((head + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1])
    finally:
        s.close()


def test_same_origin_is_the_default(daemon, tmp_path):
    p = daemon.ws_port
    here = "127.0.0.1:%d" % p
    cases = [
        (here, None, 101),                                 # not a browser
        (here, "http://" + here, 101),                     # the page intaked serves
        (here, "https://" + here, 101),                    # scheme not compared
        ("localhost:%d" % p, "http://LOCALHOST:%d" % p, 101),
        ("LocalHost:%d" % p, "http://localhost:%d" % p, 101),
        ("[::1]:%d" % p, "http://[::1]:%d" % p, 101),
        # Behind a proxy ending TLS on 443 or serving plain HTTP on 80.
        ("uploads.example.com", "https://uploads.example.com", 101),
        ("uploads.example.com:443", "https://uploads.example.com", 101),
        ("uploads.example.com", "https://uploads.example.com:443", 101),
        ("uploads.example.com", "http://uploads.example.com", 101),
        ("uploads.example.com:80", "http://uploads.example.com:80", 101),
        ("uploads.example.com:8443", "https://uploads.example.com:8443", 101),
        # Refused: another site, another port, a dropped port, junk.
        (here, "http://evil.example", 403),
        (here, "http://127.0.0.1:%d" % (p + 1), 403),
        (here, "http://127.0.0.1", 403),
        ("127.0.0.1", "http://" + here, 403),  # a proxy that drops the port
        ("uploads.example.com", "https://uploads.example.com:8443", 403),
        ("uploads.example.com", "https://uploads.example.com.", 403),
        ("uploads.example.com", "https://uploads.example.com.evil.example", 403),
        (here, "null", 403),
        (here, "http://%s/" % here, 403),
        (here, "http://user@" + here, 403),
        (here, "http://%s:0" % "127.0.0.1", 403),
        (here, "", 403),
        (here, "file://", 403),
    ]
    for host, origin, want in cases:
        assert handshake(p, host, origin) == want, (host, origin)
    assert "origin not allowed (allowed_origins)" in daemon.logs()


def test_any_list_and_list_with_same(daemon_factory):
    d = daemon_factory(allowed_origins="*")
    here = "127.0.0.1:%d" % d.ws_port
    for origin in ("http://evil.example", "null", "http://" + here, None):
        assert handshake(d.ws_port, here, origin) == 101, origin
    d.stop()

    d = daemon_factory(allowed_origins="https://app.example http://Tools.Example:8080 null")
    here = "127.0.0.1:%d" % d.ws_port
    cases = [
        ("https://app.example", 101), ("https://APP.example:443", 101),
        ("http://tools.example:8080", 101), ("null", 101), (None, 101),
        ("http://app.example", 403),          # the scheme counts in a list
        ("https://app.example:8443", 403), ("http://tools.example", 403),
        ("http://" + here, 403),              # no "same" in this list
        ("https://app.example.evil.example", 403),
    ]
    for origin, want in cases:
        assert handshake(d.ws_port, here, origin) == want, origin
    d.stop()

    d = daemon_factory(allowed_origins="same https://app.example")
    here = "127.0.0.1:%d" % d.ws_port
    for origin, want in [("http://" + here, 101), ("https://app.example", 101),
                         ("https://other.example", 403), ("null", 403)]:
        assert handshake(d.ws_port, here, origin) == want, origin


SECRET = b"nginx-test-secret-nginx-test-secret-01"


def test_behind_the_nginx_sample_on_another_port(daemon_factory, tmp_path):
    """The sample passes Host with its port, so the page's own origin passes
    `same` through nginx on a non-default port; an upload link's token works
    through it and stays out of nginx's access log."""
    assert os.path.exists(NGINX), "nginx missing: run scripts/deps.sh"
    sec = tmp_path / "secret"
    sec.write_bytes(SECRET + b"\n")
    os.chmod(str(sec), 0o600)
    d = daemon_factory(auth_secret_file=str(sec))
    (http_port,) = free_ports(1)
    with open(os.path.join(ROOT, "etc", "nginx", "intake-http.conf")) as f:
        http_conf = f.read().replace("127.0.0.1:8080", "127.0.0.1:%d" % d.ws_port) \
            .replace("listen 80;", "listen 127.0.0.1:%d;" % http_port) \
            .replace("/var/log/nginx/", "%s/nginx-" % tmp_path)
    nginx = start_nginx(tmp_path, http_conf, "", (http_port,))
    try:
        front = "127.0.0.1:%d" % http_port
        assert handshake(http_port, front, "http://" + front) == 101
        assert handshake(http_port, front, "http://evil.example") == 403

        msg = b"v1.%d.0" % (int(time.time()) + 600)
        tok = (msg + b"." + base64.urlsafe_b64encode(
            hmac.new(SECRET, msg, hashlib.sha256).digest()).rstrip(b"=")).decode()

        async def upload():
            async with websockets.connect("ws://%s/upload?token=%s" % (front, tok),
                                          origin="http://" + front) as ws:
                await ws.send(json.dumps({"type": "START", "filename": "link.txt", "size": 2}))
                assert json.loads(await ws.recv())["type"] == "DATA"
                await ws.send(b"hi")
                await ws.recv()
                await ws.send('{"type":"DONE"}')
                return json.loads(await ws.recv())
        assert asyncio.run(asyncio.wait_for(upload(), 30))["verdict"] == "unscanned"
        assert d.accepted() == ["link.txt"]
    finally:
        nginx.terminate()
        nginx.wait(10)
    alog = (tmp_path / "nginx-intake-access.log").read_text()
    assert '"GET /upload HTTP/1.1" 101' in alog, alog
    assert tok not in alog and tok.rsplit(".", 1)[1] not in alog and "token" not in alog
    assert tok not in d.logs()
