"""End to end through ``python -m optillm`` and the embedded SmolLM2-135M ``llama-server``.

The client is the official ``openai`` SDK (raw JSON and raw SSE where a body is checked against
OpenAI's OpenAPI description). The model is tiny, so no test judges an answer: they check
shapes, counts, usage sums, stream framing, and what the conversation log says reached the
upstream. Every request carries a unique ``user`` value, which finds its log record.
"""

from __future__ import annotations

import json
import signal
import stat
import uuid

import openai
import pytest
import requests

from optillm.approaches.cot_reflection import INSTRUCTIONS as COT_INSTRUCTIONS
from optillm.approaches.re2 import reread_prompt

from ..conftest import validate_openapi
from .conftest import (
    MODEL,
    http_json,
    is_running,
    llama_servers,
    proc_stat,
    start_proxy,
    stop_process,
    supervisors,
    wait_gone,
)

pytestmark = pytest.mark.e2e

STORY = "Write a long story about a dragon."  # long answers: multi-call usage is large
QUESTION = "What is 2+2?"
BUILTIN = ("none", "re2", "cot_reflection", "bon", "moa", "self_consistency")
LOG_FIELDS = {"timestamp", "request_id", "approach", "model", "client_request",
              "provider_calls", "final_response", "total_duration_ms", "error"}


def new_marker() -> str:
    return f"e2e-{uuid.uuid4().hex[:12]}"


def ask(client: openai.OpenAI, model: str, content: str = STORY, max_tokens: int = 16,
        **params):
    """One non-streamed request; returns ``(sdk_completion, raw_json)``."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=max_tokens,
        **params)
    return raw.parse(), raw.http_response.json()


def assert_usage_adds_up(usage) -> None:
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def call_usage(call: dict) -> tuple[int, int]:
    """(prompt, completion) tokens of one logged provider call."""
    usage = call["response"]["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def call_text(call: dict) -> str:
    response = call["response"]
    if response.get("streamed"):
        return response["choices"][0]["content"]
    return response["choices"][0]["message"]["content"]


def last_user(call: dict) -> str:
    """The last user message a logged provider call sent."""
    users = [m for m in call["provider_request"]["messages"] if m["role"] == "user"]
    return users[-1]["content"]


def sse(url: str, body: dict) -> tuple[list[str], list[dict], bool, list[str]]:
    """POST a streamed request; returns (comments, data objects, saw [DONE], lines after it)."""
    comments, data, after = [], [], []
    done = False
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=180,
                       headers={"Authorization": "Bearer sk-test"}) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/event-stream")
        for line in r.iter_lines(decode_unicode=True):
            if not line:
                continue
            if done:
                after.append(line)
            elif line.startswith(":"):
                comments.append(line)
            elif line == "data: [DONE]":
                done = True
            else:
                assert line.startswith("data: "), line
                data.append(json.loads(line[6:]))
    return comments, data, done, after


# -- the local model and plain completions ---------------------------------------------------

def test_health_and_shared_model_state(proxy):
    status, body = http_json(f"{proxy.url}/health")
    assert status == 200 and body["status"] == "healthy"
    state = proxy.state()
    assert state["users"] == [proxy.proc.pid]
    assert is_running(state["pid"]) and supervisors(str(proxy.state_path)) == [state["pid"]]
    servers = llama_servers(state["port"])
    assert len(servers) == 1 and proc_stat(servers[0])[1] == state["pid"]
    status, body = http_json(f"http://127.0.0.1:{state['port']}/health")
    assert status == 200


def test_plain_completion(client, proxy):
    marker = new_marker()
    completion, data = ask(client, MODEL, QUESTION, max_tokens=16, user=marker)
    assert data["object"] == "chat.completion" and data["model"] == MODEL
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert_usage_adds_up(completion.usage)
    assert completion.usage.completion_tokens <= 16
    [record] = proxy.log_records(marker)
    assert record["approach"] == "none" and len(record["provider_calls"]) == 1
    assert record["final_response"]["id"] == completion.id  # the upstream's body, relayed


def test_passthrough_body_matches_openapi(client):
    # llama-server leaves out choices[].logprobs and message.refusal: the relay adds them
    _, data = ask(client, MODEL, QUESTION, max_tokens=8)
    validate_openapi(data, "CreateChatCompletionResponse")


def test_streamed_completion_with_usage(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": STORY}], max_tokens=16, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)  # ends on [DONE]; anything malformed raises
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert content and "".join(c.choices[0].delta.content for c in content).strip()
    finished = [c.choices[0].finish_reason for c in chunks if c.choices
                and c.choices[0].finish_reason]
    assert finished == ["length"] or finished == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert_usage_adds_up(last.usage)
    assert last.usage.completion_tokens <= 16
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("approach", [None, "re2", "moa", "bon"])
def test_stream_chunks_match_openapi(proxy_url, approach):
    """Raw SSE of the passthrough, a streamed final call, a streamed synthesis and an approach
    whose answer is sent when ready: OpenAI's chunk schema, role first, usage last, [DONE]."""
    model = f"{approach}-{MODEL}" if approach else MODEL
    comments, data, done, after = sse(proxy_url, {
        "model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 12,
        "stream": True, "stream_options": {"include_usage": True}})
    assert done and after == []
    assert all(c.startswith(": ") or c == ":" for c in comments)
    for chunk in data:
        validate_openapi(chunk, "CreateChatCompletionStreamResponse")
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    assert data[-1]["choices"] == [] and data[-1]["usage"]["total_tokens"] == \
        data[-1]["usage"]["prompt_tokens"] + data[-1]["usage"]["completion_tokens"]
    assert all(not c.get("usage") for c in data[:-1])
    assert sum(1 for c in data for ch in c["choices"] if ch.get("finish_reason")) == 1
    text = "".join(ch["delta"].get("content") or "" for c in data for ch in c["choices"])
    assert text.strip()
    assert len({c["id"] for c in data}) == 1 and {c["model"] for c in data} <= {model, MODEL}


