"""``usage.completion_tokens_details.reasoning_tokens`` on every answer, as OptiLLM's clients
expect: the upstream's own figure, else the ``<think>`` share of the generated text; 0 without
thinking; summed over an approach's calls and over ``n`` choices."""

import json

from optillm.types import Choice, Completion, Message, Usage, reasoning_share, thinking_text
from optillm.web.chat import conform_completion

from ..conftest import chat
from .test_streaming import events

THOUGHT = "<think>seven eights are fifty six</think>The answer is 56, as 7 times 8 is 56."


def reasoning(body: dict) -> int:
    return body["usage"]["completion_tokens_details"]["reasoning_tokens"]


def test_share_is_zero_without_thinking_and_bounded_by_completion_tokens():
    assert reasoning_share(["plain answer"], 10) == 0
    assert reasoning_share([], 10) == 0
    share = reasoning_share([THOUGHT], 20)
    assert 0 < share < 20  # the "56" after the span is not thinking
    assert reasoning_share(["<think>all thinking, never closed"], 9) == 9
    assert thinking_text("a<think>x</think>b<think>y</think>") == "xy"


def test_usage_from_dict_prefers_the_upstreams_figure():
    reported = {"prompt_tokens": 3, "completion_tokens": 10,
                "completion_tokens_details": {"reasoning_tokens": 4}}
    assert Usage.from_dict(reported, [THOUGHT]).reasoning_tokens == 4
    estimated = Usage.from_dict({"prompt_tokens": 3, "completion_tokens": 10}, [THOUGHT])
    assert 0 < estimated.reasoning_tokens < 10
    assert (Usage(1, 2, 1) + Usage(1, 3, 2)).to_dict()["completion_tokens_details"] == \
        {"reasoning_tokens": 3}


def test_reasoning_content_field_counts_as_thinking():
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "56",
                                                  "reasoning_content": "7*8 is 56"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 8}}
    completion = Completion.from_dict(body)
    assert 0 < completion.usage.reasoning_tokens < 8


def test_passthrough_body_gets_reasoning_tokens(openapi):
    llama = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
             "choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": "4"}}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
    fixed = json.loads(conform_completion(json.dumps(llama).encode()))
    assert reasoning(fixed) == 0
    openapi(fixed, "CreateChatCompletionResponse")
    llama["choices"][0]["message"]["content"] = THOUGHT
    llama["usage"]["completion_tokens"] = 20
    assert 0 < reasoning(json.loads(conform_completion(json.dumps(llama).encode()))) < 20
    # the upstream's own figure is kept, byte for byte when nothing else is missing
    llama["usage"]["completion_tokens_details"] = {"reasoning_tokens": 7}
    llama["choices"][0]["logprobs"] = None
    llama["choices"][0]["message"]["refusal"] = None
    raw = json.dumps(llama).encode()
    assert conform_completion(raw) == raw


def test_passthrough_through_the_app_has_reasoning_tokens(client):
    body = chat(client).get_json()
    assert reasoning(body) == 0


def test_approach_without_thinking_reports_zero(client, fake, openapi):
    r = chat(client, model="bon-fake")
    assert r.status_code == 200
    body = r.get_json()
    openapi(body, "CreateChatCompletionResponse")
    assert reasoning(body) == 0


def test_approach_sums_thinking_over_its_calls(client, fake):
    fake.enqueue(THOUGHT, THOUGHT)  # re2 makes one call; the second is for the n=2 choice
    one = chat(client, model="re2-fake").get_json()
    per_call = reasoning(one)
    assert 0 < per_call < one["usage"]["completion_tokens"]
    fake.enqueue(THOUGHT, THOUGHT)
    two = chat(client, model="re2-fake", n=2).get_json()
    assert len(two["choices"]) == 2
    assert reasoning(two) == 2 * per_call


def test_upstream_reported_reasoning_is_summed(client, fake):
    reply = Completion((Choice(0, Message("assistant", "4")),), Usage(3, 9, 6))
    fake.enqueue(reply, reply, reply, reply)  # bon: 3 candidates + 1 rating call
    fake.default = reply
    body = chat(client, model="bon-fake").get_json()
    calls = len(fake.history)
    assert reasoning(body) == 6 * calls


def test_streamed_approach_usage_chunk_has_reasoning_tokens(client, fake, openapi):
    fake.default = THOUGHT
    r = chat(client, model="re2-fake", stream=True, stream_options={"include_usage": True})
    _, data, done = events(r.get_data())
    assert done
    usage = data[-1]["usage"]
    assert data[-1]["choices"] == []
    assert 0 < usage["completion_tokens_details"]["reasoning_tokens"] \
        <= usage["completion_tokens"]
    openapi(data[-1], "CreateChatCompletionStreamResponse")


def test_responses_api_usage_carries_reasoning_tokens(client, fake):
    fake.default = THOUGHT
    r = client.post("/v1/responses", json={"model": "re2-fake", "input": "What is 7*8?"})
    assert r.status_code == 200, r.get_json()
    usage = r.get_json()["usage"]
    assert 0 < usage["output_tokens_details"]["reasoning_tokens"] <= usage["output_tokens"]


def llama_stream(pieces, usage):
    """SSE bytes as llama-server sends them: no completion_tokens_details in the usage."""
    events = [b"data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": p}, "finish_reason": None}]}).encode() + b"\n\n"
        for p in pieces]
    events.append(b"data: " + json.dumps({"object": "chat.completion.chunk", "choices": [],
                                          "usage": usage}).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def test_stream_fixer_rewrites_only_the_usage_event():
    from optillm.web.conform import with_reasoning_usage

    raw = llama_stream(["<thi", "nk>seven eights", "</think>", "The answer is 56."],
                       {"prompt_tokens": 4, "completion_tokens": 20, "total_tokens": 24})
    cut = [raw[i:i + 7] for i in range(0, len(raw), 7)]  # event boundaries fall anywhere
    out = b"".join(with_reasoning_usage(cut))
    before, after = raw.split(b"\n\n"), out.split(b"\n\n")
    assert len(before) == len(after)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [len(before) - 3]  # only the usage event; the rest pass byte for byte
    _, data, done = events(out)
    assert done
    assert 0 < data[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] < 20
    plain = llama_stream(["4"], {"prompt_tokens": 4, "completion_tokens": 1,
                                 "total_tokens": 5})
    _, data, _ = events(b"".join(with_reasoning_usage([plain])))
    assert data[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}


def test_streamed_passthrough_usage_has_reasoning_tokens(client, fake, monkeypatch):
    from optillm.upstream.base import RawResponse

    raw = llama_stream([THOUGHT], {"prompt_tokens": 4, "completion_tokens": 20,
                                   "total_tokens": 24})
    monkeypatch.setattr(fake, "forward", lambda body, meta=None, stream=False, model=None:
                        RawResponse(200, "text/event-stream", iter([raw])))
    r = chat(client, stream=True, stream_options={"include_usage": True})
    _, data, done = events(r.get_data())
    assert done and 0 < data[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] < 20
    r = chat(client, stream=True)  # no usage asked for: the bytes are relayed untouched
    assert r.get_data() == raw
