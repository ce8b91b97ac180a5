"""End-to-end fixtures: the real proxy (``python -m optillm``) in front of the embedded model.

The session starts one proxy as a subprocess with no ``--base-url``, so it starts the embedded
``llama-server`` through ``optillm.upstream.local_model``; every test talks to it over HTTP with the
official ``openai`` SDK. All subprocesses get a private ``XDG_RUNTIME_DIR``, so the
local-model state files (``<runtime>/optillm/<key>.json``) and servers of this test session
never mix with those of other processes on the machine, and the tests can read them.

Also here: small ``/proc`` helpers to find, inspect and wait for the processes the proxy
started (the supervisor ``python -m optillm.upstream.local_model`` and its ``llama-server`` child).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from optillm.settings import Settings
from optillm.upstream.local_model import MODELS, LocalModel

ROOT = Path(__file__).resolve().parents[2]
PLUGINS_DIR = ROOT / "tests" / "plugins"
#: The fast end-to-end tests run on SmolLM2-135M (not the default Qwen2.5-Coder-0.5B, about 3x
#: slower per token), named explicitly: ``--local-model smollm2-135m``.
LOCAL_MODEL = "smollm2-135m"
MODEL = MODELS[LOCAL_MODEL].alias
START_TIMEOUT = 120.0
API_KEY = "sk-test"

#: Variables that would point the proxy at another upstream or change its settings.
_FOREIGN_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "AZURE_API_BASE", "AZURE_OPENAI_API_KEY",
                "AZURE_API_VERSION")


# -- processes (/proc) ---------------------------------------------------------------------

def proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, ppid)`` of a process, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited, unreaped process)."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def running_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and is_running(int(p))]


def children(ppid: int) -> list[int]:
    return [p for p in running_pids() if (proc_stat(p) or ("", -1))[1] == ppid]


def llama_servers(port: int) -> list[int]:
    """Running ``llama-server`` processes serving ``port``."""
    found = []
    for pid in running_pids():
        args = cmdline(pid)
        if args and os.path.basename(args[0]) == "llama-server" and "--port" in args \
                and args[args.index("--port") + 1] == str(port):
            found.append(pid)
    return found


def supervisors(state_path: str) -> list[int]:
    """Running ``python -m optillm.upstream.local_model`` supervisors of the state file
    ``state_path``."""
    found = []
    for pid in running_pids():
        args = cmdline(pid)
        if "optillm.upstream.local_model" in args and "--state" in args \
                and args[args.index("--state") + 1] == state_path:
            found.append(pid)
    return found


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2):
    """Poll ``predicate`` until it returns a true value (returned) or ``timeout`` passes
    (returns its last, false, value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait for every pid to exit; returns those still running after ``timeout``."""
    wait_until(lambda: not any(is_running(p) for p in pids), timeout)
    return [p for p in pids if is_running(p)]


# -- starting servers ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(runtime_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for a proxy subprocess: no upstream configured, no stray ``OPTILLM_*``
    setting, a private runtime dir for the local-model state, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OPTILLM_") and k not in _FOREIGN_ENV}
    env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    env["OPTILLM_LOCAL_MODEL"] = LOCAL_MODEL  # also for the gunicorn tests' create_app()
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def http_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def wait_healthy(url: str, proc: subprocess.Popen, output: Path,
                 timeout: float = START_TIMEOUT) -> None:
    """Wait for ``GET {url}/health`` to answer 200; fails with the server's output if the
    process exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} at start:\n"
                        f"{output.read_text(errors='replace')[-4000:]}")
        try:
            status, body = http_json(f"{url}/health", timeout=2.0)
            if status == 200 and body.get("status") == "healthy":
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.3)
    stop_process(proc)
    pytest.fail(f"server not healthy after {timeout:.0f}s:\n"
                f"{output.read_text(errors='replace')[-4000:]}")


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM,
                 timeout: float = 20.0) -> int:
    """Send ``sig`` to a subprocess we started, wait for it (kill after ``timeout``);
    returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def state_path(runtime_dir: Path, slots: int, ctx_size: int | None = None) -> Path:
    """Where ``optillm.upstream.local_model`` keeps the state of the tests' model with these
    slots."""
    ctx = Settings().local_ctx_size if ctx_size is None else ctx_size
    return runtime_dir / "optillm" / f"{LocalModel(LOCAL_MODEL, slots, ctx).key}.json"


def read_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class Proxy:
    """A running ``python -m optillm`` subprocess."""

    proc: subprocess.Popen
    port: int
    runtime_dir: Path
    log_dir: Path | None
    output: Path
    slots: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_path(self) -> Path:
        return state_path(self.runtime_dir, self.slots)

    def state(self) -> dict:
        return read_state(self.state_path)

    def log_lines(self) -> list[dict]:
        """Every conversation-log record written so far, in file order."""
        out: list[dict] = []
        if self.log_dir is None or not self.log_dir.exists():
            return out
        for path in sorted(self.log_dir.glob("conversations_*.jsonl")):
            out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
        return out

    def log_records(self, marker: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        """The records whose ``client_request.user`` is ``marker``; waits until ``count`` of
        them are written (a streamed request's record is written after ``[DONE]``)."""
        def matching() -> list[dict]:
            return [r for r in self.log_lines()
                    if isinstance(r.get("client_request"), dict)
                    and r["client_request"].get("user") == marker]

        wait_until(lambda: len(matching()) >= count, timeout)
        return matching()


def start_proxy(runtime_dir: Path, output: Path, *, log_dir: Path | None = None,
                slots: int | None = None, plugins: bool = True) -> Proxy:
    """Start ``python -m optillm`` on a free port with the embedded model; waits for health."""
    port = free_port()
    cmd = [sys.executable, "-m", "optillm", "--port", str(port), "--local-model", LOCAL_MODEL]
    if plugins:
        cmd += ["--plugins-dir", str(PLUGINS_DIR)]
    if log_dir is not None:
        cmd += ["--log-conversations", "--conversation-log-dir", str(log_dir)]
    if slots is not None:
        cmd += ["--local-slots", str(slots)]
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(runtime_dir),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    proxy = Proxy(proc, port, runtime_dir, log_dir, output,
                  slots if slots is not None else Settings().local_slots)
    wait_healthy(proxy.url, proc, output)
    return proxy


def stop_proxy_and_model(proxy: Proxy, sig: int = signal.SIGTERM) -> None:
    """Stop a proxy we started; make sure the model server it started is gone too (killed,
    with a warning, if it outlives the proxy by 15 s, so a failing test leaks nothing)."""
    state = proxy.state()
    stop_process(proxy.proc, sig)
    pids = [p for p in (state.get("pid"),) if p] + llama_servers(state.get("port", -1))
    left = wait_gone(pids, 15.0)
    for pid in left:
        warnings.warn(f"process {pid} ({' '.join(cmdline(pid))[:80]}) outlived its proxy; "
                      f"killing it", stacklevel=1)
        os.kill(pid, signal.SIGKILL)


# -- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory) -> Path:
    """A private ``XDG_RUNTIME_DIR`` for every server this session starts."""
    return tmp_path_factory.mktemp("xdg-runtime")


@pytest.fixture(scope="session")
def proxy(runtime_dir, tmp_path_factory):
    """The proxy under test: embedded model, the test plugins, conversation logging on."""
    work = tmp_path_factory.mktemp("proxy")
    server = start_proxy(runtime_dir, work / "proxy.out", log_dir=work / "conversations")
    yield server
    stop_proxy_and_model(server)


@pytest.fixture(scope="session")
def proxy_url(proxy) -> str:
    return proxy.url


@pytest.fixture
def client(proxy_url) -> openai.OpenAI:
    """The official SDK pointed at the proxy (no retries, so every failure shows)."""
    sdk = openai.OpenAI(base_url=f"{proxy_url}/v1", api_key=API_KEY, max_retries=0,
                        timeout=180.0)
    yield sdk
    sdk.close()
