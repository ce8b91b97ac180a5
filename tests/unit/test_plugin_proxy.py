"""``proxy`` (OptiLLM's load-balancing plugin): without ``proxy_wrap`` one call to the base
model through the gateway; with it (or ``wrapped_approach``/``wrap``) the wrapped approach."""

from __future__ import annotations

import json

import pytest

from ..conftest import chat


def test_proxy_alone_is_one_call_to_the_base_model(client, fake):
    fake.default = "routed"
    r = chat(client, model="proxy-fake")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["choices"][0]["message"]["content"] == "routed"
    assert len(fake.history) == 1 and fake.history[0].model == "fake"


@pytest.mark.parametrize("name", ["proxy_wrap", "wrapped_approach", "wrap"])
def test_proxy_wraps_the_named_approach(client, fake, name):
    r = chat(client, model="proxy-fake", **{name: "bon"}, best_of_n=2)
    assert r.status_code == 200, r.get_json()
    assert fake.history[0].n == 2  # bon's candidates, then its rating calls
    assert len(fake.history) > 1
    assert "proxy_wrap" not in fake.history[0].params and name not in fake.history[0].params


def test_proxy_wrapping_an_unknown_approach_is_404(client, fake):
    r = chat(client, model="proxy-fake", proxy_wrap="no_such_approach")
    assert r.status_code == 404
    assert "no_such_approach" in r.get_json()["error"]["message"]
    assert fake.history == []


def test_proxy_streams_its_one_call(client, fake):
    fake.default = "a streamed answer"
    r = chat(client, model="proxy-fake", stream=True)
    body = r.get_data(as_text=True)
    assert r.status_code == 200 and body.rstrip().endswith("data: [DONE]")
    pieces = [json.loads(e[6:])["choices"][0]["delta"].get("content")
              for e in body.split("\n\n") if e.startswith("data: {")]
    assert [p for p in pieces if p] == ["a ", "streamed ", "answer"]  # relayed as generated
    assert len(fake.history) == 1
