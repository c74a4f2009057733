"""publish: every finished upload announced on a NATS JetStream subject, with
Nats-Msg-Id ID.VERDICT; for a file that passed, the stream's acknowledgement
comes before STATUS. Against a real 3-node JetStream cluster of Debian's
nats-server on loopback (a stream with 3 replicas), started by each test."""
import json
import os
import re
import signal
import threading
import urllib.request

import pytest

from conftest import EICAR, INTAKED, alive, wait_for
from natslib import Cluster

SUBJECT = "intake.uploads"
STREAM = "UPLOADS"


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(str(tmp_path / "nats")).start()
    try:
        c.add_stream(STREAM, SUBJECT)
        yield c
    finally:
        c.stop()


def publishing(cluster, **kw):
    d = {"publish": "%s %s" % (cluster.urls, SUBJECT), "node_name": "gw-test"}
    d.update(kw)
    return d


def by_id(msgs):
    return {mid: data for mid, data in msgs}


def connected_port(daemon):
    ports = re.findall(r"publish: connected to NATS server nats://127\.0\.0\.1:(\d+)", daemon.logs())
    return int(ports[-1]) if ports else None


def test_every_finished_upload_is_published(daemon_factory, client_factory, cluster, tmp_path):
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\ncat >/dev/null\ncase \"$1\" in *) test ! -e %s ;; esac\n"
                    % (tmp_path / "fail"))
    hook.chmod(0o755)
    alog = tmp_path / "access.log"
    d = daemon_factory(start=False, accept_hook="%s x" % hook, access_log=str(alog),
                       **publishing(cluster))
    d.scanning().start()
    _, clean = client_factory(d.tcp_port).upload("a.txt", b"clean bytes")
    assert clean["verdict"] == "clean" and clean["stored_as"] == "a.txt"
    _, infected = client_factory(d.tcp_port).upload("e.com", EICAR)
    assert infected["verdict"] == "infected"
    (tmp_path / "fail").touch()
    _, failed = client_factory(d.tcp_port).upload("b.txt", b"hook says no")
    assert failed["verdict"] == "error" and "accept hook failed" in failed["status"]
    want = {clean["id"] + ".clean", infected["id"] + ".infected", failed["id"] + ".error"}
    msgs = wait_for(lambda: (lambda m: m if want <= set(by_id(m)) else None)(cluster.messages(STREAM)),
                    30, 0.5, what="the three events in the stream")
    events = by_id(msgs)
    assert len(msgs) == 3
    ev = events[clean["id"] + ".clean"]
    # The access log object plus node.
    for k in ("time", "remote", "transport", "id", "filename", "stored_as", "size", "received",
              "sha256", "verdict", "virus", "code", "duration_ms"):
        assert k in ev, k
    assert ev["node"] == "gw-test" and ev["verdict"] == "clean" and ev["code"] == 200
    assert ev["stored_as"] == "a.txt" and ev["sha256"] == clean["sha256"]
    assert events[infected["id"] + ".infected"]["virus"] == infected["virus"]
    assert events[failed["id"] + ".error"]["stored_as"] is None
    # Exactly the access log's object plus node: the same time and duration
    # too, though the clean event is built before the file is placed.
    lines = {}
    for line in alog.read_text().splitlines():
        o = json.loads(line)
        lines[o["id"]] = o
    for key, e in events.items():
        e = dict(e)
        assert e.pop("node") == "gw-test"
        assert e == lines[key.split(".")[0]], (e, lines[key.split(".")[0]])
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.ws_port, timeout=5) as r:
        text = r.read().decode()
    assert 'intake_publishes_total{result="acked"} 3' in text


def test_kill_9_of_the_connected_node_loses_no_event(daemon_factory, client_factory, cluster):
    d = daemon_factory(workers=1, hook_timeout="30s", **publishing(cluster))
    wait_for(lambda: connected_port(d), 15, what="intaked to connect to NATS")
    data = [b"file %d\n" % i * 50 for i in range(50)]
    statuses = []
    killed = None
    for i in range(50):
        if i == 10:
            killed = cluster.node_by_port(connected_port(d))
            killed.kill()
        _, st = client_factory(d.tcp_port, timeout=60).upload("f%d.txt" % i, data[i])
        statuses.append(st)
    assert all(s["verdict"] == "unscanned" for s in statuses), [s["status"] for s in statuses]
    assert connected_port(d) != killed.port  # it followed the cluster
    msgs = cluster.messages(STREAM)
    ids = [mid for mid, _ in msgs]
    want = [s["id"] + ".unscanned" for s in statuses]
    assert set(want) <= set(ids)
    assert len(ids) == len(set(ids)) == 50  # none lost, none twice


