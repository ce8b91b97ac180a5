"""The Anthropic Messages API face, driven by the official ``anthropic`` SDK as the client
(over a WSGI transport into the real app on the scripted fake upstream)."""

from __future__ import annotations

import json

import pytest

from optillm.types import ChatRequest, Choice, Completion, Message, Usage
from optillm.upstream.base import RawResponse

from ..fakes import FakeUpstream

anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

WEATHER = {"name": "get_weather", "description": "Weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


TOOL_EVENTS = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                  "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": '}}]},
        "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": '"Paris"}'}}]}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7,
                              "total_tokens": 19}}]


class ToolStreamUpstream(FakeUpstream):
    """Streams a tool call (in two argument pieces, split across reads) when the request
    has tools."""

    def forward(self, body: bytes, meta=None, stream: bool = False, model=None):
        if not (stream and json.loads(body).get("tools")):
            return super().forward(body, meta, stream, model)
        self.forwarded.append(body)
        data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in TOOL_EVENTS)
        data += b"data: [DONE]\n\n"
        return RawResponse(200, "text/event-stream", iter([data[:70], data[70:]]))


def sent(fake: FakeUpstream) -> dict:
    """The last chat body the face sent upstream (plain requests take the byte path)."""
    return json.loads(fake.forwarded[-1])


def tool_completion(request: ChatRequest) -> Completion:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}
    return Completion((Choice(0, Message("assistant", None, {"tool_calls": [call]}),
                              "tool_calls"),), Usage(12, 7), model=request.model)


@pytest.fixture
def sdk(make_app):
    """``sdk(upstream=None, key=..., **settings)`` -> an ``anthropic.Anthropic`` client of a
    fresh app."""
    def build(upstream=None, key="sekrit", **settings):
        settings.setdefault("optillm_api_key", "sekrit")
        app = make_app(upstream=upstream, **settings)
        http = httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url="http://test")
        return anthropic.Anthropic(api_key=key, base_url="http://test", http_client=http,
                                   max_retries=0)
    return build


