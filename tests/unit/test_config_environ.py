"""The gateway config's ``${VAR}`` references read the environment the settings were read from
(``Settings.environ``), never ``os.environ`` directly."""

from __future__ import annotations

import pytest

from optillm.settings import Settings
from optillm.upstream.config import ConfigError, load_config, parse_config

CONFIG = """\
model_groups:
  m:
    - base_url: http://127.0.0.1:9/v1
      api_key: ${UPSTREAM_KEY}
      model: ${UPSTREAM_MODEL:-small}
"""


def test_variables_come_from_the_given_environment():
    config = parse_config(CONFIG, "t.yaml", {"UPSTREAM_KEY": "sk-1"})
    (endpoint,) = config.model_groups["m"]
    assert endpoint.api_key == "sk-1" and endpoint.model == "small"
    config = parse_config(CONFIG, "t.yaml", {"UPSTREAM_KEY": "sk-1", "UPSTREAM_MODEL": "big"})
    assert config.model_groups["m"][0].model == "big"


def test_the_process_environment_is_not_read(monkeypatch):
    monkeypatch.setenv("UPSTREAM_KEY", "from-os-environ")
    with pytest.raises(ConfigError, match="UPSTREAM_KEY is not set"):
        parse_config(CONFIG, "t.yaml")
    with pytest.raises(ConfigError, match="t.yaml: environment variable UPSTREAM_KEY"):
        parse_config(CONFIG, "t.yaml", {})


def test_settings_carry_their_environment_for_the_config(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text(CONFIG)
    settings = Settings.from_args(["--config", str(path)], {"UPSTREAM_KEY": "sk-secret"})
    assert settings.environ == {"UPSTREAM_KEY": "sk-secret"}
    assert load_config(settings.config, settings.environ).model_groups["m"][0].api_key \
        == "sk-secret"
    assert "sk-secret" not in repr(settings)  # never in a log line
    assert "OPTILLM_ENVIRON" not in settings.to_env()
    assert settings == Settings.from_args(["--config", str(path)], {})  # not a setting
    assert Settings().environ == {}


def test_an_optillm_environ_variable_is_not_a_flag():
    assert Settings.from_args([], {"OPTILLM_ENVIRON": "x"}).environ == {"OPTILLM_ENVIRON": "x"}


def test_algorithms_see_neither_the_environment_nor_the_keys(make_app, fake):
    """``ctx.settings`` is ``Settings.for_algorithms()``: a plugin cannot read the server's
    environment or its keys through it."""
    from optillm.hookspecs import hookimpl  # noqa: F401  (the registry is built by the app)

    seen = {}
    app = make_app(openai_api_key="sk-upstream", optillm_api_key="sk-proxy",
                   environ={"SECRET": "s3"})
    services = app.extensions["optillm"]
    from optillm.plan.registry import Approach

    def spy(ctx):
        seen["settings"] = ctx.settings
        from optillm.toolkit.context import Answer
        return Answer("ok")

    services.registry.register(Approach(slug="settings_spy", run=spy))
    r = app.test_client().post("/v1/chat/completions",
                               headers={"Authorization": "Bearer sk-proxy"},
                               json={"model": "settings_spy-m",
                                     "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.get_json()
    s = seen["settings"]
    assert s.environ == {} and s.openai_api_key is None and s.optillm_api_key is None
    assert s.data_path == services.settings.data_path  # server policy still there
