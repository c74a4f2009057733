"""RFC 6455 through `ws_echo on`, in the spirit of Autobahn|Testsuite cases
1-10: framing, pings, reserved bits and opcodes, fragmentation, UTF-8 (fail
fast), close handling, limits. Raw frames, so invalid ones can be sent."""
import os
import struct

import pytest

from wsraw import WS

TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0


@pytest.fixture
def echo(daemon_factory):
    return daemon_factory(ws_echo="on", workers=1)


def test_handshake_accept_key(echo):
    import base64, hashlib, socket
    s = socket.create_connection(("127.0.0.1", echo.ws_port), timeout=5)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    resp = s.recv(4096).decode()
    s.close()
    assert resp.startswith("HTTP/1.1 101 ")
    # RFC 6455 section 1.3's example.
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in resp


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 1 << 20])
def test_echo_sizes(echo, size):
    ws = WS(echo.ws_port)
    text = ("x" * size).encode()
    ws.send(TEXT, text)
    assert ws.recv() == (True, TEXT, text)
    data = os.urandom(size)
    ws.send(BINARY, data)
    assert ws.recv() == (True, BINARY, data)
    ws.send(CLOSE, struct.pack("!H", 1000))
    assert ws.recv() == (True, CLOSE, struct.pack("!H", 1000))
    assert ws.recv() is None


def test_16_mib_is_the_limit(echo):
    ws = WS(echo.ws_port, timeout=60)
    data = os.urandom(16 << 20)
    ws.send(BINARY, data)
    assert ws.recv() == (True, BINARY, data)
    ws.send(BINARY, b"a" * 1000, fin=False)
    ws.send(CONT, b"b" * (16 << 20))  # the message now exceeds 16 MiB
    ws.expect_close(1009)


def test_frame_over_limit_closes_1009_before_payload(echo):
    ws = WS(echo.ws_port)
    ws.send_raw(ws.frame(BINARY, b"", length=(16 << 20) + 1)[:14])
    ws.expect_close(1009)


def test_byte_by_byte_delivery(echo):
    ws = WS(echo.ws_port)
    frame = ws.frame(TEXT, "héllo wörld".encode())
    for b in frame:
        ws.send_raw(bytes([b]))
    assert ws.recv() == (True, TEXT, "héllo wörld".encode())


def test_ping_pong(echo):
    ws = WS(echo.ws_port)
    ws.send(PING, b"hello")
    assert ws.recv() == (True, PONG, b"hello")
    ws.send(PING, b"\xfe" * 125)
    assert ws.recv() == (True, PONG, b"\xfe" * 125)
    ws.send(PONG, b"unsolicited")  # ignored
    for i in range(10):
        ws.send(PING, b"%d" % i)
    for i in range(10):
        assert ws.recv() == (True, PONG, b"%d" % i)


def test_ping_over_125_is_protocol_error(echo):
    ws = WS(echo.ws_port)
    ws.send(PING, b"x" * 126)
    ws.expect_close(1002)


@pytest.mark.parametrize("rsv", [1, 2, 3, 4, 5, 6, 7])
def test_reserved_bits(echo, rsv):
    ws = WS(echo.ws_port)
    ws.send(TEXT, b"ok")
    assert ws.recv() == (True, TEXT, b"ok")
    ws.send(TEXT, b"bad", rsv=rsv)
    ws.expect_close(1002)


