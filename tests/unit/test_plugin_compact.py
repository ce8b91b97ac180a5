"""The ``compact`` plugin: no compaction under the limit, one summary call then the answer on
the compacted conversation over it, exact counts from ``/tokenize`` where served, the estimate
elsewhere, option checks, streaming and chains."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from optillm.plugins.compact import estimate_tokens, split_turns
from optillm.types import Message
from optillm.upstream.base import NO_META
from optillm.upstream.openai_client import OpenAIUpstream

from ..conftest import chat
from ..fakes import FakeUpstream

LONG = "word " * 400  # 2000 chars: ~500 estimated tokens


def conversation(turns: int = 4, system: str | None = "You are kind."):
    msgs = [{"role": "system", "content": system}] if system else []
    for i in range(turns):
        msgs += [{"role": "user", "content": f"question {i} {LONG}"},
                 {"role": "assistant", "content": f"answer {i}"}]
    return msgs + [{"role": "user", "content": "final question"}]


def post(client, messages, **body):
    return client.post("/v1/chat/completions",
                       json={"model": "compact-fake", "messages": messages, **body})


def test_under_the_limit_is_one_unchanged_call(client, fake):
    msgs = conversation(1)
    data = post(client, msgs, compact_max_tokens=100_000).get_json()
    (call,) = fake.history
    assert [m.content for m in call.messages] == [m["content"] for m in msgs]
    meta = data["choices"][0]["optillm_compact"]
    assert meta["compacted"] is False and meta["method"] == "estimate"


def test_over_the_limit_summarises_older_turns(client, fake):
    fake.when_contains("Summarise the conversation", "SUMMARY: four questions asked")
    fake.default = "the answer"
    msgs = conversation(4)
    res = post(client, msgs, compact_max_tokens=1000, compact_keep_turns=2, temperature=0.9)
    data = res.get_json()
    assert res.status_code == 200, data
    assert data["choices"][0]["message"]["content"] == "the answer"
    summary, answer = fake.history
    # the summary call sees the older messages with their roles, then the request
    assert [m.role for m in summary.messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert summary.messages[1].content.startswith("question 0")
    assert summary.params["temperature"] == 0 and summary.params["max_tokens"] == 512
    # the answer: system prompt + summary, then the last 2 turns verbatim
    assert answer.messages[0].role == "system"
    assert answer.messages[0].content.startswith("You are kind.")
    assert "SUMMARY: four questions asked" in answer.messages[0].content
    assert [m.content for m in answer.messages[1:]] == [m["content"] for m in msgs[-3:]]
    assert answer.params["temperature"] == 0.9
    meta = data["choices"][0]["optillm_compact"]
    assert meta["compacted"] and meta["summarised_messages"] == 6 and meta["kept_messages"] == 3
    prompt = sum(sum(len(m.text.split()) or 1 for m in r.messages) for r in fake.history)
    assert data["usage"]["prompt_tokens"] == prompt


def test_without_a_system_prompt_the_summary_becomes_one(client, fake):
    fake.when_contains("Summarise the conversation", "S")
    post(client, conversation(3, system=None), compact_max_tokens=200, compact_keep_turns=1)
    answer = fake.history[-1]
    assert answer.messages[0].role == "system" and answer.messages[0].content.endswith("S")
    assert [m.content for m in answer.messages[1:]] == ["final question"]


def test_a_single_long_message_is_not_summarised(client, fake):
    data = chat(client, model="compact-fake", content=LONG * 5, compact_max_tokens=100).get_json()
    assert len(fake.history) == 1 and not data["choices"][0]["optillm_compact"]["compacted"]


def test_streams_the_answer(client, fake):
    fake.when_contains("Summarise the conversation", "S")
    fake.default = "streamed answer here"
    res = post(client, conversation(3), compact_max_tokens=200, stream=True)
    body = res.get_data(as_text=True)
    chunks = [json.loads(line[6:]) for line in body.splitlines()
              if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "streamed answer here" and body.rstrip().endswith("data: [DONE]")


class Tokenizer(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(body)
        data = json.dumps({"tokens": list(range(len(body["content"].split())))}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class TokenizingFake(FakeUpstream):
    """A fake whose token counts come from a real ``OpenAIUpstream`` at ``base_url`` (its
    ``POST /tokenize``), so the count travels the whole stack as llama-server's would."""

    def __init__(self, base_url: str):
        super().__init__()
        self.counter = OpenAIUpstream(base_url, retries=0)

    def count_tokens(self, text, model, meta=NO_META):
        return self.counter.count_tokens(text, model, meta)


def test_counts_with_the_upstreams_tokenize(make_app):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Tokenizer)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        upstream = TokenizingFake(f"http://127.0.0.1:{server.server_address[1]}/v1")
        client = make_app(upstream).test_client()
        msgs = conversation(1)
        data = post(client, msgs).get_json()
    finally:
        server.shutdown()
        server.server_close()
    meta = data["choices"][0]["optillm_compact"]
    words = sum(len(m["content"].split()) for m in msgs)
    assert meta["method"] == "tokenize" and meta["tokens"] == words + 4 * len(msgs)
    assert len(server.seen) == 1 and "final question" in server.seen[0]["content"]


def test_unreachable_tokenize_falls_back_to_the_estimate(make_app):
    upstream = TokenizingFake("http://127.0.0.1:9/v1")  # nothing listens on the discard port
    data = post(make_app(upstream).test_client(), conversation(1)).get_json()
    assert data["choices"][0]["optillm_compact"]["method"] == "estimate"


def test_estimate_and_turn_split():
    assert estimate_tokens([Message("user", "x" * 9)]) == 3 + 4
    system, older, kept = split_turns([Message("system", "s"), Message("user", "a"),
                                       Message("assistant", "b"), Message("user", "c")], 1)
    assert [m.content for m in older] == ["a", "b"] and [m.content for m in kept] == ["c"]


def test_in_a_chain(client, fake):
    fake.enqueue("rewritten question")
    post(client, conversation(1), model="re2&compact-fake")
    assert fake.history[1].messages[-1].content == "rewritten question"
