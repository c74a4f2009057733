"""The upload page in a real browser: Debian's headless Chromium, driven by
playwright-core (tests/browser), uploads files through the page with the
scanner on; the page must show each verdict unmistakably and clean files
must arrive intact."""
import json
import os
import subprocess

from conftest import EICAR, ROOT

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")


def run_page(d, tmp_path, *files):
    assert os.path.exists("/usr/bin/chromium"), "chromium missing: run scripts/deps.sh"
    assert os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")), \
        "playwright-core missing: run scripts/deps.sh"
    r = subprocess.run(["node", "upload_page.mjs", "http://127.0.0.1:%d/" % d.ws_port,
                        *map(str, files)],
                       cwd=BROWSER_DIR, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, HOME=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)
    assert page["errors"] == []
    # Keyboard: the first Tab lands on the picker, a native multi-file input.
    assert page["focused"] == "picker" and page["multiple"] is True
    assert all(l and l.startswith("Upload progress of ") for l in page["progressLabels"])
    return page


def test_clean_and_infected_through_the_page(daemon_factory, tmp_path):
    d = daemon_factory(scan=True)
    a = tmp_path / "report.pdf"
    a.write_bytes(os.urandom(3 * (1 << 20) + 5))
    e = tmp_path / "eicar.com"
    e.write_bytes(EICAR)
    page = run_page(d, tmp_path, a, e)
    items = {i["name"]: i for i in page["items"]}
    assert items["report.pdf"]["verdict"] == "clean"
    assert items["report.pdf"]["state"] == "Clean stored as report.pdf"
    assert items["eicar.com"]["verdict"] == "infected"
    assert "Infected" in items["eicar.com"]["state"]
    assert "Eicar-Test-Signature.UNOFFICIAL" in items["eicar.com"]["state"]
    assert page["summary"] == "2 of 2 done: 1 clean, 1 infected"
    assert d.accepted() == ["report.pdf"]
    with open(os.path.join(d.accept_dir, "report.pdf"), "rb") as f:
        assert f.read() == a.read_bytes()


def test_two_files_through_the_page(daemon_factory, tmp_path):
    d = daemon_factory(workers=2)
    a = tmp_path / "small note.txt"
    a.write_bytes("hello from the browser \u2713\n".encode())
    b = tmp_path / "big.bin"
    b.write_bytes(os.urandom(5 * (1 << 20) + 777))  # several 1 MiB chunks in flight
    page = run_page(d, tmp_path, a, b)
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
