"""intaked -t, -V, -h and start-up refusals: errors name file:line."""
import subprocess

from conftest import INTAKED, free_port


def run(args, **kw):
    return subprocess.run([INTAKED] + args, capture_output=True, text=True, timeout=20, **kw)


def test_t_good(tmp_path):
    conf = tmp_path / "good.conf"
    conf.write_text("# comment\nworkers 2\nlisten_tcp 127.0.0.1:1234\nmax_file_size 10M\n")
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
    conf.write_text("workers 1\n")
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
