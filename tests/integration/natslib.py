"""A NATS JetStream cluster for the tests (Debian's nats-server, 3 nodes on
loopback) and a small client speaking the NATS protocol (enough to create a
stream and read it back through the JetStream API)."""
import base64
import json
import os
import signal
import socket
import subprocess
import time

from conftest import free_ports, wait_for

NATS_SERVER = "/usr/sbin/nats-server"


class Node:
    def __init__(self, base, name, port, cport, routes):
        self.name, self.port, self.cport = name, port, cport
        self.dir = os.path.join(base, name)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "nats.conf")
        with open(self.conf, "w") as f:
            f.write("server_name: %s\nlisten: 127.0.0.1:%d\n" % (name, port))
            f.write('jetstream { store_dir: "%s" }\n' % os.path.join(self.dir, "js"))
            f.write("cluster { name: intake-test, listen: 127.0.0.1:%d, routes: [%s] }\n"
                    % (cport, ", ".join("nats-route://127.0.0.1:%d" % r for r in routes)))
        self.proc = None

    @property
    def url(self):
        return "nats://127.0.0.1:%d" % self.port

    def start(self):
        self.log = open(os.path.join(self.dir, "server.log"), "ab")
        self.proc = subprocess.Popen([NATS_SERVER, "-c", self.conf], stdout=self.log,
                                     stderr=self.log, start_new_session=True)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc:
            self.log.close()
        self.proc = None


class Cluster:
    def __init__(self, base, n=3):
        ports = free_ports(2 * n)
        cports = ports[n:]
        self.nodes = [Node(base, "n%d" % (i + 1), ports[i], cports[i],
                           [c for j, c in enumerate(cports) if j != i]) for i in range(n)]

    @property
    def urls(self):
        return ",".join(n.url for n in self.nodes)

    def start(self):
        for n in self.nodes:
            n.start()
        return self

    def stop(self):
        for n in self.nodes:
            n.kill()

    def node_by_port(self, port):
        return [n for n in self.nodes if n.port == port][0]

    def client(self, timeout=30):
        """A client connected to any node that answers."""
        def attempt():
            for n in self.nodes:
                if n.proc is None:
                    continue
                try:
                    return Client(n.port, getattr(self, "cafile", None))
                except OSError:
                    pass
            return None
        return wait_for(attempt, timeout, 0.1, what="a NATS node to answer")

    def add_stream(self, name, subject, replicas=3, timeout=60):
        """Creates the stream (once the cluster has a JetStream leader)."""
        cfg = {"name": name, "subjects": [subject], "num_replicas": replicas,
               "storage": "file", "duplicate_window": 120 * 10**9}

        def attempt():
            c = self.client()
            try:
                # Short: a request made before the cluster has a JetStream
                # leader is never answered, and the next one may be.
                r = c.request("$JS.API.STREAM.CREATE." + name, json.dumps(cfg).encode(), 1)
            except (OSError, TimeoutError):
                return None
            finally:
                c.close()
            if r is None:
                return None
            r = json.loads(r)
            if "error" in r and "already in use" not in r["error"].get("description", ""):
                return None
            return True
        wait_for(attempt, timeout, 0.1, what="JetStream to create the stream")

        def led():
            # Created is not yet served: a replicated stream takes a
            # publish only once its own group has elected a leader.
            c = self.client()
            try:
                r = c.request("$JS.API.STREAM.INFO." + name, b"", 1)
            except (OSError, TimeoutError):
                return None
            finally:
                c.close()
            info = json.loads(r) if r else {}
            if "error" in info or "config" not in info:
                return None
            return replicas == 1 or bool(info.get("cluster", {}).get("leader"))
        wait_for(led, timeout, 0.1, what="the stream to have a leader")

    def messages(self, stream, timeout=30):
        """Every message of the stream: [(Nats-Msg-Id, data dict)], in order."""
        def attempt():
            c = self.client()
            try:
                info = c.request("$JS.API.STREAM.INFO." + stream, b"", 5)
                if not info:
                    return None
                st = json.loads(info)
                if "error" in st:
                    return None
                out = []
                first, last = st["state"]["first_seq"], st["state"]["last_seq"]
                for seq in range(first, last + 1) if st["state"]["messages"] else []:
                    r = c.request("$JS.API.STREAM.MSG.GET." + stream,
                                  json.dumps({"seq": seq}).encode(), 5)
                    m = json.loads(r)
                    if "error" in m:
                        return None
                    m = m["message"]
                    hdrs = base64.b64decode(m.get("hdrs", "")).decode()
                    mid = [l.split(":", 1)[1].strip() for l in hdrs.split("\r\n")
                           if l.lower().startswith("nats-msg-id:")]
                    out.append((mid[0] if mid else None, json.loads(base64.b64decode(m["data"]))))
                return (out,)
            except (OSError, TimeoutError, ValueError):
                return None
            finally:
                c.close()
        return wait_for(attempt, timeout, 0.5, what="the stream's messages")[0]


class Client:
    def __init__(self, port, cafile=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.sid = 0
        info = self._line()
        assert info.startswith(b"INFO ")
        if cafile:  # a server that requires TLS: the handshake follows its INFO
            import ssl
            ctx = ssl.create_default_context(cafile=cafile)
            ctx.check_hostname = False  # the tests give servers certificates for other names
            self.sock = ctx.wrap_socket(self.sock)
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\nPING\r\n')
        while self._line() != b"PONG":
            pass
        self.inbox = "_INBOX.test%d" % os.getpid()
        self.sock.sendall(("SUB %s.* 1\r\n" % self.inbox).encode())
        self.n = 0

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("NATS server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("NATS server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def request(self, subject, payload, timeout):
        self.n += 1
        reply = "%s.%d" % (self.inbox, self.n)
        self.sock.sendall(("PUB %s %s %d\r\n" % (subject, reply, len(payload))).encode()
                          + payload + b"\r\n")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.sock.settimeout(max(0.1, end - time.monotonic()))
            try:
                line = self._line()
            except socket.timeout:
                break
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"MSG "):
                parts = line.split()
                data = self._read(int(parts[-1]))
                if parts[1].decode() == reply:
                    return data
            elif line.startswith(b"HMSG "):
                parts = line.split()
                data = self._read(int(parts[-1]))
                if parts[1].decode() == reply:
                    hl = int(parts[-2])
                    if b"503" in data[:hl]:  # no responders
                        return None
                    return data[hl:]
            elif line.startswith(b"-ERR"):
                raise OSError(line.decode())
        raise TimeoutError("no reply to " + subject)

    def close(self):
        self.sock.close()
