"""gunicorn workers share one embedded model.

The server under test is ``gunicorn -w 2 -k gthread --threads 8 'optillm.app:create_app()'``.

No upstream is configured, so each worker's ``create_app()`` calls ``LocalModel.acquire()``;
the first starts the supervisor and ``llama-server``, the second must attach to it through the
state file rather than start its own. ``OPTILLM_LOCAL_SLOTS=2`` gives this server a model key
of its own, apart from the session proxy's. Which worker served a request is not observable
from outside, so sharing is checked where it shows: the state file and the process table.

The tests run in file order on one module-scoped server; the last one stops it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from optillm.settings import Settings

from .conftest import (
    API_KEY,
    MODEL,
    ROOT,
    children,
    clean_env,
    cmdline,
    free_port,
    is_running,
    llama_servers,
    proc_stat,
    read_state,
    state_path,
    stop_process,
    supervisors,
    wait_gone,
    wait_healthy,
    wait_until,
)

pytestmark = pytest.mark.e2e

SLOTS = 2
WORKERS = 2


class Gunicorn:
    """The gunicorn master we started, and where its model's state lives."""

    def __init__(self, proc: subprocess.Popen, port: int, state_file):
        self.proc = proc
        self.port = port
        self.state_file = state_file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def workers(self) -> list[int]:
        return sorted(p for p in children(self.proc.pid) if "gunicorn" in " ".join(cmdline(p)))

    def state(self) -> dict:
        return read_state(self.state_file)


@pytest.fixture(scope="module")
def gunicorn(runtime_dir, tmp_path_factory):
    assert SLOTS != Settings().local_slots  # a model key apart from the session proxy's
    port = free_port()
    output = tmp_path_factory.mktemp("gunicorn") / "gunicorn.out"
    cmd = [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-k", "gthread",
           "--threads", "8", "-b", f"127.0.0.1:{port}", "optillm.app:create_app()"]
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT,
                                env=clean_env(runtime_dir, OPTILLM_LOCAL_SLOTS=str(SLOTS)))
    server = Gunicorn(proc, port, state_path(runtime_dir, SLOTS))
    wait_healthy(server.url, proc, output)
    # /health answers as soon as one worker is up; wait for both to attach
    wait_until(lambda: len(server.state().get("users", [])) == WORKERS, 60.0)
    state = server.state()
    yield server
    stop_process(proc)
    left = wait_gone([p for p in (state.get("pid"),) if p] + llama_servers(state.get("port", -1)),
                     15.0)
    for pid in left:  # a failed test must not leak a model server
        os.kill(pid, signal.SIGKILL)


def test_workers_share_one_llama_server(gunicorn):
    workers = gunicorn.workers()
    assert len(workers) == WORKERS
    state = gunicorn.state()
    assert sorted(state["users"]) == workers  # both workers attached, neither started its own
    assert supervisors(str(gunicorn.state_file)) == [state["pid"]]
    servers = llama_servers(state["port"])
    assert len(servers) == 1 and proc_stat(servers[0])[1] == state["pid"]
    # one worker started the supervisor (its parent); no worker runs a server itself
    assert proc_stat(state["pid"])[1] in workers
    spawned = [cmdline(p)[:1] for w in workers for p in children(w)]
    assert not any(args and args[0].endswith("llama-server") for args in spawned)


def test_concurrent_requests_all_succeed(gunicorn):
    before = gunicorn.state()
    client = openai.OpenAI(base_url=f"{gunicorn.url}/v1", api_key=API_KEY, max_retries=0,
                           timeout=180.0)
    models = [MODEL, f"re2-{MODEL}"] * 4  # the byte passthrough and the typed path

    def ask(i: int):
        return client.chat.completions.create(
            model=models[i], max_tokens=16,
            messages=[{"role": "user", "content": f"Count from {i} to {i + 5}."}])

    with ThreadPoolExecutor(len(models)) as pool:
        results = list(pool.map(ask, range(len(models))))
    client.close()
    assert len(results) == 8
    for completion in results:
        assert len(completion.choices) == 1
        assert completion.choices[0].message.content.strip()
        usage = completion.usage
        assert 0 < usage.completion_tokens <= 16
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    after = gunicorn.state()  # still the one server, with the same two users
    assert (after["pid"], after["port"]) == (before["pid"], before["port"])
    assert sorted(after["users"]) == gunicorn.workers()
    assert len(llama_servers(after["port"])) == 1


def test_sigterm_stops_the_shared_llama_server(gunicorn):
    state = gunicorn.state()
    servers = llama_servers(state["port"])
    assert is_running(state["pid"]) and len(servers) == 1
    assert stop_process(gunicorn.proc, signal.SIGTERM, timeout=30.0) == 0
    assert wait_gone([state["pid"], *servers], 15.0) == []
    assert not gunicorn.state_file.exists()
