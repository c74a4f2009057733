"""intaked -t, -V, -h and start-up refusals: errors name file:line."""
import subprocess

from conftest import INTAKED, free_port


def run(args, **kw):
    return subprocess.run([INTAKED] + args, capture_output=True, text=True, timeout=20, **kw)


def test_t_good(tmp_path):
    conf = tmp_path / "good.conf"
    conf.write_text("# comment\nworkers 2\nlisten_tcp 127.0.0.1:1234\nmax_file_size 10M\n"
                    "scanner off\n")
    r = run(["-c", str(conf), "-t"])
    assert r.returncode == 0 and r.stdout == "configuration ok\n"


def test_t_bad_names_file_and_line(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("workers 2\n\nmax_file_size huge\n")
    r = run(["-c", str(conf), "-t"])
    assert r.returncode == 1
    assert r.stderr.startswith("intaked: %s:3: invalid size \"huge\"" % conf)


def test_t_unknown_directive_and_override(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("bogus on\n")
    r = run(["-c", str(conf), "-t"])
    assert r.returncode == 1 and "%s:1: unknown directive \"bogus\"" % conf in r.stderr
    conf.write_text("workers 1\nscanner off\n")
    r = run(["-c", str(conf), "-o", "workers=0", "-t"])
    assert r.returncode == 1 and "-o workers=0" in r.stderr
    r = run(["-c", str(conf), "-o", "workers=3", "-t"])
    assert r.returncode == 0


def test_missing_file(tmp_path):
    r = run(["-c", str(tmp_path / "nope.conf"), "-t"])
    assert r.returncode == 1 and "nope.conf: cannot open" in r.stderr


def test_version_and_help():
    r = run(["-V"])
    assert r.returncode == 0 and r.stdout.startswith("intaked ")
    r = run(["-h"])
    assert r.returncode == 0 and "-s SIGNAL" in r.stdout
    assert run(["-x"]).returncode == 1


def test_start_refuses_port_in_use(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    conf = tmp_path / "c.conf"
    conf.write_text("listen_tcp 127.0.0.1:%d\nlisten_ws 127.0.0.1:%d\nscanner off\n"
                    "pid_file %s/p.pid\nspool_dir %s/s\naccept_dir %s/a\nquarantine_dir %s/q\n"
                    % (port, free_port(), tmp_path, tmp_path, tmp_path, tmp_path))
    r = run(["-c", str(conf)])
    s.close()
    assert r.returncode == 1
    assert "cannot listen on 127.0.0.1:%d (listen_tcp)" % port in r.stderr
    assert "Address already in use" in r.stderr


def test_t_checks_what_only_opening_can(tmp_path):
    """-t fails, naming file:line, on an access_log that cannot be opened,
    a signature_dir the builtin scanner cannot read, a user that does not
    exist (as root), and a value relation (resume_timeout); start refuses
    the same, where before it started without an access log, with a
    scanner that could never load, or failed without naming the line."""
    conf = tmp_path / "c.conf"
    base = ("listen_tcp 127.0.0.1:%d\nlisten_ws 127.0.0.1:%d\npid_file %s/p.pid\n"
            "spool_dir %s/s\naccept_dir %s/a\nquarantine_dir %s/q\n"
            % (free_port(), free_port(), tmp_path, tmp_path, tmp_path, tmp_path))
    cases = [
        ("scanner off\naccess_log %s/no/dir/access.log\n" % tmp_path, 8,
         "access_log %s/no/dir/access.log: cannot open: No such file or directory" % tmp_path),
        ("signature_dir %s/nowhere\n" % tmp_path, 7,
         "signature_dir %s/nowhere: No such file or directory" % tmp_path),
        ("scanner off\nresume_timeout 10s\n", 8, "resume_timeout (10000 ms) must be longer than idle_timeout"),
        ("scanner off\nerror_log %s/no/dir/e.log\n" % tmp_path, 8,
         "error_log %s/no/dir/e.log: cannot open: No such file or directory" % tmp_path),
    ]
    import os
    if os.geteuid() == 0:
        cases.append(("scanner off\nuser no-such-user-here\n", 8,
                      "user \"no-such-user-here\" does not exist"))
    for extra, line, message in cases:
        conf.write_text(base + extra)
        for args in (["-t"], []):
            r = run(["-c", str(conf)] + args)
            assert r.returncode == 1, (extra, args, r)
            assert r.stderr.startswith("intaked: %s:%d: %s" % (conf, line, message)), (extra, r)
    # A FIFO with no reader is not opened (that would block -t, and a
    # reload, for ever): it passes on its permission.
    os.mkfifo(str(tmp_path / "fifo"))
    conf.write_text(base + "scanner off\naccess_log %s/fifo\n" % tmp_path)
    r = run(["-c", str(conf), "-t"])
    assert r.returncode == 0 and r.stdout == "configuration ok\n", r
    # The same, fixed: -t says ok, and the access log is there.
    conf.write_text(base + "scanner off\naccess_log %s/access.log\n" % tmp_path)
    r = run(["-c", str(conf), "-t"])
    assert r.returncode == 0 and r.stdout == "configuration ok\n", r
    assert (tmp_path / "access.log").exists()


def test_hup_refuses_what_only_opening_can_check(daemon_factory, tmp_path):
    """A reload whose access_log cannot be opened, or whose signature_dir
    is not there, is refused with file:line, and the workers stay."""
    import signal
    from conftest import wait_for
    d = daemon_factory(workers=1)
    workers = sorted(d.workers())
    good = open(d.conf).read()
    n = good.count("\n")
    for extra, what in (("access_log %s/no/dir/a.log\n" % tmp_path, "access_log"),
                        ("scanner builtin\nsignature_dir %s/none\n" % tmp_path, "signature_dir")):
        with open(d.conf, "w") as f:
            f.write(good.replace("scanner off\n", "") + extra)
        line = n - 1 + extra.count("\n")  # "scanner off" went; the extra lines follow
        d.signal(signal.SIGHUP)
        wait_for(lambda: "reload failed: %s:%d: %s " % (d.conf, line, what) in d.logs(),
                 what="the refused reload (%s)" % what)
        assert sorted(d.workers()) == workers
    # A listen host that does not resolve (bound only when the reload
    # applies): named by file:line too (it was not; an audit found it).
    with open(d.conf, "w") as f:
        f.write(good + "listen_ws nosuchhost.invalid:1\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: "%s:%d: cannot listen on nosuchhost.invalid:1 (listen_ws): the host name "
             "does not resolve" % (d.conf, n + 1) in d.logs(), what="the refused reload (listen)")
    assert sorted(d.workers()) == workers


def test_t_and_start_refuse_a_listen_host_that_does_not_resolve(tmp_path):
    """A named listen host is resolved when the file is read: -t fails with
    file:line (it said "configuration ok" before, and the start then failed
    with no line and two causes); a name that resolves passes."""
    conf = tmp_path / "c.conf"
    base = ("scanner off\npid_file %s/p.pid\nspool_dir %s/s\naccept_dir %s/a\n"
            "quarantine_dir %s/q\n" % (tmp_path, tmp_path, tmp_path, tmp_path))
    conf.write_text(base + "listen_tcp 127.0.0.1:%d\nlisten_ws nosuchhost.invalid:%d\n"
                    % (free_port(), free_port()))
    for args in (["-t"], []):
        r = run(["-c", str(conf)] + args)
        assert r.returncode == 1, r
        assert ("%s:7: cannot listen on \"nosuchhost.invalid:" % conf) in r.stderr, r.stderr
        assert "the host name does not resolve" in r.stderr
    # Checked on what -o leaves, not while reading: an override replaces the
    # line, and -s never waits for a resolver.
    r = run(["-c", str(conf), "-t", "-o", "listen_ws=127.0.0.1:%d" % free_port()])
    assert r.returncode == 0 and r.stdout == "configuration ok\n", r
    r = run(["-c", str(conf), "-s", "reload"])
    assert "does not resolve" not in r.stderr and "no pid file" in r.stderr, r
    conf.write_text(base + "listen_tcp localhost:%d\nlisten_ws 127.0.0.1:%d\n"
                    % (free_port(), free_port()))
    r = run(["-c", str(conf), "-t"])
    assert r.returncode == 0 and r.stdout == "configuration ok\n", r


def test_t_refuses_a_file_where_a_directory_goes(tmp_path):
    """accept_dir (or spool_dir, quarantine_dir) naming a regular file: -t
    says so (it said "configuration ok", and the start then failed)."""
    conf = tmp_path / "c.conf"
    (tmp_path / "a-file").write_text("x")
    conf.write_text("scanner off\nlisten_tcp 127.0.0.1:%d\nlisten_ws 127.0.0.1:%d\n"
                    "pid_file %s/p.pid\nspool_dir %s/s\naccept_dir %s/a-file\nquarantine_dir %s/q\n"
                    % (free_port(), free_port(), tmp_path, tmp_path, tmp_path, tmp_path))
    r = run(["-c", str(conf), "-t"])
    assert r.returncode == 1, r
    assert "accept_dir %s/a-file: not a directory" % tmp_path in r.stderr, r.stderr
