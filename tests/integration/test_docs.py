"""The manual pages and the documents cannot drift from the code: every page
renders under `mandoc -T lint` without a warning, every directive of the
configuration parser's table has its entry in intake.conf(5) (and no entry
names a directive that does not exist), every flag a program's -h shows is
in its page, `make install` installs the pages, and nothing the project
ships for its readers points outside the repository."""
import os
import re
import subprocess

import pytest

from conftest import INTAKE, ROOT

MAN = os.path.join(ROOT, "man")
BUILD = os.path.join(ROOT, "build")
PAGES = ["intake.1", "intake.conf.5", "intaked.8", "intake-scand.8"]


def page(name):
    with open(os.path.join(MAN, name)) as f:
        return f.read()


def rendered(name):
    """The page as a reader sees it, without overstrike."""
    out = subprocess.run(["mandoc", "-T", "ascii", os.path.join(MAN, name)],
                         capture_output=True, check=True).stdout.decode()
    return re.sub(r".\x08", "", out)


@pytest.mark.parametrize("name", PAGES)
def test_page_lints_clean(name):
    # -W warning: every warning and error; style notes such as "referenced
    # manual not found" depend on what the machine has installed.
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", os.path.join(MAN, name)],
                       capture_output=True)
    assert r.returncode == 0 and r.stdout + r.stderr == b"", (r.stdout + r.stderr).decode()
    assert len(rendered(name)) > 1000


def parser_directives():
    with open(os.path.join(ROOT, "src", "config.c")) as f:
        src = f.read()
    table = src[src.index("static const struct directive directives[]"):]
    table = table[:table.index("};")]
    names = re.findall(r'\{"([a-z_]+)", h_[a-z_]+, (?:true|false)\}', table)
    assert len(names) > 25
    return names


def test_every_directive_is_in_intake_conf_5():
    src = page("intake.conf.5")
    documented = re.findall(r"^\.It Ic ([a-z_]+)", src, re.M)
    missing = [d for d in parser_directives() if d not in documented]
    assert missing == [], "directives missing from man/intake.conf.5: %s" % missing
    unknown = [d for d in documented if d not in parser_directives()]
    assert unknown == [], "intake.conf.5 documents directives the parser lacks: %s" % unknown
    # Each entry says what it defaults to (or that there is none).
    for d in parser_directives():
        entry = src.split(".It Ic %s" % d, 1)[1].split("\n.It ", 1)[0]
        assert "Default" in entry or d == "tls_certificate", d


def help_flags(argv):
    r = subprocess.run(argv + ["-h"], capture_output=True, timeout=10)
    assert r.returncode == 0
    text = r.stdout.decode()
    flags = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text))
    assert flags, text
    return flags


@pytest.mark.parametrize("argv,name", [
    ([os.path.join(BUILD, "intaked")], "intaked.8"),
    ([INTAKE], "intake.1"),
    ([os.path.join(BUILD, "intake-scand")], "intake-scand.8"),
])
def test_every_flag_of_h_is_in_the_page(argv, name):
    text = rendered(name)
    missing = sorted(f for f in help_flags(argv) if not re.search(
        r"(?<![\w-])%s(?![\w-])" % re.escape(f), text))
    assert missing == [], "%s -h shows flags missing from man/%s: %s" % (argv[0], name, missing)


def test_intake_h_matches_intake_1():
    # The other way round as well: every option intake.1 lists is in -h.
    text = rendered("intake.1")
    options = text.split("The options are as follows:", 1)[1].split("OUTPUT", 1)[0]
    flags = set()
    for line in options.splitlines():
        tag = re.match(r" {5}(-\S.*?)(?: {2,}|\t|$)", line.expandtabs())
        if tag:
            flags |= set(re.findall(r"--?[A-Za-z][\w-]*", tag.group(1)))
    assert {"-n", "--name", "--json", "--retries", "--tls"} <= flags
    assert flags <= help_flags([INTAKE])


def test_make_install_installs_the_pages(tmp_path):
    dest = tmp_path / "dest"
    r = subprocess.run(["make", "-s", "install", "DESTDIR=%s" % dest, "PREFIX=/usr"],
                       cwd=ROOT, capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    for name in PAGES:
        section = name.rsplit(".", 1)[1]
        installed = dest / "usr" / "share" / "man" / ("man" + section) / name
        assert installed.read_text() == page(name)
    for doc in ("README.md", "protocol.md", "configuration.md"):
        assert (dest / "usr" / "share" / "doc" / "intake" / doc).is_file()


def shipped_text_files():
    """What a user reads: the README, the documents for users, the pages and
    what `make install` ships from etc/ (docs/design-notes.md is a
    developer's note and not installed)."""
    files = [os.path.join(ROOT, f) for f in
             ("README.md", "docs/protocol.md", "docs/configuration.md")]
    for d in ("man", "etc"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, d)):
            files += [os.path.join(dirpath, n) for n in names
                      if not n.endswith((".hdb", ".ndb"))]
    return files


def test_documents_point_only_inside_the_repository():
    bad = []
    for path in shipped_text_files():
        with open(path, errors="replace") as f:
            for no, line in enumerate(f, 1):
                if re.search(r"\.\./shared|SPEC\.md|DESIGN\.md|STYLE\.md", line):
                    bad.append("%s:%d: %s" % (os.path.relpath(path, ROOT), no, line.strip()))
    assert bad == [], "\n".join(bad)


def test_relative_links_in_markdown_resolve():
    broken = []
    for path in shipped_text_files():
        if not path.endswith(".md"):
            continue
        with open(path) as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            if not os.path.exists(os.path.join(os.path.dirname(path), target)):
                broken.append("%s -> %s" % (os.path.relpath(path, ROOT), target))
    assert broken == [], broken
