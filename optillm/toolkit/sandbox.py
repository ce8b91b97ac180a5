"""Run untrusted Python (model-written code) in a separate, limited process.

``run_python(code, timeout=10.0, memory_mb=512, stdin=None, max_output_bytes=64_000,
allow_network=False) -> SandboxResult`` is shared by every approach and plugin that executes
code (``z3``, ``executecode``, ``coc``). The program runs as ``python -I -B`` (isolated: no
``PYTHON*`` variables, no user site, no script directory on ``sys.path``; site-packages stay, so
``z3`` and ``sympy`` import) under these layers, outermost first:

- a separate process in its own session, killed as a whole process group at the wall-clock
  limit (``timed_out``);
- a fresh temporary directory (deleted afterwards): the program's cwd, ``HOME`` and ``TMPDIR``
  live in ``<root>/work``; the environment is minimal, so nothing of the proxy's (API keys)
  reaches it;
- resource limits set in the child before the program starts: ``RLIMIT_AS`` (``memory_mb``),
  ``RLIMIT_CPU`` (the timeout, rounded up, plus one second), ``RLIMIT_FSIZE`` (``FILE_LIMIT``
  bytes per file), ``RLIMIT_NOFILE`` (``OPEN_FILES``), ``RLIMIT_CORE`` 0;
- a new, empty network namespace (``unshare(CLONE_NEWNET)``) where the platform allows it (as
  root on Linux), so not even C code gets a network; elsewhere the audit hook alone refuses it;
- an audit hook (``sys.addaudithook``; it cannot be removed) installed before the program,
  from a namespace the program cannot reach. It refuses: sockets' connect/bind/sendto/sendmsg
  and name resolution (unless ``allow_network``); spawning processes (``subprocess``,
  ``os.system``, ``os.exec*``, ``os.posix_spawn``, ``os.fork``, signals to other processes);
  writing, creating, removing, renaming or changing files outside the work directory (paths
  are resolved through symlinks with ``lstat``/``readlink``; creating links is refused);
  ``os.open`` outside it (its ``dir_fd`` cannot be checked); reading other processes' ``/proc``
  entries (the parent's environment); raising resource limits; tracing and ``gc`` walks that
  could reach the hook; ``ctypes`` symbols that spawn, connect, open or switch these off.

The audit hook is a tripwire for Python-level operations; the process boundary, the limits
and the network namespace are what hold against native code. Stdout and stderr go to files
outside the work directory and are returned capped at ``max_output_bytes`` each, decoded
with ``errors="replace"``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

#: Largest file the program may write (bytes), its own output included.
FILE_LIMIT = 16 * 1024 * 1024
#: Most file descriptors the program may hold open.
OPEN_FILES = 256


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did.

    Attributes:
        stdout, stderr: the program's output (each capped at ``max_output_bytes``; a cut is
            marked with a trailing ``[output truncated ...]`` line).
        returncode: the exit status; negative: killed by that signal; -1: never started.
        timed_out: the wall-clock limit was reached and the process group was killed.
        error: a one-line reason when the run failed (the exception line, the limit hit),
            else None.
        duration_s: wall-clock seconds.
    """

    stdout: str
    stderr: str
    returncode: int
    timed_out: bool
    error: str | None
    duration_s: float

    @property
    def ok(self) -> bool:
        """True when the program exited with status 0 within the limits."""
        return self.returncode == 0 and not self.timed_out


