"""``/v1/responses`` over a scripted fake upstream: the request mapping, chaining through the
shared store, GET/DELETE, approaches, the semantic stream events (order, numbering, OpenAI's
schemas) and errors."""

from __future__ import annotations

import json
import time

import pytest

from optillm.errors import UpstreamError
from optillm.types import Choice, Chunk, Completion, Message, Usage
from optillm.web.responses import KEY_PREFIX, RESPONSE_TTL

from ..fakes import FakeUpstream, words

#: Event type -> its schema in OpenAI's spec.
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "error": "ResponseErrorEvent",
}
HEAD = ["response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added"]
TAIL = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


@pytest.fixture
def app(make_app, tmp_path):
    return make_app(cache_dir=str(tmp_path / "store"))


@pytest.fixture
def client(app):
    return app.test_client()


def create(client, input="What is 2+2?", model="fake-model", **body):
    return client.post("/v1/responses", json={"model": model, "input": input, **body})


def ok(r) -> dict:
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def sse(r) -> tuple[list[str], list[dict]]:
    """(comments, events) of a Responses stream; checks each ``event:`` line names its data."""
    assert r.status_code == 200 and r.content_type.startswith("text/event-stream")
    comments, out = [], []
    for block in r.get_data(as_text=True).split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            comments.append(block)
            continue
        head, data = block.split("\n")
        assert head.startswith("event: ") and data.startswith("data: "), block
        event = json.loads(data[6:])
        assert event["type"] == head[7:]
        out.append(event)
    return comments, out


