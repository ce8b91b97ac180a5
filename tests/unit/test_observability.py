"""Request ids, request-path metrics, readiness and structured logs (one process, Flask's
test client over the scripted fake upstream or a loopback stub)."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from optillm.web import request_context
from optillm.web.request_context import (
    HEADER,
    RequestIdFilter,
    configure_logging,
    valid_request_id,
)

from ..conftest import chat
from ..redis_fixture import redis_url  # noqa: F401 - the fixture

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import stub_upstream  # noqa: E402


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` whose labels include ``labels`` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                total += sample.value
    return total


# -- request ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("value,ok", [("abc-123", True), ("a.b:c_d-e", True), ("x" * 128, True),
                                      ("x" * 129, False), ("has space", False), ("", False),
                                      ("semi;colon", False), ("new\nline", False)])
def test_valid_request_id(value, ok):
    assert (valid_request_id(value) == value) is ok


def test_client_request_id_is_echoed_and_logged(make_app, tmp_path):
    app = make_app(log_conversations=True)
    client = app.test_client()
    resp = client.post("/v1/chat/completions", headers={HEADER: "client-id-7"},
                       json={"model": "fake-model", "messages": [{"role": "user",
                                                                  "content": "hi"}]})
    assert resp.status_code == 200
    assert resp.headers[HEADER] == "client-id-7"
    records = [json.loads(line) for path in (tmp_path / "logs").glob("*.jsonl")
               for line in path.read_text().splitlines()]
    assert [r["request_id"] for r in records] == ["client-id-7"]


def test_invalid_request_id_is_replaced(client):
    resp = client.get("/health", headers={HEADER: "<script>"})
    rid = resp.headers[HEADER]
    assert rid != "<script>" and rid.startswith("req-") and valid_request_id(rid)


def test_every_answer_has_a_request_id_even_errors(make_app):
    client = make_app(optillm_api_key="sekret").test_client()
    denied = client.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert denied.status_code == 401 and denied.headers[HEADER].startswith("req-")
    missing = client.get("/no/such/route", headers={"Authorization": "Bearer sekret"})
    assert missing.status_code == 404 and missing.headers[HEADER].startswith("req-")
    ids = {client.get("/health").headers[HEADER] for _ in range(3)}
    assert len(ids) == 3  # a new id per request


def test_generated_request_id_reaches_the_conversation_log(make_app, tmp_path):
    client = make_app(log_conversations=True).test_client()
    resp = chat(client)
    records = [json.loads(line) for path in (tmp_path / "logs").glob("*.jsonl")
               for line in path.read_text().splitlines()]
    assert records[0]["request_id"] == resp.headers[HEADER]


def test_log_lines_carry_the_request_id(make_app):
    app = make_app()
    seen: list[str] = []

    @app.get("/_test_log")
    def _log():
        record = logging.LogRecord("optillm", logging.INFO, __file__, 1, "hello", (), None)
        RequestIdFilter().filter(record)
        seen.append(record.request_id)
        return "ok"

    resp = app.test_client().get("/_test_log", headers={HEADER: "rid-in-logs"})
    assert resp.status_code == 200 and seen == ["rid-in-logs"]
    resp.close()  # as a server does once the body is sent: the id ends with the request
    outside = logging.LogRecord("optillm", logging.INFO, __file__, 1, "x", (), None)
    RequestIdFilter().filter(outside)
    assert outside.request_id == "-"


def test_approach_threads_see_the_request_id(make_app, fake):
    """bon's samples run on the executor's threads: their upstream calls carry the id."""
    client = make_app().test_client()
    resp = client.post("/v1/chat/completions", headers={HEADER: "fanout-id"},
                       json={"model": "bon-fake-model",
                             "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200
    assert len(fake.metas) >= 2 and {m.request_id for m in fake.metas} == {"fanout-id"}


# -- structured logs --------------------------------------------------------------------------


def test_json_log_format_is_one_object_per_line():
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        configure_logging("info", "json")
        handler = next(h for h in root.handlers if getattr(h, "_optillm", False))
        buffer = io.StringIO()
        handler.setStream(buffer)
        token = request_context._REQUEST_ID.set("json-rid")
        try:
            logging.getLogger("optillm.test").info("first %s", "line")
        finally:
            request_context._REQUEST_ID.reset(token)
        request_context._REQUEST_ID.set(None)  # outside any request
        logging.getLogger("optillm.test").warning("second")
        lines = buffer.getvalue().splitlines()
        assert len(lines) == 2
        first, second = (json.loads(line) for line in lines)
        assert first["message"] == "first line" and first["request_id"] == "json-rid"
        assert first["level"] == "INFO" and first["logger"] == "optillm.test"
        assert second["request_id"] == "-" and second["level"] == "WARNING"
        configure_logging("info", "json")  # idempotent: still one handler of ours
        assert sum(getattr(h, "_optillm", False) for h in root.handlers) == 1
    finally:
        for h in list(root.handlers):
            if h not in saved[0]:
                root.removeHandler(h)
        root.setLevel(saved[1])


def test_stdlib_json_formatter_fallback():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %d", (3,), None)
    record.request_id = "r1"
    out = json.loads(request_context.JsonFormatter().format(record))
    assert out["message"] == "boom 3" and out["request_id"] == "r1" and out["level"] == "ERROR"


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_without_config_count_requests_calls_and_tokens(make_app, fake):
    client = make_app().test_client()
    assert chat(client).status_code == 200                        # passthrough
    assert chat(client, model="bon-fake-model").status_code == 200  # an approach
    assert client.post("/v1/chat/completions", data=b"{not json",
                       content_type="application/json").status_code == 400
    text = client.get("/metrics").get_data(as_text=True)
    route = "/v1/chat/completions"
    assert metric(text, "optillm_requests_total", route=route, approach="none",
                  model="fake-model", status="200") == 1
    assert metric(text, "optillm_requests_total", route=route, approach="bon",
                  model="fake-model", status="200") == 1
    assert metric(text, "optillm_requests_total", route=route, status="400") == 1
    assert metric(text, "optillm_request_duration_seconds_count", route=route) == 3
    calls = metric(text, "optillm_upstream_calls_total", model="fake-model", outcome="ok")
    assert calls == 1 + len([m for m in fake.history]), text  # one forward, bon's completes
    assert metric(text, "optillm_upstream_tokens_total", kind="completion") > 0
    assert metric(text, "optillm_upstream_tokens_total", kind="prompt") > 0
    # probes and scrapes are not counted
    assert "/health" not in text.split("optillm_requests_total", 1)[-1].split("# HELP")[0]


def test_failed_upstream_calls_are_counted(make_app, fake):
    from optillm.errors import UpstreamError

    fake.enqueue(UpstreamError("down", status=502))
    client = make_app().test_client()
    assert chat(client, model="re2-fake-model").status_code == 502
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "optillm_upstream_calls_total", outcome="error") == 1
    assert metric(text, "optillm_requests_total", approach="re2", status="502") == 1


def test_streamed_request_latency_is_observed_after_the_body(make_app):
    client = make_app().test_client()
    resp = chat(client, stream=True)
    assert resp.status_code == 200 and b"[DONE]" in resp.get_data()
    resp.close()
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "optillm_request_duration_seconds_count",
                  route="/v1/chat/completions") == 1


# -- readiness --------------------------------------------------------------------------------


@pytest.fixture
def stub():
    handle = stub_upstream.start_in_thread()
    yield handle
    handle.stop()


def test_readiness_up_with_a_live_upstream(make_app, stub):
    client = make_app(base_url=stub.url, optillm_api_key="k").test_client()
    resp = client.get("/health/readiness")  # no key needed, like /health
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["status"] == "ready" and body["checks"]["upstream"]["ok"] is True


def test_readiness_down_names_the_reason(make_app, stub):
    url = stub.url
    stub.stop()
    client = make_app(base_url=url).test_client()
    resp = client.get("/health/readiness")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["error"]["code"] == "not_ready" and url.split("//")[1] in body["error"]["message"]
    assert body["checks"]["upstream"]["ok"] is False
    assert client.get("/health").status_code == 200  # liveness is not readiness


def test_readiness_upstream_5xx_is_not_ready(make_app):
    """A loading llama-server answers 503: not ready; a 401 still proves the upstream is up."""
    import http.server
    import threading

    answers = {"status": 503}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(answers["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = make_app(base_url=f"http://127.0.0.1:{server.server_port}/v1").test_client()
        resp = client.get("/health/readiness")
        assert resp.status_code == 503 and "answered 503" in resp.get_json()["error"]["message"]
        answers["status"] = 401
        assert client.get("/health/readiness").status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_readiness_checks_redis(make_app, stub, redis_url):  # noqa: F811
    up = make_app(base_url=stub.url, redis_url=redis_url).test_client().get("/health/readiness")
    assert up.status_code == 200 and up.get_json()["checks"]["redis"]["ok"] is True
    down = make_app(base_url=stub.url, redis_url="redis://127.0.0.1:1/0").test_client() \
        .get("/health/readiness")
    assert down.status_code == 503
    body = down.get_json()
    assert body["checks"]["redis"]["ok"] is False and body["checks"]["upstream"]["ok"] is True
    assert "redis" in body["error"]["message"]
