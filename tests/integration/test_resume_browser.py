"""The upload page resumes after a dropped connection, in a real browser
(Debian's headless Chromium driven by playwright-core, tests/browser): the
page and its WebSocket go through a proxy that cuts the connection carrying
the file mid-way; the page shows that it is reconnecting, resumes from the
server's offset, and shows the verdict; the accepted file is intact."""
import json
import os
import signal
import subprocess

from conftest import ROOT, file_sha256, wait_for
from cutproxy import CuttingProxy

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
MIB = 1 << 20


def have_browser():
    assert os.path.exists("/usr/bin/chromium"), "chromium missing: run scripts/deps.sh"
    assert os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")), \
        "playwright-core missing: run scripts/deps.sh"


def run_page(port, tmp_path, *files):
    have_browser()
    r = subprocess.run(["node", "resume_page.mjs", "http://127.0.0.1:%d/" % port,
                        *map(str, files)],
                       cwd=BROWSER_DIR, capture_output=True, text=True, timeout=150,
                       env=dict(os.environ, HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)
    assert page["errors"] == [], page["errors"]
    return page


def test_page_resumes_through_a_cut_connection(daemon_factory, tmp_path):
    d = daemon_factory(scan=True)
    f = tmp_path / "several.bin"
    data = os.urandom(6 * MIB + 4321)
    f.write_bytes(data)
    proxy = CuttingProxy(d.ws_port, cuts=[2 * MIB + MIB // 2])
    try:
        page = run_page(proxy.port, tmp_path, f)
    finally:
        proxy.close()
    assert proxy.cut_count == 1
    item = page["items"][0]
    assert item["verdict"] == "clean", page
    assert item["state"] == "Clean stored as several.bin"
    history = page["history"]["several.bin"]
    print(history)
    assert any(h.startswith("Reconnecting") for h in history), history
    # It resumed: uploading went on after reconnecting, and the proxy
    # carried little more than the file once.
    first = next(i for i, h in enumerate(history) if h.startswith("Reconnecting"))
    assert any(h.startswith("Uploading") for h in history[first:]), history
    assert proxy.forwarded < 1.5 * len(data), proxy.forwarded
    assert "resumed at byte" in d.logs()
    assert page["summary"] == "1 of 1 done: 1 clean"
    assert page["remembered"] == []
    assert d.accepted() == ["several.bin"]
    assert file_sha256(os.path.join(d.accept_dir, "several.bin")) == file_sha256(str(f))


def test_page_resumes_after_kill9_of_the_worker(daemon_factory, tmp_path):
    """No proxy: the worker holding the upload is killed mid-file."""
    d = daemon_factory(workers=2)
    f = tmp_path / "killed.bin"
    f.write_bytes(os.urandom(24 * MIB))
    have_browser()
    page = subprocess.Popen(["node", "resume_page.mjs", "http://127.0.0.1:%d/" % d.ws_port,
                             str(f)], cwd=BROWSER_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, HOME=str(tmp_path)))
    try:
        def holder():
            for w in d.workers():
                try:
                    for fd in os.listdir("/proc/%d/fd" % w):
                        p = os.readlink("/proc/%d/fd/%s" % (w, fd))
                        if p.endswith(".part") and os.path.getsize(p) >= 2 * MIB:
                            return w
                except OSError:
                    pass
            return None
        victim = wait_for(holder, 60, step=0.005, what="the upload under way")
        os.kill(victim, signal.SIGKILL)
        out, err = page.communicate(timeout=150)
    finally:
        if page.poll() is None:
            page.kill()
            page.wait()
    assert page.returncode == 0, err
    result = json.loads(out)
    assert result["errors"] == []
    item = result["items"][0]
    assert item["verdict"] == "unscanned" and item["state"] == "Not scanned stored as killed.bin", \
        result
    history = result["history"]["killed.bin"]
    print(history)
    assert any(h.startswith("Reconnecting") for h in history), history
    assert "resumed at byte" in d.logs()
    assert d.accepted() == ["killed.bin"]
    assert file_sha256(os.path.join(d.accept_dir, "killed.bin")) == file_sha256(str(f))
