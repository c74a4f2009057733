"""The upload protocol over WebSocket with an independent client (Debian's
python3-websockets): seed-style base64 chunks with ack waits, pipelined
binary, several uploads per connection, every ERROR and its close code."""
import asyncio
import base64
import hashlib
import json
import os
import re

import websockets

from conftest import file_sha256


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def url(d, path="/upload"):
    return "ws://127.0.0.1:%d%s" % (d.ws_port, path)


async def start(ws, name, size, **extra):
    msg = {"type": "START", "filename": name, "size": size}
    msg.update(extra)
    await ws.send(json.dumps(msg))
    return json.loads(await ws.recv())


async def expect_error(ws, code, close_code):
    msg = json.loads(await ws.recv())
    assert msg["type"] == "ERROR" and msg["code"] == code, msg
    assert msg["message"]
    try:
        extra = await ws.recv()
        raise AssertionError("message after ERROR: %r" % extra)
    except websockets.ConnectionClosed as e:
        assert e.rcvd is not None and e.rcvd.code == close_code, e
    return msg


def test_seed_style_base64_chunks_waiting_for_acks(daemon):
    data = os.urandom(10 * 1024 + 300)

    async def go():
        async with websockets.connect(url(daemon)) as ws:
            init = await start(ws, "seed.bin", len(data))
            assert init["type"] == "DATA" and init["code"] == 200
            assert init["message"] == "Upload initialized. Wait for data"
            assert re.fullmatch(r"[0-9a-f]{32}", init["id"]) and init["offset"] == 0
            off = 0
            for i in range(0, len(data), 1024):
                chunk = data[i:i + 1024]
                await ws.send(base64.b64encode(chunk).decode())
                ack = json.loads(await ws.recv())
                off += len(chunk)
                assert ack == {"type": "DATA", "code": 200, "bytesRead": len(chunk), "offset": off}
            await ws.send(json.dumps({"type": "DONE"}))
            return init, json.loads(await ws.recv())

    init, st = run(go())
    assert st["type"] == "STATUS" and st["id"] == init["id"]
    assert st["sha256"] == hashlib.sha256(data).hexdigest() and st["size"] == len(data)
    assert st["verdict"] == "unscanned" and st["status"] == "./seed.bin: OK (not scanned)"
    with open(os.path.join(daemon.accept_dir, "seed.bin"), "rb") as f:
        assert f.read() == data


def test_binary_pipelined_1mib_chunks(daemon):
    size = 20 * (1 << 20) + 12345
    block = os.urandom(1 << 20)
    h = hashlib.sha256()

    async def go():
        async with websockets.connect(url(daemon), max_size=None) as ws:
            await start(ws, "piped.bin", size, sha256=None)
            sent = 0
            while sent < size:
                chunk = block[:min(len(block), size - sent)]
                h.update(chunk)
                await ws.send(chunk)  # no waiting
                sent += len(chunk)
            acks = []
            while len(acks) < 21:
                acks.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "DONE"}))
            return acks, json.loads(await ws.recv())

    acks, st = run(go())
    assert [a["bytesRead"] for a in acks] == [1 << 20] * 20 + [12345]
    assert acks[-1]["offset"] == size
    assert st["sha256"] == h.hexdigest()
    assert file_sha256(os.path.join(daemon.accept_dir, "piped.bin")) == h.hexdigest()


def test_several_uploads_per_connection_and_checksum(daemon):
    files = [("a.txt", b"alpha"), ("b.txt", b""), ("a.txt", b"again")]

    async def go():
        out = []
        async with websockets.connect(url(daemon)) as ws:
            for name, data in files:
                await start(ws, name, len(data), sha256=hashlib.sha256(data).hexdigest())
                if data:
                    await ws.send(data)
                    await ws.recv()
                await ws.send(json.dumps({"type": "DONE"}))
                out.append(json.loads(await ws.recv()))
        return out

    out = run(go())
    assert [s["stored_as"] for s in out] == ["a.txt", "b.txt", "a-1.txt"]
    assert all(s["verdict"] == "unscanned" for s in out)


def test_fragmented_binary_message_is_one_chunk(daemon):
    from wsraw import WS
    ws = WS(daemon.ws_port, "/upload")
    ws.send(1, json.dumps({"type": "START", "filename": "frag.bin", "size": 9}).encode())
    assert json.loads(ws.recv()[2])["type"] == "DATA"
    ws.send(2, b"abc", fin=False)
    ws.send(9, b"p")  # a ping between fragments
    ws.send(0, b"def", fin=False)
    ws.send(0, b"ghi")
    assert ws.recv() == (True, 10, b"p")
    assert json.loads(ws.recv()[2]) == {"type": "DATA", "code": 200, "bytesRead": 9, "offset": 9}
    ws.send(1, b'{"type":"DONE"}')
    st = json.loads(ws.recv()[2])
    assert st["sha256"] == hashlib.sha256(b"abcdefghi").hexdigest()


def S(**k):
    return json.dumps(dict({"type": "START", "filename": "e.bin", "size": 4}, **k))