@pytest.mark.parametrize("op", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes(echo, op):
    ws = WS(echo.ws_port)
    ws.send(op, b"x")
    ws.expect_close(1002)


def test_unmasked_frame(echo):
    ws = WS(echo.ws_port)
    ws.send(TEXT, b"hi", mask=False)
    ws.expect_close(1002)


def test_non_minimal_length(echo):
    ws = WS(echo.ws_port)
    raw = bytes([0x81, 0x80 | 126, 0, 5]) + b"\0\0\0\0" + b"hello"
    ws.send_raw(raw)
    ws.expect_close(1002)


def test_fragments_with_interleaved_ping(echo):
    ws = WS(echo.ws_port)
    ws.send(TEXT, b"frag", fin=False)
    ws.send(PING, b"mid")
    assert ws.recv() == (True, PONG, b"mid")
    ws.send(CONT, b"men", fin=False)
    ws.send(CONT, b"ted")
    assert ws.recv() == (True, TEXT, b"fragmented")
    # Empty fragments are fine too.
    ws.send(BINARY, b"", fin=False)
    ws.send(CONT, b"", fin=False)
    ws.send(CONT, b"")
    assert ws.recv() == (True, BINARY, b"")


def test_continuation_without_message(echo):
    ws = WS(echo.ws_port)
    ws.send(CONT, b"orphan")
    ws.expect_close(1002)


def test_new_message_inside_fragmented_one(echo):
    ws = WS(echo.ws_port)
    ws.send(TEXT, b"a", fin=False)
    ws.send(TEXT, b"b")
    ws.expect_close(1002)


def test_fragmented_control_frame(echo):
    ws = WS(echo.ws_port)
    ws.send(PING, b"a", fin=False)
    ws.expect_close(1002)


def test_utf8_split_at_every_byte(echo):
    ws = WS(echo.ws_port)
    text = "κόσμε \U0001F600 €".encode()
    for cut in range(1, len(text)):
        ws.send(TEXT, text[:cut], fin=False)
        ws.send(CONT, text[cut:])
        assert ws.recv() == (True, TEXT, text)


@pytest.mark.parametrize("bad", [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                 b"ok\xce", b"\x80"])
def test_invalid_utf8_closes_1007(echo, bad):
    ws = WS(echo.ws_port)
    ws.send(TEXT, bad)
    ws.expect_close(1007)


def test_invalid_utf8_fails_fast(echo):
    # As Autobahn 6.4.x: the invalid fragment is refused before the message ends.
    ws = WS(echo.ws_port)
    ws.send(TEXT, "κόσμε".encode(), fin=False)
    ws.send(CONT, b"\xf4\x90\x80\x80", fin=False)
    ws.expect_close(1007)


def test_close_empty_payload(echo):
    ws = WS(echo.ws_port)
    ws.send(CLOSE, b"")
    assert ws.recv() == (True, CLOSE, b"")
    assert ws.recv() is None


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  3000, 3999, 4000, 4999])
def test_close_valid_codes_echoed(echo, code):
    ws = WS(echo.ws_port)
    ws.send(CLOSE, struct.pack("!H", code) + b"reason")
    f = ws.recv()
    assert f[1] == CLOSE and struct.unpack("!H", f[2][:2])[0] == code
    assert ws.recv() is None


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
                                  65535])
def test_close_invalid_codes(echo, code):
    ws = WS(echo.ws_port)
    ws.send(CLOSE, struct.pack("!H", code))
    ws.expect_close(1002)


def test_close_one_byte_payload(echo):
    ws = WS(echo.ws_port)
    ws.send(CLOSE, b"\x03")
    ws.expect_close(1002)


def test_close_reason_invalid_utf8(echo):
    ws = WS(echo.ws_port)
    ws.send(CLOSE, struct.pack("!H", 1000) + b"\xce\xba\xed\xa0\x80")
    ws.expect_close(1007)


def test_close_payload_126(echo):
    ws = WS(echo.ws_port)
    ws.send(CLOSE, struct.pack("!H", 1000) + b"*" * 124)
    ws.expect_close(1002)


def test_frames_after_close_are_ignored(echo):
    ws = WS(echo.ws_port)
    ws.send_raw(ws.frame(CLOSE, struct.pack("!H", 1000)) + ws.frame(TEXT, b"late") +
                ws.frame(PING, b"late"))
    assert ws.recv() == (True, CLOSE, struct.pack("!H", 1000))
    assert ws.recv() is None


def test_many_small_messages(echo):
    ws = WS(echo.ws_port)
    blob = b"".join(ws.frame(BINARY, b"%05d" % i) for i in range(1000))
    ws.send_raw(blob)
    for i in range(1000):
        assert ws.recv() == (True, BINARY, b"%05d" % i)


def test_echo_is_off_by_default(daemon):
    ws = WS(daemon.ws_port, "/echo")
    assert ws.status == 101  # an upload connection, not an echo
    ws.send(TEXT, b"not json, not base64!")
    f = ws.recv()
    assert f[1] == TEXT and b'"code":400' in f[2]


