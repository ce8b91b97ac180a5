"""One loading path for plugins: every file in ``--plugins-dir`` is classified once, at load
time, as a native short-form module (``SLUG`` + ``run(ctx)``), a native hook module, or an
OptiLLM module (``run(system_prompt, initial_query, client, model[, request_config])``); each
form works through the real app, and a file that fits none stops start-up naming it."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from optillm.plan.loader import (
    HOOKS,
    NATIVE,
    OPTILLM,
    PluginLoadError,
    build_registry,
    classify,
    run_form,
)

from ..conftest import chat

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def module(**attrs) -> types.ModuleType:
    m = types.ModuleType("plugin_under_test")
    m.__dict__.update(attrs)
    return m


# -- through the real app, from --plugins-dir ---------------------------------------------------

def test_a_native_short_form_file_serves_requests(make_app, fake):
    """The form ``optillm/approaches/__init__.py`` documents: once loaded it used to fail every
    request with a 500 (it was called with OptiLLM's four arguments)."""
    fake.default = "hello there"
    client = make_app(plugins_dir=str(PLUGINS)).test_client()
    r = chat(client, model="shout-fake-model", shout_marks=3)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["choices"][0]["message"]["content"] == "HELLO THERE!!!"
    assert len(fake.history) == 1 and fake.history[0].params["max_tokens"] == 16
    assert "shout_marks" not in fake.history[0].params  # an option, not an upstream field
    assert r.get_json()["usage"]["completion_tokens"] == 2


def test_a_native_hook_module_adds_its_model_name_form(make_app, fake):
    fake.default = "quiet words"
    client = make_app(plugins_dir=str(PLUGINS)).test_client()
    r = chat(client, model="loud/fake-model")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["choices"][0]["message"]["content"] == "QUIET WORDS!!"
    assert [req.model for req in fake.history] == ["fake-model"]


def test_an_optillm_file_runs_unchanged(make_app, fake):
    fake.default = "abc def"
    client = make_app(plugins_dir=str(PLUGINS)).test_client()
    r = chat(client, model="echo_upper-fake-model", max_tokens=7)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["choices"][0]["message"]["content"] == "ABC DEF"
    assert fake.history[0].params["max_tokens"] == 7  # request_config reached the plugin


def test_each_file_is_classified_once_with_its_form():
    pm, registry = build_registry(str(PLUGINS))
    assert registry.get("shout").source.endswith("shout_native.py")
    assert registry.get("shout").options is not None
    assert registry.get("echo_upper").source.endswith("echo_upper_plugin.py")
    hook_plugins = {name for name, _ in pm.list_name_plugin()}
    assert str(PLUGINS / "loud_names.py") in hook_plugins
    assert str(PLUGINS / "twice_native.py") in hook_plugins


@pytest.mark.parametrize("folder, reason", [
    ("bad_signature", "fits neither run(ctx)"),
    ("no_form", "declares no approach"),
])
def test_a_file_that_fits_no_form_stops_startup_naming_it(make_app, folder, reason):
    path = next((PLUGINS / folder).glob("*.py"))
    with pytest.raises(PluginLoadError) as info:
        make_app(plugins_dir=str(PLUGINS / folder))
    assert str(path) in str(info.value) and reason in str(info.value)


# -- the classification itself ---------------------------------------------------------------------

def run_ctx(ctx):
    return "x"


def run_optillm(system_prompt, initial_query, client, model):
    return "x", 0


def run_optillm_config(system_prompt, initial_query, client, model, request_config=None):
    return "x", 0


def run_variadic(*args):
    return "x", 0


def run_ctx_with_defaults(ctx, a=None, b=None, c=None):
    return "x"


@pytest.mark.parametrize("fn, form", [
    (run_ctx, NATIVE), (lambda ctx: "x", NATIVE), (run_ctx_with_defaults, NATIVE),
    (run_optillm, OPTILLM), (run_optillm_config, OPTILLM), (run_variadic, OPTILLM),
])
def test_run_forms_are_read_from_the_signature(fn, form):
    assert run_form(fn, "here.py") == form


@pytest.mark.parametrize("fn", [lambda: "x", lambda a, b: "x", lambda a, b, c: "x",
                                lambda a, b, c, d, e, f: "x", lambda ctx, *, k: "x"])
def test_signatures_that_fit_no_form_are_refused(fn):
    with pytest.raises(PluginLoadError, match=r"here\.py: run\(.*fits neither"):
        run_form(fn, "here.py")


def test_classify_kinds_and_approaches():
    native = classify(module(SLUG="a", run=run_ctx), "a.py")
    assert native.kind == NATIVE and native.approaches[0].run is run_ctx
    optillm = classify(module(SLUG="b", run=run_optillm), "b.py")
    assert optillm.kind == OPTILLM and optillm.approaches[0].run is not run_optillm  # adapted

    def parse_model(model, registry):
        return None

    hooks = classify(module(parse_model=parse_model), "c.py")
    assert hooks.kind == HOOKS and hooks.approaches == ()
    both = classify(module(parse_model=parse_model, SLUG="d", run=run_ctx), "d.py")
    assert both.kind == HOOKS and [a.slug for a in both.approaches] == ["d"]


@pytest.mark.parametrize("attrs, message", [
    ({"run": run_ctx}, "no SLUG"),
    ({"SLUG": "x"}, "no run()"),
    ({"SLUG": "", "run": run_ctx}, "non-empty string"),
    ({"APPROACHES": ["not an approach"]}, "Approach values"),
])
def test_malformed_modules_are_refused_naming_the_source(attrs, message):
    with pytest.raises(PluginLoadError, match=message) as info:
        classify(module(**attrs), "somewhere/plugin.py")
    assert str(info.value).startswith("somewhere/plugin.py: ")


def test_every_builtin_module_fits_a_form():
    _, registry = build_registry()
    sources = {registry.get(slug).source for slug in registry}
    assert {"optillm.approaches.wait", "optillm.plugins.compact"} <= sources