def run_python(code: str, *, timeout: float = 10.0, memory_mb: int = 512,
               stdin: str | None = None, max_output_bytes: int = 64_000,
               allow_network: bool = False) -> SandboxResult:
    """Run ``code`` as a Python program in the sandbox (see the module docstring).

    ``timeout`` is wall-clock seconds (> 0), ``memory_mb`` the address-space limit in MiB
    (>= 32), ``stdin`` the program's standard input (empty when None), ``max_output_bytes``
    the cap on each of stdout and stderr.

    Never raises for anything the program does; a failure to start the interpreter is
    reported as ``returncode=-1`` with ``error``.

    Raises:
        ValueError: a limit is out of range.
    """
    if not timeout > 0:
        raise ValueError("timeout must be positive")
    if memory_mb < 32:
        raise ValueError("memory_mb must be at least 32")
    if max_output_bytes < 1:
        raise ValueError("max_output_bytes must be positive")
    root = os.path.realpath(tempfile.mkdtemp(prefix="optillm-sandbox-"))
    try:
        return _run(root, code, timeout, memory_mb, stdin, max_output_bytes, allow_network)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(root: str, code: str, timeout: float, memory_mb: int, stdin: str | None,
         max_output_bytes: int, allow_network: bool) -> SandboxResult:
    work = os.path.join(root, "work")
    os.makedirs(os.path.join(work, "tmp"))
    paths = {name: os.path.join(root, name)
             for name in ("bootstrap.py", "program.py", "stdin", "stdout", "stderr")}
    with open(paths["bootstrap.py"], "w") as fh:
        fh.write(_BOOTSTRAP)
    with open(paths["program.py"], "w", encoding="utf-8", errors="surrogatepass") as fh:
        fh.write(code)
    with open(paths["stdin"], "w", encoding="utf-8", errors="replace") as fh:
        fh.write(stdin or "")
    config = {"work": work, "program": paths["program.py"],
              "memory": memory_mb * 1024 * 1024, "cpu": math.ceil(timeout) + 1,
              "fsize": FILE_LIMIT, "nofile": OPEN_FILES, "network": allow_network}
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work,
           "TMPDIR": os.path.join(work, "tmp"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    cmd = [sys.executable, "-I", "-B", "-X", "utf8", paths["bootstrap.py"], json.dumps(config)]
    start = time.monotonic()
    timed_out = False
    with open(paths["stdin"], "rb") as fin, open(paths["stdout"], "wb") as fout, \
            open(paths["stderr"], "wb") as ferr:
        try:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=fin, stdout=fout,
                                    stderr=ferr, close_fds=True, start_new_session=True)
        except OSError as exc:
            return SandboxResult("", "", -1, False, f"could not start Python: {exc}",
                                 time.monotonic() - start)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)  # also reaps anything the program left behind
            proc.wait()
    duration = time.monotonic() - start
    stdout = _read_capped(paths["stdout"], max_output_bytes)
    stderr = _read_capped(paths["stderr"], max_output_bytes)
    rc = proc.returncode
    return SandboxResult(stdout, stderr, rc, timed_out,
                         _reason(rc, timed_out, stderr, timeout), duration)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_capped(path: str, cap: int) -> str:
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        data = fh.read(cap)
    text = data.decode("utf-8", errors="replace")
    if size > cap:
        text += f"\n[output truncated: {size} bytes, first {cap} shown]"
    return text


def _reason(rc: int, timed_out: bool, stderr: str, timeout: float) -> str | None:
    if timed_out:
        return f"timed out after {timeout:g}s (killed)"
    if rc == 0:
        return None
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = {"SIGXCPU": " (CPU time limit)", "SIGKILL": " (killed)",
                "SIGSEGV": " (crashed, possibly out of memory)"}.get(name, "")
        return f"killed by {name}{hint}"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()
             and not ln.startswith("[output truncated")]
    if not lines:
        return f"exited with status {rc}"
    return lines[-1][:300]


