"""The raw TCP transport as SPEC describes it: header forms, READY, body,
STATUS, several uploads per connection, and every error code with its close."""
import os
import socket
import subprocess
import threading

from conftest import Client, file_sha256, sha256, small_tmpfs, upload_worker_pids, wait_for


def test_json_header_ready_then_status(daemon, client_factory):
    c = client_factory(daemon.tcp_port)
    data = os.urandom(100000)
    ready, status = c.upload("report.pdf", data, sha=True)
    assert ready["type"] == "READY" and ready["offset"] == 0
    assert len(ready["id"]) == 32 and all(ch in "0123456789abcdef" for ch in ready["id"])
    assert status == {
        "type": "STATUS", "id": ready["id"], "filename": "report.pdf",
        "stored_as": "report.pdf", "size": len(data), "sha256": sha256(data),
        "verdict": "unscanned", "virus": None, "status": "./report.pdf: OK (not scanned)",
    }
    with open(os.path.join(daemon.accept_dir, "report.pdf"), "rb") as f:
        assert f.read() == data
    assert daemon.spooled() == []


def test_plain_header_and_crlf(daemon, client_factory):
    c = client_factory(daemon.tcp_port)
    c.send(b"5 hello world.txt\r\nhello")
    ready, status = c.line(), c.line()
    assert ready["type"] == "READY"
    assert status["filename"] == "hello world.txt"
    assert status["stored_as"] == "hello world.txt"
    assert status["sha256"] == sha256(b"hello")
    with open(os.path.join(daemon.accept_dir, "hello world.txt"), "rb") as f:
        assert f.read() == b"hello"


def test_empty_file(daemon, client_factory):
    c = client_factory(daemon.tcp_port)
    ready, status = c.upload("empty", b"")
    assert status["size"] == 0 and status["sha256"] == sha256(b"")
    assert os.path.getsize(os.path.join(daemon.accept_dir, "empty")) == 0


def test_several_uploads_pipelined_on_one_connection(daemon, client_factory):
    c = client_factory(daemon.tcp_port)
    files = [("f%d.bin" % i, os.urandom(i * 7919)) for i in range(6)]
    # Everything at once, without waiting for any READY or STATUS.
    blob = b""
    for i, (name, data) in enumerate(files):
        blob += (b"%d %s\n" % (len(data), name.encode())) if i % 2 else \
            (b'{"type":"START","filename":"%s","size":%d}\n' % (name.encode(), len(data)))
        blob += data
    c.send(blob)
    for name, data in files:
        ready, status = c.line(), c.line()
        assert ready["type"] == "READY"
        assert status["type"] == "STATUS" and status["filename"] == name
        assert status["sha256"] == sha256(data)
        with open(os.path.join(daemon.accept_dir, name), "rb") as f:
            assert f.read() == data


def expect_error(c, code):
    msg = c.line()
    assert msg is not None, "connection closed without an ERROR"
    assert msg["type"] == "ERROR" and msg["code"] == code, msg
    assert isinstance(msg["message"], str) and msg["message"]
    assert c.closed(), "connection not closed after ERROR"
    return msg


def test_400_garbage_header(daemon, client_factory):
    for header in [b"hello\n", b"{not json}\n", b'{"type":"START","size":1}\n',
                   b'{"type":"START","filename":"a","size":-4}\n', b"\n", b"[1]\n",
                   b'{"type":"DONE"}\n']:
        c = client_factory(daemon.tcp_port)
        c.send(header)
        expect_error(c, 400)
    assert daemon.accepted() == []


def test_400_more_data_is_next_header(daemon, client_factory):
    # Bytes beyond the size are the next header line: here, garbage.
    c = client_factory(daemon.tcp_port)
    c.send(b"3 a.txt\nabcdef\n")
    assert c.line()["type"] == "READY"
    assert c.line()["type"] == "STATUS"
    expect_error(c, 400)
    with open(os.path.join(daemon.accept_dir, "a.txt"), "rb") as f:
        assert f.read() == b"abc"


def test_413_too_large(daemon_factory, client_factory):
    d = daemon_factory(max_file_size="1K")
    c = client_factory(d.tcp_port)
    c.start("big.bin", 1025)
    c.send(b"x" * 1025)
    msg = expect_error(c, 413)
    assert "1024" in msg["message"]
    c = client_factory(d.tcp_port)
    ready, status = c.upload("fits.bin", b"y" * 1024)
    assert status["verdict"] == "unscanned"
    assert d.accepted() == ["fits.bin"]


def test_413_size_overflowing_64_bits(daemon, client_factory):
    c = client_factory(daemon.tcp_port)
    c.send(b"99999999999999999999999999 x\n")
    expect_error(c, 413)


