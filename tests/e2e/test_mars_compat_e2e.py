"""``mars`` with an OptiLLM-style ``mars_config`` end to end: the openai SDK, the session proxy,
the embedded SmolLM2-135M. OptiLLM's key names, turned down to a handful of short calls, with
the strategy network, thinking tags and reasoning efforts on. The model is tiny, so no answer
is judged: the call pattern in the conversation log, the answer's shape, the metadata, and
that usage is the exact sum of the calls."""

from __future__ import annotations

import pytest

from ..conftest import validate_openapi
from .conftest import MODEL
from .helpers import assert_usage_is_the_sum, marker, provider_calls

pytestmark = pytest.mark.e2e

QUESTION = "Q: What is 2+3?\nA: 5\n\nQ: What is 12 + 30?"


def test_mars_with_optillm_keys(client, proxy):
    user = marker("e2e-mars-compat")
    config = {"num_agents": 2, "population_size": 2, "enable_aggregation": False,
              "enable_strategy_network": True, "strategy_extraction_enabled": True,
              "cross_agent_enhancement": True, "verification_passes_required": 1,
              "max_verification_attempts": 1, "max_iterations": 0, "consensus_threshold": 1,
              "early_termination": True, "use_thinking_tags": True,
              "answer_extraction_mode": "none", "use_reasoning_api": True, "max_tokens": 24}
    raw = client.chat.completions.with_raw_response.create(
        model=f"mars-{MODEL}", messages=[{"role": "user", "content": QUESTION}],
        max_tokens=32, user=user, extra_body={"mars_config": config})
    completion, data = raw.parse(), raw.http_response.json()
    validate_openapi(data, "CreateChatCompletionResponse")
    meta = data["choices"][0]["optillm_mars"]
    calls = provider_calls(proxy, user)
    texts = [c["provider_request"]["messages"][-1]["content"] for c in calls]
    # 2 agents, 2 strategy extractions, an enhancement for each member whose peer's strategy
    # parsed (with two agents, one per parsed strategy), 2 checks, the synthesis
    enhancements = sum("Reasoning strategies other solvers" in t for t in texts)
    assert enhancements == len(meta["strategies"]) <= 2
    assert len(calls) == 2 + 2 + enhancements + 2 + 1 <= meta["max_calls"] == 9
    assert sum("Describe the reasoning strategy" in t for t in texts) == 2
    assert sum("VERDICT: PASS" in t for t in texts) == 2
    assert "Independent solvers" in texts[-1]
    assert all(c["provider_request"]["max_tokens"] == 24 for c in calls)
    assert all(c["provider_request"].get("reasoning_effort") in ("low", "medium", "high")
               for c in calls)
    synthesis = calls[-1]["response"]["choices"][0]["message"]["content"]
    assert completion.choices[0].message.content == \
        f"<think>\n{synthesis}\n</think>\n\n{synthesis}"
    assert_usage_is_the_sum(completion, calls)
