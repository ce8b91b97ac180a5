"""The sandbox's child program (see ``optillm.toolkit.sandbox`` for the layers).

``optillm.toolkit.sandbox.run_python`` runs this file by path as ``python -I -B -X utf8
<this file> '<config JSON>'``; it imports nothing of optillm, so the interpreter starts fast
and the program cannot reach the proxy's code. The config: ``work`` (the work directory),
``program`` (the program's file), ``memory`` (``RLIMIT_AS`` bytes), ``cpu`` (``RLIMIT_CPU``
seconds), ``fsize`` (``RLIMIT_FSIZE`` bytes), ``nofile`` (``RLIMIT_NOFILE``), ``network``
(bool).

In order, ``main`` leaves the network namespace (unless ``network``), sets the resource
limits, replaces ``_posixsubprocess`` with a stub that refuses, installs the audit hook, then
runs the program as ``__main__`` (file name ``<program>``); its traceback leaves this file's
frames out. Exit status: the program's, 1 for an uncaught exception or a syntax error.

The audit hook (``install`` and the helpers it calls) is built from a second copy of this
file, compiled into a private namespace with its own copy of the builtins: the program can
reach this module's functions through frames, but patching them (or the builtins) changes
nothing the installed hook calls. The hook calls only C functions captured before the program
starts (``posix.lstat``, ``posix.readlink``, ``posix.getcwd``).
"""

from __future__ import annotations

import builtins
import json
import linecache
import posix
import resource
import signal
import sys
import traceback
import types

# -- the audit hook (installed from a private copy, see the module docstring) ----------------

_lstat, _readlink, _getcwd, _getpid = posix.lstat, posix.readlink, posix.getcwd, posix.getpid
_S_IFMT, _S_IFLNK = 0o170000, 0o120000
_WRITE = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND


def _text(p):
    """A path argument as text; None for what is not a path (an fd, an unknown object)."""
    if isinstance(p, str):
        return p
    if isinstance(p, bytes):
        return p.decode("utf-8", "surrogateescape")
    if type(p).__module__ == "pathlib" and type(p).__name__ in ("PosixPath", "PurePosixPath"):
        return str(p)
    return None


def _resolve(path):
    """``os.path.realpath`` with captured C calls only; a missing tail is kept as written."""
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


def install(work: str, network: bool, addaudithook) -> None:
    """Install the audit hook through ``addaudithook`` (``sys.addaudithook``): writes inside
    ``work`` only, no spawning, no network unless ``network`` (see ``optillm.toolkit.sandbox``
    for the full list)."""
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


# -- the child's steps -----------------------------------------------------------------------


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


def _private_install():
    """``install`` from a fresh copy of this file in a namespace of its own (own builtins)."""
    with open(__file__, encoding="utf-8") as fh:
        source = fh.read()
    private = {"__builtins__": dict(vars(builtins)), "__name__": "_sandbox_hook"}
    exec(compile(source, "<sandbox>", "exec"), private)
    return private["install"]


def main() -> int:
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
    _private_install()(cfg["work"], cfg["network"], sys.addaudithook)
    module = types.ModuleType("__main__")
    module.__file__ = "<program>"
    sys.modules["__main__"] = module
    try:
        code = compile(source, "<program>", "exec")
    except SyntaxError:
        traceback.print_exc(limit=0)
        return 1
    try:
        exec(code, module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        return 1
    return 0


if __name__ == "__main__":
    _rc = main()
    sys.stdout.flush()
    sys.exit(_rc)