def test_plain_message_maps_request_and_response(sdk, fake):
    fake.enqueue("Paris is the capital.")
    client = sdk()
    msg = client.messages.create(
        model="fake-model", max_tokens=64, extra_body={"temperature": 0.2, "top_p": 0.9},
        stop_sequences=["###"], system=[{"type": "text", "text": "Be brief."}],
        metadata={"user_id": "u1"},
        messages=[{"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}])
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "Paris is the capital."
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.model == "fake-model"
    body = sent(fake)
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("system", "Be brief."), ("user", "Capital of France?")]
    assert body["max_tokens"] == 64 and body["stop"] == ["###"]
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9
    assert body["user"] == "u1" and body["model"] == "fake-model"
    assert "stop_sequences" not in body and "metadata" not in body
    assert msg.usage.input_tokens == 2 + 3  # the fake counts words of every message
    assert msg.usage.output_tokens == 4


def test_streamed_plain_message_event_sequence(sdk, fake):
    fake.enqueue("one two three")
    client = sdk()
    with client.messages.stream(model="fake-model", max_tokens=32,
                                messages=[{"role": "user", "content": "count"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert kinds.count("content_block_start") == 1
    assert final.content[0].text == "one two three"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3


def test_raw_stream_has_ping_and_usage(make_app, fake):
    fake.enqueue("hello world")
    client = make_app().test_client()
    resp = client.post("/v1/messages", json={"model": "fake-model", "max_tokens": 8,
                                             "stream": True,
                                             "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    events = [block.split("\n") for block in resp.get_data(as_text=True).strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    assert names[:2] == ["message_start", "ping"]
    delta = json.loads(events[names.index("message_delta")][1].removeprefix("data: "))
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {"input_tokens": 1, "output_tokens": 2}


def test_approach_prefix_runs_the_approach(sdk, fake):
    client = sdk()
    msg = client.messages.create(model="moa-fake-model", max_tokens=32,
                                 messages=[{"role": "user", "content": "hi"}])
    assert len(fake.history) > 1  # moa: proposals, critique, aggregation
    assert all(r.model == "fake-model" for r in fake.history)
    assert msg.model == "moa-fake-model"
    assert msg.usage.input_tokens > 10


def test_approach_prefix_streams(sdk, fake):
    client = sdk()
    with client.messages.stream(model="re2-fake-model", max_tokens=32,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
    assert text == "ok"
    assert "Read the question again" in fake.history[-1].messages[-1].text


def test_bad_request_is_an_anthropic_error(sdk):
    client = sdk()
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="fake-model", max_tokens=8,
                               messages=[{"role": "system", "content": "no"}])
    assert info.value.status_code == 400
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "messages[0].role" in info.value.body["error"]["message"]


def test_missing_max_tokens_and_unknown_approach(make_app):
    client = make_app().test_client()
    resp = client.post("/v1/messages", json={"model": "fake-model",
                                             "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 400 and "max_tokens" in resp.json["error"]["message"]
    resp = client.post("/v1/messages", json={"model": "moa&nosuch-fake", "max_tokens": 5,
                                             "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 404
    assert resp.json["type"] == "error" and resp.json["error"]["type"] == "not_found_error"


def test_x_api_key_and_bearer_are_both_accepted(sdk, make_app):
    with pytest.raises(anthropic.AuthenticationError) as info:
        sdk(key="wrong").messages.create(model="fake-model", max_tokens=5,
                                         messages=[{"role": "user", "content": "x"}])
    assert info.value.body["error"]["type"] == "authentication_error"
    assert sdk().messages.create(model="fake-model", max_tokens=5,
                                 messages=[{"role": "user", "content": "x"}]).content
    client = make_app(optillm_api_key="sekrit").test_client()
    body = {"model": "fake-model", "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}]}
    assert client.post("/v1/messages", json=body,
                       headers={"Authorization": "Bearer sekrit"}).status_code == 200
    assert client.post("/v1/messages", json=body,
                       headers={"x-api-key": "sekrit"}).status_code == 200
    assert client.post("/v1/messages", json=body).status_code == 401


def test_tools_round_trip(sdk, fake):
    fake.enqueue(tool_completion, "It is sunny in Paris.")
    client = sdk()
    first = client.messages.create(
        model="fake-model", max_tokens=64, tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert first.stop_reason == "tool_use"
    use = first.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {
        "city": "Paris"}
    body = sent(fake)
    assert body["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER["input_schema"],
        "description": "Weather of a city"}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    second = client.messages.create(
        model="fake-model", max_tokens=64, tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                "content": "sunny, 24C"},
                                               {"type": "text", "text": "Summarise."}]}])
    assert second.content[0].text == "It is sunny in Paris."
    msgs = sent(fake)["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "user"]
    assert msgs[1]["tool_calls"][0]["function"] == {
        "name": "get_weather", "arguments": json.dumps({"city": "Paris"})}
    assert msgs[2]["tool_call_id"] == use.id and msgs[2]["content"] == "sunny, 24C"


def test_streamed_tool_use_uses_input_json_delta(sdk):
    client = sdk(upstream=ToolStreamUpstream())
    with client.messages.stream(model="fake-model", max_tokens=64, tools=[WEATHER],
                                messages=[{"role": "user", "content": "Weather?"}]) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert deltas == ["input_json_delta", "input_json_delta"]
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Paris"}
    assert final.usage.input_tokens == 12 and final.usage.output_tokens == 7


def test_error_mid_stream_is_an_error_event(make_app, fake):
    from optillm.errors import UpstreamError

    fake.when_contains("Read the question again", UpstreamError("boom"))
    client = make_app().test_client()
    resp = client.post("/v1/messages", json={"model": "re2-fake-model", "max_tokens": 5,
                                             "stream": True,
                                             "messages": [{"role": "user", "content": "x"}]})
    text = resp.get_data(as_text=True)
    assert "event: error" in text and '"type": "api_error"' in text and "boom" in text
    assert "message_stop" not in text


def test_error_types_by_status():
    from optillm.errors import (
        RateLimitError,
        UpstreamError,
        UpstreamTimeoutError,
        from_upstream_status,
    )
    from optillm.web.anthropic_map import error_object

    assert error_object(RateLimitError("x")) == (
        {"type": "error", "error": {"type": "rate_limit_error", "message": "x"}}, 429)
    assert error_object(UpstreamError("x"))[0]["error"]["type"] == "api_error"
    assert error_object(UpstreamError("x"))[1] == 502
    assert error_object(UpstreamTimeoutError("x"))[0]["error"]["type"] == "timeout_error"
    assert error_object(from_upstream_status(529, "busy")) [1] == 529
    assert error_object(from_upstream_status(529, "busy"))[0]["error"]["type"] == \
        "overloaded_error"


def test_count_tokens_estimate_and_tokenizer(sdk, make_app):
    client = sdk()
    counted = client.messages.count_tokens(
        model="fake-model", messages=[{"role": "user", "content": "x" * 400}])
    assert counted.input_tokens == (400 + 16) // 4

    class Tokenizing(FakeUpstream):
        def count_tokens(self, text, model, meta=None):
            return len(text.split())

    app = make_app(upstream=Tokenizing())
    resp = app.test_client().post("/v1/messages/count_tokens", json={
        "model": "moa-fake-model", "system": "a b",
        "messages": [{"role": "user", "content": "c d e"}]})
    assert resp.status_code == 200
    assert resp.headers["X-Optillm-Token-Count"] == "tokenizer"
    # the fake's template: "<|system|>a b\n<|user|>c d e\n<|assistant|>" -> 6 words
    assert resp.json == {"input_tokens": 6}


def test_plain_request_upstream_errors_keep_anthropic_shape(make_app, fake):
    from optillm.errors import RateLimitError

    class Overloaded(FakeUpstream):
        def forward(self, body, meta=None, stream=False, model=None):
            data = json.dumps({"error": {"message": "busy right now"}}).encode()
            return RawResponse(529, "application/json", iter((data,)))

    body = {"model": "fake-model", "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}]}
    fake.enqueue(RateLimitError("slow down"))
    resp = make_app().test_client().post("/v1/messages", json=body)
    assert resp.status_code == 429
    assert resp.json == {"type": "error", "error": {"type": "rate_limit_error",
                                                    "message": "slow down"}}
    resp = make_app(upstream=Overloaded()).test_client().post("/v1/messages", json=body)
    assert resp.status_code == 529 and resp.json["error"]["type"] == "overloaded_error"
    assert "busy right now" in resp.json["error"]["message"]


def test_plain_stream_broken_midway_ends_with_an_error_event(make_app):
    class Broken(FakeUpstream):
        def forward(self, body, meta=None, stream=False, model=None):
            events = (b'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}\n\n'
                      b'data: {"error": {"message": "upstream went away"}}\n\n')
            return RawResponse(200, "text/event-stream", iter((events,)))

    resp = make_app(upstream=Broken()).test_client().post("/v1/messages", json={
        "model": "fake-model", "max_tokens": 5, "stream": True,
        "messages": [{"role": "user", "content": "x"}]})
    text = resp.get_data(as_text=True)
    assert '"text": "par"' in text
    assert "event: error" in text and "upstream went away" in text
    assert "message_stop" not in text
