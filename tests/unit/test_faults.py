"""Upstream faults, end to end through the real HTTP client: the app (``create_app`` with a
``--base-url``, so the real ``OpenAIUpstream``: urllib3 bytes for the passthrough, the
``openai`` SDK for approaches) in front of ``scripts/stub_upstream.py`` serving scripted
faults on loopback. Each test counts the stub's calls (the retries) and checks the status,
the OpenAI error object and ``Retry-After`` the client gets; streams are read by the official
SDK over the WSGI app, which must raise on a broken stream, never end it quietly.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from optillm.app import create_app
from optillm.errors import RateLimitError, UpstreamError, UpstreamUnreachableError
from optillm.settings import Settings
from optillm.upstream.retry import RetryPolicy

ROOT = Path(__file__).resolve().parents[2]


def _stub_module():
    path = ROOT / "scripts" / "stub_upstream.py"
    spec = importlib.util.spec_from_file_location("optillm_faults_stub", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


stub_upstream = _stub_module()
BODY = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def stub():
    handle = stub_upstream.start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture
def app_for(stub, tmp_path):
    """``app_for(**settings)``: the real app over the stub; the stub healed and zeroed."""
    apps = []

    def build(**overrides):
        stub.fail("ok")
        stub.reset()
        overrides.setdefault("base_url", stub.url)
        overrides.setdefault("upstream_timeout", 10.0)
        overrides.setdefault("conversation_log_dir", str(tmp_path / "logs"))
        app = create_app(Settings(**overrides))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["optillm"].close()


def calls(stub) -> int:
    return stub.stats()["chat_calls"]


def post(app, **body):
    return app.test_client().post("/v1/chat/completions", json={**BODY, **body})


def sdk_for(app) -> openai.OpenAI:
    """The official SDK talking to the WSGI app in process (no retries of its own)."""
    transport = httpx.WSGITransport(app=app)
    return openai.OpenAI(base_url="http://optillm.test/v1", api_key="sk-test", max_retries=0,
                         http_client=httpx.Client(transport=transport,
                                                  base_url="http://optillm.test"))


# -- passthrough (urllib3 bytes) --------------------------------------------------------------


@pytest.mark.parametrize("status", ["500", "502", "503"])
def test_passthrough_retries_a_5xx_and_answers_200(app_for, stub, status):
    app = app_for(upstream_retries=2)
    stub.fail(status, times=1)
    r = post(app)
    assert r.status_code == 200 and r.get_json()["choices"][0]["message"]["content"]
    assert calls(stub) == 2


def test_passthrough_5xx_after_the_retries_is_502_with_the_upstreams_message(app_for, stub):
    app = app_for(upstream_retries=2)
    stub.fail("500")
    r = post(app)
    err = r.get_json()["error"]
    assert r.status_code == 502 and err["type"] == "upstream_error"
    assert "stub fault: status 500" in err["message"] and "status 500" in err["message"]
    assert calls(stub) == 3  # 1 + 2 retries


def test_passthrough_retries_off_is_one_call(app_for, stub):
    app = app_for(upstream_retries=0)
    stub.fail("503", times=1)
    assert post(app).status_code == 502 and calls(stub) == 1


def test_passthrough_waits_for_retry_after_then_succeeds(app_for, stub):
    app = app_for(upstream_retries=2)
    stub.fail("429", retry_after=0.4, times=1)
    start = time.monotonic()
    r = post(app)
    assert r.status_code == 200 and calls(stub) == 2
    assert time.monotonic() - start >= 0.4


def test_passthrough_429_after_the_retries_is_429_with_retry_after(app_for, stub):
    app = app_for(upstream_retries=1)
    stub.fail("429", retry_after=0.2)
    r = post(app)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"  # rounded up
    err = r.get_json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
    assert calls(stub) == 2


def test_passthrough_429_whose_wait_passes_the_cap_is_answered_at_once(app_for, stub):
    app = app_for(upstream_retries=3)
    stub.fail("429", retry_after=120)
    start = time.monotonic()
    r = post(app)
    assert r.status_code == 429 and r.headers["Retry-After"] == "120"
    assert calls(stub) == 1 and time.monotonic() - start < 2


@pytest.mark.parametrize("mode", ["malformed", "truncate"])
def test_passthrough_200_that_is_not_json_is_502(app_for, stub, mode):
    app = app_for(upstream_retries=2)
    stub.fail(mode)
    r = post(app)
    assert r.status_code == 502
    assert "malformed JSON" in r.get_json()["error"]["message"]
    assert calls(stub) == 1  # an answer came: not retried


def test_passthrough_dropped_connection_is_retried(app_for, stub):
    app = app_for(upstream_retries=2)
    stub.fail("cut", times=1)
    assert post(app).status_code == 200 and calls(stub) == 2


def test_passthrough_timeout_is_504_without_retries(app_for, stub):
    app = app_for(upstream_retries=2, upstream_timeout=0.3)
    stub.fail("hang", hang_s=5)
    start = time.monotonic()
    r = post(app)
    assert r.status_code == 504 and r.get_json()["error"]["code"] == "upstream_timeout"
    assert calls(stub) == 1 and time.monotonic() - start < 2


def test_passthrough_clients_4xx_is_not_retried(app_for, stub):
    app = app_for(upstream_retries=2)
    stub.fail("400")
    r = post(app)
    assert r.status_code == 400 and "stub fault" in r.get_json()["error"]["message"]
    assert calls(stub) == 1


def test_passthrough_unreachable_upstream_is_502_unreachable(app_for):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = app_for(base_url=f"http://127.0.0.1:{port}/v1", upstream_retries=1)
    r = post(app)
    assert r.status_code == 502 and r.get_json()["error"]["code"] == "upstream_unreachable"


def test_passthrough_stream_5xx_before_the_first_byte_is_retried(app_for, stub):
    app = app_for(upstream_retries=2)
    stub.fail("502", times=1)
    chunks = list(sdk_for(app).chat.completions.create(stream=True, **BODY))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        stub_upstream.REPLY_TEXT
    assert calls(stub) == 2


@pytest.mark.parametrize("mode", ["cut", "truncate"])
def test_passthrough_stream_broken_midway_raises_in_the_sdk(app_for, stub, mode):
    app = app_for(upstream_retries=2)
    stub.fail(mode)
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in sdk_for(app).chat.completions.create(stream=True, **BODY):
            got.append(chunk)
    assert got  # the stream had begun: the error ends it, it is not retried
    assert "upstream stream" in info.value.message and calls(stub) == 1


# -- approach calls (the openai SDK) ----------------------------------------------------------


def test_approach_call_retries_a_500(app_for, stub):
    app = app_for(upstream_retries=2)
    stub.fail("500", times=1)
    r = post(app, model="re2-stub-model")
    assert r.status_code == 200 and calls(stub) == 2


def test_approach_call_429_after_the_retries_is_429_with_retry_after(app_for, stub):
    app = app_for(upstream_retries=1)
    stub.fail("429", retry_after=2)
    r = post(app, model="re2-stub-model")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert calls(stub) == 2


def test_approach_call_malformed_answer_is_502(app_for, stub):
    app = app_for(upstream_retries=2)
    stub.fail("malformed")
    r = post(app, model="re2-stub-model")
    assert r.status_code == 502 and "malformed JSON" in r.get_json()["error"]["message"]


def test_approach_call_timeout_is_504(app_for, stub):
    app = app_for(upstream_retries=2, upstream_timeout=0.3)
    stub.fail("hang", hang_s=5)
    r = post(app, model="re2-stub-model")
    assert r.status_code == 504 and calls(stub) == 1


def test_approach_stream_broken_upstream_raises_in_the_sdk(app_for, stub):
    app = app_for(upstream_retries=0)
    stub.fail("500")
    with pytest.raises(openai.APIError) as info:
        list(sdk_for(app).chat.completions.create(stream=True,
                                                  **{**BODY, "model": "re2-stub-model"}))
    assert "status 500" in info.value.message


# -- the policy itself --------------------------------------------------------------------------


def _failing(errors):
    seen = []

    def attempt():
        seen.append(time.monotonic())
        if errors:
            raise errors.pop(0)
        return "ok"

    return attempt, seen


def test_backoff_grows_and_is_jittered_within_its_bound():
    waits = []
    policy = RetryPolicy(retries=4, base=0.1, max_backoff=0.3)
    attempt, seen = _failing([UpstreamUnreachableError("refused") for _ in range(4)])
    assert policy.call(attempt, sleep=waits.append) == "ok" and len(seen) == 5
    bounds = [0.1, 0.2, 0.3, 0.3]
    assert all(0 <= w <= b for w, b in zip(waits, bounds, strict=True))
    draws = {round(policy.delay(0, UpstreamUnreachableError("x"), 0.0), 6) for _ in range(20)}
    assert len(draws) > 10  # jitter: not one fixed wait


def test_retry_after_is_the_wait_and_the_budget_stops_the_retries():
    err = RateLimitError("slow down", retry_after=1.5)
    err.upstream_status = 429
    assert RetryPolicy(retries=2).delay(0, err, 0.0) == 1.5
    assert RetryPolicy(retries=2, max_retry_after=1.0).delay(0, err, 0.0) is None
    assert RetryPolicy(retries=2, budget=2.0).delay(0, err, 1.0) is None
    assert RetryPolicy(retries=2).delay(2, err, 0.0) is None  # retries spent
    final = UpstreamError("malformed JSON")  # an answer that came: never retried
    assert RetryPolicy(retries=2).delay(0, final, 0.0) is None
