"""Option bounds, declared once with ``optillm.options.opt``, checked over every registered
approach: a value below, above or outside a field's range (or of the wrong type) is a 400
naming the field and its range, before any upstream call; the default and the range's ends
pass. Also: which body fields a request consumes (only its plan's approaches' options)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from optillm.errors import BadRequestError
from optillm.options import CODE, Spec, accepted_names, opt, spec
from optillm.plan.loader import build_registry
from optillm.plan.registry import RESERVED_FIELDS, Registry

from ..conftest import chat

_, REGISTRY = build_registry(entry_points=False)


def _base(hint):
    """``int | None`` -> int; ``float`` -> float."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _bounded_fields():
    for slug in REGISTRY:
        approach = REGISTRY.get(slug)
        if approach.options is None:
            continue
        hints = typing.get_type_hints(approach.options)
        for f in dataclasses.fields(approach.options):
            found = spec(f)
            if found is not None and found.bounded:
                yield slug, f, _base(hints[f.name]), found


FIELDS = list(_bounded_fields())
IDS = [f"{slug}.{f.name}" for slug, f, _, _ in FIELDS]


def _bad_values(kind, found: Spec) -> list:
    """Values outside ``found``: just below/above each bound, a non-choice, a wrong type."""
    step = 1 if kind is int else 0.01
    bad = []
    if found.ge is not None:
        bad.append(found.ge - step)
    if found.gt is not None:
        bad.append(found.gt)
    if found.le is not None:
        bad.append(found.le + step)
    if found.lt is not None:
        bad.append(found.lt)
    if found.choices is not None:
        bad.append("no-such-choice")
    bad.append("x" if kind in (int, float) else 5)  # the wrong type
    if kind is int:
        bad.append(1.5)  # not a whole number
    return [int(v) if kind is int and isinstance(v, float) and v.is_integer() else v
            for v in bad]


def _good_values(kind, found: Spec) -> list:
    values = [v for v in (found.ge, found.le) if v is not None]
    values += list(found.choices or ())
    return [kind(v) if kind in (int, float) else v for v in values]


def test_every_registered_numeric_option_declares_its_bounds():
    # a new int/float option without opt(ge=, le=) would accept any value
    missing = []
    for slug in REGISTRY:
        options = REGISTRY.get(slug).options
        if options is None:
            continue
        hints = typing.get_type_hints(options)
        for f in dataclasses.fields(options):
            found = spec(f)
            if _base(hints[f.name]) in (int, float) and not (found and found.bounded):
                missing.append(f"{slug}.{f.name}")
    assert missing == []
    assert len(FIELDS) >= 60  # the migrated checks are all seen here


@pytest.mark.parametrize(("slug", "field", "kind", "found"), FIELDS, ids=IDS)
def test_bad_values_are_400_naming_the_option(client, fake, slug, field, kind, found):
    for value in _bad_values(kind, found):
        r = chat(client, model="fake", optillm_approach=slug, **{field.name: value})
        error = r.get_json()["error"]
        assert r.status_code == 400, (field.name, value, error)
        assert error["param"] == field.name, (value, error)
        assert field.name in error["message"] and found.describe() in error["message"], error
        assert error["type"] == "invalid_request_error"
        # also under "optillm": the same check, the same name
        nested = chat(client, model="fake", optillm_approach=slug, optillm={field.name: value})
        assert nested.status_code == 400 and nested.get_json()["error"]["param"] == field.name
    assert fake.history == []  # refused before any upstream call


ALIASED = [(slug, f, kind, found, alias) for slug, f, kind, found in FIELDS
           for alias in found.aliases]


@pytest.mark.parametrize(("slug", "field", "kind", "found", "alias"), ALIASED,
                         ids=[f"{s}.{a}" for s, _, _, _, a in ALIASED])
def test_an_alias_has_its_fields_bounds_and_is_named_in_the_error(client, fake, slug, field,
                                                                    kind, found, alias):
    for value in _bad_values(kind, found):
        r = chat(client, model="fake", optillm_approach=slug, **{alias: value})
        error = r.get_json()["error"]
        assert r.status_code == 400 and error["param"] == alias, (value, error)
        assert found.describe() in error["message"]
    assert fake.history == []


@pytest.mark.parametrize(("slug", "field", "kind", "found"), FIELDS, ids=IDS)
def test_default_and_range_ends_pass(slug, field, kind, found):
    approach = REGISTRY.get(slug)
    for value in [field.default, *_good_values(kind, found)]:
        if value is None:
            continue
        built = REGISTRY.build_options(approach, {field.name: value})
        assert getattr(built, field.name) == value
    assert getattr(REGISTRY.build_options(approach, {}), field.name) == field.default


