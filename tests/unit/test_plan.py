"""The plan parser: model-name forms, body and tag selection, precedence and errors."""

import pytest

from optillm.errors import BadRequestError, NotFoundError
from optillm.plan.planner import PARALLEL, SEQUENCE, SINGLE, extract_tag, parse_plan, parse_prefix
from optillm.plan.registry import Registry
from optillm.types import Message


@pytest.fixture
def registry():
    r = Registry()
    for slug in ("none", "moa", "bon", "re2", "deep-think"):
        r.register(lambda ctx: "x", slug=slug)
    return r


def plan_of(model, registry, body=None, messages=None, **kw):
    messages = messages or (Message("user", "hi"),)
    return parse_plan(model, body or {}, tuple(messages), registry, **kw)


@pytest.mark.parametrize("model, op, slugs, base", [
    ("moa-gpt-4o-mini", SINGLE, ("moa",), "gpt-4o-mini"),
    ("moa&re2-gpt-4o-mini", SEQUENCE, ("moa", "re2"), "gpt-4o-mini"),
    ("bon|moa|re2-gpt-4o-mini", PARALLEL, ("bon", "moa", "re2"), "gpt-4o-mini"),
    ("deep-think-qwen-2.5", SINGLE, ("deep-think",), "qwen-2.5"),
    ("none-llama-3-8b", SINGLE, ("none",), "llama-3-8b"),
])
def test_prefix_forms(registry, model, op, slugs, base):
    plan = parse_prefix(model, registry)
    assert (plan.op, plan.slugs, plan.model) == (op, slugs, base)


@pytest.mark.parametrize("model", ["llama-3-8b", "gpt-4o-mini", "moa", "Qwen/Qwen2.5-7B",
                                   "moab-x"])
def test_model_names_with_dashes_are_not_misparsed(registry, model):
    assert parse_prefix(model, registry) is None
    plan, _ = plan_of(model, registry)
    assert plan.is_passthrough and plan.model == model


def test_unknown_approach_in_a_combination_is_404(registry):
    with pytest.raises(NotFoundError, match="'foo'"):
        parse_prefix("moa&foo-gpt-4o", registry)
    with pytest.raises(NotFoundError):
        plan_of("gpt-4o", registry, body={"optillm_approach": "bon|nope"})


def test_mixing_sequence_and_parallel_is_400(registry):
    with pytest.raises(BadRequestError):
        plan_of("gpt-4o", registry, body={"optillm_approach": "bon&moa|re2"})


def test_body_approach_wins_over_prefix_and_keeps_base_model(registry):
    plan, _ = plan_of("moa-gpt-4o", registry, body={"optillm_approach": "bon&re2"})
    assert (plan.op, plan.slugs, plan.model) == (SEQUENCE, ("bon", "re2"), "gpt-4o")


def test_tag_selects_and_is_removed(registry):
    messages = (Message("system", "Be brief. <optillm_approach>re2</optillm_approach>"),
                Message("user", "2+2?"))
    plan, out = plan_of("gpt-4o", registry, messages=messages)
    assert plan.slugs == ("re2",) and plan.model == "gpt-4o"
    assert out[0].content == "Be brief." and out[1].content == "2+2?"


def test_extract_tag_returns_same_messages_without_tag():
    messages = (Message("user", "hello"),)
    found, out = extract_tag(messages)
    assert found is None and out is messages


def test_server_default_approach_applies_only_without_explicit_choice(registry):
    plan, _ = plan_of("gpt-4o", registry, default_approach="bon")
    assert plan.slugs == ("bon",) and plan.model == "gpt-4o"
    plan, _ = plan_of("moa-gpt-4o", registry, default_approach="bon")
    assert plan.slugs == ("moa",)
    with pytest.raises(NotFoundError):
        plan_of("gpt-4o", registry, default_approach="nope")


def test_bare_slug_uses_default_model(registry):
    plan, _ = plan_of("moa", registry, default_model="SmolLM2-135M-Instruct")
    assert plan.slugs == ("moa",) and plan.model == "SmolLM2-135M-Instruct"


def test_optillm_approach_must_be_a_string(registry):
    with pytest.raises(BadRequestError):
        plan_of("gpt-4o", registry, body={"optillm_approach": 3})


def test_auto_means_as_the_rest_says(client, fake):
    """``auto`` is the decision itself: body value, prefix and tag all defer to the rest."""
    from ..conftest import chat

    fake.default = "x"
    chat(client, model="auto-re2-fake", content="Q")
    assert fake.history[-1].model == "fake"
    assert fake.history[-1].messages[-1].content.endswith("Read the question again: Q")
    chat(client, model="re2-fake", content="Q", optillm_approach="auto")
    assert fake.history[-1].messages[-1].content.endswith("Read the question again: Q")
    before = len(fake.forwarded)
    r = chat(client, model="auto-fake", content="plain")
    assert r.status_code == 200 and len(fake.forwarded) == before + 1  # the passthrough
    assert b'"model": "fake"' in fake.forwarded[-1] or b'"model":"fake"' in fake.forwarded[-1]