def test_all_nodes_down_is_publish_failed_then_requery_publishes(daemon_factory, client_factory,
                                                                 cluster):
    d = daemon_factory(hook_timeout="2s", **publishing(cluster))
    wait_for(lambda: connected_port(d), 15, what="intaked to connect to NATS")
    cluster.stop()
    data = b"waiting for nats"
    _, st = client_factory(d.tcp_port).upload("n.txt", data)
    assert st["verdict"] == "error"
    assert st["status"] == "./n.txt: publish failed ERROR"
    assert st["stored_as"] is None and d.accepted() == []
    assert st["id"] + ".part" in d.spooled()
    assert "publish failed: no acknowledgement from the stream within 2000 ms" in d.logs()
    # Back (same storage): the re-query publishes and places the file.
    cluster.start()
    cluster.add_stream(STREAM, SUBJECT)

    def requery():
        c = client_factory(d.tcp_port, timeout=30)
        c.start("n.txt", len(data), id=st["id"])
        r = c.line()
        return r if r["verdict"] == "unscanned" else None
    again = wait_for(requery, 60, 0.5, what="a re-query to succeed once NATS is back")
    assert again["stored_as"] == "n.txt" and d.accepted() == ["n.txt"]
    ids = [mid for mid, _ in cluster.messages(STREAM)]
    assert st["id"] + ".unscanned" in ids
    assert st["id"] + ".error" not in ids  # "publish failed" is not itself published


def test_shutdown_timeout_stops_waiting_for_the_stream(daemon_factory, client_factory, cluster):
    """QUIT while an upload waits for the stream's acknowledgement (NATS
    away, hook_timeout long): at shutdown_timeout its client hears 503 with
    the id to ask again, the worker ends on its own, and the re-query after
    the restart publishes it once (before, the worker waited into the
    master's kill and the client got a bare close)."""
    d = daemon_factory(hook_timeout="60s", resume_timeout="200s", shutdown_timeout="1s",
                       workers=1, **publishing(cluster))
    wait_for(lambda: connected_port(d), 15, what="intaked to connect to NATS")
    cluster.stop()
    data = b"quit while waiting"
    c = client_factory(d.tcp_port)
    c.start("w.txt", len(data))
    c.send(data)
    ready = c.line()
    d.signal(signal.SIGQUIT)
    answer = c.line()
    assert answer is not None and answer["type"] == "ERROR" and answer["code"] == 503, answer
    assert ready["id"] in answer["message"]
    assert d.wait_exit(8) == 0
    logs = d.logs()
    assert "shutdown_timeout reached before its event was acknowledged" in logs
    assert "grace period" not in logs and "killed by signal" not in logs
    d.log.close()
    cluster.start()
    cluster.add_stream(STREAM, SUBJECT)
    d.start()

    def requery():
        q = client_factory(d.tcp_port, timeout=30)
        q.start("w.txt", len(data), id=ready["id"])
        r = q.line()
        return r if r and r.get("verdict") == "unscanned" else None
    again = wait_for(requery, 60, 0.5, what="the re-query to publish and place it")
    assert again["stored_as"] == "w.txt" and d.accepted() == ["w.txt"]
    ids = [mid for mid, _ in cluster.messages(STREAM)]
    assert ids.count(ready["id"] + ".unscanned") == 1, ids


def test_publish_stopped_by_a_reload_is_not_counted_failed(daemon_factory, client_factory,
                                                           cluster):
    """An upload whose acknowledgement its draining worker stopped waiting
    for at shutdown_timeout (HUP, NATS away) did not fail to publish:
    intake_publishes_total does not count it as failed, and the client hears
    503 (it was counted, so every reload during a NATS outage raised
    publish-failure alerts)."""
    d = daemon_factory(hook_timeout="60s", shutdown_timeout="1s", workers=1,
                       **publishing(cluster))
    wait_for(lambda: connected_port(d), 15, what="intaked to connect to NATS")
    cluster.stop()
    data = b"reload while waiting"
    c = client_factory(d.tcp_port)
    c.start("h.txt", len(data))
    c.send(data)
    assert c.line()["type"] == "READY"
    old = d.workers()
    d.signal(signal.SIGHUP)
    answer = c.line()
    assert answer is not None and answer["type"] == "ERROR" and answer["code"] == 503, answer
    wait_for(lambda: not any(alive(p) for p in old), 10, what="the old worker gone")
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.ws_port, timeout=5) as r:
        text = r.read().decode()
    assert 'intake_publishes_total{result="failed"} 0' in text, text
    assert 'intake_publishes_total{result="acked"} 0' in text


