"""The ``deepthink`` plugin: SELF-DISCOVER's three calls, k samples in one call, the
uncertainty route (majority vs greedy), tolerant parsing, options and a chain."""

from __future__ import annotations

import pytest

from optillm.plugins.deepthink import REASONING_MODULES, parse_selection

from ..conftest import chat


def script(fake, samples):
    fake.when_contains("Which of these reasoning modules", "I pick 2 and 7, maybe 4.")
    fake.when_contains("Rephrase each of these", "adapted steps")
    fake.when_contains("Turn these task-specific", "1. add\n2. check")
    fake.when(lambda r: r.n > 1, samples)
    fake.default = "greedy: The answer is 9"


def test_agreeing_samples_take_the_majority(client, fake):
    script(fake, ["x. The answer is 5", "y. The answer is 5", "z. The answer is 6"])
    data = chat(client, model="deepthink-fake", content="What is 2+3?").get_json()
    choice = data["choices"][0]
    assert choice["message"]["content"] == "x. The answer is 5"
    meta = choice["optillm_deepthink"]
    assert meta["route"] == "majority" and meta["agreement"] == pytest.approx(2 / 3)
    assert meta["modules"] == [REASONING_MODULES[1], REASONING_MODULES[6],
                               REASONING_MODULES[3]]
    assert len(fake.history) == 4
    select, adapt, implement, solve = fake.history
    assert "- " + REASONING_MODULES[6] in adapt.messages[-1].content
    assert "adapted steps" in implement.messages[-1].content
    assert solve.n == 3 and solve.params["temperature"] == 0.7
    assert "1. add\n2. check" in solve.messages[-1].content
    assert all(r.params["temperature"] == 0 for r in (select, adapt, implement))


def test_disagreeing_samples_route_to_a_greedy_answer(client, fake):
    script(fake, ["The answer is 1", "The answer is 2", "no idea"])
    data = chat(client, model="deepthink-fake", content="Hard?", deepthink_threshold=0.9,
                return_full_response=True).get_json()
    choice = data["choices"][0]
    assert choice["optillm_deepthink"]["route"] == "greedy" and len(fake.history) == 5
    assert fake.history[-1].params["temperature"] == 0 and fake.history[-1].n == 1
    assert choice["message"]["content"].startswith("Reasoning plan:\n1. add")  # full trace
    assert choice["message"]["content"].endswith("greedy: The answer is 9")


def test_without_self_discover(client, fake):
    script(fake, ["The answer is 4"] * 2)
    chat(client, model="deepthink-fake", deepthink_self_discover=False, deepthink_samples=2)
    (solve,) = fake.history
    assert solve.n == 2 and "reasoning plan" not in solve.messages[-1].content


def test_garbage_everywhere_never_crashes(client, fake):
    fake.default = ""
    res = chat(client, model="deepthink-fake", content="?")
    assert res.status_code == 200
    assert res.get_json()["choices"][0]["optillm_deepthink"]["route"] == "greedy"
    assert parse_selection("none of them", 2) == [0, 1]
    assert parse_selection("99, 3, 3, 1", 2) == [2, 0]


def test_conversation_is_kept(client, fake):
    client.post("/v1/chat/completions", json={"model": "deepthink-fake", "messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]})
    assert all([m.content for m in r.messages[:3]] == ["sys", "q1", "a1"] for r in fake.history)




def test_in_a_chain(client, fake):
    script(fake, ["The answer is 5"] * 3)
    data = chat(client, model="deepthink&re2-fake", content="2+3?").get_json()
    assert fake.history[-1].messages[-1].content.startswith("The answer is 5\nRead")
    assert data["choices"][0]["message"]["content"] == "greedy: The answer is 9"
