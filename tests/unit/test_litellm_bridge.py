"""LiteLLM both ways, against scripts/stub_upstream.py over loopback HTTP:

- LiteLLM as our upstream (``--upstream-provider litellm``, a ``provider: litellm`` endpoint):
  our face -> litellm.completion -> LiteLLM's openai/ provider -> the stub;
- optillm as LiteLLM's custom provider (``optillm.integrations.litellm.register``):
  litellm.completion("optillm/<approach>/openai/stub-model") -> our approach in-process ->
  litellm.completion -> the stub; and LiteLLM's own proxy serving it from docs/litellm.md's
  config, started as a subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optillm.app import create_app
from optillm.settings import Settings, prepare_litellm_import

prepare_litellm_import()
litellm = pytest.importorskip("litellm")
openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[2]
BODY = {"model": "openai/stub-model", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = "The answer is 42."


def _stub_module():
    path = ROOT / "scripts" / "stub_upstream.py"
    spec = importlib.util.spec_from_file_location("optillm_litellm_stub", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


stub_upstream = _stub_module()


@pytest.fixture(scope="module")
def stub():
    handle = stub_upstream.start_in_thread()
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def _healthy(stub):
    stub.fail("ok")
    stub.reset()
    yield


def litellm_app(tmp_path, **settings):
    settings.setdefault("upstream_provider", "litellm")
    settings.setdefault("conversation_log_dir", str(tmp_path / "logs"))
    settings.setdefault("openai_api_key", "sk-stub")
    settings.setdefault("upstream_retries", 0)
    app = create_app(Settings(**settings))
    return app


# -- LiteLLM as the upstream -------------------------------------------------------------------

def test_provider_litellm_passthrough_and_stream(stub, tmp_path):
    app = litellm_app(tmp_path, base_url=stub.url)
    client = app.test_client()
    resp = client.post("/v1/chat/completions", json=BODY)
    assert resp.status_code == 200, resp.json
    assert resp.json["choices"][0]["message"]["content"] == ANSWER
    assert resp.json["usage"]["prompt_tokens"] == 1 and resp.json["usage"][
        "completion_tokens"] == 4
    resp = client.post("/v1/chat/completions", json={**BODY, "stream": True,
                                                      "stream_options": {"include_usage": True}})
    events = [json.loads(line[6:]) for line in resp.get_data(as_text=True).split("\n")
              if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if e["choices"])
    assert text == ANSWER
    assert events[-1]["usage"]["completion_tokens"] == 4
    assert stub.stats()["chat_calls"] == 2
    app.extensions["optillm"].close()


def test_provider_litellm_runs_approaches_with_exact_usage(stub, tmp_path):
    app = litellm_app(tmp_path, base_url=stub.url)
    resp = app.test_client().post("/v1/chat/completions",
                                  json={**BODY, "model": "moa-openai/stub-model"})
    assert resp.status_code == 200, resp.json
    assert resp.json["choices"][0]["message"]["content"] == ANSWER
    stats = stub.stats()
    assert stats["chat_calls"] == int(resp.headers["X-Optillm-Upstream-Calls"]) >= 2
    # every call's usage added up: the stub answers 4 tokens a choice
    assert resp.json["usage"]["completion_tokens"] == 4 * stats["choices"]
    app.extensions["optillm"].close()


@pytest.mark.parametrize("mode,status", [("429", 429), ("500", 502), ("401", 401)])
def test_provider_litellm_errors_map_onto_ours(stub, tmp_path, mode, status):
    stub.fail(mode)
    app = litellm_app(tmp_path, base_url=stub.url)
    resp = app.test_client().post("/v1/chat/completions", json=BODY)
    assert resp.status_code == status, resp.json
    assert resp.json["error"]["message"]
    app.extensions["optillm"].close()


def test_gateway_endpoint_with_provider_litellm(stub, tmp_path):
    config = tmp_path / "optillm.yaml"
    config.write_text(json.dumps({"model_groups": {"smart": [
        {"provider": "litellm", "model": "openai/stub-model", "base_url": stub.url,
         "api_key": "sk-stub"}]}}))
    app = create_app(Settings(config=str(config), conversation_log_dir=str(tmp_path / "l")))
    client = app.test_client()
    resp = client.post("/v1/chat/completions", json={**BODY, "model": "smart"})
    assert resp.status_code == 200, resp.json
    assert resp.json["choices"][0]["message"]["content"] == ANSWER
    resp = client.post("/v1/chat/completions", json={**BODY, "model": "re2-smart"})
    assert resp.status_code == 200 and stub.stats()["chat_calls"] == 2
    app.extensions["optillm"].close()


def test_gateway_config_needs_base_url_unless_litellm():
    from optillm.upstream.config import ConfigError, parse_config

    assert parse_config(json.dumps({"model_groups": {"a": [
        {"provider": "litellm", "model": "anthropic/claude"}]}})).model_groups["a"][0] \
        .provider == "litellm"
    with pytest.raises(ConfigError, match="model_groups.a.0"):
        parse_config(json.dumps({"model_groups": {"a": [{"model": "x"}]}}))


def test_missing_litellm_is_a_501_naming_the_extra(stub, tmp_path, monkeypatch):
    app = litellm_app(tmp_path, base_url=stub.url)
    monkeypatch.setitem(sys.modules, "litellm", None)  # import litellm -> ImportError
    resp = app.test_client().post("/v1/chat/completions", json=BODY)
    assert resp.status_code == 501
    assert "pip install 'optillm[litellm]'" in resp.json["error"]["message"]
    app.extensions["optillm"].close()


# -- optillm as LiteLLM's custom provider ------------------------------------------------------

@pytest.fixture(scope="module")
def provider():
    from optillm.integrations.litellm import register

    handler = register()
    yield handler
    litellm.custom_provider_map = [p for p in litellm.custom_provider_map
                                   if p["provider"] != "optillm"]


def call(stub, model, **kwargs):
    return litellm.completion(model=model, messages=[{"role": "user", "content": "hi"}],
                              api_base=stub.url, api_key="sk-stub", **kwargs)


def test_custom_provider_runs_the_approach_with_exact_usage(stub, provider, tmp_path):
    response = call(stub, "optillm/moa/openai/stub-model")
    assert response.choices[0].message.content == ANSWER
    stats = stub.stats()
    assert stats["chat_calls"] >= 2  # moa: proposals, then the aggregation
    assert response.usage.completion_tokens == 4 * stats["choices"]
    # the same approach through our own face on the same stub: the same usage
    app = create_app(Settings(base_url=stub.url, conversation_log_dir=str(tmp_path)))
    ours = app.test_client().post("/v1/chat/completions", json={
        "model": "moa-stub-model", "messages": [{"role": "user", "content": "hi"}]}).json
    assert response.usage.prompt_tokens == ours["usage"]["prompt_tokens"]
    assert response.usage.completion_tokens == ours["usage"]["completion_tokens"]
    app.extensions["optillm"].close()


def test_custom_provider_sequence_and_options(stub, provider):
    response = call(stub, "optillm/bon&re2/openai/stub-model", bon_n=2)
    assert response.choices[0].message.content == ANSWER
    assert stub.stats()["choices"] >= 3  # bon's 2 candidates (+ rating), then re2


def test_custom_provider_streams_with_usage(stub, provider):
    chunks = list(call(stub, "optillm/re2/openai/stub-model", stream=True,
                       stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    assert chunks[-1].usage.completion_tokens == 4
    assert stub.stats()["stream_calls"] == 1


def test_custom_provider_errors(stub, provider):
    with pytest.raises(litellm.exceptions.NotFoundError, match="unknown approach 'zzz'"):
        call(stub, "optillm/moa&zzz/openai/stub-model")
    stub.fail("429")
    with pytest.raises(litellm.exceptions.RateLimitError):
        call(stub, "optillm/re2/openai/stub-model")


def test_custom_provider_profile(stub, tmp_path):
    from optillm.integrations.litellm import register

    config = tmp_path / "optillm.yaml"
    config.write_text(json.dumps({"profiles": {"duo": {
        "strategy": "moa", "proposers": ["openai/stub-model", "openai/stub-model"],
        "aggregator": "openai/stub-model"}}}))
    register(config=str(config))
    try:
        response = call(stub, "optillm/profile/duo")
        assert response.choices[0].message.content == ANSWER
        assert stub.stats()["chat_calls"] >= 3
    finally:
        litellm.custom_provider_map = [p for p in litellm.custom_provider_map
                                       if p["provider"] != "optillm"]


# -- LiteLLM's proxy in front of optillm's provider ------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_config(doc: Path, stub_url: str) -> str:
    """The config block of docs/litellm.md, pointed at the stub."""
    text = doc.read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    return block.replace("http://127.0.0.1:8080/v1", stub_url)


@pytest.mark.timeout(240)
def test_litellm_proxy_serves_optillm_approaches(stub, tmp_path):
    # scripts/test.sh installs the proxy into a venv of its own and names it here
    python = os.environ.get("OPTILLM_LITELLM_PROXY_PYTHON")
    if not python:
        if any(importlib.util.find_spec(m) is None for m in (
                "fastapi", "uvicorn", "litellm_proxy_extras")):
            pytest.skip("LiteLLM's proxy is not installed (scripts/test.sh installs it)")
        python = sys.executable
    command = [python, "-m", "litellm.proxy.proxy_cli"]
    config = tmp_path / "litellm.yaml"
    config.write_text(proxy_config(ROOT / "docs" / "litellm.md", stub.url))
    key = "sk-" + secrets.token_hex(24)
    port = _free_port()
    env = {**os.environ, "LITELLM_MASTER_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "OPENAI_API_KEY": "sk-stub", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*command, "--config", str(config), "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "proxy.log", "wb"), start_new_session=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key,
                               max_retries=0, timeout=60)
        deadline = time.monotonic() + 180
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert proc.poll() is None, (tmp_path / "proxy.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "LiteLLM's proxy did not start"
                time.sleep(1)
        stub.reset()
        answer = client.chat.completions.create(
            model="moa-gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == ANSWER
        stats = stub.stats()
        assert stats["chat_calls"] >= 2
        assert answer.usage.completion_tokens == 4 * stats["choices"]
        stream = client.chat.completions.create(
            model="moa-gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
            stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ANSWER
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
