"""The gateway end to end: gunicorn (two workers) with a ``--config`` of model groups in front of
stub upstreams (``scripts/stub_upstream.py`` subprocesses), once over the on-disk store and
once over a real Redis.

- One cache for both workers: after one miss, the same deterministic request is a hit on
  fresh connections until both workers have served a hit, and the stub saw one call.
- The Responses API through the official SDK (``client.responses.create``): string input,
  ``previous_response_id`` chaining (possibly across workers: the conversation is in the
  shared store), ``stream=True`` semantic events.
- Failover: three endpoints, one failing half of its calls with a 500: no request lost.
- ``GET /stats`` and ``GET /metrics`` (parsed with ``prometheus_client.parser``) after it.

No model runs here; the stubs answer at once.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from ..redis_fixture import redis_url  # noqa: F401 - the fixture
from .conftest import ROOT, free_port, stop_process, wait_healthy

pytestmark = pytest.mark.e2e


def _load_stub_module():
    """``scripts/stub_upstream.py`` (standard library only; scripts/ is not a package)."""
    path = ROOT / "scripts" / "stub_upstream.py"
    spec = importlib.util.spec_from_file_location("optillm_test_stub_upstream", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


stub_upstream = _load_stub_module()
WORKERS = 2
CACHED, ROUTED = "cached-model", "routed-model"


@pytest.fixture(scope="module")
def stubs():
    handles = [stub_upstream.start_subprocess() for _ in range(3)]
    yield handles
    for h in handles:
        h.stop()


def write_config(path, stubs, store_line: str) -> None:
    ep = "    - {{base_url: '{}', model: stub-model, weight: 1, name: {}}}\n"
    path.write_text(
        "model_groups:\n"
        f"  {CACHED}:\n" + ep.format(stubs[0].url, "cache-ep") +
        f"  {ROUTED}:\n" + "".join(ep.format(s.url, f"ep{i}") for i, s in enumerate(stubs)) +
        "general_settings:\n  retries: 2\n  allowed_fails: 3\n  cooldown_time: 2\n"
        f"  cache_ttl: 600\n  {store_line}\n")


class Gateway:
    def __init__(self, proc, port):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="sk-test", max_retries=0,
                             timeout=30.0)


@pytest.fixture(scope="module", params=["disk", "redis"])
def gateway(request, stubs, tmp_path_factory):
    work = tmp_path_factory.mktemp(f"gateway-{request.param}")
    if request.param == "redis":
        store_line = f"redis_url: '{request.getfixturevalue('redis_url')}'"
        import redis

        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        client.flushdb()
        client.close()
    else:
        store_line = f"cache_dir: '{work / 'store'}'"
    config = work / "optillm.yaml"
    write_config(config, stubs, store_line)
    port = free_port()
    output = work / "gunicorn.out"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPTILLM_", "OPENAI_", "AZURE_"))}
    env.update(OPTILLM_CONFIG=str(config), OPTILLM_LOG="warning", PYTHONUNBUFFERED="1",
               NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    cmd = [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-k", "gthread",
           "--threads", "4", "-b", f"127.0.0.1:{port}", "optillm.app:create_app()"]
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    wait_healthy(f"http://127.0.0.1:{port}", proc, output, timeout=60.0)
    yield Gateway(proc, port)
    stop_process(proc)


def post_then_stats(gateway: Gateway, body: dict) -> tuple[int, str, dict, int]:
    """On one fresh keep-alive connection (so one worker): the chat request, then that
    worker's ``/stats``. Returns (status, X-Optillm-Cache, the answer, the worker's pid)."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        state = resp.getheader("X-Optillm-Cache")
        conn.request("GET", "/stats")
        stats = json.loads(conn.getresponse().read())
        return resp.status, state, answer, stats["pid"]
    finally:
        conn.close()


def test_both_workers_share_one_cache(gateway, stubs):
    """A miss on one worker, then a hit on the other: the first worker is paused (SIGSTOP) for
    the second request, so the kernel must hand that connection to the other worker."""
    stubs[0].reset()
    body = {"model": CACHED, "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "user", "content": f"cache test {gateway.port}"}]}
    status, state, first, first_pid = post_then_stats(gateway, body)
    assert (status, state) == (200, "miss")
    os.kill(first_pid, signal.SIGSTOP)
    try:
        status, state, answer, other_pid = post_then_stats(gateway, body)
    finally:
        os.kill(first_pid, signal.SIGCONT)
    assert other_pid != first_pid
    assert (status, state) == (200, "hit") and answer == first
    status, state, answer, _ = post_then_stats(gateway, body)
    assert (status, state) == (200, "hit") and answer == first
    assert stubs[0].stats()["chat_calls"] == 1


def test_responses_api_through_the_sdk(gateway):
    sdk = gateway.sdk()
    first = sdk.responses.create(model=CACHED, input="Say something.", max_output_tokens=16)
    assert first.status == "completed"
    assert first.output_text == stub_upstream.REPLY_TEXT
    second = sdk.responses.create(model=CACHED, input="And again?", max_output_tokens=16,
                                  previous_response_id=first.id)
    assert second.output_text == stub_upstream.REPLY_TEXT
    # the second call carried the first turn (question and answer) upstream
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert sdk.responses.retrieve(first.id).id == first.id
    over_approach = sdk.responses.create(model=f"re2-{CACHED}", input="Think twice.",
                                         max_output_tokens=16)
    assert over_approach.output_text == stub_upstream.REPLY_TEXT
    events = list(sdk.responses.create(model=CACHED, input="Stream it.", max_output_tokens=16,
                                       stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text == stub_upstream.REPLY_TEXT
    sdk.close()


def test_failover_loses_no_request_and_stats_show_it(gateway, stubs):
    for s in stubs:
        s.reset()
    stubs[2].fail("500", every=2)
    sdk = gateway.sdk()
    try:
        def ask(i: int) -> str:
            r = sdk.chat.completions.create(model=ROUTED, max_tokens=8, temperature=0.7,
                                            messages=[{"role": "user", "content": f"q {i}"}])
            return r.choices[0].message.content

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(ask, range(60)))
    finally:
        stubs[2].fail("ok")
        sdk.close()
    assert answers == [stub_upstream.REPLY_TEXT] * 60
    seen = [s.stats() for s in stubs]
    faults = seen[2]["faults"]
    assert faults >= 1
    assert sum(s["chat_calls"] for s in seen) == 60 + faults  # each fault was retried
    # /stats of whichever worker answers: the routed group's endpoints and their counts
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.request("GET", "/stats")
    stats = json.loads(conn.getresponse().read())
    endpoints = {e["name"]: e for e in stats["model_groups"][ROUTED]}
    assert set(endpoints) == {"ep0", "ep1", "ep2"}
    assert sum(e["requests"] for e in endpoints.values()) > 0
    assert all(e["failures"] == 0 for n, e in endpoints.items() if n != "ep2")
    assert stats["cache"]["backend"] in ("disk", "redis")
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/plain")
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = [s for s in families["optillm_gateway_requests"].samples
                if s.name.endswith("_total")]
    assert {s.labels["endpoint"] for s in requests} >= {"ep0", "ep1", "ep2"}
    assert sum(s.value for s in requests) > 0
    assert "optillm_gateway_latency_seconds" in families
