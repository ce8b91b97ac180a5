"""The ``optillm`` command as served (gunicorn: gthread workers, gevent too) over the stub.

No model starts here (``scripts/stub_upstream.py`` is the upstream), so these tests need no
lock. They check what only a real server shows: metrics summed over two workers and kept when
a worker dies, readiness following the upstream, the request id from the client to the access
log and the conversation log, JSON logs, and approach fan-out and streaming under gevent.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import stub_upstream  # noqa: E402

from .conftest import children, free_port, wait_until  # noqa: E402


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPTILLM_", "OPENAI_", "AZURE_", "PROMETHEUS_"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(OPENAI_API_KEY="sk-test", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1", **extra)
    return env


class Served:
    def __init__(self, proc: subprocess.Popen, port: int, output: Path):
        self.proc, self.port, self.output = proc, port, output

    def request(self, method: str, path: str, body: dict | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection (so gunicorn may hand it to either worker)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, data, {"Content-Type": "application/json",
                                              "Connection": "close", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def chat(self, model: str = "stub-model", headers: dict[str, str] | None = None,
             **extra) -> tuple[int, dict[str, str], bytes]:
        return self.request("POST", "/v1/chat/completions",
                            {"model": model, "messages": [{"role": "user", "content": "hi"}],
                             **extra}, headers)

    def metrics(self) -> str:
        return self.request("GET", "/metrics")[2].decode()

    def workers(self) -> list[int]:
        return sorted(children(self.proc.pid))

    def log(self) -> str:
        return self.output.read_text(errors="replace")


def start(stub_url: str, tmp_path: Path, *flags: str, **env: str) -> Served:
    port = free_port()
    output = tmp_path / f"optillm-{port}.out"
    cmd = [sys.executable, "-m", "optillm", "--base-url", stub_url, "--port", str(port), *flags]
    with open(output, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(**env), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    served = Served(proc, port, output)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"optillm exited {proc.returncode}:\n{served.log()[-3000:]}")
        try:
            return served.request("GET", "/health")[0] == 200
        except OSError:
            return False

    assert wait_until(healthy, 30)
    return served


def stop(served: Served) -> None:
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGTERM)
        try:
            served.proc.wait(20)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            served.proc.wait()


def total(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture
def stub():
    handle = stub_upstream.start_subprocess(latency_ms=20)
    yield handle
    handle.stop()


def test_metrics_sum_over_two_workers_and_survive_a_dead_one(stub, tmp_path):
    metrics_dir = tmp_path / "metrics"
    served = start(stub.url, tmp_path, "--workers", "2",
                   PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    try:
        assert wait_until(lambda: len(served.workers()) == 2, 20)
        for _ in range(30):
            assert served.chat()[0] == 200
        db_pids = {p.stem.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}
        assert len(db_pids) == 2, db_pids  # both workers served and wrote their own files
        for _ in range(4):  # whichever worker answers the scrape sums both
            text = served.metrics()
            assert total(text, "optillm_requests_total", approach="none", status="200") == 30
            assert total(text, "optillm_upstream_calls_total", call="forward",
                         outcome="ok") == 30
            assert total(text, "optillm_upstream_tokens_total", kind="completion") > 0
        victim = served.workers()[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: victim not in served.workers() and len(served.workers()) == 2, 20)
        for _ in range(10):
            assert served.chat()[0] == 200
        for _ in range(4):
            text = served.metrics()
            assert total(text, "optillm_requests_total", approach="none", status="200") == 40
    finally:
        stop(served)
    assert served.proc.returncode == 0, served.log()[-2000:]


def test_cli_metrics_folder_is_removed_at_exit(stub, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    served = start(stub.url, tmp_path, TMPDIR=str(scratch))  # the CLI's mkdtemp goes there
    try:
        assert served.chat()[0] == 200
        folders = list(scratch.glob("optillm-metrics-*"))
        assert len(folders) == 1 and list(folders[0].glob("counter_*.db"))
    finally:
        stop(served)
    assert not folders[0].exists()


def test_readiness_follows_the_upstream(tmp_path):
    stub = stub_upstream.start_subprocess()
    served = start(stub.url, tmp_path, "--optillm-api-key", "proxy-key")
    try:
        status, _, body = served.request("GET", "/health/readiness")
        assert status == 200 and json.loads(body)["status"] == "ready"
        stub.stop()
        status, _, body = served.request("GET", "/health/readiness")
        assert status == 503
        error = json.loads(body)["error"]
        assert error["code"] == "not_ready" and "unreachable" in error["message"]
        assert served.request("GET", "/health")[0] == 200  # still alive
    finally:
        stop(served)
        stub.stop()


def test_request_id_reaches_the_access_log_and_conversation_log(stub, tmp_path):
    logs = tmp_path / "conversations"
    served = start(stub.url, tmp_path, "--log-conversations", "--conversation-log-dir",
                   str(logs))
    try:
        status, headers, _ = served.request(
            "POST", "/v1/chat/completions",
            {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}]},
            {"X-Request-ID": "e2e-rid-1"})
        assert status == 200 and headers["x-request-id"] == "e2e-rid-1"
        status, headers, _ = served.chat()
        generated = headers["x-request-id"]
        assert status == 200 and generated.startswith("req-")
        assert wait_until(lambda: "rid=" + generated in served.log(), 10)
        assert '"POST /v1/chat/completions HTTP/1.1" 200' in served.log()
        assert "rid=e2e-rid-1" in served.log()

        def records() -> list[dict]:
            return [json.loads(line) for p in logs.glob("*.jsonl")
                    for line in p.read_text().splitlines() if line]

        assert wait_until(lambda: len(records()) >= 2, 10)
        assert {r["request_id"] for r in records()} == {"e2e-rid-1", generated}
    finally:
        stop(served)


def test_json_log_format(stub, tmp_path):
    served = start(stub.url, tmp_path, "--log-format", "json")
    try:
        assert served.chat(headers={"X-Request-ID": "json-rid"})[0] == 200
        assert wait_until(lambda: "json-rid" in served.log(), 10)
    finally:
        stop(served)
    lines = [line for line in served.log().splitlines() if line.startswith("{")]
    parsed = [json.loads(line) for line in lines]
    access = [p for p in parsed if p.get("logger") == "gunicorn.access"
              and p.get("path") == "/v1/chat/completions"]
    assert access and access[0]["request_id"] == "json-rid" and access[0]["status"] == 200
    assert access[0]["method"] == "POST" and access[0]["duration_ms"] > 0
    assert any(p.get("logger") == "gunicorn.error" for p in parsed)  # gunicorn's own lines
    others = [line for line in served.log().splitlines()
              if line.strip() and not line.startswith(("{", "optillm: listening"))]
    assert others == []  # every log line is a JSON object


@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_fan_out_and_streams_under_each_worker_class(tmp_path, worker_class):
    """bon's samples run concurrently on either worker (under gevent the executor's threads
    are greenlets), and both kinds of stream end with [DONE]."""
    stub = stub_upstream.start_subprocess(latency_ms=200)
    served = start(stub.url, tmp_path, "--worker-class", worker_class)
    try:
        assert f"1 {worker_class} worker" in served.log()
        stub.reset()
        started = time.monotonic()
        status, headers, body = served.chat("bon-stub-model")
        wall = time.monotonic() - started
        assert status == 200, body
        stats = stub.stats()
        assert stats["chat_calls"] >= 3 and stats["peak_active"] >= 2, stats
        assert wall < 0.2 * stats["chat_calls"]  # not one after another
        for model in ("stub-model", "moa-stub-model"):
            status, _, body = served.chat(model, stream=True)
            assert status == 200 and body.rstrip().endswith(b"data: [DONE]"), body[-300:]
    finally:
        stop(served)
        stub.stop()


def test_keep_alive_clients_are_served_back_to_back_and_after_idling(stub, tmp_path):
    """The gthread worker's thread waits briefly for a keep-alive client's next request
    (``optillm.serve.LINGER_MS``): back-to-back requests, one after the wait has passed (the
    connection went back to gunicorn's poller), and a stream all share one connection; and
    30 idle keep-alive connections hold no thread, so a new client is answered at once."""
    served = start(stub.url, tmp_path, "--max-parallel-calls", "4")
    body = json.dumps({"model": "stub-model",
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
        sockets = set()
        for pause in (0, 0, 0.1, 0, 0.3):
            time.sleep(pause)
            conn.request("POST", "/v1/chat/completions", body,
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["choices"]
            sockets.add(id(conn.sock))
        streamed = json.dumps({"model": "stub-model", "stream": True,
                               "messages": [{"role": "user", "content": "hi"}]}).encode()
        conn.request("POST", "/v1/chat/completions", streamed,
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read().rstrip().endswith(b"data: [DONE]")
        sockets.add(id(conn.sock))
        assert len(sockets) == 1  # never reconnected
        idle = []
        for _ in range(30):
            c = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
            c.request("GET", "/v1/models")
            assert c.getresponse().read()
            idle.append(c)
        start_time = time.monotonic()
        assert served.chat()[0] == 200
        assert time.monotonic() - start_time < 2.0
        for c in idle + [conn]:
            c.close()
    finally:
        stop(served)