def test_out_of_range_error_object():
    @dataclasses.dataclass(frozen=True)
    class Options:
        count: int = opt(3, ge=1, le=32)
        wait: float = opt(10.0, gt=0, le=60, unit="seconds")
        mode: str = opt("a", choices=("a", "b"))
        cap: int | None = opt(None, ge=1)

    registry = Registry()
    approach = registry.register(lambda ctx: "x", slug="t", options=Options)
    cases = [({"count": 33}, "count", "count must be between 1 and 32, got 33"),
             ({"wait": 0}, "wait", "wait must be more than 0 and at most 60 seconds, got 0.0"),
             ({"mode": "c"}, "mode", "mode must be one of 'a', 'b', got 'c'"),
             ({"cap": 0}, "cap", "cap must be at least 1, got 0"),
             ({"count": float("nan")}, "count", "'count' must be of type int")]
    for body, param, message in cases:
        with pytest.raises(BadRequestError) as info:
            registry.build_options(approach, body)
        assert info.value.param == param and info.value.message.startswith(message), \
            info.value.message
    with pytest.raises(BadRequestError) as info:
        registry.build_options(approach, {"wait": float("nan")})
    assert info.value.code == CODE and info.value.param == "wait"
    built = registry.build_options(approach, {"count": 32.0, "cap": None}, {"mode": "b"})
    assert (built.count, built.cap, built.mode) == (32, None, "b")


def test_a_default_outside_its_own_range_fails_at_import():
    with pytest.raises(ValueError, match="between 1 and 4"):
        opt(5, ge=1, le=4)


def test_aliases_are_read_and_may_not_collide():
    @dataclasses.dataclass(frozen=True)
    class Options:
        depth: int = opt(1, ge=1, le=5, aliases=("max_depth",))

    registry = Registry()
    approach = registry.register(lambda ctx: "x", slug="t", options=Options)
    assert registry.build_options(approach, {"max_depth": 4}).depth == 4
    assert registry.build_options(approach, {"depth": 2, "max_depth": 4}).depth == 2
    assert registry.build_options(approach, {"optillm": {"max_depth": 3}}).depth == 3
    with pytest.raises(BadRequestError) as info:
        registry.build_options(approach, {"max_depth": 9})
    assert info.value.param == "max_depth" and "between 1 and 5" in info.value.message
    assert registry.option_names("t") == {"depth", "max_depth"} == accepted_names(Options)

    @dataclasses.dataclass(frozen=True)
    class Clash:
        a: int = opt(1, ge=0, le=2, aliases=("b",))
        b: int = opt(1, ge=0, le=2)

    with pytest.raises(ValueError, match="'b'"):
        Registry().register(lambda ctx: "x", slug="c", options=Clash)

    @dataclasses.dataclass(frozen=True)
    class Reserved:
        a: int = opt(1, ge=0, le=2, aliases=("optillm_approach",))

    with pytest.raises(ValueError, match="optillm_approach"):
        Registry().register(lambda ctx: "x", slug="r", options=Reserved)


def test_consumed_fields_are_the_plans_approaches_only():
    assert REGISTRY.consumed_fields(["none"]) == RESERVED_FIELDS
    bon = REGISTRY.consumed_fields(["bon"])
    assert "best_of_n" in bon and "mcts_depth" not in bon and "k" not in bon
    both = REGISTRY.consumed_fields(["bon", "majority_voting"])
    assert {"best_of_n", "k", "majority_voting_k"} <= both


SEED_PLUGIN = '''
"""A plugin whose option is named like an OpenAI field (``seed``)."""
from dataclasses import dataclass

from optillm import Answer, Approach, hookimpl


@dataclass(frozen=True)
class Options:
    seed: int | None = None
    seedy_delegate: str | None = None


def run(ctx):
    if ctx.options.seedy_delegate:
        text = ctx.run_approach(ctx.options.seedy_delegate).text
    else:
        text = ctx.complete().text
    return Answer(f"seed={ctx.options.seed} {text}")


@hookimpl
def register_approaches(register):
    register(Approach(slug="seedy", run=run, options=Options, source=__file__))
'''


@pytest.fixture
def seedy(make_app, tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "seedy.py").write_text(SEED_PLUGIN)
    return make_app(plugins_dir=str(folder)).test_client()


def test_another_approachs_option_name_is_not_taken_from_passthrough_or_bon(seedy, fake):
    import json

    assert chat(seedy, model="fake-model", seed=7, best_of_n=2).status_code == 200
    sent = json.loads(fake.forwarded[-1])  # the relayed passthrough body
    assert sent["seed"] == 7 and sent["best_of_n"] == 2  # ordinary fields for passthrough
    fake.history.clear()
    assert chat(seedy, model="bon-fake-model", seed=7, best_of_n=2).status_code == 200
    assert fake.history and all(req.params.get("seed") == 7 for req in fake.history)
    assert all("best_of_n" not in req.params for req in fake.history)  # bon's own: consumed
    assert fake.history[0].n == 2  # and read by bon


def test_the_chosen_approach_consumes_its_option(seedy, fake):
    fake.default = "fine"
    data = chat(seedy, model="seedy-fake-model", seed=7).get_json()
    assert data["choices"][0]["message"]["content"] == "seed=7 fine"
    assert len(fake.history) == 1 and "seed" not in fake.history[0].params


def test_a_delegated_approach_consumes_its_options_too(seedy, fake):
    # seedy (the plan) runs bon through ctx.run_approach: seed is seedy's, best_of_n bon's
    data = chat(seedy, model="seedy-fake-model", seed=3, seedy_delegate="bon",
                best_of_n=2).get_json()
    assert data["choices"][0]["message"]["content"].startswith("seed=3 ")
    assert fake.history[0].n == 2
    assert all("seed" not in r.params and "best_of_n" not in r.params for r in fake.history)
