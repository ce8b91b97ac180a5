"""The ``longcepo`` plugin: plan, concurrent map, collapse levels, final reduce; fallbacks on
garbage, the budget stop, options and a chain."""

from __future__ import annotations

from optillm.plugins.longcepo import group, parse_plan

from ..conftest import chat

DOC = "\n\n".join(f"Section {i}. " + "some text about ships. " * 12 for i in range(6))
QUESTION = "Which ship sank first?"


def kind(r):
    text = r.messages[-1].content
    for key, name in (("Break the question", "plan"), ("Merge the notes", "collapse"),
                      ("Read the text below", "map"), ("Notes gathered", "final")):
        if text.startswith(key) or key in text[:40]:
            return name
    return "other"


def test_plan_map_reduce_call_pattern(client, fake):
    fake.when(lambda r: kind(r) == "plan", "1. Which ships sank?\n2. When did each sink?")
    fake.when(lambda r: kind(r) == "map", lambda r: "- note from " +
              r.messages[-1].content.split("Text:\n")[1][:9])
    fake.default = "The Mary sank first."
    data = chat(client, model="longcepo-fake", content=f"{DOC}\n{QUESTION}",
                longcepo_chunk_chars=300, temperature=0.8).get_json()
    assert data["choices"][0]["message"]["content"] == "The Mary sank first."
    kinds = [kind(r) for r in fake.history]
    meta = data["choices"][0]["optillm_longcepo"]
    assert kinds[0] == "plan" and kinds[-1] == "final"
    assert kinds.count("map") == meta["chunks"] >= 3 and meta["collapse_calls"] == 0
    assert len(fake.history) == meta["chunks"] + 2
    assert meta["subquestions"] == ["Which ships sank?", "When did each sink?"]
    maps = [r for r in fake.history if kind(r) == "map"]
    assert all("- When did each sink?" in r.messages[-1].content for r in maps)
    assert all(r.params["temperature"] == 0 for r in fake.history[:-1])
    final = fake.history[-1]
    assert final.params["temperature"] == 0.8 and "note from Section 0" in \
        final.messages[-1].content


def test_collapse_levels_when_notes_are_long(client, fake):
    fake.when(lambda r: kind(r) == "map", "- " + "long note " * 60)  # ~600 chars per chunk
    fake.when(lambda r: kind(r) == "collapse", "- merged")
    data = chat(client, model="longcepo-fake", content=f"{DOC}\n{QUESTION}",
                longcepo_chunk_chars=300, longcepo_collapse_chars=1300).get_json()
    meta = data["choices"][0]["optillm_longcepo"]
    collapses = [r for r in fake.history if kind(r) == "collapse"]
    assert meta["collapse_levels"] == 1 and len(collapses) == meta["collapse_calls"] >= 2
    assert "- merged" in fake.history[-1].messages[-1].content
    assert len(fake.history) == 1 + meta["chunks"] + meta["collapse_calls"] + 1


def test_map_runs_concurrently(make_app, fake):
    fake.delay = 0.1
    client = make_app().test_client()
    chat(client, model="longcepo-fake", content=f"{DOC}\n{QUESTION}", longcepo_chunk_chars=300)
    assert fake.max_active >= 3


def test_garbage_plan_and_empty_maps_fall_back(client, fake):
    fake.when(lambda r: kind(r) == "plan", "")
    fake.when(lambda r: kind(r) == "map", "NONE")
    data = chat(client, model="longcepo-fake", content=f"{DOC}\n{QUESTION}",
                longcepo_chunk_chars=300).get_json()
    meta = data["choices"][0]["optillm_longcepo"]
    assert meta["subquestions"] == [QUESTION] and meta["relevant_chunks"] == 0
    assert "(nothing relevant)" in fake.history[-1].messages[-1].content
    assert parse_plan("ok\n- a real sub-question", "q", 3) == ["a real sub-question"]
    assert group(["aa", "bb", "cccc"], 6) == ["aa\n\nbb", "cccc"]


def test_budget_stop_during_collapse_still_answers(client, fake):
    fake.when(lambda r: kind(r) == "map", "- " + "long note " * 60)
    res = chat(client, model="longcepo-fake", content=f"{DOC}\n{QUESTION}",
               longcepo_chunk_chars=300, longcepo_collapse_chars=1300, max_upstream_calls=8)
    # the plan and maps spend the budget: the final call is refused, a clear 400
    assert res.status_code == 400 and res.get_json()["error"]["code"] == "budget_exceeded"


def test_without_context_one_call(client, fake):
    chat(client, model="longcepo-fake", content="hello")
    assert len(fake.history) == 1




def test_in_a_chain(client, fake):
    fake.default = "x"
    chat(client, model="readurls&longcepo-fake", content=f"{DOC}\n{QUESTION}",
         longcepo_chunk_chars=300)
    assert kind(fake.history[0]) == "plan"
