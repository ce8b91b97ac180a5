"""``wait`` (TTC-LLM's ``-wait-N``): the chat transcript, the tags, usage over N+1 calls, the
suffix form and its bounds, streaming, and s1 budget forcing over text completions."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from optillm.approaches.wait import WAIT_PROMPT
from optillm.errors import BadRequestError, CapabilityError, NotFoundError
from optillm.plan.loader import build_registry
from optillm.plan.model_names import wait_suffix as parse_model
from optillm.types import SINGLE, Message, Plan
from optillm.upstream.openai_client import OpenAIUpstream

from ..conftest import chat
from ..fakes import FakeUpstream, words
from .test_streaming import events

QUESTION = "What is 2+2?"


@pytest.fixture(scope="module")
def registry():
    return build_registry(entry_points=False)[1]


def prompt_words(request) -> int:
    return sum(words(m.text) for m in request.messages)


# -- chat mode ---------------------------------------------------------------------------------

def test_wait_n_transcript_and_tags(client, fake):
    fake.enqueue("first try", "second try", "final answer")
    r = chat(client, model="fake-wait-2", content=QUESTION)
    assert r.status_code == 200
    data = r.get_json()
    assert data["choices"][0]["message"]["content"] == (
        "<test-time-compute>\nfirst try\n\nsecond try\n</test-time-compute>\n\nfinal answer")
    assert data["model"] == "fake-wait-2"
    first, second, third = fake.history
    assert all(call.model == "fake" for call in fake.history)
    assert [(m.role, m.content) for m in first.messages] == [("user", QUESTION)]
    assert [(m.role, m.content) for m in second.messages] == [
        ("user", QUESTION), ("assistant", "first try"), ("user", WAIT_PROMPT)]
    assert [(m.role, m.content) for m in third.messages] == [
        ("user", QUESTION), ("assistant", "first try"), ("user", WAIT_PROMPT),
        ("assistant", "second try"), ("user", WAIT_PROMPT)]
    assert WAIT_PROMPT == "wait, check your reasoning"


def test_wait_usage_sums_all_n_plus_one_calls(client, fake):
    fake.enqueue("a b c", "d e", "f", "g h i j", "k")
    data = chat(client, model="fake-wait-4").get_json()
    assert len(fake.history) == 5
    assert data["usage"]["prompt_tokens"] == sum(prompt_words(r) for r in fake.history)
    assert data["usage"]["completion_tokens"] == 3 + 2 + 1 + 4 + 1
    assert data["usage"]["total_tokens"] == (data["usage"]["prompt_tokens"]
                                             + data["usage"]["completion_tokens"])


def test_wait_keeps_system_prompt_and_history(client, fake):
    client.post("/v1/chat/completions", json={"model": "fake-wait-1", "messages": [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": QUESTION}]})
    last = fake.history[-1].messages
    assert [m.content for m in last] == ["Be terse.", "hi", "hello", QUESTION, "ok",
                                         WAIT_PROMPT]


def test_wait_calls_get_answer_params(client, fake):
    chat(client, model="fake-wait-1", response_format={"type": "json_object"}, seed=7,
         max_tokens=20)
    assert all(r.params["response_format"] == {"type": "json_object"} and r.params["seed"] == 7
               for r in fake.history)
    assert all("wait_rounds" not in r.params for r in fake.history)


@pytest.mark.parametrize("model", ["fake-wait-0", "fake-wait-21", "fake-wait-99999999999999999",
                                   "fake-wait-00"])
def test_rounds_out_of_range_are_400(client, fake, model):
    r = chat(client, model=model)
    assert r.status_code == 400
    error = r.get_json()["error"]
    assert "1 to 20" in error["message"] and model[:20] in error["message"]
    assert error["param"] == "model" and error["type"] == "invalid_request_error"
    assert not fake.history and not fake.forwarded


def test_body_wait_rounds_overrides_the_suffix(client, fake):
    chat(client, model="fake-wait-5", wait_rounds=1)
    assert len(fake.history) == 2


def test_nested_body_option_overrides_the_suffix(client, fake):
    chat(client, model="fake-wait-6", optillm={"wait_rounds": 2})
    assert len(fake.history) == 3  # the suffix's 6 is only a default under the body's 2


def test_prefix_form_and_body_selection_take_rounds_from_the_body(client, fake):
    chat(client, model="wait-fake", wait_rounds=2)
    assert len(fake.history) == 3 and fake.history[0].model == "fake"
    fake.history.clear()
    chat(client, model="wait-fake")  # the default: 3 rounds
    assert len(fake.history) == 4
    fake.history.clear()
    chat(client, model="fake", optillm_approach="wait", optillm={"wait_rounds": 1})
    assert len(fake.history) == 2 and fake.history[0].model == "fake"


def test_qwen_wait_6_through_the_app(client, fake):
    data = chat(client, model="qwen-wait-6").get_json()
    assert len(fake.history) == 7 and {r.model for r in fake.history} == {"qwen"}
    assert data["choices"][0]["message"]["content"].count("ok") == 7


# -- the suffix form ---------------------------------------------------------------------------

@pytest.mark.parametrize("model, base, rounds", [
    ("qwen-wait-6", "qwen", 6),
    ("gpt-4o-mini-wait-1", "gpt-4o-mini", 1),
    ("meta-llama/Llama-3.1-8B-Instruct-wait-20", "meta-llama/Llama-3.1-8B-Instruct", 20),
    ("model-wait-3-wait-2", "model-wait-3", 2),
    ("wait-qwen-wait-4", "qwen", 4),
    ("SmolLM2-135M-Instruct-wait-02", "SmolLM2-135M-Instruct", 2),
])
def test_suffix_parses(registry, model, base, rounds):
    assert parse_model(model, registry) == Plan(SINGLE, ("wait",), base, {"wait_rounds": rounds})


@pytest.mark.parametrize("model", ["qwen", "qwen-wait-x", "qwen-wait-", "qwen-wait-3b",
                                   "qwen-wait--3", "qwen-wait3", "qwen-Wait-3", "qwen-waiting-3",
                                   "-wait-3", "wait-3", "qwen-wait-3.5", "qwen-wait-٣"])
def test_names_that_are_not_the_suffix_are_left_alone(registry, model):
    assert parse_model(model, registry) is None


def test_a_model_ending_in_wait_x_is_passed_through(client, fake):
    r = chat(client, model="my-model-wait-x")
    assert r.status_code == 200 and not fake.history
    (body,) = fake.forwarded
    assert json.loads(body)["model"] == "my-model-wait-x"


def test_suffix_with_another_approach_prefix_is_400(registry):
    with pytest.raises(BadRequestError, match="cannot be combined.*'moa'"):
        parse_model("moa-gpt-4o-wait-3", registry)


def test_suffix_needs_wait_registered():
    from optillm.plan.registry import Registry

    assert parse_model("qwen-wait-3", Registry()) is None


# -- streaming ---------------------------------------------------------------------------------

def test_streamed_wait_sends_the_same_content_and_streams_the_final_answer(make_app, openapi):
    fake = FakeUpstream()
    fake.enqueue("one two", "three four", "the final streamed answer")
    client = make_app(upstream=fake).test_client()
    r = chat(client, model="fake-wait-2", stream=True, stream_options={"include_usage": True})
    _, data, done = events(r.get_data())
    assert done
    pieces = [d["choices"][0]["delta"]["content"] for d in data[1:]
              if d["choices"] and d["choices"][0]["delta"].get("content")]
    assert "".join(pieces) == ("<test-time-compute>\none two\n\nthree four\n"
                               "</test-time-compute>\n\nthe final streamed answer")
    assert pieces[1:] == ["the ", "final ", "streamed ", "answer"]  # token by token
    assert data[-1]["usage"]["completion_tokens"] == 2 + 2 + 4
    assert data[-1]["usage"]["prompt_tokens"] == sum(prompt_words(h) for h in fake.history)
    for d in data:
        openapi(d, "CreateChatCompletionStreamResponse")


def test_n_choices_each_run_the_rounds(client, fake):
    data = chat(client, model="fake-wait-1", n=2).get_json()
    assert len(data["choices"]) == 2 and len(fake.history) == 4


def test_response_conforms_to_openapi(client, fake, openapi):
    data = chat(client, model="fake-wait-2").get_json()
    openapi(data, "CreateChatCompletionResponse")


# -- continue mode (s1 budget forcing) ----------------------------------------------------------

def test_continue_mode_forces_wait_into_one_trace(client, fake):
    fake.enqueue("It is 5.", " no, 4.", "\nsure, 4.")
    r = chat(client, model="fake-wait-2", wait_mode="continue", content=QUESTION,
             max_tokens=30)
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    assert not fake.history  # no chat calls: one text trace
    assert fake.templates == [(Message("user", QUESTION),)]
    prompt0 = f"<|user|>{QUESTION}\n<|assistant|>"
    prompts = [c["prompt"] for c in fake.text_calls]
    assert prompts == [prompt0,
                       prompt0 + "It is 5.\n\nWait",
                       prompt0 + "It is 5.\n\nWait no, 4.\n\nWait"]
    assert all(c["model"] == "fake" and c["params"]["max_tokens"] == 30
               for c in fake.text_calls)
    assert data["choices"][0]["message"]["content"] == (
        "<test-time-compute>\nIt is 5.\n\nWait no, 4.\n</test-time-compute>\n\n"
        "Wait\nsure, 4.")
    assert data["usage"]["prompt_tokens"] == sum(words(p) for p in prompts)
    assert data["usage"]["completion_tokens"] == 3 + 2 + 2


def test_continue_mode_adds_no_separator_after_whitespace(client, fake):
    fake.enqueue("first line\n", " fixed")
    chat(client, model="fake-wait-1", wait_mode="continue")
    assert fake.text_calls[1]["prompt"].endswith("first line\nWait")


def test_continue_mode_streams_the_whole_content_when_ready(client, fake):
    fake.enqueue("a", "b")
    r = chat(client, model="fake-wait-1", wait_mode="continue", stream=True)
    _, data, done = events(r.get_data())
    content = "".join(d["choices"][0]["delta"].get("content") or "" for d in data
                      if d.get("choices"))
    assert done and content == "<test-time-compute>\na\n</test-time-compute>\n\nWaitb"


def test_continue_mode_without_template_is_a_400_before_any_call(make_app):
    fake = FakeUpstream(chat_template=False)
    client = make_app(upstream=fake).test_client()
    r = chat(client, model="fake-wait-2", wait_mode="continue")
    assert r.status_code == 400
    error = r.get_json()["error"]
    assert error["code"] == "unsupported_capability" and error["param"] == "wait_mode"
    assert "wait_mode 'continue'" in error["message"]
    assert "apply-template" in error["message"]
    assert not fake.history and not fake.text_calls


def test_continue_mode_without_text_completions_is_a_400(make_app):
    fake = FakeUpstream(text_completions=False)
    client = make_app(upstream=fake).test_client()
    r = chat(client, model="fake-wait-2", wait_mode="continue")
    assert r.status_code == 400
    error = r.get_json()["error"]
    assert error["code"] == "unsupported_capability"
    assert "text completions" in error["message"]


def test_text_completions_are_conversation_logged(make_app, fake, tmp_path):
    folder = tmp_path / "convs"
    client = make_app(log_conversations=True, conversation_log_dir=str(folder)).test_client()
    chat(client, model="fake-wait-1", wait_mode="continue", max_tokens=9)
    (name,) = os.listdir(folder)
    (record,) = [json.loads(line) for line in open(folder / name)]
    calls = record["provider_calls"]
    assert len(calls) == 2 and record["approach"] == "wait"
    assert calls[0]["provider_request"] == {"model": "fake", "prompt": fake.text_calls[0]["prompt"],
                                            "max_tokens": 9}
    assert calls[1]["response"]["usage"]["completion_tokens"] == 1


# -- the HTTP client's text completions and templates -------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    """llama-server's shapes: POST /apply-template (root) and /v1/completions."""

    seen: list = []
    template = True

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, body))
        if self.path == "/apply-template" and self.template:
            reply = {"prompt": "<|user|>" + body["messages"][-1]["content"] + "<|assistant|>"}
        elif self.path == "/v1/completions" and body.get("model") != "chat-only":
            reply = {"id": "cmpl-1", "object": "text_completion", "model": body["model"],
                     "choices": [{"index": 0, "text": " four", "finish_reason": "length",
                                  "logprobs": None}],
                     "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
        else:
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "File Not Found", "code": 404}}')
            return
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_upstream():
    handler = type("Handler", (_Handler,), {"seen": [], "template": True})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    upstream = OpenAIUpstream(f"http://127.0.0.1:{server.server_port}/v1", retries=0)
    yield upstream, handler
    upstream.close()
    server.shutdown()
    server.server_close()