def check_events(events: list[dict], openapi) -> None:
    """Numbered 0, 1, 2, ... and each valid against its own schema and the stream's."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for e in events:
        openapi(e, EVENT_SCHEMAS[e["type"]])
        openapi(e, "ResponseStreamEvent")


def output_text(response: dict) -> str:
    return "".join(p["text"] for item in response["output"] for p in item["content"]
                   if p["type"] == "output_text")


# -- create -----------------------------------------------------------------------------------

def test_string_input_runs_as_a_chat_request(client, fake, openapi):
    fake.default = "four it is"
    data = ok(create(client, max_output_tokens=50, temperature=0.3, top_p=0.9,
                     metadata={"k": "v"}))
    openapi(data, "Response")
    assert data["object"] == "response" and data["id"].startswith("resp_")
    assert data["status"] == "completed" and data["completed_at"] >= data["created_at"]
    assert data["model"] == "fake-model" and data["error"] is None
    assert data["incomplete_details"] is None and data["previous_response_id"] is None
    (item,) = data["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["status"] == "completed" and item["id"].startswith("msg_")
    assert item["content"] == [{"type": "output_text", "text": "four it is", "annotations": [],
                                "logprobs": []}]
    assert (data["max_output_tokens"], data["temperature"], data["top_p"]) == (50, 0.3, 0.9)
    assert data["metadata"] == {"k": "v"} and data["store"] is True
    (call,) = fake.history
    assert call.model == "fake-model"
    assert [(m.role, m.content) for m in call.messages] == [("user", "What is 2+2?")]
    assert call.params == {"max_tokens": 50, "temperature": 0.3, "top_p": 0.9}
    usage = data["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (3, 3)
    assert usage["total_tokens"] == 6


def test_input_items_and_instructions_become_messages(client, fake):
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "first"},
                     {"type": "input_text", "text": "question"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "an earlier answer", "annotations": []}]},
        {"role": "user", "content": [{"type": "input_text", "text": "and now?"},
                                     {"type": "input_image",
                                      "image_url": "https://example.com/a.png"}]},
    ]
    ok(create(client, items, instructions="You are terse."))
    (call,) = fake.history
    assert [(m.role, m.content) for m in call.messages] == [
        ("system", "You are terse."), ("developer", "Be brief."), ("user", "first\nquestion"),
        ("assistant", "an earlier answer"),
        ("user", [{"type": "text", "text": "and now?"},
                  {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                                      "detail": "auto"}}])]


def test_previous_response_id_continues_the_conversation(app, client, fake):
    fake.enqueue("answer one", "answer two", "answer three")
    first = ok(create(client, "question one", instructions="old instructions"))
    second = ok(create(client, "question two", previous_response_id=first["id"]))
    third = ok(create(client, [{"role": "user", "content": "question three"}],
                      previous_response_id=second["id"], instructions="new instructions"))
    assert second["previous_response_id"] == first["id"]
    assert output_text(third) == "answer three"
    # instructions are never carried over; the conversation is
    assert [(m.role, m.content) for m in fake.history[1].messages] == [
        ("user", "question one"), ("assistant", "answer one"), ("user", "question two")]
    assert [(m.role, m.content) for m in fake.history[2].messages] == [
        ("system", "new instructions"), ("user", "question one"), ("assistant", "answer one"),
        ("user", "question two"), ("assistant", "answer two"), ("user", "question three")]
    stored = json.loads(app.extensions["optillm"].store.get(KEY_PREFIX + third["id"]))
    assert stored["response"] == third
    assert [m["content"] for m in stored["conversation"]] == [
        "question one", "answer one", "question two", "answer two", "question three",
        "answer three"]


def test_responses_live_in_the_store_every_worker_shares(make_app, fake, tmp_path):
    store = str(tmp_path / "shared")
    one = make_app(cache_dir=store).test_client()
    two = make_app(cache_dir=store).test_client()
    fake.enqueue("from worker one", "from worker two")
    first = ok(create(one, "hello"))
    ok(create(two, "again", previous_response_id=first["id"]))
    assert [m.content for m in fake.history[1].messages] == ["hello", "from worker one",
                                                             "again"]
    assert ok(two.get(f"/v1/responses/{first['id']}")) == first


def test_responses_are_kept_for_the_ttl(app, client, monkeypatch):
    store = app.extensions["optillm"].store
    calls = []
    monkeypatch.setattr(store, "set", lambda key, value, ttl=None: calls.append((key, ttl)))
    data = ok(create(client))
    assert calls == [(KEY_PREFIX + data["id"], RESPONSE_TTL)]
    assert RESPONSE_TTL == 30 * 24 * 3600


def test_unknown_previous_response_is_404(client, fake, openapi):
    r = create(client, previous_response_id="resp_nope")
    assert r.status_code == 404
    openapi(r.get_json(), "ErrorResponse")
    error = r.get_json()["error"]
    assert error["code"] == "previous_response_not_found"
    assert error["param"] == "previous_response_id" and "resp_nope" in error["message"]
    assert not fake.history


def test_store_false_keeps_nothing(client, fake):
    data = ok(create(client, store=False))
    assert data["store"] is False
    assert client.get(f"/v1/responses/{data['id']}").status_code == 404
    assert create(client, "next", previous_response_id=data["id"]).status_code == 404
    # a chain may still end in an unstored response
    kept = ok(create(client))
    ok(create(client, "next", previous_response_id=kept["id"], store=False))


def test_get_and_delete(client, openapi):
    data = ok(create(client))
    got = ok(client.get(f"/v1/responses/{data['id']}"))
    assert got == data
    openapi(got, "Response")
    gone = ok(client.delete(f"/v1/responses/{data['id']}"))
    assert gone == {"id": data["id"], "object": "response", "deleted": True}
    for r in (client.get(f"/v1/responses/{data['id']}"),
              client.delete(f"/v1/responses/{data['id']}"),
              create(client, previous_response_id=data["id"])):
        assert r.status_code == 404
        openapi(r.get_json(), "ErrorResponse")


def test_paths_without_v1(client):
    data = ok(client.post("/responses", json={"model": "fake-model", "input": "hi"}))
    assert ok(client.get(f"/responses/{data['id']}"))["id"] == data["id"]


def test_any_approach_with_its_options_and_other_fields_passed_on(client, fake, openapi):
    fake.when(lambda r: r.n == 2, ["a", "b"])
    fake.when_contains("critique each one", "crit")
    fake.when_contains("Critique of the candidates", "the synthesis")
    data = ok(create(client, model="moa-fake", moa_candidates=2, seed=7, top_k=5,
                     include=["message.output_text.logprobs"], truncation="disabled",
                     parallel_tool_calls=True, store=True, metadata={}))
    openapi(data, "Response")
    assert output_text(data) == "the synthesis" and data["model"] == "moa-fake"
    assert len(fake.history) == 3 and fake.history[0].n == 2
    assert {h.model for h in fake.history} == {"fake"}
    for call in fake.history:
        assert call.params["seed"] == 7 and call.params["top_k"] == 5
        assert not {"include", "truncation", "parallel_tool_calls", "store", "metadata",
                    "moa_candidates", "input"} & set(call.params)
    prompt = sum(sum(words(m.text) for m in h.messages) for h in fake.history)
    assert data["usage"]["input_tokens"] == prompt
    assert data["usage"]["output_tokens"] == 2 + 1 + 2


def test_approach_from_the_body_and_the_tag(client, fake):
    ok(create(client, optillm_approach="re2"))
    assert "Read the question again" in fake.history[-1].messages[-1].content
    fake.history.clear()
    ok(create(client, "<optillm_approach>re2</optillm_approach> What is 2+2?"))
    assert "<optillm_approach>" not in fake.history[-1].messages[-1].content
    assert "Read the question again" in fake.history[-1].messages[-1].content


def test_approach_metadata_rides_on_the_message_item(client, fake, openapi):
    fake.when(lambda r: "FINAL RANKING" in r.messages[-1].content, "FINAL RANKING:\n1. A")
    data = ok(create(client, model="council-fake", council_models=["solo"]))
    openapi(data, "Response")
    assert data["output"][0]["council_metadata"]["members"][0]["model"] == "solo"


def test_text_format_and_reasoning_map_to_chat_fields(client, fake, openapi):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    text = {"format": {"type": "json_schema", "name": "answer", "schema": schema,
                       "strict": True}}
    data = ok(create(client, text=text, reasoning={"effort": "low"}))
    openapi(data, "Response")
    assert data["text"] == text and data["reasoning"] == {"effort": "low"}
    params = fake.history[-1].params
    assert params["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": schema, "strict": True}}
    assert params["reasoning_effort"] == "low"
    ok(create(client, text={"format": {"type": "json_object"}}))
    assert fake.history[-1].params["response_format"] == {"type": "json_object"}
    ok(create(client, text={"format": {"type": "text"}}))
    assert "response_format" not in fake.history[-1].params


class CuttingUpstream(FakeUpstream):
    """Every answer stops at the token limit, streamed or not."""

    def _reply(self, request):
        return Completion((Choice(0, Message("assistant", "a cut"), "length"),), Usage(3, 2))

    def _chunks(self, completion):
        yield Chunk(({"index": 0, "delta": {"content": "a cut"}, "finish_reason": None},))
        yield Chunk(({"index": 0, "delta": {}, "finish_reason": "length"},))
        yield Chunk((), usage=completion.usage)


def test_cut_by_max_output_tokens_is_incomplete(make_app, tmp_path, openapi):
    client = make_app(upstream=CuttingUpstream(), cache_dir=str(tmp_path / "s")).test_client()
    data = ok(create(client, max_output_tokens=2))
    openapi(data, "Response")
    assert data["status"] == "incomplete" and data["completed_at"] is None
    assert data["incomplete_details"] == {"reason": "max_output_tokens"}
    assert data["output"][0]["status"] == "incomplete"
    _, events = sse(create(client, max_output_tokens=2, stream=True))
    check_events(events, openapi)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["status"] == "incomplete"
    assert events[-1]["response"]["usage"]["output_tokens"] == 2


def test_default_model_from_settings(make_app, fake, tmp_path):
    client = make_app(cache_dir=str(tmp_path / "s"), model="the-default").test_client()
    data = ok(client.post("/v1/responses", json={"input": "hi"}))
    assert data["model"] == "the-default" and fake.history[-1].model == "the-default"


@pytest.mark.parametrize("body, param", [
    ({"input": "hi"}, "model"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": 5}, "input"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
     "input[0].type"),
    ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": [{"role": "user", "content": 5}]}, "input[0].content"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file",
                                                            "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ({"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f"}]}, "tools"),
    ({"model": "m", "input": "hi", "background": True}, "background"),
    ({"model": "m", "input": "hi", "conversation": "conv_1"}, "conversation"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "messages"),
    ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "m", "input": "hi", "max_output_tokens": "9"}, "max_output_tokens"),
    ({"model": "m", "input": "hi", "temperature": "hot"}, "temperature"),
    ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
    ({"model": "m", "input": "hi", "instructions": ["x"]}, "instructions"),
    ({"model": "m", "input": "hi", "text": {"format": {"type": "xml"}}}, "text.format"),
    ({"model": "m", "input": "hi", "moa_candidates": 99, "optillm_approach": "moa"},
     "moa_candidates"),
    ({"model": "nosuch&moa-m", "input": "hi"}, "model"),
])
def test_bad_requests_are_openai_errors(client, fake, openapi, body, param):
    r = client.post("/v1/responses", json=body)
    assert r.status_code in (400, 404), r.get_json()
    openapi(r.get_json(), "ErrorResponse")
    assert r.get_json()["error"]["param"] == param
    assert not fake.history


def test_malformed_json_is_400(client, openapi):
    r = client.post("/v1/responses", data=b"{nope", content_type="application/json")
    assert r.status_code == 400
    openapi(r.get_json(), "ErrorResponse")


def test_upstream_failure_is_an_error_object(client, fake, openapi):
    fake.default = UpstreamError("upstream: down")
    r = create(client)
    assert r.status_code == 502 and "down" in r.get_json()["error"]["message"]
    openapi(r.get_json(), "ErrorResponse")


def test_proxy_key_guards_responses(make_app, tmp_path):
    client = make_app(cache_dir=str(tmp_path / "s"), optillm_api_key="sk-proxy").test_client()
    assert create(client).status_code == 401
    r = client.post("/v1/responses", json={"model": "m", "input": "hi"},
                    headers={"Authorization": "Bearer sk-proxy"})
    assert r.status_code == 200


def test_conversation_log_record(make_app, fake, tmp_path):
    app = make_app(cache_dir=str(tmp_path / "s"), log_conversations=True)
    data = ok(create(app.test_client(), model="re2-fake", user="marker-1"))
    logger = app.extensions["optillm"].conversation_logger
    (path,) = (tmp_path / "logs").glob("conversations_*.jsonl")
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert logger is not None and record["approach"] == "re2" and record["model"] == "fake"
    assert record["client_request"]["input"] == "What is 2+2?"
    assert record["final_response"]["id"] == data["id"]
    assert len(record["provider_calls"]) == 1 and fake.history[-1].params["user"] == "marker-1"


# -- streaming --------------------------------------------------------------------------------

def test_stream_events_in_order_with_schemas(client, fake, openapi):
    fake.default = "the streamed answer"
    comments, events = sse(create(client, stream=True, max_output_tokens=30))
    check_events(events, openapi)
    types = [e["type"] for e in events]
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert types == HEAD + ["response.output_text.delta"] * len(deltas) + TAIL + \
        ["response.completed"]
    assert deltas == ["the ", "streamed ", "answer"]  # token by token from the upstream
    created, done = events[0]["response"], events[-1]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert done["id"] == created["id"] and done["status"] == "completed"
    item_id = events[2]["item"]["id"]
    assert all(e.get("item_id", item_id) == item_id for e in events)
    assert done["output"][0]["id"] == item_id
    assert events[-4]["text"] == "the streamed answer" == output_text(done)
    assert done["usage"] == {"input_tokens": 3, "output_tokens": 3, "total_tokens": 6,
                             "input_tokens_details": {"cached_tokens": 0,
                                                      "cache_write_tokens": 0},
                             "output_tokens_details": {"reasoning_tokens": 0}}
    openapi(done, "Response")
    assert ok(client.get(f"/v1/responses/{done['id']}")) == done


def test_stream_over_an_approach_streams_its_final_call(client, fake, openapi):
    fake.when(lambda r: r.n == 3, ["a", "b", "c"])
    fake.when_contains("critique each one", "crit")
    fake.when_contains("Critique of the candidates", "the final synthesis answer")
    _, events = sse(create(client, model="moa-fake", stream=True))
    check_events(events, openapi)
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["the ", "final ", "synthesis ", "answer"]
    assert events[-1]["response"]["usage"]["output_tokens"] == 3 + 1 + 4


def test_stream_of_an_unstreamable_approach_sends_the_answer_when_ready(make_app, fake,
                                                                        tmp_path, openapi):
    fake.delay = 0.2
    fake.when(lambda r: r.n == 3, ["x", "y", "z"])
    fake.when_contains("Rate the following", "5")
    client = make_app(cache_dir=str(tmp_path / "s"), keepalive_interval=0.05).test_client()
    comments, events = sse(create(client, model="bon-fake", stream=True))
    check_events(events, openapi)
    assert comments and all(c == ": keep-alive" for c in comments)
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["x"]
    assert [e["type"] for e in events] == HEAD + ["response.output_text.delta"] + TAIL + \
        ["response.completed"]


def test_stream_chains_like_the_plain_answer(client, fake):
    fake.enqueue("streamed one", "plain two")
    _, events = sse(create(client, "q1", stream=True))
    first = events[-1]["response"]
    ok(create(client, "q2", previous_response_id=first["id"]))
    assert [m.content for m in fake.history[-1].messages] == ["q1", "streamed one", "q2"]


def test_failure_after_the_stream_started_is_error_then_failed(client, fake, openapi):
    fake.default = UpstreamError("upstream: went away")
    comments, events = sse(create(client, stream=True))
    check_events(events, openapi)
    assert [e["type"] for e in events] == ["response.created", "response.in_progress",
                                           "error", "response.failed"]
    assert events[2]["message"] == "upstream: went away"
    assert events[2]["code"] == "upstream_error"
    failed = events[3]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "upstream: went away"}
    assert client.get(f"/v1/responses/{failed['id']}").status_code == 404


def test_errors_before_the_stream_are_plain_error_objects(client, openapi):
    r = create(client, stream=True, previous_response_id="resp_missing")
    assert r.status_code == 404 and r.content_type == "application/json"
    openapi(r.get_json(), "ErrorResponse")


def test_client_disconnect_stops_the_upstream_stream(make_app, tmp_path):
    fake = FakeUpstream(default=" ".join(["word"] * 50), delay=0.5)
    client = make_app(upstream=fake, cache_dir=str(tmp_path / "s")).test_client()
    r = client.post("/v1/responses", json={"model": "re2-fake", "input": "hi",
                                           "stream": True}, buffered=False)
    next(iter(r.response))  # response.created
    deadline = time.monotonic() + 3
    while not fake.history and time.monotonic() < deadline:  # the final call is streaming
        time.sleep(0.01)
    r.close()
    assert fake.stream_closed.wait(3)
