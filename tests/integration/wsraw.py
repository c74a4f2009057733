"""A deliberately low-level WebSocket client for conformance tests: it can
send any frame, valid or not (reserved bits, bad opcodes, unmasked, bad
lengths), in any pieces, and read frames back exactly as the server sent
them. The independent library client (python3-websockets) is used for the
upload protocol tests; this one checks RFC 6455 edge cases."""
import base64
import os
import socket
import struct


def http_request(port, head, timeout=5):
    """Sends raw bytes, returns (status, headers dict lowercased, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(head)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    head_end = data.find(b"\r\n\r\n")
    assert head_end > 0, data[:200]
    lines = data[:head_end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return status, headers, data[head_end + 4:]


class WS:
    def __init__(self, port, path="/echo", headers=None, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        h = {"Host": "127.0.0.1:%d" % port, "Upgrade": "websocket", "Connection": "Upgrade",
             "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"}
        h.update(headers or {})
        req = "GET %s HTTP/1.1\r\n" % path + "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
        self.sock.sendall(req.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "closed during handshake"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split()[1])
        self.head = head.decode("latin-1")

    def frame(self, op, payload=b"", fin=True, rsv=0, mask=True, length=None):
        b0 = (0x80 if fin else 0) | (rsv << 4) | op
        n = len(payload) if length is None else length
        if n < 126:
            hdr = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
        if not mask:
            return hdr + payload
        key = os.urandom(4)
        return hdr + key + mask_bytes(payload, key)

    def send(self, op, payload=b"", **kw):
        self.sock.sendall(self.frame(op, payload, **kw))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """(fin, opcode, payload), or None when the TCP connection ends."""
        try:
            b0, b1 = self._read(2)
            assert not b1 & 0x80, "server masked a frame"
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            return bool(b0 & 0x80), b0 & 0x0F, self._read(n)
        except (EOFError, ConnectionResetError):
            return None

    def expect_close(self, code):
        """Reads until a close frame; asserts its code, then that TCP closes."""
        while True:
            f = self.recv()
            assert f is not None, "TCP closed without a close frame"
            if f[1] == 0x8:
                got = struct.unpack("!H", f[2][:2])[0] if len(f[2]) >= 2 else None
                assert got == code, "close code %r, wanted %r" % (got, code)
                break
        try:
            self.sock.sendall(self.frame(0x8, struct.pack("!H", 1000)))
        except OSError:
            pass
        assert self.recv() is None, "connection open after close"

    def close(self):
        self.sock.close()


def mask_bytes(data, key):
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")
