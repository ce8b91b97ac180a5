"""DeepConf end to end: the openai SDK, the proxy, the embedded SmolLM2-135M ``llama-server``.

The test-time-scaling service's request fields go in ``extra_body``; the answer's
``choices[0].tts_metadata``, its usage, its OpenAPI validity and the conversation log's record
of the upstream calls (one call with ``n`` for the traces, then streamed traces online) are
checked. The model is tiny: no answer is judged. Budgets and ``max_tokens`` are small so the
tests stay quick on two cores.
"""

from __future__ import annotations

import uuid

import openai
import pytest

from ..conftest import validate_openapi
from .conftest import MODEL

pytestmark = pytest.mark.e2e

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
REQUIRED = {"strategy", "mode", "num_traces", "confidence", "agreement",
            "traces_stopped_early", "tokens_generated"}
CUT = "stream closed early by the proxy"


def ask(client: openai.OpenAI, model: str = MODEL, max_tokens: int = 48, **extra):
    """One request with ``extra`` in the body; returns (sdk completion, raw JSON, marker)."""
    marker = f"e2e-deepconf-{uuid.uuid4().hex[:10]}"
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=max_tokens,
        user=marker, extra_body=extra)
    return raw.parse(), raw.http_response.json(), marker


def check_answer(completion, data: dict) -> dict:
    """The shape every tts answer has; returns its tts_metadata."""
    validate_openapi(data, "CreateChatCompletionResponse")
    meta = data["choices"][0]["tts_metadata"]
    assert REQUIRED <= set(meta)
    assert completion.choices[0].tts_metadata == meta  # the SDK keeps the extra field
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert meta["tokens_generated"] == usage.completion_tokens
    assert 0.0 <= meta["agreement"] <= 1.0
    assert isinstance(completion.choices[0].message.content, str)
    return meta


def test_offline_deepconf_one_call_with_n(client, proxy):
    completion, data, marker = ask(client, tts_strategy="deepconf", tts_mode="offline",
                                   tts_budget=4)
    meta = check_answer(completion, data)
    assert meta["strategy"] == "deepconf" and meta["mode"] == "offline"
    assert meta["num_traces"] == 4 and meta["traces_stopped_early"] == 0
    assert meta["confidence"] > 0
    (record,) = proxy.log_records(marker)
    (call,) = record["provider_calls"]
    sent = call["provider_request"]
    assert sent["n"] == 4 and sent["logprobs"] is True and sent["top_logprobs"] == 20
    assert not any(k.startswith("tts_") for k in sent)
    logged = call["response"]["usage"]
    assert (logged["prompt_tokens"], logged["completion_tokens"]) == \
        (completion.usage.prompt_tokens, completion.usage.completion_tokens)


def test_online_deepconf_streams_and_cuts(client, proxy):
    completion, data, marker = ask(client, tts_strategy="deepconf", tts_mode="online",
                                   tts_budget=6)
    meta = check_answer(completion, data)
    assert meta["strategy"] == "deepconf" and meta["mode"] == "online"
    assert meta["warmup"] == 3 and 3 <= meta["num_traces"] <= 6
    streamed = meta["num_traces"] - meta["warmup"]
    assert 0 <= meta["traces_stopped_early"] <= streamed
    (record,) = proxy.log_records(marker)
    warm, *streams = record["provider_calls"]
    assert warm["provider_request"]["n"] == 3 and len(streams) == streamed
    assert all(c["provider_request"]["stream"] is True for c in streams)
    cut = [c for c in streams if c["error"] == CUT]
    assert len(cut) == meta["traces_stopped_early"]
    # usage: the warm-up call, the finished streams as reported, the cut ones' tokens
    finished = [c["response"]["usage"] for c in streams if c["error"] is None]
    per_prompt = warm["response"]["usage"]["prompt_tokens"]
    assert all(u["prompt_tokens"] == per_prompt for u in finished)
    assert completion.usage.prompt_tokens == per_prompt * (1 + streamed)
    reported = warm["response"]["usage"]["completion_tokens"] + \
        sum(u["completion_tokens"] for u in finished)
    assert completion.usage.completion_tokens >= reported + meta["window"] * len(cut)


def test_model_prefix_selects_deepconf(client, proxy):
    completion, data, marker = ask(client, model=f"deepconf-{MODEL}", tts_mode="online",
                                   tts_budget=4, tts_wave=1)
    meta = check_answer(completion, data)
    assert meta["strategy"] == "deepconf" and meta["mode"] == "online"
    (record,) = proxy.log_records(marker)
    assert record["provider_calls"][0]["provider_request"]["model"] == MODEL


@pytest.mark.parametrize("strategy", ["best_of_n", "self_consistency"])
def test_other_strategies(client, proxy, strategy):
    completion, data, marker = ask(client, tts_strategy=strategy, tts_budget=3)
    meta = check_answer(completion, data)
    assert meta["strategy"] == strategy and meta["num_traces"] == 3
    (record,) = proxy.log_records(marker)
    (call,) = record["provider_calls"]
    assert call["provider_request"]["n"] == 3
    assert ("top_logprobs" in call["provider_request"]) == (strategy == "best_of_n")
    if strategy == "self_consistency":
        assert meta["confidence"] is None


def test_invalid_tts_option_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, tts_strategy="deepconf", tts_filter_method="best")
    assert "tts_filter_method" in str(info.value)
