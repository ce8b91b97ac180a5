"""SSE framing for approaches: role chunk first, content, finish, usage chunk, [DONE]."""

import json

from optillm.errors import UpstreamError

from ..conftest import chat


def events(body: bytes):
    """(comments, data objects, saw_done) of an SSE body."""
    comments, data, done = [], [], False
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            comments.append(block)
        elif block == "data: [DONE]":
            done = True
        else:
            assert block.startswith("data: "), block
            data.append(json.loads(block[6:]))
    return comments, data, done


def test_streamed_final_call_is_relayed_token_by_token(client, fake, openapi):
    fake.when(lambda r: r.n == 3, ["a", "b", "c"])
    fake.when_contains("critique each one", "crit")
    fake.when_contains("Critique of the candidates", "the final synthesis answer")
    r = chat(client, model="moa-fake", stream=True, stream_options={"include_usage": True})
    assert r.content_type.startswith("text/event-stream")
    _, data, done = events(r.get_data())
    assert done
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    pieces = [c["choices"][0]["delta"].get("content") for c in data[1:] if c["choices"]
              and c["choices"][0]["delta"].get("content")]
    assert len(pieces) == 4 and "".join(pieces) == "the final synthesis answer"
    assert data[-2]["choices"][0]["finish_reason"] == "stop"
    assert data[-1]["choices"] == [] and data[-1]["usage"]["completion_tokens"] == 3 + 1 + 4
    assert fake.history[-1].stream is False and len(fake.history) == 3
    for d in data:
        openapi(d, "CreateChatCompletionStreamResponse")


def test_unstreamable_approach_sends_answer_when_ready(client, fake):
    fake.when(lambda r: r.n == 3, ["x", "y", "z"])
    fake.when_contains("Rate the following", "5")
    r = chat(client, model="bon-fake", stream=True)
    _, data, done = events(r.get_data())
    contents = [c["choices"][0]["delta"].get("content") for c in data if c["choices"]]
    assert "x" in contents and done
    assert all("usage" not in d or d["usage"] is None for d in data)  # not asked for


def test_keepalive_comments_while_the_approach_works(make_app, fake):
    fake.delay = 0.3
    client = make_app(keepalive_interval=0.05).test_client()
    r = chat(client, model="bon-fake", stream=True)
    comments, data, done = events(r.get_data())
    assert comments and all(c == ": keep-alive" for c in comments) and done


def test_error_after_stream_start_is_an_error_event(client, fake):
    fake.default = UpstreamError("upstream: went away")
    r = chat(client, model="bon-fake", stream=True)
    assert r.status_code == 200  # the status line was already sent
    _, data, done = events(r.get_data())
    assert data[-1]["error"]["message"] == "upstream: went away" and done


def test_n_choices_streamed_with_indices(client, fake):
    fake.default = "same"
    r = chat(client, model="re2-fake", stream=True, n=2)
    _, data, _ = events(r.get_data())
    finished = sorted(c["choices"][0]["index"] for c in data
                      if c["choices"] and c["choices"][0]["finish_reason"])
    assert finished == [0, 1]


def test_client_disconnect_stops_upstream_stream(make_app, fake):
    fake.delay = 0.5
    fake.default = " ".join(["word"] * 50)
    client = make_app().test_client()
    r = client.post("/v1/chat/completions", json={"model": "re2-fake", "stream": True,
                    "messages": [{"role": "user", "content": "hi"}]}, buffered=False)
    it = r.response
    next(iter(it))  # the role chunk
    r.close()
    assert fake.stream_closed.wait(3)


def test_full_response_of_a_streaming_approach_is_sent_whole(client, fake):
    """With ``return_full_response`` the answer is the approach's whole trace (here rto's
    four steps); no single upstream call streams it, so it goes out whole, unchanged."""
    fake.when_contains("Two candidate solutions were written", "merged version")
    fake.when_contains("a description", "```python\nprint(2)\n```")  # C2 differs from C1
    fake.when_contains("Do not include any code", "a description")
    fake.default = "```python\nprint(1)\n```"
    plain = chat(client, model="rto-fake", return_full_response=True).get_json()
    trace = plain["choices"][0]["message"]["content"]
    fake.history.clear()
    r = chat(client, model="rto-fake", stream=True, return_full_response=True)
    _, data, done = events(r.data)
    streamed = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in data if c["choices"])
    assert "Merged:\nmerged version" in trace and "print(2)" in trace
    assert done and streamed == trace
    assert len(fake.history) == 4


def test_streamed_final_call_keeps_its_tool_calls(client, fake, monkeypatch):
    """An approach whose final call is streamed with ``tools`` passes the upstream's tool call
    on whole (the argument pieces joined), with finish_reason tool_calls."""
    from optillm.types import Chunk

    def stream(request, meta=None):
        fake.history.append(request)
        pieces = [{"index": 0, "id": "call_1", "type": "function",
                   "function": {"name": "add", "arguments": ""}},
                  {"index": 0, "function": {"arguments": '{"a": 2, '}},
                  {"index": 0, "function": {"arguments": '"b": 2}'}}]
        for p in pieces:
            yield Chunk(({"index": 0, "delta": {"tool_calls": [p]}, "finish_reason": None},))
        yield Chunk(({"index": 0, "delta": {}, "finish_reason": "tool_calls"},))

    monkeypatch.setattr(fake, "stream", stream)
    tools = [{"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}]
    r = chat(client, model="re2-fake", stream=True, tools=tools)
    _, data, done = events(r.get_data())
    assert done
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in data
             if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    assert calls == [[{"index": 0, "id": "call_1", "type": "function",
                       "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'}}]]
    assert data[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert fake.history[-1].params.get("tools") == tools