def test_422_checksum_mismatch(daemon, client_factory):
    c = client_factory(daemon.tcp_port)
    c.start("sum.bin", 4, sha256=sha256(b"abcd"))
    c.send(b"abce")
    assert c.line()["type"] == "READY"
    msg = expect_error(c, 422)
    assert sha256(b"abce") in msg["message"]
    assert daemon.accepted() == []
    assert daemon.spooled() == []


def test_422_not_sent_when_checksum_matches(daemon, client_factory):
    c = client_factory(daemon.tcp_port)
    ready, status = c.upload("ok.bin", b"abcd", sha=True)
    assert status["verdict"] == "unscanned"


def test_431_header_line_too_long(daemon, client_factory):
    c = client_factory(daemon.tcp_port)
    c.send(b"1 " + b"a" * 9000)
    expect_error(c, 431)
    # Exactly 8192 bytes before the newline is still allowed (then 400: bad name).
    c = client_factory(daemon.tcp_port)
    c.send(b"1 " + b"n" * 8190 + b"\n")
    msg = expect_error(c, 400)
    assert "longer than" in msg["message"]


def test_507_no_space(daemon_factory, client_factory):
    d = daemon_factory(min_free_space="1000000G")
    c = client_factory(d.tcp_port)
    c.start("a.bin", 10)
    expect_error(c, 507)
    assert d.spooled() == [] and d.accepted() == []


def test_404_resume_of_unknown_id(daemon, client_factory):
    c = client_factory(daemon.tcp_port)
    c.start("a.bin", 10, id="0" * 32)
    expect_error(c, 404)


def test_408_client_sends_nothing(daemon_factory, client_factory):
    d = daemon_factory(header_timeout="500ms")
    c = client_factory(d.tcp_port)
    msg = expect_error(c, 408)
    assert "header" in msg["message"]
    # A partial header line does not reset the clock.
    c = client_factory(d.tcp_port)
    c.send(b"10 a")
    expect_error(c, 408)


def test_408_idle_mid_body_keeps_part_in_spool(daemon_factory, client_factory):
    d = daemon_factory(idle_timeout="500ms")
    c = client_factory(d.tcp_port)
    c.start("slow.bin", 1000)
    c.send(b"z" * 300)
    ready = c.line()
    expect_error(c, 408)
    assert d.accepted() == []
    part = os.path.join(d.spool_dir, ready["id"] + ".part")
    assert os.path.getsize(part) == 300


def test_truncated_upload_never_accepted(daemon, client_factory):
    c = client_factory(daemon.tcp_port)
    c.start("cut.bin", 1 << 20)
    c.send(os.urandom(1000))
    ready = c.line()
    c.close()
    part = os.path.join(daemon.spool_dir, ready["id"] + ".part")
    wait_for(lambda: "interrupted after 1000 of 1048576 bytes" in daemon.logs(),
             what="the interruption to be logged")
    assert os.path.getsize(part) == 1000
    assert daemon.accepted() == []


def test_stalled_client_does_not_block_others(daemon_factory, client_factory):
    d = daemon_factory(workers=1)
    stalled = [client_factory(d.tcp_port) for _ in range(5)]
    for i, s in enumerate(stalled):
        s.start("stall%d" % i, 1 << 20)
        s.send(b"x" * 10)
    c = client_factory(d.tcp_port)
    ready, status = c.upload("fast.bin", os.urandom(200000))
    assert status["verdict"] == "unscanned"


def test_max_connections_queues_extra_clients(daemon_factory, client_factory):
    d = daemon_factory(workers=1, max_connections=1)
    first = client_factory(d.tcp_port)
    first.start("hold.bin", 10)
    assert first.line()["type"] == "READY"
    second = client_factory(d.tcp_port, timeout=0.5)
    second.send(b"2 q.txt\nhi")
    try:
        got = second.line()
    except socket.timeout:
        got = None
    assert got is None, "second connection served beyond max_connections"
    first.close()
    second.sock.settimeout(5)
    assert second.line()["type"] == "READY"
    assert second.line()["type"] == "STATUS"


def test_fifty_concurrent_uploads_over_both_workers(daemon_factory):
    d = daemon_factory(workers=2)
    results, errors = {}, []

    def run(i):
        from conftest import Client
        try:
            c = Client(d.tcp_port)
            data = os.urandom(1000 + i * 20011)
            c.start("c%03d.bin" % i, len(data), sha256(data))
            for off in range(0, len(data), 65536):
                c.send(data[off:off + 65536])
            c.line()
            results[i] = (data, c.line())
            c.close()
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(results) == 60
    for i, (data, status) in results.items():
        assert status["verdict"] == "unscanned", status
        path = os.path.join(d.accept_dir, "c%03d.bin" % i)
        assert file_sha256(path) == sha256(data)
    assert len(upload_worker_pids(d.logs())) == 2, "uploads did not land on both workers"


