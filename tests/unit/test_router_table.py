"""The learned router: query features, fitting a table from (synthetic) eval records, the file
format, and its effect: with ``--router-table`` a request whose features fall in a cell runs
that cell's approach with its options, and ``auto`` says so in its metadata."""

from __future__ import annotations

import json

import pytest
import yaml

from optillm.eval.cli import main
from optillm.eval.router_fit import fit
from optillm.settings import Settings
from optillm.toolkit.router_table import RouterTable, RouterTableError, dump, features, load

from ..conftest import chat

ARITH = [f"What is {i} + {i + 3}?\n\nSolve the problem step by step." for i in range(10)]
WORD = [f"Tom has {i} apples and buys {i + 2} bags of 4 apples each. How many apples does he "
        f"have now? Think about each step of the purchase carefully before answering." * 2
        for i in range(10)]
OTHER = [f"Write a haiku about the colour of autumn leaf number {i}." for i in range(10)]


@pytest.mark.parametrize("query, task, length", [
    ("What is 12 + 7?\n\nSolve the problem step by step. End with \"The answer is N\".",
     "arithmetic", "short"),
    (WORD[0], "word_problem", "medium"),
    ("Which gas do plants take in?\nA. oxygen\nB. carbon dioxide\nC. helium", "choice",
     "short"),
    ("Complete this function:\n```python\ndef add(a, b):\n```", "code", "short"),
    ("Write a short poem about autumn.", "other", "short"),
    ("x" * 900, "other", "long"),
])
def test_features(query, task, length):
    f = features(query)
    assert (f["task"], f["length"]) == (task, length)
    assert f["digits"] == any(c.isdigit() for c in query)


def rec(i, query, approach, correct, tokens, slug=None, options=None, temperature=0.0,
        split="dev"):
    return {"dataset": "synthetic", "id": str(i), "approach": approach, "correct": correct,
            "prompt_tokens": tokens // 2, "completion_tokens": tokens - tokens // 2,
            "error": None, "query": query, "slug": slug or approach, "options": options,
            "temperature": temperature, "split": split}


def records():
    """Arithmetic: none right 9/10 at 60 tokens, voting 9/10 at 300 (a tie: none is cheaper).
    Word problems: none 3/10 at 400 tokens, voting (label mv5) 7/10 at 1800. Other: none 8/10
    at 50, voting 2/10 at 250. Overall none 20/30, voting 18/30."""
    out = []
    for i, q in enumerate(ARITH):
        out.append(rec(i, q, "none", i != 0, 60))
        out.append(rec(i, q, "mv5", i != 1, 300, "majority_voting", {"majority_voting_k": 5},
                       None))
    for i, q in enumerate(WORD, start=100):
        out.append(rec(i, q, "none", i < 103, 400))
        out.append(rec(i, q, "mv5", i < 107, 1800, "majority_voting",
                       {"majority_voting_k": 5}, None))
    for i, q in enumerate(OTHER, start=200):
        out.append(rec(i, q, "none", i < 208, 50))
        out.append(rec(i, q, "mv5", i < 202, 250, "majority_voting", {"majority_voting_k": 5},
                       None))
    return out


def test_fit_picks_the_most_accurate_within_budget_per_cell():
    table = fit(records(), min_problems=5)
    assert table.default.approach == "none"  # 20/30 against 18/30
    choice, key, f = table.choose(WORD[3])
    # the cell word_problem/medium picks what its task picks, so only the task entry is kept
    assert key == "word_problem" and f["length"] == "medium" and not table.cells
    assert choice.approach == "majority_voting"
    assert dict(choice.options) == {"majority_voting_k": 5} and dict(choice.params) == {}
    assert choice.accuracy == 0.7 and choice.tokens == 1800 and choice.n == 10
    assert table.choose(OTHER[0])[0].approach == "none"
    assert "arithmetic" not in table.tasks  # none, as the default: left out
    easy = fit(records()[:20], min_problems=5).default  # arithmetic alone: a tie
    assert easy.approach == "none" and dict(easy.params) == {"temperature": 0.0}  # the cheaper
    assert easy.considered["mv5"] == [0.9, 300.0, 10]


def test_the_budget_rules_out_costly_approaches():
    table = fit(records(), max_tokens_per_query=1000, min_problems=5)
    assert table.choose(WORD[0])[0].approach == "none"
    assert table.max_tokens_per_query == 1000