def test_events_held_while_nats_is_away_outlive_their_worker(daemon_factory, client_factory,
                                                             cluster):
    """Infected verdicts are announced without holding up STATUS, retried
    while NATS is away, and kept in the spool's outbox (.events/) until the
    stream has them: one held by a worker that a reload ends, and one held by
    a worker killed -9, are both published once NATS is back (before, both
    were lost, silently)."""
    d = daemon_factory(start=False, workers=1, hook_timeout="2s", shutdown_timeout="2s",
                       **publishing(cluster))
    d.scanning().start()
    wait_for(lambda: connected_port(d), 15, what="intaked to connect to NATS")
    cluster.stop()
    outbox = os.path.join(d.spool_dir, ".events")
    _, a = client_factory(d.tcp_port).upload("a.com", EICAR)
    assert a["verdict"] == "infected"
    first = d.workers()
    d.signal(signal.SIGHUP)  # the old worker drains and ends with a's event unsent
    wait_for(lambda: d.workers() and not set(d.workers()) & set(first), 15,
             what="the reload's new worker alone")
    _, b = client_factory(d.tcp_port).upload("b.com", EICAR)
    assert b["verdict"] == "infected"
    assert sorted(os.listdir(outbox)) == sorted([a["id"] + ".infected", b["id"] + ".infected"])
    second = d.workers()
    os.kill(second[0], signal.SIGKILL)  # b's event (and a's, taken over) held by it
    wait_for(lambda: d.workers() and d.workers() != second, 15, what="a new worker")
    cluster.start()
    cluster.add_stream(STREAM, SUBJECT)
    want = {a["id"] + ".infected", b["id"] + ".infected"}
    msgs = wait_for(lambda: (lambda m: m if want <= set(by_id(m)) else None)(cluster.messages(STREAM)),
                    60, 0.5, what="both events in the stream")
    ids = [mid for mid, _ in msgs]
    assert len(ids) == len(set(ids)), ids  # each once
    assert by_id(msgs)[a["id"] + ".infected"]["virus"] == a["virus"]
    wait_for(lambda: os.listdir(outbox) == [], 15, what="the outbox emptied")
    assert "events that a worker left unacknowledged are published again" in d.logs()


def test_publishing_keeps_worker_memory_flat(daemon_factory, cluster):
    """Every acknowledged event's message is freed: 2,500 published uploads
    must not grow the worker (the ack handler owns the message in cnats; it
    was kept, ~0.7 KiB per event for good: a worker running for months grew
    without bound; 1.8 MiB here). Not under ASan, whose quarantine keeps
    freed memory."""
    import socket as so
    from test_scanner import sanitized
    if sanitized(INTAKED):
        pytest.skip("ASan keeps freed memory: RSS says nothing there")
    d = daemon_factory(workers=1, **publishing(cluster))
    wait_for(lambda: connected_port(d), 15, what="intaked to connect to NATS")
    worker = d.workers()[0]

    def rss_kib():
        with open("/proc/%d/status" % worker) as f:
            return int([line for line in f if line.startswith("VmRSS:")][0].split()[1])

    def uploads(n):
        s = so.create_connection(("127.0.0.1", d.tcp_port), timeout=30)
        f = s.makefile("rb")
        for i in range(n):
            body = b"%08d" % i + b"x" * 248
            s.sendall(b"%d m.bin\n" % len(body) + body)
            f.readline()
            assert json.loads(f.readline())["verdict"] == "unscanned"
        s.close()
        for n_ in os.listdir(d.accept_dir):
            os.unlink(os.path.join(d.accept_dir, n_))

    uploads(500)  # the heap's steady state
    before = rss_kib()
    uploads(2500)
    grown = rss_kib() - before
    assert grown < 768, "worker RSS grew %d KiB over 2,500 published uploads" % grown