def test_openai_upstream_renders_templates_and_completes_text(http_upstream):
    upstream, handler = http_upstream
    prompt = upstream.apply_template([Message("user", "2+2?")], "m")
    assert prompt == "<|user|>2+2?<|assistant|>"
    completion = upstream.complete_text(prompt, "m", {"max_completion_tokens": 4,
                                                      "temperature": 0.5,
                                                      "chat_template_kwargs": {"x": 1}})
    assert completion.text == " four" and completion.choices[0].finish_reason == "length"
    assert completion.usage.prompt_tokens == 5 and completion.usage.completion_tokens == 1
    (_, template_body), (path, body) = handler.seen
    assert template_body["messages"] == [{"role": "user", "content": "2+2?"}]
    assert path == "/v1/completions"
    assert body == {"model": "m", "prompt": prompt, "max_tokens": 4, "temperature": 0.5}
    caps = upstream.capabilities
    assert caps.chat_template is True and caps.text_completions is True


def test_openai_upstream_without_template_endpoint_says_so_once(http_upstream):
    upstream, handler = http_upstream
    handler.template = False
    for _ in range(2):
        with pytest.raises(CapabilityError, match="apply-template"):
            upstream.apply_template([Message("user", "hi")], "m")
    assert len(handler.seen) == 1  # remembered: the second refusal made no call
    assert upstream.capabilities.chat_template is False


def test_openai_upstream_text_completion_refused_for_a_model(http_upstream):
    upstream, _ = http_upstream
    with pytest.raises(CapabilityError, match="text completions.*'chat-only'") as info:
        upstream.complete_text("x", "chat-only", {})
    assert not isinstance(info.value, NotFoundError) and info.value.status == 400
