"""``z3``, ``rto`` and ``plansearch`` end to end: the openai SDK, the session proxy, the
embedded SmolLM2-135M. The model is tiny, so no answer is judged: these check OpenAI-valid
bodies, the call pattern from the conversation log, and that usage is the exact sum of the
logged provider calls."""

from __future__ import annotations

import uuid

import pytest

from ..conftest import validate_openapi
from .conftest import MODEL
from .helpers import assert_usage_is_the_sum, provider_calls

pytestmark = pytest.mark.e2e

QUESTION = "Find integers x and y with x + y = 10 and x - y = 2."


def ask(client, slug: str, **extra_body):
    user = f"e2e-code-{slug}-{uuid.uuid4().hex[:10]}"
    raw = client.chat.completions.with_raw_response.create(
        model=f"{slug}-{MODEL}", messages=[{"role": "user", "content": QUESTION}],
        max_tokens=48, user=user, extra_body=extra_body or None)
    return raw.parse(), raw.http_response.json(), user


def test_z3(client, proxy):
    completion, data, user = ask(client, "z3", z3_max_attempts=1, z3_timeout=5)
    validate_openapi(data, "CreateChatCompletionResponse")
    meta = data["choices"][0]["optillm_z3"]
    calls = provider_calls(proxy, user, same_model=False)
    # triage, then (if it said yes) one program, then the answer
    assert len(calls) == 1 + meta["attempts"] + 1 and meta["attempts"] <= 1
    assert "Reply with YES or NO" in calls[0]["provider_request"]["messages"][-1]["content"]
    assert calls[0]["provider_request"]["max_tokens"] == 16
    assert_usage_is_the_sum(completion, calls)


def test_rto(client, proxy):
    completion, data, user = ask(client, "rto")
    validate_openapi(data, "CreateChatCompletionResponse")
    meta = data["choices"][0]["optillm_rto"]
    calls = provider_calls(proxy, user, same_model=False)
    assert len(calls) == (3 if meta["identical"] else 4)
    assert "Describe precisely" in calls[1]["provider_request"]["messages"][-1]["content"]
    assert completion.choices[0].message.content is not None
    assert_usage_is_the_sum(completion, calls)


def test_plansearch(client, proxy):
    completion, data, user = ask(client, "plansearch", plansearch_n=1)
    validate_openapi(data, "CreateChatCompletionResponse")
    meta = data["choices"][0]["optillm_plansearch"]
    assert len(meta["solutions"]) == 1
    calls = provider_calls(proxy, user, same_model=False)
    assert len(calls) == 2 + 2 * 1
    assert completion.choices[0].message.content == meta["solutions"][0]["answer"]
    assert_usage_is_the_sum(completion, calls)
