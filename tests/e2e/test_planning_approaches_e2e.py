"""``leap``, ``cepo`` and ``mars`` end to end: the openai SDK, the session proxy, the embedded
SmolLM2-135M, options turned down so each request is a handful of short calls. The model is
tiny, so no answer is judged: these check OpenAI-valid bodies, the call pattern in the
conversation log, the approaches' metadata, and that usage is the exact sum of the calls."""

from __future__ import annotations

import pytest

from ..conftest import validate_openapi
from .conftest import MODEL
from .helpers import assert_usage_is_the_sum, marker, provider_calls

pytestmark = pytest.mark.e2e

QUESTION = "Q: What is 2+3?\nA: 5\n\nQ: What is 12 + 30?"


def ask(client, approach: str, user: str, **extra_body):
    raw = client.chat.completions.with_raw_response.create(
        model=f"{approach}-{MODEL}", messages=[{"role": "user", "content": QUESTION}],
        max_tokens=32, user=user, extra_body=extra_body)
    completion, data = raw.parse(), raw.http_response.json()
    validate_openapi(data, "CreateChatCompletionResponse")
    assert len(completion.choices) == 1
    return completion, data


def test_leap(client, proxy):
    user = marker("e2e-planning")
    completion, data = ask(client, "leap", user, leap_max_examples=1)
    meta = data["choices"][0]["optillm_leap"]
    examples, mistakes = len(meta["examples"]), len(meta["mistakes"])
    assert examples <= 1 and mistakes <= examples
    calls = provider_calls(proxy, user)
    assert len(calls) == 2 + examples + mistakes + (1 if mistakes else 0)
    assert "worked examples" in calls[0]["provider_request"]["messages"][-1]["content"]
    assert calls[-1]["provider_request"]["messages"][-1]["content"].startswith(QUESTION)
    assert completion.choices[0].message.content == \
        calls[-1]["response"]["choices"][0]["message"]["content"]
    assert_usage_is_the_sum(completion, calls)


def test_cepo(client, proxy):
    user = marker("e2e-planning")
    completion, data = ask(client, "cepo", user, cepo_bestofn_n=1, cepo_planning_n=1,
                           cepo_planning_m=1)
    meta = data["choices"][0]["optillm_cepo"]
    (attempt,) = meta["attempts"]
    assert attempt["plan_tries"] == 1 and attempt["complete"] is True
    calls = provider_calls(proxy, user)
    # plan + execution, then refine + final (or one direct answer when the execution was cut)
    assert len(calls) == 2 + (2 if attempt["accepted"] else 1)
    temps = [c["provider_request"]["temperature"] for c in calls]
    assert temps[:2] == [0.55, 0.25]
    assert all(c["provider_request"]["max_tokens"] == 32 for c in calls)
    assert_usage_is_the_sum(completion, calls)


def test_mars(client, proxy):
    user = marker("e2e-planning")
    config = {"num_agents": 2, "aggregation": "none", "verification_passes": 1,
              "improvement_rounds": 0, "max_tokens": 32}
    completion, data = ask(client, "mars", user, mars_config=config)
    meta = data["choices"][0]["optillm_mars"]
    assert len(meta["agents"]) == 2 and meta["max_calls"] == 5
    calls = provider_calls(proxy, user)
    assert len(calls) == 5  # 2 agents, 2 checks, the synthesis
    assert sorted(c["provider_request"]["temperature"] for c in calls[:2]) == [0.3, 0.6]
    assert "Independent solvers" in calls[-1]["provider_request"]["messages"][-1]["content"]
    assert completion.choices[0].message.content == \
        calls[-1]["response"]["choices"][0]["message"]["content"]
    assert_usage_is_the_sum(completion, calls)
