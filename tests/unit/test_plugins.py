"""Plugin discovery, OptiLLM drop-in compatibility, native hooks and load failures."""

import inspect
from pathlib import Path

import pytest

from optillm import hookspecs
from optillm.plan.loader import PluginLoadError, build_registry

from ..conftest import chat

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def test_builtins_register_through_the_hook():
    pm, registry = build_registry()
    assert {"none", "re2", "cot_reflection", "bon", "moa", "self_consistency"} <= set(registry)
    assert pm.get_plugin("optillm.approaches") is not None


def test_every_hookspec_is_documented():
    specs = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(f, "optillm_spec")]
    assert {f.__name__ for f in specs} == {"register_approaches", "parse_model"}
    assert all(len((f.__doc__ or "").strip()) > 40 for f in specs)


def test_dropin_plugins_load_from_the_folder():
    _, registry = build_registry(str(PLUGINS))
    assert {"reverse", "twice"} <= set(registry)
    assert registry.get("reverse").source.endswith("reverse_plugin.py")


def test_optillm_plugin_runs_unchanged_with_exact_usage(make_app, fake):
    fake.default = "hello world"
    client = make_app(plugins_dir=str(PLUGINS)).test_client()
    r = client.post("/v1/chat/completions", json={"model": "reverse-fake", "messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]})
    data = r.get_json()
    assert data["choices"][0]["message"]["content"] == "dlrow olleh"
    assert data["usage"]["completion_tokens"] == 2
    assert [m.content for m in fake.history[0].messages] == ["sys", "q"]
    assert fake.history[0].params["max_tokens"] == 32


def test_native_plugin_options_and_chains(make_app, fake):
    fake.default = "ans"
    client = make_app(plugins_dir=str(PLUGINS)).test_client()
    data = chat(client, model="twice-fake", twice_rounds=3).get_json()
    assert data["choices"][0]["message"]["content"] == "ans | ans | ans"
    assert len(fake.history) == 3
    fake.history.clear()
    data = chat(client, model="re2&twice-fake").get_json()
    assert len(fake.history) == 3 and data["choices"][0]["message"]["content"] == "ans | ans"


@pytest.mark.parametrize("folder, message", [
    ("broken_import", "not_a_real_module_xyz"),
    ("no_slug", "SLUG"),
    ("duplicate", "already registered"),
])
def test_a_plugin_that_fails_to_load_stops_startup_naming_it(folder, message):
    with pytest.raises(PluginLoadError) as info:
        build_registry(str(PLUGINS / folder))
    text = str(info.value)
    assert message in text
    if folder != "duplicate":
        assert str(PLUGINS / folder) in text  # the path
    else:
        assert "moa_again.py" in text and "optillm.approaches.moa" in text


def test_missing_plugins_dir_is_an_error(tmp_path):
    with pytest.raises(PluginLoadError, match="not a directory"):
        build_registry(str(tmp_path / "nope"))


def test_create_app_fails_on_bad_plugin(make_app):
    with pytest.raises(PluginLoadError):
        make_app(plugins_dir=str(PLUGINS / "broken_import"))


def test_entry_point_plugins_are_discovered(monkeypatch):
    import importlib.metadata
    import types

    module = types.ModuleType("third_party_optillm")
    module.SLUG = "third_party"
    module.run = lambda system_prompt, initial_query, client, model: ("tp", 0)

    class EntryPoint:
        name, value = "third_party", "third_party_optillm"

        def load(self):
            return module

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [EntryPoint()] if kw.get("group") == "optillm"
                        else real(**kw))
    _, registry = build_registry()
    assert "third_party" in registry
    assert registry.get("third_party").source == "entry point third_party"
