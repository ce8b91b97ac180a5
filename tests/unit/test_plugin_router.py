"""The ``router`` plugin: the rules, the table (defaults and body overrides), running the
chosen approach with the same options and budget, metadata, 404 and 400 paths."""

from __future__ import annotations

import pytest

from optillm.plugins.router import classify

from ..conftest import chat


@pytest.mark.parametrize("query, expected", [
    ("What is 12 * 7 + 3?", "math"),
    ("Solve the equation x^2 = 4 for x.", "math"),
    ("Fix the bug in this python function:\n```\ndef f(x): return x +\n```", "code"),
    ("Who wrote Hamlet?", "factual"),
    ("What is the capital of France?", "factual"),
    ("Write a short poem about autumn leaves and longing.", "open_ended"),
])
def test_rules(query, expected):
    cls, features, scores = classify(query, len(query))
    assert cls == expected, (features, scores)
    assert (scores[expected] > 0) == (expected != "open_ended")


def test_long_context_wins_over_everything():
    cls, features, _ = classify("What is 2+2?", 10_000, long_chars=8000)
    assert cls == "long_context" and "long_input" in features


def test_math_query_runs_majority_voting_with_its_options(client, fake):
    fake.default = "The answer is 87"
    res = chat(client, model="router-fake", content="What is 12 * 7 + 3?", majority_voting_k=3)
    data = res.get_json()
    assert res.status_code == 200, data
    (call,) = fake.history
    assert call.n == 3  # majority voting's one call with n=k, k from the same body
    choice = data["choices"][0]
    assert choice["optillm_router"]["class"] == "math"
    assert choice["optillm_router"]["approach"] == "majority_voting"
    assert "arithmetic" in choice["optillm_router"]["features"]
    assert "optillm_votes" in choice  # the chosen approach's own metadata is kept
    assert data["usage"]["completion_tokens"] == 3 * 4  # its usage reaches the client


def test_table_override_from_the_body(client, fake):
    fake.default = "verse"
    data = chat(client, model="router-fake", content="Write a poem about rain.",
                router_table={"open_ended": "re2"}).get_json()
    assert data["choices"][0]["optillm_router"]["approach"] == "re2"
    (call,) = fake.history
    assert "Read the question again" in call.messages[-1].content
    # the override never leaks into the next request: the default (moa) runs again
    fake.history.clear()
    data = chat(client, model="router-fake", content="Write a poem about rain.").get_json()
    assert data["choices"][0]["optillm_router"]["approach"] == "moa"
    assert len(fake.history) == 3


def test_conversation_and_system_prompt_reach_the_chosen_approach(client, fake):
    client.post("/v1/chat/completions", json={"model": "router-fake", "messages": [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "Who wrote Hamlet?"}]})
    (call,) = fake.history  # re2
    assert [m.content for m in call.messages[:3]] == ["Be terse.", "hi", "hello"]


def test_unknown_slug_is_404(client, fake):
    res = chat(client, model="router-fake", content="Who wrote Hamlet?",
               router_table={"factual": "no_such_approach"})
    assert res.status_code == 404 and not fake.history


@pytest.mark.parametrize("table", [{"nonsense": "re2"}, {"math": ""}, {"math": "router"},
                                   "re2"])
def test_bad_table_is_400(client, fake, table):
    res = chat(client, model="router-fake", router_table=table)
    assert res.status_code == 400 and not fake.history


def test_budget_is_shared_with_the_chosen_approach(client, fake):
    res = chat(client, model="router-fake", content="Write a poem about rain.",
               max_upstream_calls=1)  # moa needs three
    assert res.status_code == 400 and res.get_json()["error"]["code"] == "budget_exceeded"
    assert len(fake.history) == 1


def test_in_a_chain(client, fake):
    fake.default = "done"
    fake.enqueue("Shakespeare")
    data = chat(client, model="router&re2-fake", content="Who wrote Hamlet?").get_json()
    assert data["choices"][0]["message"]["content"] == "done"
    assert len(fake.history) == 2  # the router chose re2 (factual), then the re2 stage
    assert fake.history[0].messages[-1].content.startswith("Who wrote Hamlet?\nRead")
    assert fake.history[1].messages[-1].content.startswith("Shakespeare\nRead")
