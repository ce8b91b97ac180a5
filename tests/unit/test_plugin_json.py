"""The ``json`` plugin: response_format passed on, validation, repair calls showing the error,
502 when nothing validates, 400 on bad schemas, the missing-extra error, and chains."""

from __future__ import annotations

import json
import sys

import pytest

from optillm.errors import BadRequestError
from optillm.plugins.json_mode import extract_json

from ..conftest import chat

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
FMT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}


def test_valid_reply_is_one_call_with_response_format(client, fake):
    fake.default = 'Sure! ```json\n{"name": "Ann", "age": 31}\n```'
    res = chat(client, model="json-fake", content="Who?", response_format=FMT)
    data = res.get_json()
    assert res.status_code == 200, data
    assert json.loads(data["choices"][0]["message"]["content"]) == {"name": "Ann", "age": 31}
    (call,) = fake.history
    assert call.model == "fake" and call.params["response_format"] == FMT
    assert call.messages[0].role == "system" and '"required"' in call.messages[0].content
    assert data["choices"][0]["optillm_json"] == {"repairs": 0, "schema": True}


def test_invalid_reply_is_repaired_with_the_error_shown(client, fake):
    fake.enqueue('{"name": "Ann"}', "not json at all", '{"name": "Ann", "age": 31}')
    data = chat(client, model="json-fake", response_format=FMT).get_json()
    assert json.loads(data["choices"][0]["message"]["content"])["age"] == 31
    assert len(fake.history) == 3
    first_repair = fake.history[1].messages
    assert first_repair[-2].role == "assistant" and first_repair[-2].content == '{"name": "Ann"}'
    assert "'age' is a required property" in first_repair[-1].content
    assert "contains no JSON" in fake.history[2].messages[-1].content
    assert all(r.params["response_format"] == FMT for r in fake.history)
    prompt = sum(sum(len(m.text.split()) or 1 for m in r.messages) for r in fake.history)
    assert data["usage"]["prompt_tokens"] == prompt


def test_gives_up_with_502_after_the_repairs(client, fake):
    fake.default = "garbage {"
    res = chat(client, model="json-fake", response_format=FMT, json_repair_attempts=1)
    err = res.get_json()["error"]
    assert res.status_code == 502 and err["code"] == "invalid_json_output"
    assert len(fake.history) == 2


def test_json_object_needs_an_object(client, fake):
    fake.enqueue("[1, 2]", '{"ok": true}')
    data = chat(client, model="json-fake", response_format={"type": "json_object"}).get_json()
    assert json.loads(data["choices"][0]["message"]["content"]) == {"ok": True}
    assert "must be a JSON object" in fake.history[1].messages[-1].content


def test_upstream_refusing_response_format_is_asked_without_it(client, fake):
    fake.when(lambda r: "response_format" in r.params,
              BadRequestError("upstream: response_format is not supported"))
    fake.default = '{"name": "B", "age": 2}'
    data = chat(client, model="json-fake", response_format=FMT).get_json()
    assert json.loads(data["choices"][0]["message"]["content"])["name"] == "B"
    assert len(fake.history) == 2 and "response_format" not in fake.history[1].params


@pytest.mark.parametrize("fmt", [{"type": "json_schema", "json_schema": {
    "name": "x", "schema": {"type": "nonsense"}}}, {"type": "text_or_so"}, "json"])
def test_bad_response_format_is_400(client, fake, fmt):
    res = chat(client, model="json-fake", response_format=fmt)
    assert res.status_code == 400 and not fake.history




def test_missing_jsonschema_is_a_clear_error(make_app, fake, monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    client = make_app().test_client()
    res = chat(client, model="json-fake", response_format=FMT)
    err = res.get_json()["error"]
    assert res.status_code == 501 and err["code"] == "missing_extra"
    assert "pip install 'optillm[json]'" in err["message"] and "jsonschema" in err["message"]
    assert not fake.history


def test_in_a_chain_after_re2(client, fake):
    fake.enqueue("thinking about it", '{"name": "C", "age": 3}')
    data = chat(client, model="re2&json-fake", content="Who?", response_format=FMT).get_json()
    assert json.loads(data["choices"][0]["message"]["content"])["name"] == "C"
    assert fake.history[1].messages[-1].content == "thinking about it"


def test_extract_json_tolerates_prose():
    assert extract_json('The answer: {"a": [1, {"b": 2}]} hope it helps')[0] == \
        {"a": [1, {"b": 2}]}
    value, error = extract_json("no braces")
    assert value is None and "no JSON" in error
