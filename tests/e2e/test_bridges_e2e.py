"""The bridges against the embedded model: Anthropic's SDK on ``/v1/messages`` of the real
proxy, and optillm as LiteLLM's provider with the embedded llama-server as LiteLLM's upstream."""

from __future__ import annotations

import json
import subprocess
import sys

import openai
import pytest

from optillm.settings import prepare_litellm_import

from .conftest import (
    API_KEY,
    LOCAL_MODEL,
    MODEL,
    ROOT,
    clean_env,
    free_port,
    stop_process,
    wait_healthy,
    wait_until,
)
from .helpers import assert_usage_is_the_sum, marker, provider_calls

anthropic = pytest.importorskip("anthropic")


def anthropic_calls(proxy, user: str) -> list[dict]:
    """The upstream calls logged for the Messages request whose ``metadata.user_id`` is
    ``user`` (the log keeps the client's Anthropic body as it was sent)."""
    def records():
        return [r for r in proxy.log_lines() if isinstance(r.get("client_request"), dict)
                and (r["client_request"].get("metadata") or {}).get("user_id") == user]

    wait_until(lambda: records(), 10.0)
    [record] = records()
    assert record["error"] is None
    calls = record["provider_calls"]
    assert calls and all(c["error"] is None and c["provider_request"]["model"] == MODEL
                         for c in calls)
    return calls


def test_anthropic_sdk_runs_an_approach_on_the_embedded_model(proxy):
    user = marker("anthropic")
    client = anthropic.Anthropic(base_url=proxy.url, api_key=API_KEY, max_retries=0,
                                 timeout=180.0)
    message = client.messages.create(
        model=f"re2-{MODEL}", max_tokens=24, metadata={"user_id": user},
        system="Answer in one short sentence.",
        messages=[{"role": "user", "content": "What colour is the sky?"}])
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    calls = anthropic_calls(proxy, user)
    assert len(calls) == 1 and "Read the question again" in str(
        calls[0]["provider_request"]["messages"])
    assert message.usage.input_tokens == calls[0]["response"]["usage"]["prompt_tokens"]
    assert message.usage.output_tokens == calls[0]["response"]["usage"]["completion_tokens"]
    plain = client.messages.create(
        model=MODEL, max_tokens=8, system="Answer in one short sentence.",
        messages=[{"role": "user", "content": "What colour is the sky?"}])
    counted = client.messages.with_raw_response.count_tokens(
        model=MODEL, system="Answer in one short sentence.",
        messages=[{"role": "user", "content": "What colour is the sky?"}])
    assert counted.headers["X-Optillm-Token-Count"] == "tokenizer"  # llama-server's own
    assert counted.parse().input_tokens == plain.usage.input_tokens
    with client.messages.stream(model=MODEL, max_tokens=16, metadata={"user_id": user + "s"},
                                messages=[{"role": "user", "content": "Say hello."}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.strip() and final.content[0].text == text
    assert final.usage.output_tokens > 0


def test_litellm_provider_runs_an_approach_on_the_embedded_model(proxy):
    prepare_litellm_import()
    litellm = pytest.importorskip("litellm")
    from optillm.integrations.litellm import register

    register()
    try:
        port = proxy.state()["port"]  # the embedded llama-server the proxy started
        response = litellm.completion(
            model=f"optillm/re2/openai/{MODEL}", api_base=f"http://127.0.0.1:{port}/v1",
            api_key="sk-local", max_tokens=24,
            messages=[{"role": "user", "content": "What colour is the sky?"}])
        assert response.choices[0].message.content.strip()
        assert response.usage.prompt_tokens > 10 and response.usage.completion_tokens > 0
        chunks = list(litellm.completion(
            model=f"optillm/none/openai/{MODEL}", api_base=f"http://127.0.0.1:{port}/v1",
            api_key="sk-local", max_tokens=16, stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Say hello."}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        assert chunks[-1].usage.completion_tokens > 0
    finally:
        litellm.custom_provider_map = [p for p in litellm.custom_provider_map
                                       if p["provider"] != "optillm"]


def test_chat_baseline_usage_is_the_sum(proxy):
    """The proxy's own chat path on the same model, for comparison with the bridges above:
    its usage is the sum of its logged calls (the shared helper the other e2e tests use)."""
    user = marker("bridges-baseline")
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=API_KEY, max_retries=0,
                           timeout=180.0)
    completion = client.chat.completions.create(
        model=f"re2-{MODEL}", max_tokens=16, user=user,
        messages=[{"role": "user", "content": "Say hello."}])
    assert_usage_is_the_sum(completion, provider_calls(proxy, user))


def test_cli_agent_is_a_council_member_beside_the_embedded_model(proxy, runtime_dir, tmp_path):
    """A second proxy (same runtime folder: it attaches to the running model server) whose
    config has a CLI agent; the council mixes the agent and the embedded model."""
    config = tmp_path / "optillm.yaml"
    agent = ROOT / "tests" / "agents" / "toy_agent.py"
    config.write_text(json.dumps({"cli_agents": {"toy": {
        "command": [sys.executable, str(agent), "--mode", "council"], "timeout": 60}}}))
    port = free_port()
    output = tmp_path / "proxy.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "optillm", "--port", str(port),
                                 "--local-model", LOCAL_MODEL, "--config", str(config)],
                                cwd=ROOT, env=clean_env(runtime_dir), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, output)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY,
                               max_retries=0, timeout=300.0)
        answer = client.chat.completions.create(
            model=f"council-{MODEL}", max_tokens=24,
            messages=[{"role": "user", "content": "What is 2+2?"}],
            extra_body={"council_models": ["cli/toy", MODEL]})
        meta = answer.choices[0].model_extra["council_metadata"]
        members = {m["model"]: m for m in meta["members"]}
        assert members["cli/toy"]["answer"] == "The agent's opinion: 4"
        assert members[MODEL]["answer"].strip()
        assert answer.choices[0].message.content.strip()
    finally:
        stop_process(proc)
