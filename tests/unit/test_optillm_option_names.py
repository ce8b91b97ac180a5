"""OptiLLM's option names, accepted with the same meaning (``opt(aliases=...)``) or refused by
name. Each alias is checked for its effect: a request using OptiLLM's name makes exactly the
upstream calls (models, ``n``, parameters, prompts) and gets the answer that our name makes,
and they differ from the default's. Names OptiLLM and we share are checked to be read."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time

import pytest

from optillm.approaches import genselect
from optillm.errors import UpstreamError
from optillm.plan.loader import build_registry

from ..conftest import chat
from .test_leap_cepo_mars import EXECUTE, PLAN, cepo_script, truncated
from .test_plugin_deep_research import script as research_script
from .test_plugin_deep_research import stage as research_stage
from .test_plugin_web_search import StubSearch


def run(client, fake, model, body, reply=None):
    """``(status, answer text, sorted upstream calls)`` of one request; ``reply()`` gives a
    fresh scripted default reply for it (and may reset other state)."""
    fake.history.clear()
    if reply is not None:
        fake.default = reply()
    r = chat(client, model=model, **body)
    data = r.get_json()
    text = data["choices"][0]["message"]["content"] if r.status_code == 200 else None
    calls = sorted((q.model, q.n, json.dumps(dict(q.params), sort_keys=True, default=str),
                    tuple(m.text for m in q.messages)) for q in fake.history)
    return r.status_code, text, calls


def check_alias(client, fake, model, alias, ours, value, base=None, reply=None):
    base = base or {}
    run(client, fake, model, base, reply)  # the app's first call may probe the upstream
    default = run(client, fake, model, base, reply)
    by_alias = run(client, fake, model, {**base, alias: value}, reply)
    by_ours = run(client, fake, model, {**base, ours: value}, reply)
    assert by_alias == by_ours, (alias, ours)
    assert by_alias != default, f"{alias}={value!r} changed nothing"
    return by_alias


# -- cepo: OptiLLM's cepo_config.yaml names -------------------------------------------------

CEPO_PLAIN = [("bestofn_n", 1), ("bestofn_temperature", 0.9), ("bestofn_max_tokens", 77),
              ("bestofn_rating_type", "pairwise"), ("planning_n", 1),
              ("planning_temperature_step1", 0.9), ("planning_temperature_step2", 0.9),
              ("planning_temperature_step3", 0.9), ("planning_temperature_step4", 0.9),
              ("planning_max_tokens_step1", 77), ("planning_max_tokens_step2", 77),
              ("planning_max_tokens_step3", 77), ("planning_max_tokens_step4", 77),
              ("use_plan_diversity", True), ("rating_model", "judge-model")]


@pytest.mark.parametrize(("alias", "value"), CEPO_PLAIN, ids=[a for a, _ in CEPO_PLAIN])
def test_cepo_config_names(client, fake, alias, value):
    check_alias(client, fake, "cepo-fake", alias, f"cepo_{alias}", value, reply=cepo_script)


def cut_plans():
    return cepo_script(**{EXECUTE: lambda r: truncated(r, "cut")})  # no plan is accepted


@pytest.mark.parametrize(("alias", "value"), [("planning_m", 2),
                                              ("planning_temperature_direct_resp", 0.9),
                                              ("planning_max_tokens_direct_resp", 77)])
def test_cepo_config_names_when_plans_fail(client, fake, alias, value):
    base = {"cepo_bestofn_n": 1, "cepo_planning_n": 1}
    check_alias(client, fake, "cepo-fake", alias, f"cepo_{alias}", value, base, cut_plans)


def flaky_plan():
    failures = iter([True])
    lock = threading.Lock()

    def plan(request):
        with lock:
            fail = next(failures, False)
        return UpstreamError("boom") if fail else "the plan"

    return cepo_script(**{PLAN: plan})


def test_cepo_num_of_retries_and_use_reasoning_fallback(client, fake):
    base = {"cepo_bestofn_n": 1, "cepo_planning_n": 1, "cepo_planning_m": 1}
    status, _, _ = check_alias(client, fake, "cepo-fake", "num_of_retries",
                               "cepo_num_of_retries", 1, base, flaky_plan)
    assert status == 200  # the default (no retries) is the upstream's 502
    base = {**base, "cepo_num_of_retries": 1, "reasoning_effort": "high"}
    _, _, calls = check_alias(client, fake, "cepo-fake", "use_reasoning_fallback",
                              "cepo_use_reasoning_fallback", True, base, flaky_plan)
    assert any('"reasoning_effort": "medium"' in params for _, _, params, _ in calls)


def test_cepo_print_output(client, fake, caplog):
    fake.default = cepo_script()
    with caplog.at_level(logging.INFO, logger="optillm.approaches.cepo"):
        chat(client, model="cepo-fake", cepo_bestofn_n=1, cepo_planning_n=1)
        assert not [r for r in caplog.records if r.getMessage().startswith("cepo ")]
        chat(client, model="cepo-fake", cepo_bestofn_n=1, cepo_planning_n=1,
             print_output=True)
    assert [r for r in caplog.records if r.getMessage().startswith("cepo ")]


# -- genselect: OptiLLM's genselect plugin names --------------------------------------------

def selection_script():
    def reply(request):
        if request.messages[0].text == genselect.SELECTOR_SYSTEM:
            return [f"Solution 2 checks out.\nJudgment: 2 (vote {i})" for i in range(request.n)]
        return [f"The answer is {i}" for i in range(request.n)]
    return reply


@pytest.mark.parametrize(("alias", "ours", "value"), [
    ("num_candidates", "genselect_n", 2), ("comparison_mode", "genselect_mode", "tournament"),
    ("comparison_temperature", "genselect_compare_temperature", 0.1),
    ("include_reasoning", "genselect_include_reasoning", True)])
def test_genselect_plugin_names(client, fake, alias, ours, value):
    status, text, _ = check_alias(client, fake, "genselect-fake", alias, ours, value,
                                  reply=selection_script)
    assert status == 200
    if alias == "include_reasoning":
        assert text == ("The answer is 1\n\n---\n**GenSelect Reasoning**: Solution 2 checks "
                        "out.\nJudgment: 2 (vote 0)")


# -- deepthink -------------------------------------------------------------------------------

def split_votes():
    return lambda r: [f"The answer is {i}" for i in range(r.n)]


@pytest.mark.parametrize(("alias", "ours", "value"), [
    ("confidence_threshold", "deepthink_threshold", 0.2),
    ("reasoning_modules_limit", "deepthink_modules", 5),
    ("enable_self_discover", "deepthink_self_discover", False)])
def test_deepthink_plugin_names(client, fake, alias, ours, value):
    check_alias(client, fake, "deepthink-fake", alias, ours, value, reply=split_votes)


def test_deepthink_samples_at_the_requests_temperature_as_optillm(client, fake):
    def sample_temperatures(**body):
        fake.history.clear()
        chat(client, model="deepthink-fake", deepthink_self_discover=False, **body)
        return [q.params["temperature"] for q in fake.history if q.n == 3]

    assert sample_temperatures() == [0.7]
    assert sample_temperatures(temperature=0.2) == [0.2]
    assert sample_temperatures(temperature=0.2, deepthink_temperature=0.5) == [0.5]


# -- deep_research and web_search ------------------------------------------------------------

@pytest.fixture
def net_client(make_app):
    return make_app(allow_private_urls="127.0.0.1/32").test_client()


@pytest.fixture
def stub():
    def results(q):  # six sources per query, the same for the same query
        return [(f"{q} {i}", f"https://ex.com/{q.replace(' ', '-')}-{i}", f"About {q} {i}.")
                for i in range(6)]

    s = StubSearch(results)
    yield s
    s.close()


@pytest.mark.parametrize(("alias", "ours", "value"), [
    ("max_iterations", "deep_research_max_iterations", 1),
    ("max_sources", "deep_research_max_sources", 2)])
def test_deep_research_plugin_names(net_client, fake, stub, alias, ours, value):
    base = {"web_search_url": stub.url, "deep_research_read_pages": 0}
    def reply():  # each round asks new queries (so finds new sources)
        rounds = itertools.count(1)
        fake.rules.clear()
        research_script(fake)
        fake.rules.insert(0, (lambda r: research_stage(r) == "queries",
                              lambda r: f"query {next(rounds)}"))
        return "ok"

    check_alias(net_client, fake, "deep_research-fake", alias, ours, value, base, reply)


def test_web_search_num_results(net_client, fake, stub):
    _, _, calls = check_alias(net_client, fake, "web_search-fake", "num_results",
                              "web_search_max_results", 2, {"web_search_url": stub.url})
    prompt = calls[0][3][-1]
    assert "About " in prompt and "https://ex.com/" in prompt and "[3]" not in prompt


def test_web_search_timeout(net_client, fake, stub):
    results = stub.results

    def slow(q):
        time.sleep(1.5)
        return results(q)

    stub.results = slow
    check_alias(net_client, fake, "web_search-fake", "timeout", "web_search_timeout", 0.5,
                {"web_search_url": stub.url})  # cut off: the answer is made without results


@pytest.mark.parametrize("name", ["headless", "delay_seconds", "session_manager"])
def test_web_search_browser_options_are_a_400_naming_them(net_client, fake, name):
    r = chat(net_client, model="web_search-fake", web_search_url="http://127.0.0.1:9",
             **{name: 0})
    error = r.get_json()["error"]
    assert r.status_code == 400 and error["param"] == name
    assert error["code"] == "unsupported_option" and name in error["message"]
    assert fake.history == []
    nested = chat(net_client, model="web_search-fake", optillm={name: 0})
    assert nested.status_code == 400 and nested.get_json()["error"]["param"] == name
    # another approach's request carries it upstream untouched: not ours to refuse there
    assert chat(net_client, model="fake", **{name: 0}).status_code == 200


# -- names OptiLLM and we share ---------------------------------------------------------------

SHARED = {"mcts": {"mcts_simulations", "mcts_exploration", "mcts_depth"},
          "bon": {"best_of_n"}, "rstar": {"rstar_max_depth", "rstar_num_rollouts", "rstar_c"},
          "majority_voting": {"k"}, "spl": {"spl_learning"},
          "deepthink": {"deepthink_samples"}}


def test_names_optillm_shares_with_us_are_read():
    _, registry = build_registry(entry_points=False)
    for slug, names in SHARED.items():
        assert names <= registry.option_names(slug), slug
