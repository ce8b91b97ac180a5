"""``mcts``, ``rstar`` and ``pvg`` end to end: the openai SDK, the session proxy, the embedded
SmolLM2-135M. The model is tiny, so no answer is judged: these check the call pattern (from
the conversation log), that the answer is built from the logged calls, OpenAI-valid bodies,
and that usage is the exact sum of the upstream calls. Options are turned down to keep them
cheap."""

from __future__ import annotations

import pytest

from optillm.approaches import mcts, pvg

from ..conftest import validate_openapi
from .conftest import MODEL
from .helpers import assert_usage_is_the_sum, marker, provider_calls

pytestmark = pytest.mark.e2e

QUESTION = "What is 12 + 30? End with 'The answer is N'."


def ask(client, model: str, user: str, max_tokens: int, **extra_body):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=max_tokens,
        user=user, extra_body=extra_body)
    data = raw.http_response.json()
    validate_openapi(data, "CreateChatCompletionResponse")
    return raw.parse(), data


def last_prompt(call: dict) -> str:
    return call["provider_request"]["messages"][-1]["content"]


def replies(call: dict) -> list[str]:
    return [c["message"]["content"] for c in call["response"]["choices"]]


def test_mcts(client, proxy):
    user = marker("e2e-search")
    completion, data = ask(client, f"mcts-{MODEL}", user, 32, mcts_simulations=1,
                           mcts_expansions=2)
    calls = provider_calls(proxy, user)
    assert len(calls) == 3  # one expansion with n=2, then two concurrent judge calls
    assert calls[0]["provider_request"]["n"] == 2
    assert [last_prompt(c) for c in calls[1:]] == [mcts.JUDGE_PROMPT] * 2
    meta = data["choices"][0]["optillm_mcts"]
    assert meta["simulations"] == 1 and len(meta["root_children"]) == 2
    assert completion.choices[0].message.content == replies(calls[0])[meta["chosen"]]
    assert_usage_is_the_sum(completion, calls)


def test_rstar(client, proxy):
    user = marker("e2e-search")
    completion, data = ask(client, f"rstar-{MODEL}", user, 48, rstar_num_rollouts=2,
                           rstar_max_depth=2)
    calls = provider_calls(proxy, user)
    meta = data["choices"][0]["optillm_rstar"]
    # two concurrent rollouts: A2 at the root (1 call); A1 then the forced A2 (2 calls, or
    # 1 when the step already states an answer); then one check per answered trajectory
    assert meta["rollouts"] == 2 and meta["terminals"] == 2
    assert len(calls) - meta["candidates"] in (2, 3)
    checks = [c for c in calls if "Here is the beginning of a solution" in last_prompt(c)]
    assert len(checks) == meta["candidates"]
    # the answer is the whole trajectory: its last step is a logged reply
    content = completion.choices[0].message.content
    steps = [r.strip() for c in calls if c not in checks for r in replies(c)]
    assert meta["actions"] and meta["actions"][0] in ("A1", "A2")
    assert any(s and s in content for s in steps) or not any(steps)
    assert_usage_is_the_sum(completion, calls)


def test_pvg(client, proxy):
    user = marker("e2e-search")
    completion, data = ask(client, f"pvg-{MODEL}", user, 32, pvg_num_rounds=1,
                           pvg_num_solutions=1)
    calls = provider_calls(proxy, user)
    assert len(calls) == 4  # helpful and sneaky provers, then two verifier calls
    systems = [c["provider_request"]["messages"][0]["content"] for c in calls[:2]]
    assert sorted(s[:20] for s in systems) == sorted([pvg.HELPFUL[:20], pvg.SNEAKY[:20]])
    helpful = next(c for c in calls[:2]
                   if c["provider_request"]["messages"][0]["content"] == pvg.HELPFUL)
    assert completion.choices[0].message.content == replies(helpful)[0]
    assert all("strict verifier" in last_prompt(c) for c in calls[2:])
    assert len(data["choices"][0]["optillm_pvg"]["rounds"]) == 1
    assert_usage_is_the_sum(completion, calls)