def test_small_cells_fall_back_and_equal_entries_are_left_out():
    few = records()[:20] + records()[20:28] + records()[40:]  # 4 word problems
    table = fit(few, min_problems=5)
    assert not table.cells and not table.tasks  # too few to overrule the default
    assert table.choose(WORD[0])[1] == "default" and table.default.approach == "none"
    assert fit(few, min_problems=4).tasks["word_problem"].approach == "majority_voting"


def test_table_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "router.yaml"
    table = fit(records(), min_problems=5)
    dump(table, str(path))
    data = yaml.safe_load(path.read_text())
    assert data["version"] == 1 and "default" in data
    again = load(str(path))
    assert again.choose(WORD[0])[0] == table.choose(WORD[0])[0]
    for bad, message in [({"default": {"approach": "none"}}, "version"),
                         ({"version": 1, "default": {}}, "approach"),
                         ({"version": 1, "default": {"approach": "router"}}, "itself"),
                         ({"version": 1, "default": {"approach": "none"},
                           "cells": {"poem/short": {"approach": "moa"}}}, "bad cell"),
                         ({"version": 1, "default": {"approach": "none",
                                                     "params": {"stream": True}}}, "params")]:
        with pytest.raises(RouterTableError, match=message):
            RouterTable.from_dict(bad)
    with pytest.raises(RouterTableError, match="cannot read"):
        load(str(tmp_path / "missing.yaml"))


def test_fit_router_command(tmp_path, capsys):
    results = tmp_path / "r.jsonl"
    extra = [rec(500 + i, q, "none", False, 60, split="test") for i, q in enumerate(ARITH)]
    results.write_text("".join(json.dumps(r) + "\n" for r in records() + extra))
    out = tmp_path / "router.yaml"
    assert main(["fit-router", str(results), "--split", "dev", "--min-problems", "5",
                 "-o", str(out)]) == 0
    table = load(str(out))
    assert table.choose(WORD[1])[0].approach == "majority_voting"
    assert table.choose(ARITH[1])[0].approach == "none"  # the test rows (all wrong) unused
    assert "majority_voting" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit-router", str(tmp_path / "empty.jsonl"), "-o", str(out)])


@pytest.fixture
def table_path(tmp_path):
    path = tmp_path / "router.yaml"
    dump(fit(records(), min_problems=5), str(path))
    return str(path)


def test_router_table_setting_makes_auto_the_learned_router(table_path):
    assert Settings(router_table=table_path).approach == "router"
    assert Settings(router_table=table_path, approach="moa").approach == "moa"
    assert Settings.from_args(["--router-table", table_path], {}).approach == "router"
    assert Settings().approach == "auto"


@pytest.mark.parametrize("model, body", [
    ("fake-model", {}), ("auto-fake-model", {}), ("fake-model", {"optillm_approach": "auto"})])
def test_a_word_problem_runs_its_cells_approach(make_app, fake, table_path, model, body):
    fake.default = "The answer is 12"
    client = make_app(router_table=table_path).test_client()
    res = chat(client, model=model, content=WORD[2], **body)
    data = res.get_json()
    assert res.status_code == 200, data
    (call,) = fake.history
    assert call.n == 5  # majority voting with the table's majority_voting_k=5, one call
    router = data["choices"][0]["optillm_router"]
    assert router["approach"] == "majority_voting" and router["cell"].startswith("word_problem")
    assert router["options"] == {"majority_voting_k": 5} and router["table"] == table_path


def test_an_arithmetic_query_runs_none_greedily_and_the_client_still_wins(make_app, fake,
                                                                           table_path):
    fake.default = "43"
    client = make_app(router_table=table_path).test_client()
    data = chat(client, content="What is 40 + 3?\n\nSolve it.").get_json()
    router = data["choices"][0]["optillm_router"]
    assert router["approach"] == "none" and router["params"] == {"temperature": 0.0}
    assert fake.history[-1].params.get("temperature") == 0.0
    chat(client, content="What is 40 + 3?\n\nSolve it.", temperature=0.9)
    assert fake.history[-1].params.get("temperature") == 0.9


def test_a_request_table_overrides_the_learned_one(make_app, fake, table_path):
    fake.default = "The answer is 12"
    client = make_app(router_table=table_path).test_client()
    data = chat(client, model="router-fake-model", content=WORD[2],
                router_table={"math": "re2"}).get_json()
    assert data["choices"][0]["optillm_router"]["class"] == "math"
    assert data["choices"][0]["optillm_router"]["approach"] == "re2"


def test_a_broken_table_is_a_500_naming_the_flag(make_app, fake, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 7\n")
    client = make_app(router_table=str(bad)).test_client()
    res = chat(client, content=WORD[0])
    assert res.status_code == 500 and "--router-table" in res.get_json()["error"]["message"]
