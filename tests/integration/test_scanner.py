"""Scanning: intake-scand (libclamav) and intaked's verdicts before
acknowledgement, with real clients (clamdscan) and a real clamd."""
import asyncio
import base64
import binascii
import io
import json
import lzma
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import zipfile
import zlib

import pytest
import websockets

from conftest import (EICAR, INTAKE, INTAKED, ROOT, SIGNATURES, Client, alive, free_port,
                      frozen_scanner, sha256, short_dir, wait_for)

# The scanner of the build under test: INTAKED=build/asan/intaked runs these
# against the sanitizer build's intake-scand too.
SCAND = os.path.join(os.path.dirname(INTAKED), "intake-scand")


def sanitized(path):
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()
EICAR_NAME = "Eicar-Test-Signature.UNOFFICIAL"


def eicar_zip():
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("docs/readme.txt", "harmless\n")
        z.writestr("docs/eicar.com", EICAR)
    return b.getvalue()


def encrypted_zip(tmp_path, *members):
    """A password-protected zip (ZipCrypto, Debian's zip -P) of (name, data)."""
    work = tmp_path / "zip-work"
    work.mkdir(exist_ok=True)
    for name, data in members:
        (work / name).write_bytes(data)
    out = tmp_path / "encrypted.zip"
    if out.exists():
        out.unlink()
    subprocess.run(["zip", "-q", "-P", "secret", str(out), *[n for n, _ in members]], cwd=work,
                   check=True)
    return out.read_bytes()


class Scand:
    """intake-scand on its own, as an operator would run it."""

    def __init__(self, *extra, env=None, close_stderr=False):
        self.dir = short_dir()
        self.sock = os.path.join(self.dir, "s.sock")
        self.log = open(os.path.join(self.dir, "scand.log"), "wb")
        self.proc = subprocess.Popen(
            [SCAND, "--socket", self.sock, "--signatures", SIGNATURES, *extra],
            stderr=self.log, env=env, preexec_fn=(lambda: os.close(2)) if close_stderr else None)

    def ready(self):
        wait_for(lambda: os.path.exists(self.sock) or self.proc.poll() is not None, 15,
                 what="intake-scand")
        assert self.proc.poll() is None, self.logs()
        return self

    def logs(self):
        with open(os.path.join(self.dir, "scand.log")) as f:
            return f.read()

    def ask(self, data, fds=None, timeout=10):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(self.sock)
        try:
            if fds:
                s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                    struct.pack("i" * len(fds), *fds))])
            else:
                s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered before we finished (a limit): read what it said
        out = b""
        while True:
            try:
                chunk = s.recv(4096)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
        s.close()
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.log.close()
        subprocess.run(["rm", "-rf", self.dir])


