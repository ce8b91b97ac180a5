"""Typed values and OpenAI error objects."""

import pytest

from optillm.errors import (
    BadRequestError,
    UpstreamError,
    UpstreamTimeoutError,
    from_upstream_status,
)
from optillm.types import MAX_N, ChatRequest, Completion, Message, Usage


def body(**kw):
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


def test_unknown_fields_are_preserved_for_the_upstream():
    req = ChatRequest.from_body(body(tools=[{"type": "function"}], seed=7, top_k=5,
                                     chat_template_kwargs={"x": 1}))
    out = req.to_body()
    assert out["tools"] == [{"type": "function"}] and out["seed"] == 7
    assert out["top_k"] == 5 and out["chat_template_kwargs"] == {"x": 1}


@pytest.mark.parametrize("bad, param", [
    ({"model": ""}, "model"), ({"messages": []}, "messages"), ({"messages": "hi"}, "messages"),
    ({"n": 0}, "n"), ({"n": MAX_N + 1}, "n"), ({"n": "3"}, "n"), ({"n": True}, "n"),
    ({"stream": "yes"}, "stream"), ({"temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
])
def test_invalid_requests_name_the_field(bad, param):
    with pytest.raises(BadRequestError) as info:
        ChatRequest.from_body(body(**bad))
    assert info.value.param == param and info.value.status == 400


def test_body_must_be_an_object():
    with pytest.raises(BadRequestError):
        ChatRequest.from_body([1, 2])


def test_message_text_joins_text_parts():
    m = Message.from_dict({"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}},
        {"type": "text", "text": "b"}]})
    assert m.text == "a\nb"


def test_completion_round_trip_keeps_extra_fields(openapi):
    data = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "system_fingerprint": "fp", "choices": [{"index": 0, "finish_reason": "stop",
            "logprobs": None, "message": {"role": "assistant", "content": "hi",
                                          "tool_calls": [{"id": "t", "type": "function",
                                                          "function": {"name": "f",
                                                                       "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}
    out = Completion.from_dict(data).to_dict()
    assert out["system_fingerprint"] == "fp"
    assert out["choices"][0]["message"]["tool_calls"][0]["id"] == "t"
    assert out["usage"]["total_tokens"] == 5
    openapi(out, "CreateChatCompletionResponse")


def test_usage_adds():
    assert (Usage(1, 2) + Usage(3, 4)).to_dict() == {
        "prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10,
        "completion_tokens_details": {"reasoning_tokens": 0}}


def test_error_objects_match_openapi(openapi):
    err = BadRequestError("bad n", param="n")
    openapi(err.to_dict(), "ErrorResponse")
    assert err.to_dict()["error"] == {"message": "bad n", "type": "invalid_request_error",
                                      "param": "n", "code": None}


@pytest.mark.parametrize("status, kind, ours", [
    (400, BadRequestError, 400), (500, UpstreamError, 502), (503, UpstreamError, 502),
    (504, UpstreamTimeoutError, 504), (429, None, 429), (401, None, 401), (404, None, 404)])
def test_upstream_status_mapping(status, kind, ours):
    err = from_upstream_status(status, "boom")
    assert err.status == ours and "boom" in err.message
    if kind:
        assert isinstance(err, kind)


def test_sdk_errors_are_translated():
    import openai
    try:  # the SDK's HTTP library (httpx2 in openai 3.x, httpx before)
        import httpx2 as httpx
    except ImportError:
        import httpx

    from optillm.errors import translate_upstream_errors

    request = httpx.Request("POST", "http://x/v1/chat/completions")
    with pytest.raises(UpstreamTimeoutError):
        with translate_upstream_errors():
            raise openai.APITimeoutError(request=request)
    with pytest.raises(UpstreamError, match="unreachable"):
        with translate_upstream_errors():
            raise openai.APIConnectionError(request=request)
    response = httpx.Response(500, request=request, json={"error": {"message": "exploded"}})
    with pytest.raises(UpstreamError, match="exploded") as info:
        with translate_upstream_errors():
            raise openai.InternalServerError("x", response=response,
                                             body={"error": {"message": "exploded"}})
    assert info.value.status == 502
