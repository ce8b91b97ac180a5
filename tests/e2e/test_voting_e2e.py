"""``majority_voting`` and ``genselect`` end to end: the openai SDK, the session proxy, the
embedded SmolLM2-135M. The model is tiny, so no answer is judged: these check the call
pattern (from the conversation log), the vote/selection metadata, OpenAI-valid bodies and
chunks, and that usage is the exact sum of the upstream calls."""

from __future__ import annotations

import json

import pytest
import requests

from ..conftest import validate_openapi
from .conftest import API_KEY, MODEL
from .helpers import assert_usage_is_the_sum, marker, provider_calls

pytestmark = pytest.mark.e2e

QUESTION = "What is 12 + 30? End with 'The answer is N'."


def ask(client, model: str, user: str, **extra_body):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=12,
        user=user, extra_body=extra_body or None)
    return raw.parse(), raw.http_response.json()


def test_majority_voting(client, proxy):
    user = marker("e2e-vote")
    completion, data = ask(client, f"majority_voting-{MODEL}", user, majority_voting_k=3,
                           answer_format="number")
    validate_openapi(data, "CreateChatCompletionResponse")
    assert len(completion.choices) == 1 and completion.choices[0].message.content.strip()
    record = data["choices"][0]["optillm_votes"]
    assert record["k"] == 3 and len(record["answers"]) == 3
    assert sum(record["votes"].values()) == sum(a is not None for a in record["answers"])
    assert 0 <= record["chosen"] < 3 and 0.0 <= record["agreement"] <= 1.0
    calls = provider_calls(proxy, user)
    assert len(calls) == 1 and calls[0]["provider_request"]["n"] == 3  # one call with n=k
    request = calls[0]["provider_request"]
    assert not {"majority_voting_k", "answer_format"} & set(request)
    assert request["temperature"] == 0.6
    # the answer is one of the samples, unchanged
    samples = [c["message"]["content"] for c in calls[0]["response"]["choices"]]
    assert completion.choices[0].message.content == samples[record["chosen"]]
    assert_usage_is_the_sum(completion, calls)


def test_majority_voting_streamed(proxy_url):
    """Raw SSE: the answer is sent whole when ready; every chunk is OpenAI's chunk schema."""
    body = {"model": f"majority_voting-{MODEL}", "k": 2, "max_tokens": 8, "stream": True,
            "messages": [{"role": "user", "content": QUESTION}],
            "stream_options": {"include_usage": True}}
    data, done = [], False
    with requests.post(f"{proxy_url}/v1/chat/completions", json=body, stream=True,
                       timeout=180, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if line == "data: [DONE]":
                done = True
            elif line and not line.startswith(":"):
                assert not done and line.startswith("data: "), line
                data.append(json.loads(line[6:]))
    assert done
    for chunk in data:
        validate_openapi(chunk, "CreateChatCompletionStreamResponse")
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(ch["delta"].get("content") or "" for c in data for ch in c["choices"])
    assert text.strip()
    usage = data[-1]["usage"]
    assert data[-1]["choices"] == [] and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_genselect_batch(client, proxy):
    user = marker("e2e-vote")
    completion, data = ask(client, f"genselect-{MODEL}", user, genselect_n=2,
                           genselect_votes=2, genselect_skip_unanimous=False)
    validate_openapi(data, "CreateChatCompletionResponse")
    record = data["choices"][0]["optillm_votes"]
    assert record["mode"] == "batch" and record["candidates"] == 2
    assert len(record["picks"]) == 2 and all(p in (None, 0, 1) for p in record["picks"])
    assert record["chosen"] in (0, 1) and record["unanimous"] is False
    calls = provider_calls(proxy, user)
    assert [c["provider_request"].get("n", 1) for c in calls] == [2, 2]
    candidates = [c["message"]["content"] for c in calls[0]["response"]["choices"]]
    comparison = calls[1]["provider_request"]["messages"][-1]["content"]
    assert all(f"Solution {i}:\n{c.strip()}" in comparison for i, c in enumerate(candidates, 1))
    assert completion.choices[0].message.content == candidates[record["chosen"]]
    assert_usage_is_the_sum(completion, calls)


def test_genselect_tournament(client, proxy):
    user = marker("e2e-vote")
    completion, data = ask(client, f"genselect-{MODEL}", user, genselect_n=3,
                           genselect_mode="tournament", genselect_votes=1,
                           genselect_skip_unanimous=False)
    validate_openapi(data, "CreateChatCompletionResponse")
    record = data["choices"][0]["optillm_votes"]
    rounds = record["rounds"]
    assert [len(r) for r in rounds] == [1, 1]  # (0, 1) and a bye for 2; then the final
    assert rounds[0][0]["pair"] == [0, 1] and rounds[1][0]["pair"][1] == 2
    assert record["chosen"] == rounds[1][0]["winner"]
    judged = sum(m["decided_by"] != "same_answer" for r in rounds for m in r)
    calls = provider_calls(proxy, user)
    assert len(calls) == 1 + judged  # candidates, then one call per judged match
    assert_usage_is_the_sum(completion, calls)
