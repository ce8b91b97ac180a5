"""``wait`` and ``council`` end to end: the openai SDK, the proxy, the real llama-server.

The model is tiny, so nothing judges an answer: the tests check the content's shape against
the calls the conversation log says were made (exact texts), usage sums, streaming, s1's
continued trace over llama-server's ``/apply-template`` and ``/v1/completions``, council
metadata, and OpenAI's OpenAPI schemas.
"""

from __future__ import annotations

import openai
import pytest

from optillm.approaches.wait import WAIT_PROMPT, WAIT_WORD, render

from ..conftest import validate_openapi
from .conftest import MODEL
from .test_proxy_e2e import QUESTION, ask, assert_usage_adds_up, call_text, new_marker, sse

pytestmark = pytest.mark.e2e

MAX_TOKENS = 10


def logged_usage(calls: list[dict]) -> tuple[int, int]:
    return (sum(c["response"]["usage"]["prompt_tokens"] for c in calls),
            sum(c["response"]["usage"]["completion_tokens"] for c in calls))


# -- wait ------------------------------------------------------------------------------------

def test_wait_suffix_tags_transcript_and_usage(client, proxy):
    marker = new_marker()
    completion, data = ask(client, f"{MODEL}-wait-2", QUESTION, max_tokens=MAX_TOKENS,
                           user=marker)
    validate_openapi(data, "CreateChatCompletionResponse")
    [record] = proxy.log_records(marker)
    calls = record["provider_calls"]
    assert record["approach"] == "wait" and record["model"] == MODEL and len(calls) == 3
    assert all(c["provider_request"]["model"] == MODEL and c["error"] is None for c in calls)
    texts = [call_text(c) for c in calls]
    content = completion.choices[0].message.content
    assert content == render(texts[:2], texts[2])
    assert content.startswith("<test-time-compute>\n") and "\n</test-time-compute>\n\n" in content
    last = calls[2]["provider_request"]["messages"]
    assert [(m["role"], m["content"]) for m in last] == [
        ("user", QUESTION), ("assistant", texts[0]), ("user", WAIT_PROMPT),
        ("assistant", texts[1]), ("user", WAIT_PROMPT)]
    assert_usage_adds_up(completion.usage)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == \
        logged_usage(calls)


def test_wait_streamed_content_and_usage(client, proxy):
    marker = new_marker()
    stream = client.chat.completions.create(
        model=f"{MODEL}-wait-1", messages=[{"role": "user", "content": QUESTION}],
        max_tokens=MAX_TOKENS, stream=True, stream_options={"include_usage": True},
        user=marker)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices
              and c.choices[0].delta.content]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    [record] = proxy.log_records(marker)
    calls = record["provider_calls"]
    assert len(calls) == 2 and calls[1]["response"]["streamed"]  # the final call streamed
    texts = [call_text(c) for c in calls]
    assert "".join(pieces) == render(texts[:1], texts[1])
    assert pieces[0].startswith("<test-time-compute>\n")
    assert (usage.prompt_tokens, usage.completion_tokens) == logged_usage(calls)


def test_wait_stream_chunks_match_openapi(proxy_url):
    _, data, done, after = sse(proxy_url, {
        "model": f"{MODEL}-wait-1", "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}})
    assert done and after == []
    for chunk in data:
        validate_openapi(chunk, "CreateChatCompletionStreamResponse")


def test_wait_rounds_bounds_are_400(client):
    for model in (f"{MODEL}-wait-0", f"{MODEL}-wait-21"):
        with pytest.raises(openai.BadRequestError) as info:
            ask(client, model, QUESTION, max_tokens=4)
        assert "1 to 20" in info.value.body["message"]


def test_wait_continue_mode_budget_forcing(client, proxy):
    """s1: one trace through /apply-template and /v1/completions, "Wait" appended where
    the model stopped; the next prompt is exactly the trace so far."""
    marker = new_marker()
    completion, data = ask(client, f"{MODEL}-wait-2", QUESTION, max_tokens=MAX_TOKENS,
                           user=marker, extra_body={"wait_mode": "continue"})
    validate_openapi(data, "CreateChatCompletionResponse")
    [record] = proxy.log_records(marker)
    calls = record["provider_calls"]
    assert len(calls) == 3 and all(c["error"] is None for c in calls)
    prompts = [c["provider_request"]["prompt"] for c in calls]
    texts = [c["response"]["choices"][0]["message"]["content"] for c in calls]
    assert prompts[0].startswith("<|im_start|>") and QUESTION in prompts[0]
    assert prompts[0].endswith("<|im_start|>assistant\n")  # the generation prompt
    for i in (1, 2):
        assert prompts[i].startswith(prompts[i - 1] + texts[i - 1])
        assert prompts[i].endswith(WAIT_WORD)
    segments = [texts[0], WAIT_WORD + texts[1], WAIT_WORD + texts[2]]
    assert completion.choices[0].message.content == render(segments[:2], segments[2])
    assert all(c["provider_request"]["max_tokens"] == MAX_TOKENS for c in calls)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == \
        logged_usage(calls)
    assert completion.usage.completion_tokens <= 3 * MAX_TOKENS


# -- council ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [f"council-{MODEL}", f"council/{MODEL}"])
def test_council_stages_and_metadata(client, proxy, model):
    marker = new_marker()
    completion, data = ask(client, model, QUESTION, max_tokens=MAX_TOKENS, user=marker)
    validate_openapi(data, "CreateChatCompletionResponse")
    [record] = proxy.log_records(marker)
    calls = record["provider_calls"]
    assert record["approach"] == "council" and len(calls) == 7
    assert all(c["provider_request"]["model"] == MODEL for c in calls)
    meta = data["choices"][0]["council_metadata"]
    assert [m["label"] for m in meta["members"]] == ["A", "B", "C"]
    assert [m["temperature"] for m in meta["members"]] == [0.3, 0.7, 1.0]
    opinions = [call_text(c) for c in calls[:3]]
    assert sorted(m["answer"] for m in meta["members"]) == sorted(opinions)
    reviews = calls[3:6]
    for c in reviews:
        prompt = c["provider_request"]["messages"][-1]["content"]
        assert "FINAL RANKING:" in prompt and all(f"Response {x}:" in prompt for x in "ABC")
    assert sorted(row["label"] for row in meta["aggregate_ranking"]) == ["A", "B", "C"]
    assert meta["chairman_model"] == MODEL
    assert completion.choices[0].message.content == call_text(calls[6])
    assert_usage_adds_up(completion.usage)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == \
        logged_usage(calls)


def test_council_streams_the_synthesis(proxy_url):
    _, data, done, after = sse(proxy_url, {
        "model": f"council/{MODEL}", "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 8, "stream": True, "stream_options": {"include_usage": True},
        "council_temperatures": [0.2, 0.9]})
    assert done and after == []
    for chunk in data:
        validate_openapi(chunk, "CreateChatCompletionStreamResponse")
    finish = [c for c in data if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1
    meta = finish[0]["choices"][0]["council_metadata"]
    assert len(meta["members"]) == 2
    usage = data[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
