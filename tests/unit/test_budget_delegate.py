"""The request budget (``max_total_tokens``, ``max_upstream_calls``), ``ctx.run_approach``
and ``--cepo-config`` option defaults, through the real app over a scripted upstream."""

import textwrap

import pytest

from optillm.toolkit.context import Budget, BudgetExhausted
from optillm.types import Usage

from ..conftest import chat

DELEGATING_PLUGIN = '''
from optillm import Answer, Approach, hookimpl

def run(ctx):
    first = ctx.run_approach("re2")
    second = ctx.run_approach("none", ctx.with_query("again: " + first.text))
    return Answer(second.text, metadata={"delegated": [first.text, second.text]})

@hookimpl
def register_approaches(register):
    register(Approach(slug="delegator", run=run))
'''


def test_budget_counts_tokens_and_calls_and_stops():
    budget = Budget(max_total_tokens=10, max_upstream_calls=3)
    budget.check("x")  # nothing spent yet
    budget.spend(Usage(4, 3))
    assert budget.tokens == 7 and budget.calls == 1 and budget.tokens_left == 3
    budget.spend(Usage(2, 2))
    assert budget.exhausted
    with pytest.raises(BudgetExhausted) as info:
        budget.check("mcts")
    assert info.value.status == 400 and info.value.code == "budget_exceeded"
    assert budget.report()["stopped_early"] is True
    assert not Budget().bounded and Budget(max_upstream_calls=1).bounded


def test_a_spent_budget_is_a_400_for_an_approach_that_cannot_stop_early(client, fake):
    r = chat(client, model="bon-fake", best_of_n=3, max_upstream_calls=2)
    assert r.status_code == 400
    assert r.get_json()["error"]["code"] == "budget_exceeded"
    assert len(fake.history) == 2  # the candidates call and one rating; then refused


def test_budget_fields_are_never_sent_upstream(client, fake):
    chat(client, model="re2-fake", max_total_tokens=1000, optillm={"max_upstream_calls": 5})
    (call,) = fake.history
    assert "max_total_tokens" not in call.params and "max_upstream_calls" not in call.params


@pytest.mark.parametrize("value", [0, -3, "many", 2.5, True])
def test_bad_budget_values_are_400_naming_the_field(client, fake, value):
    r = chat(client, model="re2-fake", max_total_tokens=value)
    assert r.status_code == 400
    assert r.get_json()["error"]["param"] == "max_total_tokens"
    assert fake.history == []


def test_budget_is_per_request(client, fake):
    assert chat(client, model="bon-fake", max_upstream_calls=2).status_code == 400
    fake.history.clear()
    assert chat(client, model="bon-fake").status_code == 200
    assert len(fake.history) == 4


def test_run_approach_runs_another_approach_and_sums_usage(make_app, fake, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "delegator.py").write_text(textwrap.dedent(DELEGATING_PLUGIN))
    fake.enqueue("one", "two")
    client = make_app(plugins_dir=str(plugins)).test_client()
    data = chat(client, model="delegator-fake", content="Q?").get_json()
    assert data["choices"][0]["message"]["content"] == "two"
    assert data["choices"][0]["delegated"] == ["one", "two"]
    first, second = fake.history
    assert "Read the question again: Q?" in first.messages[-1].content
    assert second.messages[-1].content == "again: one"
    prompt = sum(sum(max(1, len(m.text.split())) for m in r.messages) for r in fake.history)
    assert data["usage"]["prompt_tokens"] == prompt
    assert data["usage"]["completion_tokens"] == 2


def test_run_approach_unknown_slug_is_404(make_app, fake, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "bad.py").write_text(textwrap.dedent(DELEGATING_PLUGIN).replace(
        '"re2"', '"no_such_approach"').replace('slug="delegator"', 'slug="bad"'))
    client = make_app(plugins_dir=str(plugins)).test_client()
    r = chat(client, model="bad-fake")
    assert r.status_code == 404 and "no_such_approach" in r.get_json()["error"]["message"]


def test_cepo_config_gives_defaults_under_the_body(make_app, fake, tmp_path):
    """``--cepo-config`` values (prefix optional) fill options the body leaves out."""
    from optillm.app import load_option_defaults
    from optillm.upstream.config import ConfigError

    path = tmp_path / "cepo.yaml"
    path.write_text("bestofn_n: 2\ncepo_planning_n: 4\n")
    assert load_option_defaults(str(path)) == {"cepo_bestofn_n": 2, "cepo_planning_n": 4}
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="cepo.yaml"):
        load_option_defaults(str(path))
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_option_defaults(str(tmp_path / "missing.yaml"))


def test_a_concurrent_fan_out_never_overshoots_max_upstream_calls(make_app, fake):
    """Calls are reserved against max_upstream_calls when they start, so 8 concurrent calls
    under a budget of 3 make exactly 3 upstream calls (the others stop at their check)."""
    from optillm.plan.registry import Approach
    from optillm.toolkit.context import Answer, BudgetExhausted

    fake.delay = 0.05

    def fan_out(ctx):
        def one(i):
            try:
                return ctx.complete([ctx.messages[-1]]).text
            except BudgetExhausted:
                return None
        done = [t for t in ctx.map(one, range(8)) if t is not None]
        return Answer(f"{len(done)} answers")

    app = make_app(max_parallel_calls=8)
    app.extensions["optillm"].registry.register(Approach(slug="fan_out", run=fan_out))
    r = app.test_client().post("/v1/chat/completions", json={
        "model": "fan_out-m", "max_upstream_calls": 3,
        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["choices"][0]["message"]["content"] == "3 answers"
    assert len(fake.history) == 3 and fake.max_active >= 2  # they did run concurrently
