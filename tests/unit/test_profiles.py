"""Composite LLM's model names through the real app: ``profile/<name>`` from a ``--config``
YAML and ``composite/<strategy>/<model>``; a bad profile stops start-up naming it."""

from __future__ import annotations

import textwrap

import pytest

from optillm.upstream.config import ConfigError

from ..conftest import chat

CONFIG = """\
profiles:
  fast-council:
    strategy: council
    members: [member-a, member-b]
    chairman: chair-c
  my-moa:
    strategy: moa
    proposers: [prop-a, prop-b, prop-c]
    aggregator: agg-d
  sampled-moa:
    strategy: moa
    model: base-e
    settings: {moa_candidates: 2}
"""


@pytest.fixture
def profile_app(make_app, tmp_path):
    def build(text: str = CONFIG):
        path = tmp_path / "optillm.yaml"
        path.write_text(textwrap.dedent(text))
        return make_app(config=str(path), cache_ttl=0, cache_dir=str(tmp_path / "store"))

    return build


def models(fake) -> list[str]:
    return [r.model for r in fake.history]


def test_council_profile_uses_its_members_and_chairman(profile_app, fake):
    client = profile_app().test_client()
    r = chat(client, model="profile/fast-council", max_tokens=20)
    assert r.status_code == 200, r.get_json()
    # 2 members x (opinion + review) + the chairman's synthesis
    assert len(fake.history) == 5
    assert sorted(models(fake)[:4]) == ["member-a", "member-a", "member-b", "member-b"]
    assert models(fake)[-1] == "chair-c"
    assert r.get_json()["usage"]["total_tokens"] > 0


def test_moa_profile_uses_its_proposers_and_aggregator(profile_app, fake):
    client = profile_app().test_client()
    r = chat(client, model="composite/profile/my-moa")
    assert r.status_code == 200, r.get_json()
    assert sorted(models(fake)[:3]) == ["prop-a", "prop-b", "prop-c"]
    assert models(fake)[3:] == ["agg-d", "agg-d"]  # critique, synthesis


def test_profile_settings_are_options_and_the_body_overrides_them(profile_app, fake):
    client = profile_app().test_client()
    assert chat(client, model="profile/sampled-moa").status_code == 200
    assert [(r.model, r.n) for r in fake.history] == [("base-e", 2), ("base-e", 1),
                                                      ("base-e", 1)]
    fake.history.clear()
    assert chat(client, model="profile/sampled-moa", moa_candidates=4).status_code == 200
    assert fake.history[0].n == 4


def test_unknown_profile_is_a_404_naming_the_known_ones(profile_app, fake):
    r = chat(profile_app().test_client(), model="profile/nope")
    assert r.status_code == 404
    err = r.get_json()["error"]
    assert "'nope'" in err["message"] and "fast-council" in err["message"]
    assert err["code"] == "profile_not_found"
    assert fake.history == []


def test_profile_without_profiles_configured_is_a_404(make_app, fake):
    r = chat(make_app().test_client(), model="profile/fast-council")
    assert r.status_code == 404
    assert "no profiles are configured" in r.get_json()["error"]["message"]


@pytest.mark.parametrize("profile, words", [
    ("{strategy: nosuch, model: m}", ["'broken'", "unknown strategy 'nosuch'"]),
    ("{strategy: moa, members: [a, b]}", ["'broken'", "'members'", "council"]),
    ("{strategy: council, model: m, settings: {moa_candidates: 2}}",
     ["'broken'", "moa_candidates", "no option"]),
    ("{strategy: moa, model: m, settings: {moa_candidates: 99}}",
     ["'broken'", "moa_candidates"]),
    ("{strategy: council}", ["'broken'", "no base model"]),
])
def test_bad_profile_stops_start_up_naming_it(profile_app, profile, words):
    with pytest.raises(ConfigError) as info:
        profile_app(f"profiles:\n  fine: {{strategy: moa, model: m}}\n  broken: {profile}\n")
    for word in words:
        assert word in str(info.value)


def test_profiles_are_per_app(profile_app, make_app):
    profile_app()
    plain = make_app().test_client()
    r = chat(plain, model="profile/fast-council")
    assert r.status_code == 404 and "no profiles" in r.get_json()["error"]["message"]


def test_composite_strategy_on_a_model_with_slashes(client, fake):
    r = chat(client, model="composite/moa/org/some-model")
    assert r.status_code == 200, r.get_json()
    assert len(fake.history) == 3
    assert {r.model for r in fake.history} == {"org/some-model"}


def test_composite_council(client, fake):
    r = chat(client, model="composite/council/fake-model")
    assert r.status_code == 200
    assert len(fake.history) == 2 * 3 + 1  # default three members


def test_composite_sequence_runs_both_stages(client, fake):
    r = chat(client, model="composite/re2&moa/fake-model")
    assert r.status_code == 200, r.get_json()
    assert len(fake.history) == 1 + 3


def test_composite_unknown_strategy_is_a_404(client, fake):
    r = chat(client, model="composite/nosuch/fake-model")
    assert r.status_code == 404
    assert "'nosuch'" in r.get_json()["error"]["message"]
    assert fake.history == []


@pytest.mark.parametrize("model", ["composite/moa/", "composite/moa", "composite//m"])
def test_composite_without_strategy_or_model_is_a_400(client, model):
    r = chat(client, model=model)
    assert r.status_code == 400
    assert "composite/<strategy>/<model>" in r.get_json()["error"]["message"]


def test_a_misspelt_profile_field_names_its_line(profile_app):
    with pytest.raises(ConfigError) as info:
        profile_app("profiles:\n  p:\n    strategy: council\n    member: [a]\n")
    assert "line 3" in str(info.value) and "profiles.p" in str(info.value)
    assert "'member'" in str(info.value)