# -- n ----------------------------------------------------------------------------------------

def test_n_choices_count_every_choice(client, proxy):
    marker = new_marker()
    completion, data = ask(client, MODEL, STORY, max_tokens=8, n=3, user=marker)
    validate_openapi(data, "CreateChatCompletionResponse")
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert all(c.message.content and c.message.content.strip() for c in completion.choices)
    # A story does not end in 8 tokens, so each choice generated exactly max_tokens; the
    # upstream (llama-server) reports one choice's count, the proxy must report all three.
    assert [c.finish_reason for c in completion.choices] == ["length"] * 3
    assert completion.usage.completion_tokens == 3 * 8
    assert_usage_adds_up(completion.usage)
    [record] = proxy.log_records(marker)
    assert record["approach"] == "none" and len(record["provider_calls"]) == 1


def test_n_choices_usage_equals_logprob_tokens(client):
    completion, _ = ask(client, MODEL, QUESTION, max_tokens=12, n=3, logprobs=True)
    assert len(completion.choices) == 3
    per_choice = [len(c.logprobs.content) for c in completion.choices]
    assert all(0 < k <= 12 for k in per_choice)
    assert completion.usage.completion_tokens == sum(per_choice)


def test_logprobs_choices_match_openapi(client):
    _, data = ask(client, MODEL, QUESTION, max_tokens=4, n=2, logprobs=True)
    validate_openapi(data, "CreateChatCompletionResponse")


# -- approaches -------------------------------------------------------------------------------

def test_approach_in_request_body(client, proxy):
    marker = new_marker()
    completion, data = ask(client, MODEL, QUESTION, user=marker,
                           extra_body={"optillm_approach": "re2"})
    validate_openapi(data, "CreateChatCompletionResponse")
    assert completion.choices[0].message.content.strip()
    assert_usage_adds_up(completion.usage)
    [record] = proxy.log_records(marker)
    assert record["approach"] == "re2"
    [call] = record["provider_calls"]
    assert last_user(call) == reread_prompt(QUESTION)
    assert "optillm_approach" not in call["provider_request"]
    assert call_usage(call) == (completion.usage.prompt_tokens,
                                completion.usage.completion_tokens)


#: Upstream calls each approach makes with default options (bon: candidates + 3 ratings;
#: moa: candidates, critique, synthesis; candidates are one call with ``n``).
CALLS = {"none": 1, "re2": 1, "cot_reflection": 1, "bon": 4, "moa": 3, "self_consistency": 1}
MULTI = {"bon", "moa", "self_consistency"}  # more than one answer's worth of tokens


