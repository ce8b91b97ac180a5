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
- an audit hook (``sys.addaudithook``; it cannot be removed) installed before the program by
  the child program (``optillm.toolkit.sandbox_child``), from a namespace the program cannot
  reach. It refuses: sockets' connect/bind/sendto/sendmsg
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
#: The child program (``sandbox_child.py``), run by path: it imports nothing of optillm.
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")


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
             for name in ("program.py", "stdin", "stdout", "stderr")}
    with open(paths["program.py"], "w", encoding="utf-8", errors="surrogatepass") as fh:
        fh.write(code)
    with open(paths["stdin"], "w", encoding="utf-8", errors="replace") as fh:
        fh.write(stdin or "")
    config = {"work": work, "program": paths["program.py"],
              "memory": memory_mb * 1024 * 1024, "cpu": math.ceil(timeout) + 1,
              "fsize": FILE_LIMIT, "nofile": OPEN_FILES, "network": allow_network}
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work,
           "TMPDIR": os.path.join(work, "tmp"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    cmd = [sys.executable, "-I", "-B", "-X", "utf8", CHILD, json.dumps(config)]
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