def test_ipv6_and_unix_listeners(daemon_factory, tmp_path):
    import json as _json
    from conftest import free_port, short_dir
    sd = short_dir()
    v6 = free_port()
    d = daemon_factory(start=False, listen_tcp="[::1]:%d" % v6)
    with open(d.conf, "a") as f:
        f.write("listen_tcp unix:%s/tcp.sock\nlisten_ws unix:%s/ws.sock\n" % (sd, sd))
    d.tcp_port = None
    d._accepting = lambda: os.path.exists(os.path.join(sd, "tcp.sock"))
    d.start()
    s6 = socket.create_connection(("::1", v6), timeout=5)
    s6.sendall(b"2 six.txt\nv6")
    got = s6.recv(4096)
    while got.count(b"\n") < 2:
        got += s6.recv(4096)
    assert _json.loads(got.split(b"\n")[1])["stored_as"] == "six.txt"
    su = socket.socket(socket.AF_UNIX)
    su.settimeout(5)
    su.connect(os.path.join(sd, "tcp.sock"))
    su.sendall(b"4 unix.txt\nunix")
    got = su.recv(4096)
    while got.count(b"\n") < 2:
        got += su.recv(4096)
    assert _json.loads(got.split(b"\n")[1])["stored_as"] == "unix.txt"
    hu = socket.socket(socket.AF_UNIX)
    hu.settimeout(5)
    hu.connect(os.path.join(sd, "ws.sock"))
    hu.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert hu.recv(4096).startswith(b"HTTP/1.1 200 ")
    assert d.accepted() == ["six.txt", "unix.txt"]
    d.stop()
    assert not os.path.exists(os.path.join(sd, "tcp.sock"))  # removed on exit
    subprocess.run(["rm", "-rf", sd])


def test_disk_full_mid_upload_then_next_upload_is_intact(daemon_factory, tmp_path):
    """The disk fills while a body streams in (through the worker's splice
    pipe): 507, nothing accepted, and the worker's next upload is intact."""
    import hashlib
    with small_tmpfs(tmp_path / "tiny", "3m") as tiny:
        d = daemon_factory(workers=1, spool_dir=str(tiny / "spool"),
                           accept_dir=str(tiny / "accepted"), min_free_space="0")
        try:
            c = Client(d.tcp_port)
            c.start("fits-at-start.bin", 2 << 20)  # 2 of 3 MiB free: accepted
            assert c.line()["type"] == "READY"
            with open(tiny / "filler", "wb") as f:  # then someone else fills the disk
                f.write(b"\0" * (2 << 20))
            try:
                c.send(os.urandom(2 << 20))
            except OSError:
                pass  # the server may stop reading once it has answered
            err = c.line()
            assert err["type"] == "ERROR" and err["code"] == 507, err
            assert d.accepted() == []
            wait_for(lambda: "server disk is full" in d.logs() or "No space left" in d.logs(),
                     what="the failure logged")
            os.unlink(tiny / "filler")
            for n in os.listdir(tiny / "spool"):  # free the space the failed upload used
                os.unlink(tiny / "spool" / n)
            data = os.urandom(1 << 20)
            st = Client(d.tcp_port).upload("after.bin", data, sha=True)[1]
            assert st["verdict"] == "unscanned" and st["sha256"] == sha256(data)
            with open(tiny / "accepted" / "after.bin", "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == sha256(data)
        finally:
            d.stop()


def test_free_space_counts_what_uploads_in_progress_promised(daemon_factory, tmp_path):
    """min_free_space is judged with the bytes uploads in progress have
    announced and not yet written: on an 8 MiB disk two 3 MiB uploads under
    way leave no room for a third, which gets 507 at START, and the two
    finish. Before, all three were let in and all failed midway with 507,
    their partial files filling the disk for resume_timeout."""
    with small_tmpfs(tmp_path / "tiny", "8m") as tiny:
        d = daemon_factory(workers=2, spool_dir=str(tiny / "spool"),
                           accept_dir=str(tiny / "accepted"), min_free_space="0")
        try:
            size = 3 << 20
            data = [os.urandom(size) for _ in range(2)]
            clients = []
            for i in range(2):
                c = Client(d.tcp_port)
                c.start("big%d.bin" % i, size)
                assert c.line()["type"] == "READY"
                c.send(data[i][:1000])  # under way, most of it still to come
                clients.append(c)
            third = Client(d.tcp_port)
            third.start("third.bin", size)
            err = third.line()
            assert err["type"] == "ERROR" and err["code"] == 507, err
            third.close()
            for i, c in enumerate(clients):
                c.send(data[i][1000:])
                st = c.line()
                assert st["type"] == "STATUS" and st["sha256"] == sha256(data[i]), st
                c.close()
            assert sorted(d.accepted()) == ["big0.bin", "big1.bin"]
            # Their promises are kept no longer: a new upload fits again.
            for n in ("big0.bin", "big1.bin"):
                os.unlink(tiny / "accepted" / n)
            st = Client(d.tcp_port).upload("after.bin", os.urandom(size))[1]
            assert st["type"] == "STATUS", st
        finally:
            d.stop()