# The child's entry point. Runs in a fresh interpreter; the hook is built in a private
# namespace (its own copy of the builtins, captured C functions only) so the program can
# neither reach it nor monkeypatch what it calls.
_BOOTSTRAP = r'''
import builtins, json, linecache, os, resource, signal, sys, traceback, types

HOOK = r"""
import posix
_lstat, _readlink, _getcwd, _getpid = posix.lstat, posix.readlink, posix.getcwd, posix.getpid
_S_IFMT, _S_IFLNK = 0o170000, 0o120000
_WRITE = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
_PATH_TYPES = (str, bytes)

def _text(p):
    if isinstance(p, str):
        return p
    if isinstance(p, bytes):
        return p.decode("utf-8", "surrogateescape")
    if type(p).__module__ == "pathlib" and type(p).__name__ in ("PosixPath", "PurePosixPath"):
        return str(p)
    return None

def _resolve(path):
    # realpath with captured C calls only; a missing tail is kept as written
    if not path.startswith("/"):
        path = _getcwd() + "/" + path
    todo = [c for c in path.split("/") if c][::-1]
    done = []
    hops = 0
    while todo:
        c = todo.pop()
        if c == ".":
            continue
        if c == "..":
            if done:
                done.pop()
            continue
        cur = "/" + "/".join(done + [c])
        try:
            st = _lstat(cur)
        except OSError:
            done.append(c)
            continue
        if (st.st_mode & _S_IFMT) == _S_IFLNK and hops < 40:
            hops += 1
            target = _readlink(cur)
            if not target.startswith("/") and done[:1] == ["proc"] and ":" in target:
                done.append(c)  # /proc/<pid>/fd/N -> "pipe:[...]": not a path
                continue
            if target.startswith("/"):
                done = []
            todo.extend([t for t in target.split("/") if t][::-1])
            continue
        done.append(c)
    return "/" + "/".join(done)

def install(work, network, addaudithook):
    mypid = str(_getpid())
    prefix = work.rstrip("/") + "/"

    def inside(p, allow_fd):
        if isinstance(p, int) and not isinstance(p, bool):
            return allow_fd
        t = _text(p)
        if t is None:
            return False
        r = _resolve(t)
        return r == work or r.startswith(prefix)

    def readable(p):
        t = _text(p)
        if t is None:
            return True
        parts = _resolve(t).split("/")
        if len(parts) > 2 and parts[1] == "proc":
            if parts[2].isdigit() and parts[2] != mypid:
                return False
        return True

    no_spawn = frozenset(("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
                          "os.spawn", "os.fork", "os.forkpty", "os.startfile", "pty.spawn",
                          "webbrowser.open", "os.killpg"))
    no_net = frozenset(("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
                        "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                        "socket.getnameinfo", "socket.gethostbyname_ex"))
    no_ever = frozenset(("resource.setrlimit", "resource.prlimit", "sys.settrace",
                         "sys.setprofile", "gc.get_objects", "gc.get_referrers",
                         "gc.get_referents", "os.symlink", "os.link", "sys._current_frames"))
    # event -> index of its dir_fd argument (None: it has none)
    first_path = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 2, "os.chmod": 2,
                  "os.chown": 3, "os.utime": 3, "os.chflags": None, "os.lchflags": None,
                  "os.setxattr": None, "os.removexattr": None, "shutil.rmtree": 1,
                  "shutil.chown": None, "shutil.make_archive": None}
    fd_ok = frozenset(("os.truncate",))
    second_path = frozenset(("shutil.copyfile", "shutil.copymode", "shutil.copystat",
                             "shutil.copytree", "shutil.move", "shutil.unpack_archive"))
    bad_symbols = ("system", "popen", "fork", "vfork", "clone", "clone3", "posix_spawn",
                   "posix_spawnp", "execv", "execve", "execvp", "execvpe", "execl", "execlp",
                   "execle", "fexecve", "socket", "connect", "bind", "sendto", "sendmsg",
                   "unshare", "setns", "ptrace", "syscall", "kill", "mount", "chroot",
                   "setrlimit", "prlimit", "prlimit64", "open", "open64", "openat",
                   "openat64", "creat", "fopen", "fopen64", "rename", "unlink", "remove",
                   "rmdir", "mkdir", "symlink", "link", "truncate", "chmod", "chown",
                   "dlopen", "getaddrinfo")

    def refuse(event):
        raise PermissionError("sandbox: " + event + " is not allowed")

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = ((isinstance(mode, str) and ("w" in mode or "a" in mode or "x" in mode
                                                  or "+" in mode))
                      or (isinstance(flags, int) and flags & _WRITE))
            if mode is None and not isinstance(path, int):
                if not inside(path, True) and _text(path) not in ("/dev/null",
                                                                   "/dev/urandom"):
                    refuse("os.open outside the work directory")
            elif writes and not inside(path, True):
                refuse("writing " + repr(path))
            elif not readable(path):
                refuse("reading another process's /proc entry")
        elif event in no_ever or event in no_spawn:
            refuse(event)
        elif event == "os.kill":
            if str(args[0]) != mypid:
                refuse("signalling another process")
        elif not network and event in no_net:
            refuse(event + " (no network)")
        elif event in first_path:
            i = first_path[event]
            if not inside(args[0], False) or (i is not None and len(args) > i
                                              and args[i] is not None and args[i] != -1):
                refuse(event + " outside the work directory")
        elif event in fd_ok:
            if not inside(args[0], True):
                refuse(event + " outside the work directory")
        elif event in second_path:
            if not inside(args[1], False):
                refuse(event + " outside the work directory")
        elif event == "os.rename":
            if not (inside(args[0], False) and inside(args[1], False)) \
                    or args[2] not in (None, -1) or args[3] not in (None, -1):
                refuse("os.rename outside the work directory")
        elif event == "import":
            if args[0] == "_posixsubprocess":
                refuse("importing _posixsubprocess")
        elif event == "ctypes.dlsym":
            name = args[1] if len(args) > 1 else None
            if isinstance(name, str) and (name in bad_symbols or name.startswith("_Py")
                                          or name.startswith("PySys_")
                                          or name.startswith("PyEval_Set")):
                refuse("ctypes symbol " + name)
        elif event == "ctypes.dlopen":
            if args[0] is not None and inside(args[0], False):
                refuse("loading a library from the work directory")

    addaudithook(hook)
"""


def _limits(cfg):
    for res, soft, hard in ((resource.RLIMIT_AS, cfg["memory"], cfg["memory"]),
                            (resource.RLIMIT_CPU, cfg["cpu"], cfg["cpu"] + 1),
                            (resource.RLIMIT_FSIZE, cfg["fsize"], cfg["fsize"]),
                            (resource.RLIMIT_NOFILE, cfg["nofile"], cfg["nofile"]),
                            (resource.RLIMIT_CORE, 0, 0)):
        try:
            resource.setrlimit(res, (soft, hard))
        except (ValueError, OSError):
            pass
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG


def _unshare_network():
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare(0x40000000) == 0  # CLONE_NEWNET
    except Exception:
        return False


def _refused(*args, **kwargs):
    raise PermissionError("sandbox: spawning processes is not allowed")


def _main():
    cfg = json.loads(sys.argv[1])
    sys.argv = ["<program>"]
    sys.dont_write_bytecode = True
    if not cfg["network"]:
        _unshare_network()
    _limits(cfg)
    with open(cfg["program"], encoding="utf-8", errors="surrogateescape") as fh:
        source = fh.read()
    linecache.cache["<program>"] = (len(source), None, source.splitlines(True), "<program>")
    stub = types.ModuleType("_posixsubprocess")
    stub.fork_exec = _refused  # subprocess imports it; the real one is never loaded
    sys.modules["_posixsubprocess"] = stub
    private = {"__builtins__": dict(vars(builtins)), "__name__": "_sandbox_hook"}
    exec(compile(HOOK, "<sandbox>", "exec"), private)
    private["install"](cfg["work"], cfg["network"], sys.addaudithook)
    del private
    main = types.ModuleType("__main__")
    main.__file__ = "<program>"
    sys.modules["__main__"] = main
    try:
        code = compile(source, "<program>", "exec")
    except SyntaxError:
        traceback.print_exc(limit=0)
        return 1
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        return 1
    return 0


if __name__ == "__main__":
    _rc = _main()
    sys.stdout.flush()
    sys.exit(_rc)
'''
