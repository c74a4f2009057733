"""stored_as rules (SPEC "Files") through the real daemon: traversal,
backslashes, leading dots, control characters, collisions, length, UTF-8."""
import os

import pytest

from conftest import wait_for


def upload_plain(client_factory, port, raw_name, data=b"data"):
    c = client_factory(port)
    c.send(b"%d %s\n" % (len(data), raw_name) + data)
    return c.line(), c


@pytest.mark.parametrize("raw,stored", [
    (b"../../../../etc/passwd", "passwd"),
    (b"/etc/cron.d/evil", "evil"),
    (b"..\\..\\Windows\\System32\\drivers\\x.sys", "x.sys"),
    (b"a/b\\c/d.txt", "d.txt"),
    (b".htaccess", "_htaccess"),
    (b"sub/.ssh", "_ssh"),
    (b"tab\there\x01\x1f\x7f.txt", "tabhere.txt"),
    (b"caf\xc3\xa9 \xe2\x9c\x93.txt", "caf\u00e9 \u2713.txt"),
])
def test_sanitized(daemon, client_factory, raw, stored):
    ready, c = upload_plain(client_factory, daemon.tcp_port, raw)
    assert ready["type"] == "READY", ready
    status = c.line()
    assert status["stored_as"] == stored
    assert status["filename"] == raw.decode("utf-8")
    assert daemon.accepted() == [stored]
    # Nothing escaped: the only new file anywhere under tmp is the accepted one.
    assert not os.path.exists(os.path.join(daemon.tmp, "passwd"))


@pytest.mark.parametrize("raw", [
    b"..", b".", b"a/..", b"dir/", b"\\", b"\x01\x02",
    b"bad\xff.txt", b"overlong\xc0\xaf", b"surrogate\xed\xa0\x80", b"x" * 256,
])
def test_refused_with_400(daemon, client_factory, raw):
    msg, c = upload_plain(client_factory, daemon.tcp_port, raw)
    assert msg["type"] == "ERROR" and msg["code"] == 400, msg
    assert c.closed()
    assert daemon.accepted() == [] and daemon.spooled() == []


def test_255_bytes_is_the_longest_name(daemon, client_factory):
    ready, c = upload_plain(client_factory, daemon.tcp_port, b"n" * 255)
    assert c.line()["stored_as"] == "n" * 255


def test_collisions_never_overwrite(daemon, client_factory):
    for i in range(4):
        ready, c = upload_plain(client_factory, daemon.tcp_port, b"a.txt", b"v%d" % i)
        assert c.line()["stored_as"] == ["a.txt", "a-1.txt", "a-2.txt", "a-3.txt"][i]
    for i, name in enumerate(["a.txt", "a-1.txt", "a-2.txt", "a-3.txt"]):
        with open(os.path.join(daemon.accept_dir, name), "rb") as f:
            assert f.read() == b"v%d" % i


def test_symlink_in_accept_dir_is_not_followed(daemon, client_factory, tmp_path):
    target = tmp_path / "outside.txt"
    target.write_bytes(b"precious")
    os.symlink(str(target), os.path.join(daemon.accept_dir, "link.txt"))
    ready, c = upload_plain(client_factory, daemon.tcp_port, b"link.txt", b"attack")
    assert c.line()["stored_as"] == "link-1.txt"
    assert target.read_bytes() == b"precious"


def test_json_name_with_unicode_escapes(daemon, client_factory):
    c = client_factory(daemon.tcp_port)
    c.start("r\u00e9sum\u00e9\u0007.pdf", 2)
    c.send(b"ok")
    assert c.line()["type"] == "READY"
    status = c.line()
    assert status["stored_as"] == "r\u00e9sum\u00e9.pdf"
    assert status["status"] == "./r\u00e9sum\u00e9\u0007.pdf: OK (not scanned)"