# (messages to send, replies expected before the ERROR, ERROR code, close code)
ERROR_CASES = [
    ([b"data first"], 0, 400, 1008),
    (["not json and not base64!"], 0, 400, 1008),
    (['{"type":"WHAT"}'], 0, 400, 1008),
    (['{"type":"DONE"}'], 0, 400, 1008),
    (['{"type":"START","filename":"x"}'], 0, 400, 1008),
    ([S(filename="..")], 0, 400, 1008),
    ([S(), b"ab", '{"type":"DONE"}'], 2, 400, 1008),
    ([S(), b"abcdef"], 1, 400, 1008),
    ([S(), S()], 1, 400, 1008),
    ([S(), "QUJD*==="], 1, 400, 1008),
    ([S(size=101)], 0, 413, 1009),
    ([S(sha256="0" * 64), b"abcd", '{"type":"DONE"}'], 2, 422, 1008),
    (['{"type":"START","x":"' + "y" * 9000 + '"}'], 0, 431, 1008),
    ([S(id="f" * 32)], 0, 404, 1008),
]


def test_errors_and_close_codes(daemon_factory):
    d = daemon_factory(max_file_size="100")
    for steps, replies, code, close_code in ERROR_CASES:
        async def go():
            async with websockets.connect(url(d), max_size=None) as ws:
                for s in steps:
                    await ws.send(s)
                for _ in range(replies):
                    assert json.loads(await ws.recv())["type"] == "DATA", steps
                return await expect_error(ws, code, close_code)
        msg = run(go())
        assert msg["code"] == code
    assert d.accepted() == []


def test_507_closes_1011(daemon_factory):
    d = daemon_factory(min_free_space="100000G")

    async def go():
        async with websockets.connect(url(d)) as ws:
            await ws.send(json.dumps({"type": "START", "filename": "a", "size": 1}))
            return await expect_error(ws, 507, 1011)
    run(go())


def test_origin_refused(daemon_factory):
    d = daemon_factory(allowed_origins="https://good.example")

    async def ok():
        async with websockets.connect(url(d), origin="https://good.example") as ws:
            await ws.send(json.dumps({"type": "START", "filename": "o", "size": 0}))
            return json.loads(await ws.recv())
    assert run(ok())["type"] == "DATA"

    async def bad():
        try:
            async with websockets.connect(url(d), origin="https://evil.example"):
                pass
        except websockets.InvalidStatusCode as e:
            return e.status_code
        except Exception as e:  # newer websockets: InvalidStatus
            return getattr(getattr(e, "response", None), "status_code", repr(e))
    assert run(bad()) == 403


def test_metrics_sum_over_workers(daemon_factory):
    d = daemon_factory(workers=2)
    n = 24

    async def one(i):
        async with websockets.connect(url(d)) as ws:
            data = b"m" * (100 + i)
            await start(ws, "m%02d" % i, len(data))
            await ws.send(data)
            await ws.recv()
            await ws.send(json.dumps({"type": "DONE"}))
            return json.loads(await ws.recv())

    async def all_():
        return await asyncio.gather(*(one(i) for i in range(n)))
    res = run(all_())
    assert all(r["verdict"] == "unscanned" for r in res)
    from conftest import Client, upload_worker_pids
    c = Client(d.tcp_port)
    c.upload("tcp.bin", b"t" * 1000)
    c.close()
    assert len(upload_worker_pids(d.logs())) == 2
    from wsraw import http_request
    status, headers, body = http_request(d.ws_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert 'intake_uploads_total{transport="ws",verdict="unscanned"} %d' % n in text
    assert 'intake_uploads_total{transport="tcp",verdict="unscanned"} 1' in text
    total = sum(100 + i for i in range(n))
    assert 'intake_received_bytes_total{transport="ws"} %d' % total in text
    assert 'intake_received_bytes_total{transport="tcp"} 1000' in text
    assert "intake_workers 2" in text
    assert 'intake_scan_duration_seconds_bucket{le="+Inf"} 0' in text
    assert "# TYPE intake_scan_duration_seconds histogram" in text


def test_done_then_gone_is_still_finished(daemon):
    """A client that sends DONE and leaves at once still has its upload
    finished and placed (it learns the verdict by asking again): leaving
    while the file is hashed, fsynced or scanned drops nothing. The
    connection is read while the upload finishes (to answer pings), and the
    first version of that dropped the upload when it saw the client go
    while a hash job ran."""
    from conftest import wait_for
    data = os.urandom(32 << 20)

    async def go(name):
        async with websockets.connect("ws://127.0.0.1:%d/" % daemon.ws_port,
                                      max_size=None, close_timeout=0.1) as ws:
            await ws.send(json.dumps({"type": "START", "filename": name, "size": len(data)}))
            await ws.recv()
            for k in range(0, len(data), 1 << 20):
                await ws.send(data[k:k + (1 << 20)])
            await ws.send(json.dumps({"type": "DONE"}))
            # Gone without reading a single ack: its side shut (FIN) once
            # DONE is out. (A close with the acks unread would be a reset,
            # which can discard the DONE before the server reads it: then
            # the upload is rightly only interrupted.)
            while ws.transport.get_write_buffer_size():
                await asyncio.sleep(0.005)
            ws.transport.write_eof()
            for _ in range(3000):
                if name in daemon.accepted():
                    break
                await asyncio.sleep(0.01)
            ws.transport.abort()
    names = ["gone-%d.bin" % i for i in range(3)]
    for n in names:
        asyncio.run(go(n))
    wait_for(lambda: sorted(daemon.accepted()) == names, 60, what="all three placed")
    for n in names:
        assert file_sha256(os.path.join(daemon.accept_dir, n)) == hashlib.sha256(data).hexdigest()
