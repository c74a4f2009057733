"""The upload page in a real browser: Debian's headless Chromium, driven by
playwright-core (tests/browser), uploads two files through the page; the
page must show both verdicts and the files must arrive intact."""
import json
import os
import subprocess

from conftest import ROOT

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")


def test_two_files_through_the_page(daemon_factory, tmp_path):
    d = daemon_factory(workers=2)
    a = tmp_path / "small note.txt"
    a.write_bytes("hello from the browser \u2713\n".encode())
    b = tmp_path / "big.bin"
    b.write_bytes(os.urandom(5 * (1 << 20) + 777))  # several 1 MiB chunks in flight
    assert os.path.exists("/usr/bin/chromium"), "chromium missing: run scripts/deps.sh"
    assert os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")), \
        "playwright-core missing: run scripts/deps.sh"
    r = subprocess.run(["node", "upload_page.mjs", "http://127.0.0.1:%d/" % d.ws_port, str(a), str(b)],
                       cwd=BROWSER_DIR, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)
    assert page["errors"] == []
    assert page["title"] == "intake: upload files"
    assert "Choose files" in page["label"]
    items = {i["name"]: i for i in page["items"]}
    assert set(items) == {"small note.txt", "big.bin"}
    for name, item in items.items():
        assert item["verdict"] == "unscanned", item
        assert "Not scanned" in item["state"] and "stored as " + name in item["state"]
    assert page["summary"] == "2 of 2 done: 2 not scanned"
    for src in (a, b):
        with open(os.path.join(d.accept_dir, src.name), "rb") as f:
            assert f.read() == src.read_bytes()