@pytest.mark.parametrize("approach", BUILTIN)
def test_approach_as_model_prefix(client, proxy, approach):
    marker = new_marker()
    max_tokens = 16
    completion, data = ask(client, f"{approach}-{MODEL}", STORY, max_tokens=max_tokens,
                           user=marker)
    validate_openapi(data, "CreateChatCompletionResponse")
    assert len(completion.choices) == 1
    assert completion.choices[0].message.content.strip()
    usage = completion.usage
    assert_usage_adds_up(usage)
    if approach in MULTI:
        assert usage.completion_tokens > max_tokens  # no single call can generate that many
    else:
        assert usage.completion_tokens <= max_tokens
    [record] = proxy.log_records(marker)
    assert record["approach"] == approach and record["model"] == MODEL
    calls = record["provider_calls"]
    assert len(calls) == CALLS[approach]
    assert all(c["error"] is None for c in calls)
    assert all(c["provider_request"]["model"] == MODEL for c in calls)
    # usage is exact: the sum of every upstream call's usage
    assert sum(call_usage(c)[0] for c in calls) == usage.prompt_tokens
    assert sum(call_usage(c)[1] for c in calls) == usage.completion_tokens


def test_moa_streamed(client, proxy):
    marker = new_marker()
    stream = client.chat.completions.create(
        model=f"moa-{MODEL}", messages=[{"role": "user", "content": STORY}], max_tokens=16,
        stream=True, stream_options={"include_usage": True}, user=marker)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks
              if c.choices and c.choices[0].delta.content]
    assert pieces
    finishes = [c.choices[0].finish_reason for c in chunks
                if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert_usage_adds_up(usage)
    assert usage.completion_tokens > 16
    [record] = proxy.log_records(marker)
    calls = record["provider_calls"]
    assert len(calls) == 3 and record["error"] is None
    synthesis = calls[-1]
    assert synthesis["response"]["streamed"] is True  # the final call streamed to the client
    assert call_text(synthesis) == "".join(pieces)
    assert record["final_response"]["choices"][0]["message"]["content"] == "".join(pieces)
    assert sum(call_usage(c)[1] for c in calls) == usage.completion_tokens
    assert sum(call_usage(c)[0] for c in calls) == usage.prompt_tokens


def test_drop_in_plugin(client, proxy):
    marker = new_marker()
    completion, data = ask(client, f"echo_upper-{MODEL}", STORY, max_tokens=24, user=marker)
    validate_openapi(data, "CreateChatCompletionResponse")
    text = completion.choices[0].message.content
    assert text.strip() and any(ch.isalpha() for ch in text)
    assert text == text.upper()
    assert_usage_adds_up(completion.usage)
    [record] = proxy.log_records(marker)
    assert record["approach"] == "echo_upper"
    [call] = record["provider_calls"]  # the plugin's one client.chat.completions.create
    assert call["provider_request"]["messages"] == [{"role": "user", "content": STORY}]
    assert call["provider_request"]["max_tokens"] == 24
    assert call_text(call).upper() == text
    assert call_usage(call) == (completion.usage.prompt_tokens,
                                completion.usage.completion_tokens)


def test_sequence_feeds_each_answer_to_the_next_stage(client, proxy):
    marker = new_marker()
    completion, data = ask(client, f"re2&cot_reflection-{MODEL}", QUESTION, user=marker)
    validate_openapi(data, "CreateChatCompletionResponse")
    assert len(completion.choices) == 1 and completion.choices[0].message.content.strip()
    assert_usage_adds_up(completion.usage)
    [record] = proxy.log_records(marker)
    assert record["approach"] == "re2&cot_reflection"
    first, second = record["provider_calls"]
    assert last_user(first) == reread_prompt(QUESTION)
    assert last_user(second) == call_text(first)  # stage 1's answer is stage 2's query
    system = second["provider_request"]["messages"][0]
    assert system["role"] == "system" and system["content"] == COT_INSTRUCTIONS
    assert call_usage(first)[1] + call_usage(second)[1] == completion.usage.completion_tokens
    assert call_usage(first)[0] + call_usage(second)[0] == completion.usage.prompt_tokens


def test_parallel_gives_one_choice_per_approach(client, proxy):
    marker = new_marker()
    completion, data = ask(client, f"re2|none-{MODEL}", QUESTION, user=marker)
    validate_openapi(data, "CreateChatCompletionResponse")
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content.strip() for c in completion.choices)
    assert_usage_adds_up(completion.usage)
    [record] = proxy.log_records(marker)
    calls = record["provider_calls"]
    assert record["approach"] == "re2|none" and len(calls) == 2
    by_prompt = {last_user(c): c for c in calls}
    assert set(by_prompt) == {reread_prompt(QUESTION), QUESTION}
    assert completion.choices[0].message.content == call_text(by_prompt[reread_prompt(QUESTION)])
    assert completion.choices[1].message.content == call_text(by_prompt[QUESTION])
    assert sum(call_usage(c)[1] for c in calls) == completion.usage.completion_tokens


