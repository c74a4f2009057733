"""Plain HTTP on the WebSocket listener: the page, /healthz, /metrics, and
every refusal (400, 404, 405, 408, 426, 431) with Connection: close."""
import socket
import time

from wsraw import http_request


def get(d, path, extra=b""):
    return http_request(d.ws_port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra
                        + b"\r\n")


def test_page(daemon):
    status, h, body = get(daemon, "/")
    assert status == 200 and h["content-type"] == "text/html; charset=utf-8"
    assert h["connection"] == "close" and int(h["content-length"]) == len(body)
    assert b"<input type=\"file\"" in body and b"multiple" in body
    # Self-contained: nothing fetched from elsewhere.
    for ext in (b"src=\"http", b"href=\"http", b"@import", b"url(http"):
        assert ext not in body


def test_healthz(daemon):
    import json
    status, h, body = get(daemon, "/healthz")
    assert status == 200 and h["content-type"] == "application/json"
    import socket
    # node: node_name, by default the host name.
    assert json.loads(body) == {"status": "ok", "workers": 2, "scanner": "off",
                                "node": socket.gethostname()}


def test_errors(daemon):
    for req, code in [
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Version: 13\r\n\r\n", 400),
        (b"GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        (b"GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        (b"GET /u HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        (b"GET /u HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        # Host: exactly one, and valid, in HTTP/1.1 (RFC 9112 3.2); none is
        # fine in HTTP/1.0.
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: evil.com/x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: u@x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
        (b"GET / HTTP/1.0\r\n\r\n", 200),
        (b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 200),
        # One Sec-WebSocket-Key, one Sec-WebSocket-Version, one Origin.
        (b"GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         b"Sec-WebSocket-Version: 13\r\n\r\n", 400),
        (b"GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
        (b"GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
         b"Origin: http://x\r\nOrigin: http://evil.example\r\n\r\n", 400),
    ]:
        status, h, body = http_request(daemon.ws_port, req)
        assert status == code, (req[:40], status)
        assert h["connection"] == "close"
        if code == 405:
            assert h["allow"] == "GET"


def test_426_wrong_version(daemon):
    status, h, _ = http_request(daemon.ws_port, b"GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                b"Sec-WebSocket-Version: 8\r\n\r\n")
    assert status == 426 and h["sec-websocket-version"] == "13"


def test_408_slow_head(daemon_factory):
    d = daemon_factory(header_timeout="500ms")
    s = socket.create_connection(("127.0.0.1", d.ws_port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost:")
    t0 = time.monotonic()
    data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in data
    assert time.monotonic() - t0 < 4
    s.close()


def test_metrics_format(daemon):
    status, h, body = get(daemon, "/metrics")
    text = body.decode()
    assert status == 200
    for name in ["intake_uploads_total", "intake_received_bytes_total", "intake_connections",
                 "intake_errors_total", "intake_scan_duration_seconds", "intake_workers"]:
        assert "# TYPE %s " % name in text
    assert 'intake_connections{transport="ws"} 1' in text  # this scrape itself
