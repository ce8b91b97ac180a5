"""Limits that hold across gunicorn workers: two workers, one model group whose only endpoint
(a ``scripts/stub_upstream.py`` subprocess) has ``rpm: 10``; 30 requests on fresh
connections (so both workers serve them). With Redis in ``general_settings`` the window is
shared and the stub sees at most 10 calls, the rest are 429s with ``Retry-After``; without it
each worker keeps its own window (at most 20 calls). No model runs here.
"""

from __future__ import annotations

import http.client
import json
import os
import sys

import pytest

from ..redis_fixture import redis_url  # noqa: F401 - the fixture
from .conftest import ROOT, free_port, stop_process, wait_healthy
from .test_gateway_e2e import stub_upstream

pytestmark = pytest.mark.e2e
WORKERS, RPM, REQUESTS = 2, 10, 30


@pytest.fixture(scope="module")
def stub():
    handle = stub_upstream.start_subprocess()
    yield handle
    handle.stop()


def start_gateway(work, stub, store_line: str):
    config = work / "optillm.yaml"
    config.write_text(
        "model_groups:\n  limited:\n"
        f"    - {{base_url: '{stub.url}', model: stub-model, name: only, rpm: {RPM}}}\n"
        f"general_settings:\n  retries: 0\n  cache_ttl: 0\n  {store_line}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPTILLM_", "OPENAI_", "AZURE_"))}
    env.update(OPTILLM_CONFIG=str(config), OPTILLM_LOG="warning", PYTHONUNBUFFERED="1",
               NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    cmd = [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-k", "gthread",
           "--threads", "4", "-b", f"127.0.0.1:{port}", "optillm.app:create_app()"]
    output = work / "gunicorn.out"
    with open(output, "wb") as out:
        proc = subprocess_popen(cmd, env, out)
    wait_healthy(f"http://127.0.0.1:{port}", proc, output, timeout=60.0)
    return proc, port


def subprocess_popen(cmd, env, out):
    import subprocess

    return subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, env=env)


def one_request(port: int) -> tuple[int, str | None, int]:
    """On a fresh connection: (status, Retry-After, the serving worker's pid)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(
            {"model": "limited", "messages": [{"role": "user", "content": "hi"}]}),
            {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        status, wait = resp.status, resp.getheader("Retry-After")
        conn.request("GET", "/stats")
        pid = json.loads(conn.getresponse().read())["pid"]
        return status, wait, pid
    finally:
        conn.close()


def run_requests(port: int) -> list[tuple[int, str | None, int]]:
    """``REQUESTS`` requests, half served by each worker: while one half goes, the other
    worker is paused (SIGSTOP), so the kernel hands every connection to the running one."""
    import signal

    results = [one_request(port)]
    first = results[0][2]
    half = REQUESTS // 2
    os.kill(first, signal.SIGSTOP)
    try:
        results += [one_request(port) for _ in range(half)]
    finally:
        os.kill(first, signal.SIGCONT)
    other = results[-1][2]
    os.kill(other, signal.SIGSTOP)
    try:
        results += [one_request(port) for _ in range(REQUESTS - half - 1)]
    finally:
        os.kill(other, signal.SIGCONT)
    return results


def test_rpm_holds_across_two_workers_with_redis(stub, redis_url, tmp_path):  # noqa: F811
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    stub.reset()
    proc, port = start_gateway(tmp_path, stub, f"redis_url: '{redis_url}'")
    try:
        results = run_requests(port)
    finally:
        stop_process(proc)
    hits = stub.stats()["chat_calls"]
    statuses = [s for s, _, _ in results]
    print(f"\nwith Redis: {REQUESTS} requests -> {hits} upstream hits, "
          f"{statuses.count(429)} x 429, workers {sorted({p for _, _, p in results})}")
    assert len({p for _, _, p in results}) == WORKERS  # both workers served
    assert hits <= RPM and statuses.count(200) == hits
    assert statuses.count(429) == REQUESTS - hits
    assert all(w is not None and int(w) >= 1 for s, w, _ in results if s == 429)


def test_without_redis_each_worker_keeps_its_own_window(stub, tmp_path):
    stub.reset()
    proc, port = start_gateway(tmp_path, stub, f"cache_dir: '{tmp_path / 'store'}'")
    try:
        results = run_requests(port)
    finally:
        stop_process(proc)
    hits = stub.stats()["chat_calls"]
    from collections import Counter

    served = Counter(p for s, _, p in results if s == 200)
    print(f"\nwithout Redis: {REQUESTS} requests -> {hits} upstream hits; served per worker "
          f"{dict(served)}, {dict(Counter(p for _, _, p in results))} requests per worker")
    assert all(n <= RPM for n in served.values())  # each worker's own window
    assert hits == RPM * WORKERS  # both windows filled: 2 x rpm reached the upstream
    assert [s for s, _, _ in results].count(200) == hits