# --- more of Autobahn's cases 5 and 7, one by one -----------------------------------


def test_5_1_fragmented_ping_fails(echo):
    ws = WS(echo.ws_port)
    ws.send(PING, b"frag", fin=False)
    ws.expect_close(1002)


def test_5_9_continuation_with_fin_and_no_message(echo):
    ws = WS(echo.ws_port)
    ws.send(CONT, b"fragment2", fin=True)
    ws.send(TEXT, b"fragment3")
    ws.expect_close(1002)


def test_5_19_five_fragments_with_ping_and_pong(echo):
    ws = WS(echo.ws_port)
    parts = [b"fragment1", b"fragment2", b"fragment3", b"fragment4", b"fragment5"]
    ws.send(TEXT, parts[0], fin=False)
    ws.send(CONT, parts[1], fin=False)
    ws.send(PING, b"pongme 1!")
    assert ws.recv() == (True, PONG, b"pongme 1!")
    ws.send(CONT, parts[2], fin=False)
    ws.send(PONG, b"unsolicited")
    ws.send(CONT, parts[3], fin=False)
    ws.send(PING, b"pongme 2!")
    assert ws.recv() == (True, PONG, b"pongme 2!")
    ws.send(CONT, parts[4])
    assert ws.recv() == (True, TEXT, b"".join(parts))


def test_6_noncharacters_are_valid(echo):
    ws = WS(echo.ws_port)
    for ch in ("\ufffe", "\uffff", "\U0010ffff", "\U0001fffe"):
        ws.send(TEXT, ch.encode())
        assert ws.recv() == (True, TEXT, ch.encode())


def test_7_1_2_close_twice(echo):
    ws = WS(echo.ws_port)
    ws.send_raw(ws.frame(CLOSE, struct.pack("!H", 1000)) + ws.frame(CLOSE, struct.pack("!H", 1000)))
    assert ws.recv() == (True, CLOSE, struct.pack("!H", 1000))
    assert ws.recv() is None


def test_7_1_5_close_inside_a_fragmented_message(echo):
    ws = WS(echo.ws_port)
    ws.send(TEXT, b"fragment1", fin=False)
    ws.send(CLOSE, struct.pack("!H", 1000))
    try:
        ws.send(CONT, b"fragment2")
    except OSError:
        pass
    assert ws.recv() == (True, CLOSE, struct.pack("!H", 1000))
    assert ws.recv() is None


def test_7_1_6_large_message_then_close_then_ping(echo):
    ws = WS(echo.ws_port, timeout=30)
    big = b"BAsd7&jh23" * 26214  # 262140 bytes, as Autobahn
    ws.send_raw(ws.frame(TEXT, big) + ws.frame(CLOSE, struct.pack("!H", 1000)) +
                ws.frame(PING, b"ping after close"))
    assert ws.recv() == (True, TEXT, big)
    assert ws.recv() == (True, CLOSE, struct.pack("!H", 1000))
    assert ws.recv() is None


def test_7_3_5_close_with_long_reason_is_echoed(echo):
    ws = WS(echo.ws_port)
    ws.send(CLOSE, struct.pack("!H", 1000) + b"*" * 123)
    f = ws.recv()
    assert f[1] == CLOSE and f[2][:2] == struct.pack("!H", 1000)
    assert ws.recv() is None


def test_9_text_in_64_byte_fragments(echo):
    ws = WS(echo.ws_port, timeout=60)
    msg = (b"*" * (1 << 20))
    blob = ws.frame(TEXT, msg[:64], fin=False)
    for i in range(64, len(msg) - 64, 64):
        blob += ws.frame(CONT, msg[i:i + 64], fin=False)
    blob += ws.frame(CONT, msg[-64:])
    ws.send_raw(blob)
    assert ws.recv() == (True, TEXT, msg)


def test_9_binary_sent_in_small_chops(echo):
    ws = WS(echo.ws_port, timeout=60)
    msg = os.urandom(1 << 20)
    raw = ws.frame(BINARY, msg)
    for i in range(0, len(raw), 997):
        ws.send_raw(raw[i:i + 997])
    assert ws.recv() == (True, BINARY, msg)
