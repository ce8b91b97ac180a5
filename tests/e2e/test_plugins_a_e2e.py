"""``memory``, ``json``, ``compact`` and ``router`` end to end: the openai SDK, the session
proxy, the embedded SmolLM2-135M. Answers are not judged (the model is tiny): these check the
call pattern from the conversation log, the plugins' metadata, that ``json`` output parses
and validates against the requested schema, and that usage is the exact sum of the calls."""

from __future__ import annotations

import json

import jsonschema
import pytest

from ..conftest import validate_openapi
from .conftest import MODEL
from .helpers import assert_usage_is_the_sum, marker, provider_calls

pytestmark = pytest.mark.e2e


def ask(client, model: str, messages, user: str, max_tokens: int = 24, **extra_body):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=max_tokens, user=user,
        extra_body=extra_body or None)
    return raw.parse(), raw.http_response.json()


def test_memory(client, proxy):
    user = marker("e2e-plugins-a")
    doc = "\n\n".join(["The lighthouse keeper was named Ada.",
                       "The island had three goats and one well.",
                       "Ships passed the island every Tuesday."])
    completion, data = ask(client, f"memory-{MODEL}",
                           [{"role": "user", "content": f"{doc}\nWhat was the keeper's name?"}],
                           user, memory_chunk_chars=200)
    validate_openapi(data, "CreateChatCompletionResponse")
    meta = data["choices"][0]["optillm_memory"]
    calls = provider_calls(proxy, user)
    assert meta["chunks"] >= 1 and len(calls) == meta["chunks"] + 1
    assert "Question: What was the keeper's name?" in \
        calls[-1]["provider_request"]["messages"][-1]["content"]
    assert_usage_is_the_sum(completion, calls)


def test_json_schema_output_validates(client, proxy):
    user = marker("e2e-plugins-a")
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
              "required": ["city"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}}
    completion, data = ask(client, f"json-{MODEL}",
                           [{"role": "user", "content": "Name a city in France."}], user,
                           max_tokens=48, response_format=fmt)
    value = json.loads(completion.choices[0].message.content)
    jsonschema.validate(value, schema)
    calls = provider_calls(proxy, user)
    assert calls[0]["provider_request"]["response_format"] == fmt  # passed on upstream
    assert len(calls) == 1 + data["choices"][0]["optillm_json"]["repairs"]
    assert_usage_is_the_sum(completion, calls)


def test_compact(client, proxy):
    user = marker("e2e-plugins-a")
    messages = [{"role": "system", "content": "You are brief."}]
    for i in range(3):
        messages += [{"role": "user", "content": f"Tell me fact number {i} about the sea. "
                                                 + "The sea is large and deep. " * 8},
                     {"role": "assistant", "content": f"Fact {i}: the sea is salty."}]
    messages.append({"role": "user", "content": "Which fact numbers did I ask for?"})
    completion, data = ask(client, f"compact-{MODEL}", messages, user, compact_max_tokens=64,
                           compact_keep_turns=1, compact_summary_tokens=32)
    meta = data["choices"][0]["optillm_compact"]
    assert meta["compacted"] and meta["method"] == "tokenize"
    assert meta["summarised_messages"] == 6 and meta["kept_messages"] == 1
    summary, answer = provider_calls(proxy, user)
    assert summary["provider_request"]["max_tokens"] == 32
    sent = answer["provider_request"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[0]["content"].startswith("You are brief.\n\nSummary of the earlier conversation")
    assert sent[1]["content"] == "Which fact numbers did I ask for?"
    assert_usage_is_the_sum(completion, [summary, answer])


def test_router(client, proxy):
    user = marker("e2e-plugins-a")
    completion, data = ask(client, f"router-{MODEL}",
                           [{"role": "user", "content": "What is 12 + 30?"}], user,
                           router_table={"math": "re2"})
    record = data["choices"][0]["optillm_router"]
    assert record["class"] == "math" and record["approach"] == "re2"
    (call,) = provider_calls(proxy, user)
    assert "Read the question again: What is 12 + 30?" in \
        call["provider_request"]["messages"][-1]["content"]
    assert_usage_is_the_sum(completion, [call])