def _single_node(tmp_path, name, tls=None):
    """One nats-server with JetStream; with tls (a CA file, a certificate and
    its key) it takes TLS connections only."""
    from natslib import Node
    from conftest import free_ports
    port, cport = free_ports(2)
    n = Node(str(tmp_path / "nats"), name, port, cport, [])
    with open(n.conf, "w") as f:
        f.write("server_name: %s\nlisten: 127.0.0.1:%d\n" % (name, port))
        f.write('jetstream { store_dir: "%s" }\n' % os.path.join(n.dir, "js"))
        if tls:
            f.write('tls { cert_file: "%s", key_file: "%s" }\n' % tls[1:])
    n.start()
    c = Cluster.__new__(Cluster)
    c.nodes = [n]
    c.cafile = tls[0] if tls else None
    c.add_stream(STREAM, SUBJECT, replicas=1)
    return c


def test_tls_scheme_means_tls_required(daemon_factory, client_factory, tmp_path, monkeypatch):
    """publish tls://: TLS to NATS, the server's certificate checked against
    the trusted CAs (here SSL_CERT_FILE) and for the URL's host name; a
    server whose certificate is not trusted or names another host, or that
    has no TLS, is never used (tls:// was taken as nats://, and went out in
    the clear)."""
    import subprocess
    pki = tmp_path / "pki"
    pki.mkdir()

    def cert(name, san):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", name + ".key", "-out",
                        name + ".pem", "-days", "2", "-subj", "/CN=" + name, "-addext",
                        "subjectAltName=" + san], cwd=pki, check=True, capture_output=True)
        return str(pki / (name + ".pem")), str(pki / (name + ".key"))
    right = cert("right", "DNS:localhost,IP:127.0.0.1")
    wrong = cert("wrong", "DNS:nats.example")
    trusted = pki / "trusted.pem"
    trusted.write_text(open(right[0]).read() + open(wrong[0]).read())
    secure = _single_node(tmp_path, "tls1", (right[0],) + right)
    others = []

    def fresh(url, **kw):
        """A daemon publishing to url, and where its part of the shared log begins."""
        d = daemon_factory(start=False, publish="%s %s" % (url, SUBJECT), workers=1, **kw)
        at = os.path.getsize(d.log_path) if os.path.exists(d.log_path) else 0
        d.start()
        return d, lambda: d.logs()[at:]

    def refused(url, name):
        d, logs = fresh(url, hook_timeout="1s")
        wait_for(lambda: "no NATS server answers yet over TLS" in logs(), 15, what="the warning")
        st = client_factory(d.tcp_port).upload(name, b"not sent")[1]
        assert st["status"] == "./%s: publish failed ERROR" % name and name not in d.accepted()
        assert "publish: connected" not in logs()
        d.stop()
    try:
        url = "tls://localhost:%d" % secure.nodes[0].port
        refused(url, "untrusted.txt")
        monkeypatch.setenv("SSL_CERT_FILE", str(trusted))
        d, logs = fresh(url, hook_timeout="2s")
        wait_for(lambda: "publish: connected to NATS server" in logs(), 15,
                 what="intaked to connect to NATS")
        st = client_factory(d.tcp_port).upload("t.txt", b"over tls")[1]
        assert st["type"] == "STATUS" and st["stored_as"] == "t.txt", st
        assert [mid for mid, _ in secure.messages(STREAM)] == [st["id"] + ".unscanned"]
        d.stop()
        # Trusted, but for another name.
        misnamed = _single_node(tmp_path, "tls2", (str(trusted),) + wrong)
        others.append(misnamed)
        refused("tls://localhost:%d" % misnamed.nodes[0].port, "misnamed.txt")
        assert misnamed.messages(STREAM) == []
        # No TLS at all.
        plain = _single_node(tmp_path, "plain1")
        others.append(plain)
        refused("tls://localhost:%d" % plain.nodes[0].port, "plain.txt")
        assert plain.messages(STREAM) == []
    finally:
        secure.stop()
        for o in others:
            o.stop()


def test_tls_and_nats_servers_are_not_mixed(tmp_path):
    """One connection moves between the servers of the list: TLS required
    for some and not others would be a downgrade, refused at -t."""
    import subprocess
    r = subprocess.run([INTAKED, "-c", "/dev/null", "-t", "-o", "scanner=off",
                        "-o", "publish=tls://a:4222,nats://b:4222 s.x"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "mixes tls:// and nats://" in r.stderr, r.stderr