# -- models, errors, the conversation log ----------------------------------------------------

def test_models_lists_the_model_and_every_approach(client, proxy_url):
    ids = [m.id for m in client.models.list().data]
    assert MODEL in ids
    assert set(BUILTIN) | {"echo_upper"} <= set(ids)
    body = requests.get(f"{proxy_url}/v1/models", timeout=30).json()
    validate_openapi(body, "ListModelsResponse")
    plugin = next(m for m in body["data"] if m["id"] == "echo_upper")
    assert plugin["owned_by"] == "optillm" and "drop-in plugin" in plugin["description"]


def assert_logged_as_failed(proxy, marker: str, message: str) -> None:
    """A rejected request still gets its one log line, carrying the error and no calls."""
    [record] = proxy.log_records(marker)
    assert set(record) == LOG_FIELDS
    assert record["error"] == message and record["final_response"] is None
    assert record["provider_calls"] == []


def test_unknown_approach_in_combination_is_not_found(client, proxy):
    marker = new_marker()
    with pytest.raises(openai.NotFoundError) as info:
        ask(client, f"re2&no_such_approach-{MODEL}", QUESTION, user=marker)
    assert info.value.status_code == 404
    body = info.value.response.json()
    validate_openapi(body, "ErrorResponse")
    assert body["error"]["code"] == "approach_not_found"
    assert "no_such_approach" in body["error"]["message"]
    assert_logged_as_failed(proxy, marker, body["error"]["message"])


def test_n_zero_is_bad_request(client, proxy):
    marker = new_marker()
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, MODEL, QUESTION, n=0, user=marker)
    assert info.value.status_code == 400
    body = info.value.response.json()
    validate_openapi(body, "ErrorResponse")
    assert body["error"]["param"] == "n"
    assert_logged_as_failed(proxy, marker, body["error"]["message"])


def test_conversation_log_has_one_line_per_request(client, proxy):
    markers = [new_marker() for _ in range(3)]
    ask(client, MODEL, QUESTION, max_tokens=8, user=markers[0])
    ask(client, f"moa-{MODEL}", QUESTION, max_tokens=8, user=markers[1])
    list(client.chat.completions.create(
        model=f"re2-{MODEL}", messages=[{"role": "user", "content": QUESTION}], max_tokens=8,
        stream=True, user=markers[2]))
    records = [proxy.log_records(m) for m in markers]
    assert [len(r) for r in records] == [1, 1, 1]  # one line per request, not per call
    for (record,), approach, calls in zip(records, ["none", "moa", "re2"], [1, 3, 1],
                                               strict=True):
        assert set(record) == LOG_FIELDS
        assert record["approach"] == approach and record["model"] == MODEL
        assert record["request_id"].startswith("req-") and record["error"] is None
        assert record["timestamp"].endswith("+00:00")
        assert isinstance(record["total_duration_ms"], (int, float))
        assert record["total_duration_ms"] >= 0
        assert len(record["provider_calls"]) == calls and record["final_response"]
        for call in record["provider_calls"]:
            assert {"provider_request", "response", "duration_ms", "error"} <= set(call)
    assert len({r[0]["request_id"] for r in records}) == 3
    files = list(proxy.log_dir.glob("conversations_*.jsonl"))
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert not any("sk-test" in f.read_text() for f in files)  # the client's key stays out


# -- shutdown ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_the_proxy_stops_its_llama_server(runtime_dir, tmp_path, proxy, sig):
    """A proxy of its own (one slot: another model key) must take its server down with it,
    and leave the session's proxy and its server alone."""
    own = start_proxy(runtime_dir, tmp_path / "own.out", slots=1, plugins=False)
    try:
        state = own.state()
        assert state["users"] == [own.proc.pid]
        assert own.state_path != proxy.state_path
        servers = llama_servers(state["port"])
        assert len(servers) == 1
    finally:
        stop_process(own.proc, sig)
    assert wait_gone([state["pid"], *servers], 15.0) == []
    assert not own.state_path.exists()
    assert is_running(proxy.state()["pid"])
    assert http_json(f"{proxy.url}/health")[0] == 200
