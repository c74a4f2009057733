"""A TCP proxy for resume tests that cuts connections mid-stream.

It forwards every connection to a target port and counts the bytes it
forwards from the clients. `cuts` is a list of byte counts used up in order:
a connection that has forwarded the current count from its client is cut,
on both sides (the server sees a clean end, the client a reset), and the
next count applies to the connections after it. With `server_side=False`
only the client is dropped and the server's side stays open, silent: the
server still holds the upload, as it does for a client whose network
vanished. `on_cut()` runs after the server side is closed and before the
client side is, so the client cannot reconnect before it has finished."""
import socket
import threading
import time


class CuttingProxy:
    def __init__(self, target_port, cuts=(), on_cut=None, server_side=True):
        self.target = ("127.0.0.1", target_port)
        self.cuts = list(cuts)
        self.on_cut = on_cut
        self.server_side = server_side
        self.forwarded = 0  # bytes from clients to the server, all connections
        self.connections = 0
        self.cut_count = 0
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.socks = []
        self.held = []  # server sides kept open after a client-only cut
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, timeout=10)
                s.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                if self.closed:
                    c.close()
                    s.close()
                    return
                self.connections += 1
                self.socks += [c, s]
            state = {"cut": False, "down": 0}
            threading.Thread(target=self._up, args=(c, s, state), daemon=True).start()
            threading.Thread(target=self._down, args=(s, c, state), daemon=True).start()

    def _limit(self, sent):
        """Bytes this connection may still forward before its cut, or None."""
        with self.lock:
            if not self.cuts:
                return None
            return max(self.cuts[0] - sent, 0)

    def _up(self, c, s, state):
        sent = 0
        while True:
            limit = self._limit(sent)
            if limit == 0:
                # A client learns its upload's id from the server's first
                # answer: let that reach it before the cut.
                end = time.monotonic() + 5
                while state["down"] == 0 and time.monotonic() < end:
                    time.sleep(0.005)
                time.sleep(0.05)
                self._cut(c, s, state)
                return
            try:
                data = c.recv(65536 if limit is None else min(65536, limit))
            except OSError:
                data = b""
            if not data:
                _shut(s, socket.SHUT_WR)
                return
            try:
                s.sendall(data)
            except OSError:
                _shut(c, socket.SHUT_RDWR)
                return
            sent += len(data)
            with self.lock:
                self.forwarded += len(data)

    def _cut(self, c, s, state):
        with self.lock:
            if self.cuts:
                self.cuts.pop(0)
            self.cut_count += 1
        state["cut"] = True
        if self.server_side:
            _shut(s, socket.SHUT_WR)  # a clean end: nothing forwarded is lost
        else:
            with self.lock:
                self.held.append(s)
        if self.on_cut:
            self.on_cut()
        # The client is dropped: whatever it still sends is refused (reset).
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        _shut(c, socket.SHUT_RDWR)
        c.close()

    def _down(self, s, c, state):
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data or state["cut"]:
                if not state["cut"]:
                    _shut(c, socket.SHUT_WR)
                if state["cut"] and self.server_side:
                    s.close()
                return
            try:
                c.sendall(data)
            except OSError:
                return
            state["down"] += len(data)

    def close(self):
        with self.lock:
            self.closed = True
            socks = self.socks + self.held
        try:
            self.srv.close()
        except OSError:
            pass
        for x in socks:
            _shut(x, socket.SHUT_RDWR)
            try:
                x.close()
            except OSError:
                pass


def _shut(sock, how):
    try:
        sock.shutdown(how)
    except OSError:
        pass