@pytest.fixture
def scand():
    made = []

    def make(*extra, **kw):
        s = Scand(*extra, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def instream(data, chunk=4096):
    out = b"zINSTREAM\0"
    for i in range(0, len(data), chunk):
        piece = data[i:i + chunk]
        out += struct.pack("!I", len(piece)) + piece
    return out + struct.pack("!I", 0)


# --- intake-scand alone -------------------------------------------------------------


def test_protocol_replies(scand, tmp_path):
    s = scand().ready()
    assert s.ask(b"zPING\0") == b"PONG\0"
    assert s.ask(b"nPING\n") == b"PONG\n"
    assert s.ask(b"PING\n") == b"PONG\n"
    assert s.ask(b"zVERSION\0").startswith(b"ClamAV ")
    assert s.ask(b"zHELLO\0") == b"UNKNOWN COMMAND\0"
    assert s.ask(instream(EICAR)) == ("stream: %s FOUND\0" % EICAR_NAME).encode()
    assert s.ask(instream(b"clean data" * 1000)) == b"stream: OK\0"
    p = tmp_path / "e.com"
    p.write_bytes(EICAR)
    assert s.ask(b"zSCAN %s\0" % str(p).encode()) == ("%s: %s FOUND\0" % (p, EICAR_NAME)).encode()
    assert s.ask(b"zSCAN relative/path\0").endswith(b"ERROR\0")
    with open(p, "rb") as f:
        r = s.ask(b"zFILDES\0", fds=[f.fileno()])  # fd attached to the command itself
    assert r.startswith(b"fd[") and r.endswith((": %s FOUND\0" % EICAR_NAME).encode())
    r = s.ask(b"zIDSESSION\0zPING\0zPING\0zEND\0")
    assert r == b"1: PONG\x002: PONG\0"


class Session:
    """One clamd session (IDSESSION) to a scanner's socket, as intaked's scan
    threads keep them: one request at a time, each reply numbered."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(10)
        self.s.connect(path)
        self.s.sendall(b"zIDSESSION\0")
        self.buf = b""

    def reply(self):
        while b"\0" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise EOFError("the scanner closed the session")
            self.buf += chunk
        r, self.buf = self.buf.split(b"\0", 1)
        return r.decode()

    def fildes(self, path):
        with open(path, "rb") as f:
            self.s.sendmsg([b"zFILDES\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                              struct.pack("i", f.fileno()))])
        return self.reply()

    def close(self):
        self.s.sendall(b"zEND\0")
        self.s.close()


def test_session_carries_many_scans(scand, tmp_path):
    """intaked's scan threads keep one session each: FILDES and INSTREAM
    requests one after another, each reply with its request number, the
    passed descriptors all closed again."""
    s = scand().ready()
    clean, bad = tmp_path / "clean.bin", tmp_path / "e.com"
    clean.write_bytes(os.urandom(4096))
    bad.write_bytes(EICAR)
    before = len(os.listdir("/proc/%d/fd" % s.proc.pid))
    sess = Session(s.sock)
    for i in range(1, 201):
        r = sess.fildes(bad if i % 50 == 0 else clean)
        want = ": %s FOUND" % EICAR_NAME if i % 50 == 0 else ": OK"
        assert r.startswith("%d: fd[" % i) and r.endswith(want), (i, r)
    sess.s.sendall(instream(EICAR))
    assert sess.reply() == "201: stream: %s FOUND" % EICAR_NAME
    sess.s.sendall(b"zPING\0")
    assert sess.reply() == "202: PONG"
    wait_for(lambda: len(os.listdir("/proc/%d/fd" % s.proc.pid)) == before + 1, 5,
             what="the passed descriptors closed")
    sess.close()


def test_scans_reuse_their_temp_directories(scand, tmp_path):
    """libclamav makes and removes a directory per scan; intake-scand parks
    each emptied one and hands it to the next scan, so scan after scan, in
    parallel sessions, uses the same few directories (the same inodes),
    archives are still unpacked in them and found, and nothing is left in
    them."""
    base = short_dir()
    try:
        s = scand("--tmpdir", base, "--threads", "2").ready()
        (mine,) = [d for d in os.listdir(base) if d.startswith("intake-scand.")]
        tmp = os.path.join(base, mine)
        clean, bad, bundle = tmp_path / "clean.bin", tmp_path / "e.com", tmp_path / "b.zip"
        clean.write_bytes(os.urandom(4096))
        bad.write_bytes(EICAR)
        bundle.write_bytes(eicar_zip())

        def parked():
            out = {}
            for n in os.listdir(tmp):
                if n != "lock":
                    assert n.startswith("parked."), n
                    assert os.listdir(os.path.join(tmp, n)) == [], n  # emptied first
                    out[n] = os.lstat(os.path.join(tmp, n)).st_ino
            return out

        def scan_many(n):
            sess = Session(s.sock)
            for i in range(n):
                f, want = [(clean, ": OK"), (bundle, ": %s FOUND" % EICAR_NAME),
                           (bad, ": %s FOUND" % EICAR_NAME)][i % 3]
                r = sess.fildes(f)
                assert r.endswith(want), (i, f, r)
            sess.close()

        threads = [threading.Thread(target=scan_many, args=(30,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        first = parked()
        assert 1 <= len(first) <= 2, first  # one per scan at a time, no more
        scan_many(60)
        again = parked()
        # The scans took the parked directories and gave them back: no new
        # directory (inode) was made for any of those 60 scans.
        assert set(again.values()) <= set(first.values()), (first, again)
    finally:
        subprocess.run(["rm", "-rf", base])


def test_stopping_mid_scan_never_answers_ok(scand, tmp_path):
    """SIGTERM while sessions scan an infected archive: every answer is
    FOUND or ERROR, never OK, and the scanner's temp dir is gone after it.
    (exit() tore down OpenSSL under running scans, libclamav then reported
    the archive clean, and the temp dir, being written to, stayed.)"""
    inner = eicar_zip()
    for _ in range(2):  # a zip in a zip in a zip
        b = io.BytesIO()
        with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("inner.zip", inner)
        inner = b.getvalue()
    bundle = tmp_path / "nested.zip"
    bundle.write_bytes(inner)
    for round_ in range(5):
        base = short_dir()
        try:
            s = scand("--tmpdir", base, "--threads", "2").ready()
            replies = []

            def loop():
                try:
                    sess = Session(s.sock)
                    while True:
                        replies.append(sess.fildes(bundle))
                except (OSError, EOFError):
                    pass  # the scanner went away: what a client sees, not an answer

            threads = [threading.Thread(target=loop) for _ in range(2)]
            for t in threads:
                t.start()
            wait_for(lambda: len(replies) >= 4, 10, what="scans before the stop")
            s.proc.terminate()
            assert s.proc.wait(10) == 0
            for t in threads:
                t.join(10)
            found = [r for r in replies if r.endswith(": %s FOUND" % EICAR_NAME)]
            wrong = [r for r in replies if r not in found and not r.endswith(" ERROR")]
            assert found and not wrong, (round_, wrong)
            assert [d for d in os.listdir(base) if d.startswith("intake-scand.")] == [], \
                (round_, os.listdir(base))
        finally:
            subprocess.run(["rm", "-rf", base])


def test_temp_dir_gone_is_an_error_not_clean(scand, tmp_path):
    """libclamav 1.4 reports a file clean, unscanned, when it cannot make its
    per-scan temporary directory: intake-scand answers ERROR instead, and
    scans again once the directory is back."""
    base = short_dir()
    try:
        s = scand("--tmpdir", base).ready()
        clean, bad = tmp_path / "clean.txt", tmp_path / "e.com"
        clean.write_bytes(b"nothing to see\n")
        bad.write_bytes(EICAR)
        sess = Session(s.sock)
        assert sess.fildes(bad).endswith(": %s FOUND" % EICAR_NAME)
        (mine,) = [d for d in os.listdir(base) if d.startswith("intake-scand.")]
        os.rename(os.path.join(base, mine), os.path.join(base, "elsewhere"))
        for f in (bad, clean):
            r = sess.fildes(f)
            assert r.endswith(": not scanned: the engine could not use its temporary directory "
                              "ERROR"), r
        assert "Can't create temporary directory" in s.logs()
        os.rename(os.path.join(base, "elsewhere"), os.path.join(base, mine))
        assert sess.fildes(bad).endswith(": %s FOUND" % EICAR_NAME)
        assert sess.fildes(clean).endswith(": OK")
        sess.close()
    finally:
        subprocess.run(["rm", "-rf", base])


def members_written_unchecked():
    """Files whose EICAR libclamav extracts to a temp file without checking
    the write: a base64 mail attachment, a uuencoded file, a PDF stream."""
    mail = (b"From: a@example.org\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=XX\n\n--XX\n"
            b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
            + base64.encodebytes(EICAR) + b"\n--XX--\n")
    uu = (b"begin 644 e.com\n" + b"".join(binascii.b2a_uu(EICAR[i:i + 45])
                                         for i in range(0, len(EICAR), 45)) + b"`\nend\n")
    flate = zlib.compress(EICAR)
    pdf = (b"%%PDF-1.4\n1 0 obj\n<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(flate)
           + flate + b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n")
    return {"mail.eml": mail, "e.uu": uu, "e.pdf": pdf, "e.zip": eicar_zip()}


def test_temp_file_cut_short_is_an_error_not_clean(scand, tmp_path):
    """With its temp files cut short (a full file system; here a file-size
    limit, which fails the same writes with EFBIG) libclamav 1.4 scanned what
    it could write of a mail part, a uuencoded file or a PDF stream and
    called the file clean: intake-scand answers ERROR, stays up (SIGXFSZ),
    and finds the same files once writes work again."""
    s = scand().ready()
    files = {}
    for name, data in members_written_unchecked().items():
        files[name] = tmp_path / name
        files[name].write_bytes(data)
    sess = Session(s.sock)
    soft, hard = resource.prlimit(s.proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(s.proc.pid, resource.RLIMIT_FSIZE, (32, hard))
    try:
        for name, path in files.items():
            r = sess.fildes(path)
            assert r.endswith(": not scanned: the engine could not make or write a temporary "
                              "file (File too large) ERROR"), (name, r)
    finally:
        resource.prlimit(s.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
    assert s.proc.poll() is None
    for name, path in files.items():
        r = sess.fildes(path)
        assert r.endswith(": %s FOUND" % EICAR_NAME), (name, r)
    sess.close()


def test_temp_file_not_opened_is_an_error_not_clean(scand, tmp_path):
    """Out of descriptors, libclamav 1.4 skipped the mail part it could not
    open again and called the mail clean with EICAR inside: with each small
    number of descriptors to spare, intake-scand answers FOUND or ERROR,
    never OK, and finds it again once descriptors are back."""
    s = scand().ready()
    mail = tmp_path / "plain.eml"
    mail.write_bytes(b"From: a@example.org\nSubject: hello\n\n" + EICAR + b"\n")
    sess = Session(s.sock)
    assert sess.fildes(mail).endswith(": %s FOUND" % EICAR_NAME)
    soft, hard = resource.prlimit(s.proc.pid, resource.RLIMIT_NOFILE)

    def in_use():
        return len(os.listdir("/proc/%d/fd" % s.proc.pid))

    # Counted when idle: a scan's descriptors close just after its reply.
    time.sleep(0.2)
    idle = in_use()
    replies = []
    for spare in range(1, 13):
        wait_for(lambda: in_use() <= idle, 5, what="the last scan's descriptors closed")
        resource.prlimit(s.proc.pid, resource.RLIMIT_NOFILE, (idle + spare, hard))
        try:
            replies.append(sess.fildes(mail))
        finally:
            resource.prlimit(s.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert not [r for r in replies if r.endswith(": OK")], replies
    assert [r for r in replies if "could not make or write a temporary file (Too many open "
            "files) ERROR" in r], replies
    assert sess.fildes(mail).endswith(": %s FOUND" % EICAR_NAME)
    sess.close()
    # No scan's directory is left behind: one libclamav could not empty for
    # lack of descriptors goes once there are some (it stayed until the
    # scanner exited before).
    lock = [os.readlink("/proc/%d/fd/%s" % (s.proc.pid, fd))
            for fd in os.listdir("/proc/%d/fd" % s.proc.pid)]
    lock = [p for p in lock if p.endswith("/lock")]
    assert len(lock) == 1, lock
    left = [n for n in os.listdir(os.path.dirname(lock[0]))
            if n != "lock" and not n.startswith("parked.")]
    assert left == [], left


def test_descriptor_not_received_is_an_error_not_the_next_file(scand, tmp_path):
    """A FILDES whose descriptor the scanner cannot take (no free descriptor:
    the kernel drops it) is answered ERROR; the next FILDES, sent before that
    answer as a pipelining client does, is answered with its own file. Before,
    the first took the second's descriptor: an infected file answered OK."""
    s = scand().ready()
    bad, clean = tmp_path / "e.com", tmp_path / "clean.txt"
    bad.write_bytes(EICAR)
    clean.write_bytes(b"nothing to see\n")
    sess = Session(s.sock)
    assert sess.fildes(bad).endswith(": %s FOUND" % EICAR_NAME)
    time.sleep(0.2)
    soft, hard = resource.prlimit(s.proc.pid, resource.RLIMIT_NOFILE)
    full = len(os.listdir("/proc/%d/fd" % s.proc.pid))

    def send(path):
        with open(path, "rb") as f:
            sess.s.sendmsg([b"zFILDES\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                              struct.pack("i", f.fileno()))])

    resource.prlimit(s.proc.pid, resource.RLIMIT_NOFILE, (full, hard))
    try:
        send(bad)
        time.sleep(0.5)  # taken off the socket while no descriptor is free
    finally:
        resource.prlimit(s.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
    send(clean)
    first, second = sess.reply(), sess.reply()
    assert first.startswith("2: ") and first.endswith(
        "FILDES: the file descriptor could not be received (too many open files). ERROR"), first
    assert second.startswith("3: ") and second.endswith(": OK"), second
    assert sess.fildes(bad).endswith(": %s FOUND" % EICAR_NAME)
    sess.close()
    assert "could not take" in s.logs()


def test_unwritable_log_fails_no_scan(scand, tmp_path):
    """The scanner's own log (a regular file) on a full disk is not the
    engine losing content: a file that makes libclamav write a log line mid-
    scan is still answered OK, and a clean one too."""
    s = scand().ready()
    xz = tmp_path / "corrupt.xz"
    xz.write_bytes(lzma.compress(b"hello, just text\n" * 50)[:40] + b"\0" * 40)
    clean = tmp_path / "clean.txt"
    clean.write_bytes(b"nothing to see\n")
    sess = Session(s.sock)
    assert sess.fildes(xz).endswith(": OK")
    logged = os.path.getsize(os.path.join(s.dir, "scand.log"))
    soft, hard = resource.prlimit(s.proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(s.proc.pid, resource.RLIMIT_FSIZE, (logged - 1, hard))
    try:
        replies = [sess.fildes(xz), sess.fildes(clean)]
    finally:
        resource.prlimit(s.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
    assert all(r.endswith(": OK") for r in replies), replies
    assert os.path.getsize(os.path.join(s.dir, "scand.log")) == logged  # its lines were lost
    sess.close()


EVERYDAY_CLEAN = {
    "page.html": b"<html><head><title>t</title></head><body><p>hello</p></body></html>\n",
    "styled.html": b"<html><head><style>p{}</style></head><body><a href='x'>y</a></body></html>",
    "script.html": b"<html><body><script>var a = 1;</script></body></html>\n",
    "note.eml": b"From: a@example.org\nSubject: s\nMIME-Version: 1.0\nContent-Type: text/html\n\n"
                b"<html><body>hello</body></html>\n",
    "alternative.eml": b"From: a@example.org\nSubject: s\nMIME-Version: 1.0\n"
                       b"Content-Type: multipart/alternative; boundary=B\n\n--B\n"
                       b"Content-Type: text/plain\n\nhello\n--B\nContent-Type: text/html\n\n"
                       b"<html><body>hello</body></html>\n--B--\n",
    "text.eml": b"From: a@example.org\nSubject: s\n\nhello\n",
    "truncated.xz": lzma.compress(b"hello, just text\n" * 50)[:40] + b"\0" * 40,
}


@pytest.mark.parametrize("stderr", ["file", "closed"])
def test_everyday_files_are_ok(scand, tmp_path, stderr):
    """Pages, mails and a damaged archive with nothing inside are OK with
    room to spare, also when the scanner was started with stderr closed:
    libclamav looks (read-only) for temp files a step may not have made,
    and such a look is not a failure (it answered ERROR for every HTML page
    without a script and every HTML mail)."""
    if stderr == "file":
        s = scand().ready()
    else:
        s = Scand(close_stderr=True).ready()
    try:
        sess = Session(s.sock)
        replies = {}
        for name, data in EVERYDAY_CLEAN.items():
            path = tmp_path / name
            path.write_bytes(data)
            replies[name] = sess.fildes(path)
        assert all(r.endswith(": OK") for r in replies.values()), replies
        bad = tmp_path / "e.com"
        bad.write_bytes(EICAR)
        assert sess.fildes(bad).endswith(": %s FOUND" % EICAR_NAME)
        sess.close()
    finally:
        if stderr == "closed":
            s.stop()


def test_clamdscan_fdpass_and_stream(scand, tmp_path):
    s = scand().ready()
    conf = tmp_path / "clamd.conf"
    conf.write_text("LocalSocket %s\n" % s.sock)
    (tmp_path / "eicar.com").write_bytes(EICAR)
    (tmp_path / "clean.txt").write_bytes(b"nothing to see\n")
    (tmp_path / "bundle.zip").write_bytes(eicar_zip())
    files = [str(tmp_path / n) for n in ("eicar.com", "clean.txt", "bundle.zip")]
    for mode in ("--fdpass", "--stream"):
        r = subprocess.run(["clamdscan", "-c", str(conf), mode, "--no-summary", *files],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, r.stderr
        lines = sorted(r.stdout.splitlines())
        assert lines == sorted(["%s: %s FOUND" % (files[0], EICAR_NAME), "%s: OK" % files[1],
                                "%s: %s FOUND" % (files[2], EICAR_NAME)]), (mode, r.stdout)


def test_clamav_test_file_in_archives(scand, tmp_path):
    s = scand().ready()
    conf = tmp_path / "clamd.conf"
    conf.write_text("LocalSocket %s\n" % s.sock)
    base = "/usr/share/clamav-testfiles"
    files = [os.path.join(base, n) for n in ("clam.exe", "clam.zip", "clam.7z", "clam.tar.gz")]
    r = subprocess.run(["clamdscan", "-c", str(conf), "--fdpass", "--no-summary", *files],
                       capture_output=True, text=True, timeout=30)
    for f in files:
        assert "%s: ClamAV-Test-File.UNOFFICIAL FOUND" % f in r.stdout, r.stdout


def test_over_limit_never_clean(scand, tmp_path):
    s = scand("--max-size", "1M").ready()
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (2 << 20))
    with open(big, "rb") as f:
        r = s.ask(b"zFILDES\0\0", fds=[f.fileno()])
    assert b"Heuristics.Limits.Exceeded" in r and r.endswith(b" FOUND\0"), r
    assert s.ask(instream(b"\0" * (2 << 20), 65536)) == b"INSTREAM size limit exceeded. ERROR\0"
    # A zip whose member is over the limit is not clean either.
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("huge.bin", b"\0" * (3 << 20))
    zp = tmp_path / "huge.zip"
    zp.write_bytes(b.getvalue())
    with open(zp, "rb") as f:
        r = s.ask(b"zFILDES\0\0", fds=[f.fileno()])
    assert b"Heuristics.Limits.Exceeded" in r, r


def test_encrypted_archive_is_never_clean(scand, tmp_path):
    s = scand().ready()
    zp = tmp_path / "e.zip"
    zp.write_bytes(encrypted_zip(tmp_path, ("eicar.com", EICAR)))
    with open(zp, "rb") as f:
        assert s.ask(b"zFILDES\0\0", fds=[f.fileno()]).endswith(
            b": Heuristics.Encrypted.Zip FOUND\0")
    assert s.ask(instream(zp.read_bytes())) == b"stream: Heuristics.Encrypted.Zip FOUND\0"
    # Malware beside the encrypted member is still found as such.
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("eicar.com", EICAR)
    mixed = encrypted_zip(tmp_path, ("readme.txt", b"hello\n"))
    assert s.ask(instream(plain.getvalue())) == ("stream: %s FOUND\0" % EICAR_NAME).encode()
    assert s.ask(instream(mixed)) == b"stream: Heuristics.Encrypted.Zip FOUND\0"


def test_garbage_and_half_sent_instream_hurt_nobody(scand):
    s = scand().ready()
    # Garbage: an answer, then the connection closes. (Its first byte is not
    # "z" or "n": those start NUL- or newline-terminated commands.)
    garbage = os.urandom(100).replace(b"\0", b"x").replace(b"\n", b"y")
    assert s.ask(b"X" + garbage + b"\n") == b"UNKNOWN COMMAND\n"
    # A command that never ends is bounded.
    r = s.ask(b"z" + b"A" * 10000)
    assert r.endswith(b"ERROR\n")
    # Stalled and vanished INSTREAMs, several of them.
    stalled = []
    for _ in range(8):
        c = socket.socket(socket.AF_UNIX)
        c.connect(s.sock)
        c.sendall(b"zINSTREAM\0" + struct.pack("!I", 1000) + b"x" * 10)
        stalled.append(c)
    gone = socket.socket(socket.AF_UNIX)
    gone.connect(s.sock)
    gone.sendall(b"zINSTREAM\0" + struct.pack("!I", 1 << 20) + b"y" * 5000)
    gone.close()
    # Scans still answer while those hang (each ask gives up after 10 s, far
    # less than the stalled connections' read timeout).
    assert s.ask(instream(EICAR)) == ("stream: %s FOUND\0" % EICAR_NAME).encode()
    assert s.ask(b"zPING\0") == b"PONG\0"
    for c in stalled:
        c.close()
    assert s.proc.poll() is None


def test_failed_fd_read_closes_nothing(tmp_path):
    """FILDES whose descriptor never comes and whose client resets the
    connection: the failed recvmsg must not walk its (uninitialized) control
    buffer, which could close other threads' descriptors. Under valgrind,
    which flags the read of uninitialized memory deterministically."""
    if sanitized(SCAND):
        pytest.skip("valgrind cannot run a sanitizer build; the plain build's run covers this")
    d = short_dir()
    sock = os.path.join(d, "s.sock")
    vglog = os.path.join(d, "valgrind.log")
    proc = subprocess.Popen(["valgrind", "-q", "--error-exitcode=99", "--log-file=" + vglog,
                             SCAND, "--socket", sock, "--signatures", SIGNATURES],
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(sock) or proc.poll() is not None, 120,
                 what="intake-scand under valgrind")
        assert proc.poll() is None
        c = socket.socket(socket.AF_UNIX)
        c.connect(sock)
        c.sendall(b"zIDSESSION\0zPING\0")
        wait_for(lambda: select.select([c], [], [], 0)[0], 30, what="PONG")
        # The PONG stays unread: closing now makes the scanner's next read
        # fail with ECONNRESET while it waits for the descriptor.
        c.sendall(b"zFILDES\0")
        time.sleep(0.5)  # let the scanner reach its read (the bug needs no more)
        c.close()
        # It still answers, and its descriptors are intact.
        wait_for(lambda: ask(sock, b"zPING\0") == b"PONG\0", 30, what="PONG after the reset")
    finally:
        proc.terminate()
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "no exit on TERM: %s" % proc.wait()
        report = open(vglog).read()
        subprocess.run(["rm", "-rf", d])
    assert rc == 0 and "uninitialised" not in report, (rc, report)


def ask(sock, data):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock)
    s.sendall(data)
    out = s.recv(4096)
    s.close()
    return out


def test_refuses_to_start_without_signatures(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([SCAND, "--socket", str(tmp_path / "s"), "--signatures", str(empty)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "no signatures" in r.stderr or "cannot load" in r.stderr


def test_refuses_unusable_temp_dir(tmp_path):
    r = subprocess.run([SCAND, "--socket", str(tmp_path / "s"), "--signatures", SIGNATURES],
                       capture_output=True, text=True, timeout=20,
                       env=dict(os.environ, TMPDIR="/nonexistent/dir"))
    assert r.returncode != 0 and "temp directory" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unused uid needs root")
def test_refuses_to_run_without_its_self_test_thread():
    """No thread can be created (RLIMIT_NPROC 1 for a uid nobody else uses):
    intake-scand must not run without its periodic self-test."""
    d = short_dir()
    os.chmod(d, 0o777)

    def no_threads():
        import resource
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
        os.setgroups([])
        os.setgid(65123)
        os.setuid(65123)
    try:
        r = subprocess.run([SCAND, "--socket", os.path.join(d, "s"), "--signatures", SIGNATURES],
                           preexec_fn=no_threads, capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, TMPDIR=d))
    finally:
        leftovers = os.listdir(d)
        subprocess.run(["rm", "-rf", d])
    assert r.returncode != 0 and "cannot start the self-test thread" in r.stderr, r.stderr
    assert leftovers == []  # no socket, no temp dir


def test_refuses_database_without_eicar(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    (db / "other.hdb").write_text("0123456789abcdef0123456789abcdef:10:Something.Else\n")
    r = subprocess.run([SCAND, "--socket", str(tmp_path / "s"), "--signatures", str(db)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "self-test FAILED" in r.stderr


# --- intaked with its scanner ----------------------------------------------------------


def test_verdicts_over_raw_tcp_and_cli(daemon_factory, tmp_path):
    d = daemon_factory(scan=True)
    assert d.health()["scanner"] == "up"
    scanner = d.scanner()
    assert scanner is not None
    c = Client(d.tcp_port)
    ready, st = c.upload("eicar.com", EICAR)
    assert st["verdict"] == "infected" and st["virus"] == EICAR_NAME
    assert st["stored_as"] is None and st["status"] == "./eicar.com: %s FOUND" % EICAR_NAME
    ready, st = c.upload("fine.txt", b"fine\n")
    assert st["verdict"] == "clean" and st["status"] == "./fine.txt: OK"
    ready, st = c.upload("bundle.zip", eicar_zip())
    assert st["verdict"] == "infected" and st["virus"] == EICAR_NAME
    # Password-protected: not scanned, so neither clean nor infected.
    ready, st = c.upload("locked.zip", encrypted_zip(tmp_path, ("eicar.com", EICAR)))
    assert st["verdict"] == "error" and st["stored_as"] is None, st
    assert st["status"] == ("./locked.zip: file is encrypted and could not be scanned "
                            "(Heuristics.Encrypted.Zip) ERROR"), st
    assert d.spooled() == [ready["id"] + ".part"]
    assert d.accepted() == ["fine.txt"]
    q = sorted(os.listdir(d.dir["quarantine_dir"]))
    assert sorted(n.split("-", 1)[1] for n in q) == ["bundle.zip", "eicar.com"]
    assert all(len(n.split("-", 1)[0]) == 32 for n in q)
    # The CLI: NAME FOUND, exit 1.
    (tmp_path / "e.com").write_bytes(EICAR)
    (tmp_path / "ok.txt").write_bytes(b"ok")
    r = subprocess.run([INTAKE, "127.0.0.1:%d" % d.tcp_port, str(tmp_path / "e.com"),
                        str(tmp_path / "ok.txt")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stdout.splitlines() == ["%s: %s FOUND" % (tmp_path / "e.com", EICAR_NAME),
                                     "%s: OK" % (tmp_path / "ok.txt")]


def test_verdicts_over_websocket(daemon_factory):
    d = daemon_factory(scan=True, on_infected="delete")

    async def go():
        out = []
        async with websockets.connect("ws://127.0.0.1:%d/up" % d.ws_port) as ws:
            for name, data in (("e.com", EICAR), ("c.txt", b"clean")):
                await ws.send(json.dumps({"type": "START", "filename": name, "size": len(data)}))
                await ws.recv()
                await ws.send(data)
                await ws.recv()
                await ws.send('{"type":"DONE"}')
                out.append(json.loads(await ws.recv()))
        return out
    infected, clean = asyncio.run(go())
    assert infected["verdict"] == "infected" and infected["virus"] == EICAR_NAME
    assert clean["verdict"] == "clean"
    assert os.listdir(d.dir["quarantine_dir"]) == []  # on_infected delete
    assert d.accepted() == ["c.txt"] and d.spooled() == []
    from wsraw import http_request
    _, _, body = http_request(d.ws_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    text = body.decode()
    assert 'intake_uploads_total{transport="ws",verdict="infected"} 1' in text
    assert 'intake_uploads_total{transport="ws",verdict="clean"} 1' in text
    assert 'intake_scan_duration_seconds_count 2' in text
    assert 'intake_scan_duration_seconds_bucket{le="+Inf"} 2' in text


def test_kill9_scanner_idle_then_mid_scan(daemon_factory):
    d = daemon_factory(scan=True, scan_timeout="20s")
    old = d.scanner()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: d.scanner() not in (None, old), 10, what="scanner respawn")
    c = Client(d.tcp_port)
    assert c.upload("after-idle-kill.txt", b"x")[1]["verdict"] == "clean"
    # Mid-scan: kill the scanner the moment it holds an upload's file.
    data = os.urandom(64 << 20)
    victim = d.scanner()
    results = {}

    def send():
        results["st"] = Client(d.tcp_port, timeout=60).upload("big.bin", data)[1]
    t = threading.Thread(target=send)
    t.start()

    def holds_part():
        try:
            return any(os.readlink("/proc/%d/fd/%s" % (victim, fd)).endswith(".part")
                       for fd in os.listdir("/proc/%d/fd" % victim))
        except OSError:
            return False
    wait_for(holds_part, 30, step=0.001, what="the scanner to receive the file")
    os.kill(victim, signal.SIGKILL)
    t.join(60)
    st = results["st"]
    # The worker waited for the respawned scanner and scanned again.
    assert st["verdict"] == "clean" and st["sha256"] == sha256(data), st
    assert "big.bin" in d.accepted()
    assert "retrying" in d.logs()


def ping(path):
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(path)
            s.sendall(b"zPING\0")
            return s.recv(16) == b"PONG\0"
    except OSError:
        return False


def test_killed_scanner_leaves_no_temp_dir(daemon_factory, scand):
    """The engine's temp dir lives under the spool; one left by a scanner
    killed with -9 (with what libclamav had extracted) is removed by the
    next scanner, and one in use by a live scanner never is."""
    d = daemon_factory(scan=True)
    base = os.path.join(d.spool_dir, "intake-scand")
    first = os.listdir(base)
    assert len(first) == 1 and first[0].startswith("intake-scand.")
    assert "temp dir %s/%s)" % (base, first[0]) in d.logs()
    # Another scanner sharing the place: both directories stay.
    other = scand("--tmpdir", base).ready()
    assert len(os.listdir(base)) == 2 and first[0] in os.listdir(base)
    other.stop()
    assert os.listdir(base) == first
    # What a scan in progress would leave, then kill -9.
    os.makedirs(os.path.join(base, first[0], "clamav-0123.tmp", "sub"))
    with open(os.path.join(base, first[0], "clamav-0123.tmp", "sub", "member"), "wb") as f:
        f.write(EICAR)
    old = d.scanner()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: d.scanner() not in (None, old) and ping(d.dir["scanner_socket"]), 15,
             what="the respawned scanner")
    now = os.listdir(base)
    assert len(now) == 1 and now != first, now
    assert "removed %s/%s, the temp directory of a scanner that is gone" % (base, first[0]) \
        in d.logs()
    assert Client(d.tcp_port).upload("bundle.zip", eicar_zip())[1]["verdict"] == "infected"
    # Scans clean up after themselves: only the lock and the emptied scan
    # directory, parked for the next scan.
    left = sorted(os.listdir(os.path.join(base, now[0])))
    assert left[0] == "lock" and [n.split(".")[0] for n in left[1:]] == ["parked"] * (len(left) - 1)
    assert all(os.listdir(os.path.join(base, now[0], n)) == [] for n in left[1:])


def test_stalled_scans_do_not_hold_up_hashing(daemon_factory):
    """Scanner round trips have their own threads: with the scanner frozen and
    as many scans waiting as the job pool has threads, another upload is still
    hashed to the end (its wrong checksum is reported) while they wait."""
    d = daemon_factory(start=False, workers=1, log_level="debug")
    d.scanning(scan_timeout="120s")
    d.start()
    scanner = d.scanner()
    os.kill(scanner, signal.SIGSTOP)
    small = []
    try:
        for i in range(4):  # the job pool's thread count
            c = Client(d.tcp_port, timeout=60)
            c.start("small-%d.txt" % i, 5)
            c.send(b"hello")
            small.append((c, c.line()["id"]))
        wait_for(lambda: all("upload %s: handed to the scanner" % i in d.logs()
                             for _, i in small), 30, what="the scans to reach the scanner")
        data = os.urandom(32 << 20)
        big = Client(d.tcp_port, timeout=60)
        big.start("big.bin", len(data), sha256(b"something else"))
        big.send(data)
        assert big.line()["type"] == "READY"
        err = big.line()
        assert err["type"] == "ERROR" and err["code"] == 422, err
        assert sha256(data) in err["message"]
        # ... while the scans still wait for the frozen scanner.
        assert select.select([c.sock for c, _ in small], [], [], 0)[0] == []
    finally:
        os.kill(scanner, signal.SIGCONT)
    for c, _ in small:
        assert c.line()["verdict"] == "clean"
    assert d.accepted() == ["small-%d.txt" % i for i in range(4)]


def test_shutdown_timeout_stops_the_scans_and_tells_each_client(daemon_factory):
    """QUIT with the scanner frozen, six uploads waiting for their verdicts
    (four in the scan threads' round trips, two still queued): at
    shutdown_timeout every one is told 503 with its id, the worker ends on
    its own, and after the restart each re-query scans its file and places
    it. Before, the scans sat out scan_timeout: the clients got a bare close
    when the master killed the worker."""
    d, scanner = frozen_scanner(daemon_factory)
    waiting = []
    try:
        for i in range(6):
            c = Client(d.tcp_port, timeout=30)
            c.start("s-%d.txt" % i, 5)
            c.send(b"scan%d" % i)
            waiting.append((c, c.line()["id"]))
        wait_for(lambda: sum("upload %s: handed to the scanner" % i in d.logs()
                             for _, i in waiting) == 4, 30, what="four scans at the scanner")
        d.signal(signal.SIGQUIT)
        for c, upload_id in waiting:
            answer = c.line()
            assert answer is not None and answer["type"] == "ERROR" and answer["code"] == 503, \
                answer
            assert upload_id in answer["message"] and "verdict" in answer["message"], answer
    finally:
        os.kill(scanner, signal.SIGCONT)
    assert d.wait_exit(10) == 0
    logs = d.logs()
    for _, upload_id in waiting:
        assert "upload %s (s-" % upload_id in logs
    assert logs.count("shutdown_timeout reached before its scan was done") == 6
    assert "grace period" not in logs and "killed by signal" not in logs  # it ended on its own
    assert "scan timed out" not in logs and "is down" not in logs  # a stop is no verdict
    assert d.accepted() == []
    d.log.close()
    d.start()
    for i, (_, upload_id) in enumerate(waiting):
        c = Client(d.tcp_port)
        c.start("s-%d.txt" % i, 5, id=upload_id)
        again = c.line()
        assert again["type"] == "STATUS" and again["verdict"] == "clean", again
        assert again["stored_as"] == "s-%d.txt" % i
    assert d.accepted() == ["s-%d.txt" % i for i in range(6)]


def test_shutdown_timeout_stops_a_websocket_upload_scan(daemon_factory):
    """The same on WebSocket: QUIT while the upload's scan waits on a frozen
    scanner; at shutdown_timeout the client hears ERROR 503 with its id,
    then close 1011, and a re-query after the restart places the file once
    (a review's test)."""
    d, scanner = frozen_scanner(daemon_factory)

    async def go():
        async with websockets.connect("ws://127.0.0.1:%d/upload" % d.ws_port) as ws:
            await ws.send(json.dumps({"type": "START", "filename": "w.txt", "size": 5}))
            ready = json.loads(await ws.recv())
            await ws.send(b"wsbdy")
            await ws.recv()  # the ack
            await ws.send(json.dumps({"type": "DONE"}))
            wait_for(lambda: "upload %s: handed to the scanner" % ready["id"] in d.logs(), 30,
                     what="the scan to reach the scanner")
            d.signal(signal.SIGQUIT)
            answer = json.loads(await asyncio.wait_for(ws.recv(), 20))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            return ready, answer, closed.value.rcvd.code if closed.value.rcvd else None
    try:
        ready, answer, code = asyncio.run(go())
    finally:
        os.kill(scanner, signal.SIGCONT)
    assert answer["type"] == "ERROR" and answer["code"] == 503, answer
    assert ready["id"] in answer["message"], answer
    assert code == 1011, code
    assert d.wait_exit(10) == 0
    assert d.accepted() == []
    d.log.close()
    d.start()

    async def again():
        async with websockets.connect("ws://127.0.0.1:%d/upload" % d.ws_port) as ws:
            await ws.send(json.dumps({"type": "START", "filename": "w.txt", "size": 5,
                                      "id": ready["id"]}))
            return json.loads(await ws.recv())
    st = asyncio.run(again())
    assert st["type"] == "STATUS" and st["verdict"] == "clean", st
    assert d.accepted() == ["w.txt"]


def test_a_requery_waiting_at_shutdown_timeout_is_told_the_id(daemon_factory, tmp_path):
    """A re-query waiting for the finishing steps another connection runs
    (its scan at a frozen scanner) when shutdown_timeout strikes hears 503
    naming the id to ask again with, as the upload's own connection does (it
    heard the generic "send it again", as if nothing was kept: an audit
    found it), and its refusal has an access line, as every refused
    re-query does."""
    log = tmp_path / "access.log"
    d, scanner = frozen_scanner(daemon_factory, access_log=str(log))
    try:
        c = Client(d.tcp_port, timeout=30)
        c.start("q.txt", 5)
        c.send(b"quiet")
        upload_id = c.line()["id"]
        wait_for(lambda: "upload %s: handed to the scanner" % upload_id in d.logs(), 30,
                 what="the scan to reach the scanner")
        c.close()
        q = Client(d.tcp_port, timeout=30)
        q.start("q.txt", 5, id=upload_id)
        time.sleep(0.3)  # it waits, looking again every 200 ms (either way: the id)
        d.signal(signal.SIGQUIT)
        answer = q.line()
    finally:
        os.kill(scanner, signal.SIGCONT)
    assert answer is not None and answer["type"] == "ERROR" and answer["code"] == 503, answer
    assert upload_id in answer["message"] and "kept" in answer["message"], answer
    assert d.wait_exit(10) == 0
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    # The upload's own line, and the re-query's (received 0: it sent nothing).
    assert [(x["id"], x["code"]) for x in lines] == [(upload_id, 503)] * 2, lines
    assert sorted(x["received"] for x in lines) == [0, 5], lines


def test_stopped_scans_are_never_let_through_nor_hooked_nor_counted(daemon_factory, tmp_path):
    """HUP (the old worker drains) with scan_fail accept and an accept hook,
    three scans waiting on a frozen scanner: at shutdown_timeout each client
    hears 503 with its id; no stopped scan is accepted unscanned, hooked,
    counted or taken for a scanner down; the re-queries on the new worker
    scan, hook and place each file (a review's test)."""
    from test_hook import HOOK, PY, runs
    from wsraw import http_request
    hd = tmp_path / "hookrun"
    hd.mkdir()
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    (hd / "exit").write_text("0")
    d, scanner = frozen_scanner(daemon_factory, {"scan_fail": "accept"},
                                accept_hook="%s %s %s extra-arg" % (PY, script, hd),
                                hook_timeout="30s")
    waiting = []
    try:
        for i in range(3):
            c = Client(d.tcp_port, timeout=30)
            c.start("h-%d.txt" % i, 5)
            c.send(b"hook%d" % i)
            waiting.append((c, c.line()["id"]))
        wait_for(lambda: sum("upload %s: handed to the scanner" % i in d.logs()
                             for _, i in waiting) == 3, 30, what="three scans at the scanner")
        old = d.workers()
        d.signal(signal.SIGHUP)
        for c, upload_id in waiting:
            answer = c.line()
            assert answer is not None and answer["code"] == 503, answer
            assert upload_id in answer["message"], answer
        wait_for(lambda: not any(p in d.workers() for p in old), 10, what="the old worker gone")
        _, _, body = http_request(d.ws_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        os.kill(scanner, signal.SIGCONT)
    logs = d.logs()
    assert "ACCEPTING UNSCANNED" not in logs
    assert "is down" not in logs and "scan timed out" not in logs
    assert runs(str(hd)) == [] and d.accepted() == []
    counted = [line for line in body.decode().splitlines()
               if line.startswith(("intake_uploads_total", "intake_scans_total"))]
    assert counted and all(line.endswith(" 0") for line in counted), counted
    for i, (_, upload_id) in enumerate(waiting):
        c = Client(d.tcp_port, timeout=30)
        c.start("h-%d.txt" % i, 5, id=upload_id)
        st = c.line()
        assert st["type"] == "STATUS" and st["verdict"] == "clean", st
    assert len(runs(str(hd))) == 3
    assert d.accepted() == ["h-%d.txt" % i for i in range(3)]


class DyingScanner:
    """A clamd that answers PING but goes away with every file it is given,
    as a scanner does that the file crashes."""

    def __init__(self):
        self.dir = short_dir()
        self.sock = os.path.join(self.dir, "dying.sock")
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(self.sock)
        self.srv.listen(64)
        self.files = 0
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                # A session (zIDSESSION) first, or a PING: read on until a
                # file comes, then go away with it.
                got = b""
                while True:
                    try:
                        data, anc, _, _ = conn.recvmsg(64, socket.CMSG_SPACE(4 * 8))
                    except OSError:
                        break
                    got += data
                    files = 0
                    for level, kind, fds in anc:
                        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                            files += 1
                            for fd in struct.unpack("%di" % (len(fds) // 4), fds):
                                os.close(fd)
                    self.files += files
                    if got.startswith(b"zPING"):
                        conn.sendall(b"PONG\0")
                    if files or not data or got.startswith(b"zPING"):
                        break

    def stop(self):
        self.stopping = True
        self.srv.close()
        subprocess.run(["rm", "-rf", self.dir])


def test_file_that_kills_the_scanner_twice_is_an_error(daemon_factory):
    fake = DyingScanner()
    try:
        d = daemon_factory(scanner="unix:" + fake.sock, scan_timeout="60s")
        st = Client(d.tcp_port, timeout=60).upload("crasher.bin", b"boom")[1]
        assert st["verdict"] == "error", st
        assert st["status"] == \
            "./crasher.bin: the scanner went away twice while scanning this file ERROR"
        assert fake.files == 2
        assert "went away twice while scanning it; not scanned again" in d.logs()
        assert d.accepted() == []
    finally:
        fake.stop()


@pytest.mark.parametrize("policy", ["reject", "accept"])
def test_unreachable_scanner(daemon_factory, policy):
    sock = os.path.join(short_dir(), "nobody-here.sock")
    d = daemon_factory(scanner="unix:" + sock, scan_fail=policy, scan_timeout="1s")
    assert d.health()["scanner"] == "down"
    c = Client(d.tcp_port)
    t0 = time.monotonic()
    ready, st = c.upload("unscanned.bin", b"data")
    assert time.monotonic() - t0 >= 0.8  # it waited for the scanner first
    assert st["verdict"] == "error"
    assert st["status"] == "./unscanned.bin: scanner unavailable ERROR"
    if policy == "reject":
        assert st["stored_as"] is None and d.accepted() == []
        assert d.spooled() == [ready["id"] + ".part"]
    else:
        assert st["stored_as"] == "unscanned.bin" and d.accepted() == ["unscanned.bin"]
        assert "ACCEPTING UNSCANNED FILE" in d.logs()
    r = subprocess.run([INTAKE, "127.0.0.1:%d" % d.tcp_port, "/etc/hostname"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stdout.strip() == "/etc/hostname: scanner unavailable ERROR"


class Clamd:
    """Debian's clamd, started here in the foreground on etc/signatures with
    the given clamd.conf lines (LocalSocket is set here)."""

    def __init__(self, tmp_path, settings):
        self.dir = short_dir()
        self.sock = os.path.join(self.dir, "clamd.sock")
        conf = tmp_path / "clamd.conf"
        lines = [l for l in settings.splitlines() if l and not l.startswith("LocalSocket ")]
        lines += ["Foreground yes", "LocalSocket " + self.sock, "DatabaseDirectory " + SIGNATURES,
                  "TemporaryDirectory " + self.dir, "LogFile %s/clamd.log" % self.dir,
                  "PidFile %s/clamd.pid" % self.dir]
        if os.geteuid() == 0:
            lines.append("User root")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(["clamd", "--config-file", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ready(self):
        wait_for(lambda: os.path.exists(self.sock) or self.proc.poll() is not None, 60,
                 what="clamd")
        assert self.proc.poll() is None, open(os.path.join(self.dir, "clamd.log")).read()
        return self

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        subprocess.run(["rm", "-rf", self.dir])


def readme_clamd_conf():
    """The clamd.conf lines README.md says an external clamd needs."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = text.split("Its\nclamd.conf needs these", 1)[1].split("```\n", 2)[1]
    assert "AlertEncrypted yes" in block and "AlertExceedsMax yes" in block, block
    return block


def test_real_clamd_with_the_readme_settings(daemon_factory, tmp_path):
    """An external clamd configured as README says: nothing it could not
    scan comes back clean, encrypted archives included."""
    clamd = Clamd(tmp_path, readme_clamd_conf()).ready()
    try:
        d = daemon_factory(scanner="unix:" + clamd.sock, max_file_size="1G")
        wait_for(lambda: d.health()["scanner"] == "up", 10, what="clamd up in /healthz")
        c = Client(d.tcp_port)
        st = c.upload("locked.zip", encrypted_zip(tmp_path, ("eicar.com", EICAR)))[1]
        assert st["verdict"] == "error", st
        assert st["status"] == ("./locked.zip: file is encrypted and could not be scanned "
                                "(Heuristics.Encrypted.Zip) ERROR"), st
        assert c.upload("e.com", EICAR)[1]["verdict"] == "infected"
        # 30 MB: past stock clamd's 25M, within these limits: scanned, clean.
        assert c.upload("big.bin", os.urandom(30 << 20))[1]["verdict"] == "clean"
        assert d.accepted() == ["big.bin"]
    finally:
        clamd.stop()


def test_real_clamd_as_scanner(daemon_factory, tmp_path):
    """Debian's clamd with limits below max_file_size: over them, never clean."""
    clamd = Clamd(tmp_path, "AlertExceedsMax yes\nAlertEncrypted yes\nMaxFileSize 1M\n"
                            "MaxScanSize 1M\n").ready()
    sock = clamd.sock
    try:
        d = daemon_factory(scanner="unix:" + sock)
        wait_for(lambda: d.health()["scanner"] == "up", 10, what="clamd up in /healthz")
        c = Client(d.tcp_port)
        st = c.upload("e.com", EICAR)[1]
        assert st["verdict"] == "infected" and st["virus"] == EICAR_NAME
        assert c.upload("zipped.zip", eicar_zip())[1]["verdict"] == "infected"
        assert c.upload("ok.txt", b"ok")[1]["verdict"] == "clean"
        # Over clamd's MaxFileSize: never clean.
        st = c.upload("big.bin", b"\0" * (2 << 20))[1]
        assert st["verdict"] == "error" and "could not be fully scanned" in st["status"]
        st = c.upload("locked.zip", encrypted_zip(tmp_path, ("eicar.com", EICAR)))[1]
        assert st["verdict"] == "error" and "Heuristics.Encrypted.Zip" in st["status"], st
        assert d.accepted() == ["ok.txt"]
    finally:
        clamd.stop()


def test_builtin_scanner_in_ps_and_quit_order(daemon_factory):
    d = daemon_factory(scan=True)
    scanner = d.scanner()
    with open("/proc/%d/cmdline" % scanner, "rb") as f:
        assert f.read().split(b"\0")[0] == b"intake-scand"
    d.signal(signal.SIGQUIT)
    assert d.wait_exit(10) == 0
    assert not alive(scanner)
    logs = d.logs()
    quit_at = logs.index("SIGQUIT")
    worker_gone = logs.index("worker 0 (pid", quit_at)
    scanner_gone = logs.index("scanner intake-scand (pid %d," % scanner, quit_at)
    assert worker_gone < scanner_gone, "the scanner left before the workers finished"


def test_clamdscan_path_modes(scand, tmp_path):
    """clamdscan without --fdpass/--stream sends paths: CONTSCAN by default,
    MULTISCAN with --multiscan, ALLMATCHSCAN with --allmatch."""
    s = scand().ready()
    conf = tmp_path / "clamd.conf"
    conf.write_text("LocalSocket %s\n" % s.sock)
    d = tmp_path / "tree"
    (d / "sub").mkdir(parents=True)
    (d / "eicar.com").write_bytes(EICAR)
    (d / "sub" / "bundle.zip").write_bytes(eicar_zip())
    (d / "clean.txt").write_bytes(b"clean\n")
    for mode in ([], ["--multiscan"], ["--allmatch"]):
        r = subprocess.run(["clamdscan", "-c", str(conf), "--no-summary", *mode, str(d)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1, (mode, r.stdout, r.stderr)
        found = {l.split(": ")[0] for l in r.stdout.splitlines() if l.endswith(" FOUND")}
        assert found == {str(d / "eicar.com"), str(d / "sub" / "bundle.zip")}, (mode, r.stdout)
        assert "%s: %s FOUND" % (d / "eicar.com", EICAR_NAME) in r.stdout
    r = subprocess.run(["clamdscan", "-c", str(conf), "--ping", "1"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.strip() == "PONG"
