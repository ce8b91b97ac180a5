"""``optillm.toolkit.sandbox.run_python``: output capture, the limits (time, memory, output),
and the security layers (no network, no writes outside the work directory, no processes, no
secrets from the parent)."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from optillm.toolkit.sandbox import SandboxResult, run_python


def test_captures_stdout_stderr_and_returncode():
    r = run_python("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert isinstance(r, SandboxResult)
    assert (r.stdout, r.stderr, r.returncode, r.timed_out) == ("out\n", "err\n", 3, False)
    assert not r.ok and r.error == "err" and r.duration_s > 0
    ok = run_python("print(6 * 7)")
    assert ok.ok and ok.stdout == "42\n" and ok.error is None and ok.returncode == 0


def test_exception_gives_a_one_line_error_and_the_program_traceback():
    r = run_python("x = 1\nraise ValueError('bad value')")
    assert r.returncode == 1 and r.error == "ValueError: bad value"
    assert 'File "<program>", line 2' in r.stderr and "bootstrap" not in r.stderr
    syntax = run_python("def broken(:\n")
    assert not syntax.ok and syntax.error.startswith("SyntaxError")


def test_stdin_is_fed():
    assert run_python("import sys; print(sys.stdin.read()[::-1])", stdin="abc").stdout == "cba\n"
    assert run_python("import sys; print(repr(sys.stdin.read()))").stdout == "''\n"


def test_infinite_loop_is_killed_near_the_limit():
    start = time.monotonic()
    r = run_python("while True:\n    pass", timeout=1.0)
    elapsed = time.monotonic() - start
    assert r.timed_out and not r.ok and "timed out" in r.error
    assert 0.9 <= elapsed < 3.0


def test_sleeping_children_are_killed_with_the_group():
    r = run_python("import time\nprint('started', flush=True)\ntime.sleep(30)", timeout=0.8)
    assert r.timed_out and r.stdout == "started\n" and r.duration_s < 3


def test_two_gigabyte_allocation_fails_under_256_mb():
    r = run_python("buf = bytearray(2 * 1024 ** 3)\nprint('allocated')", memory_mb=256)
    assert not r.ok and "allocated" not in r.stdout
    assert r.error == "MemoryError"
    # the same program within the limit of a small allocation works
    assert run_python("buf = bytearray(10 * 1024 ** 2)\nprint(len(buf))",
                      memory_mb=256).stdout == "10485760\n"


def test_output_is_capped_and_decoded_with_replacement():
    r = run_python("print('x' * 100000)", max_output_bytes=1000)
    assert r.ok and r.stdout.startswith("x" * 1000)
    assert "[output truncated" in r.stdout and len(r.stdout) < 1100
    bad = run_python("import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end')")
    assert bad.stdout == "ok \ufffd\ufffd end"


@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.3)
    yield server
    server.close()


def _nobody_connected(server) -> bool:
    try:
        conn, _ = server.accept()
    except TimeoutError:
        return True
    conn.close()
    return False


def test_connecting_to_a_listening_socket_is_refused(listener):
    port = listener.getsockname()[1]
    code = (f"import socket\ns = socket.socket()\ns.settimeout(2)\n"
            f"s.connect(('127.0.0.1', {port}))\nprint('connected')")
    r = run_python(code)
    assert not r.ok and "connected" not in r.stdout
    assert "PermissionError" in r.error and "socket.connect" in r.error
    assert _nobody_connected(listener)
    for code in ("import socket; socket.getaddrinfo('example.com', 80)",
                 "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                 f".sendto(b'x', ('127.0.0.1', {port}))",
                 "import socket; socket.socket().bind(('127.0.0.1', 0))",
                 "import urllib.request; urllib.request.urlopen("
                 f"'http://127.0.0.1:{port}/', timeout=2)"):
        refused = run_python(code)
        assert not refused.ok and "PermissionError" in refused.stderr, code
    assert _nobody_connected(listener)


def test_allow_network_lets_the_connection_through(listener):
    port = listener.getsockname()[1]
    r = run_python(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), 2)\n"
                   f"print('connected')", allow_network=True)
    assert r.ok and r.stdout == "connected\n"
    conn, _ = listener.accept()
    conn.close()


def test_network_namespace_hides_the_hosts_interfaces():
    host = {name for _, name in socket.if_nameindex()}
    if host <= {"lo"} or os.geteuid() != 0:
        pytest.skip("needs root and a network interface besides lo")
    r = run_python("import socket; print(sorted(n for _, n in socket.if_nameindex()))")
    assert r.ok and r.stdout.strip() in ("['lo']", "[]")


def test_writing_outside_the_sandbox_fails_and_inside_works():
    target = f"/tmp/optillm-escape-{uuid.uuid4().hex}"
    for code in (f"open({target!r}, 'w').write('pwned')",
                 f"import pathlib; pathlib.Path({target!r}).write_text('pwned')",
                 f"import os; os.close(os.open({target!r}, os.O_CREAT | os.O_WRONLY))",
                 f"import shutil; open('a', 'w').write('x'); shutil.copy('a', {target!r})",
                 f"import os; os.mkdir({target!r})",
                 f"import os; os.symlink('/tmp', 'link'); open('link/{target[5:]}', 'w')",
                 f"import os; open('a', 'w').close(); os.rename('a', {target!r})"):
        r = run_python(code)
        assert not r.ok and "PermissionError" in r.error, code
        assert not os.path.exists(target), code
    inside = run_python("import os, pathlib\nopen('note.txt', 'w').write('hello')\n"
                        "os.mkdir('d'); pathlib.Path('d/x').write_text('y')\n"
                        "os.rename('d/x', 'd/z'); os.remove('d/z'); os.rmdir('d')\n"
                        "import tempfile\nwith tempfile.NamedTemporaryFile() as f:\n"
                        "    f.write(b'1')\nprint(open('note.txt').read(), os.listdir('.'))")
    assert inside.ok, inside.stderr
    assert inside.stdout.startswith("hello [")


def test_each_run_gets_a_fresh_directory_that_is_removed():
    first = run_python("import os\nopen('left.txt', 'w').write('x')\nprint(os.getcwd())")
    cwd = first.stdout.strip()
    assert first.ok and not os.path.exists(cwd)
    second = run_python("import os; print(os.path.exists('left.txt'), os.getcwd())")
    assert second.stdout.split()[0] == "False" and second.stdout.split()[1] != cwd


def test_spawning_processes_is_refused():
    for code in ("import subprocess; subprocess.run(['true'])",
                 "import os; os.system('true')",
                 "import os; os.execv('/bin/true', ['true'])",
                 "import os; os.fork()",
                 "import os; os.posix_spawn('/bin/true', ['true'], {})",
                 "import multiprocessing; p = multiprocessing.Process(target=print); p.start()",
                 "import ctypes; ctypes.CDLL(None).system(b'true')",
                 "import os, signal; os.kill(os.getppid(), signal.SIGTERM)"):
        r = run_python(code)
        assert not r.ok and "PermissionError" in r.error, (code, r.stderr)


def test_limits_cannot_be_raised():
    r = run_python("import resource\n"
                   "resource.setrlimit(resource.RLIMIT_AS, (-1, -1))")
    assert not r.ok and "resource.setrlimit" in r.error


def test_parent_secret_is_not_visible(monkeypatch):
    monkeypatch.setenv("OPTILLM_TEST_SECRET", "sk-very-secret-value")
    r = run_python("import os\nprint(sorted(os.environ))\n"
                   "print(os.environ.get('OPTILLM_TEST_SECRET'))")
    assert r.ok and "sk-very-secret-value" not in r.stdout
    assert r.stdout.splitlines()[1] == "None"
    assert set(eval(r.stdout.splitlines()[0])) == {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL"}
    # nor through /proc (the parent's environment), directly or through a symlink
    for path in (f"/proc/{os.getpid()}/environ", "/proc/self/../{ppid}/environ",
                 "/dev/fd/../../{ppid}/environ"):
        code = (f"import os\nppid = os.getppid()\n"
                f"print(open({path!r}.format(ppid=ppid), 'rb').read())")
        leak = run_python(code)
        assert not leak.ok and "sk-very-secret-value" not in leak.stdout, path
    own = run_python("print(len(open('/proc/self/status').read()) > 0)")
    assert own.stdout == "True\n"


def test_z3_and_sympy_run():
    r = run_python("from z3 import Int, Solver, sat\nx, y = Int('x'), Int('y')\n"
                   "s = Solver()\ns.add(x + y == 10, x - y == 2)\nassert s.check() == sat\n"
                   "m = s.model()\nprint(m[x], m[y])")
    assert r.ok, r.stderr
    assert r.stdout == "6 4\n"
    r = run_python("import sympy\nx = sympy.Symbol('x')\nprint(sympy.solve(x**2 - 4, x))")
    assert r.ok, r.stderr
    assert r.stdout == "[-2, 2]\n"


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError):
        run_python("print(1)", timeout=0)
    with pytest.raises(ValueError):
        run_python("print(1)", memory_mb=1)


def test_the_child_is_a_module_outside_the_traceback_and_its_hook_out_of_reach(tmp_path):
    import optillm.toolkit.sandbox_child as child

    assert callable(child.main) and callable(child.install)  # a real, importable module
    r = run_python("raise ValueError('x')")
    assert "sandbox_child" not in r.stderr and 'File "<program>", line 1' in r.stderr
    # the program reaches the child's module through frames; patching it changes nothing:
    # the installed hook is a private copy
    target = tmp_path / f"escape-{uuid.uuid4().hex}"
    r = run_python(
        "import os, sys\n"
        "work = os.getcwd()\n"
        "g = sys._getframe(0).f_back.f_globals\n"
        "assert 'install' in g\n"
        "g['_resolve'] = lambda p: work  # every path 'inside' the work directory\n"
        f"open({str(target)!r}, 'w').write('x')\n")
    assert not r.ok and "PermissionError" in (r.error or "")
    assert not target.exists()
