"""The conversation logger: record fields, redaction, daily files, concurrent writers."""

import json
import multiprocessing
import os

from optillm.upstream.conversation_log import REDACTED, ConversationLogger, redact

from ..conftest import chat

FIELDS = {"timestamp", "request_id", "approach", "model", "client_request", "provider_calls",
          "final_response", "total_duration_ms", "error"}


def read_lines(folder):
    lines = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as fh:
            lines += [json.loads(line) for line in fh]
    return lines


def test_one_line_per_request_with_optillm_fields(make_app, fake, tmp_path):
    folder = tmp_path / "convs"
    client = make_app(log_conversations=True, conversation_log_dir=str(folder)).test_client()
    fake.when(lambda r: r.n == 3, ["a", "b", "c"])
    fake.when_contains("Rate the following", "7")
    chat(client, model="bon-fake")
    chat(client)  # passthrough
    chat(client, model="nope&bon-x")  # error
    (name,) = os.listdir(folder)
    assert name.startswith("conversations_") and name.endswith(".jsonl")
    records = read_lines(folder)
    assert len(records) == 3 and all(set(r) == FIELDS for r in records)
    bon, plain, failed = records
    assert bon["approach"] == "bon" and bon["model"] == "fake"
    assert len(bon["provider_calls"]) == 4 and bon["final_response"]["choices"]
    assert plain["approach"] == "none" and len(plain["provider_calls"]) == 1
    assert plain["final_response"]["choices"][0]["message"]["content"] == "ok"
    assert "unknown approach 'nope'" in failed["error"] and failed["final_response"] is None
    assert failed["client_request"]["model"] == "nope&bon-x"


def test_streamed_requests_are_logged_once_finished(make_app, fake, tmp_path):
    folder = tmp_path / "convs"
    client = make_app(log_conversations=True, conversation_log_dir=str(folder)).test_client()
    chat(client, model="re2-fake", stream=True).get_data()
    chat(client, stream=True).get_data()
    records = read_lines(folder)
    assert len(records) == 2 and records[0]["provider_calls"][0]["response"]["streamed"]
    assert "[DONE]" in records[1]["provider_calls"][0]["response"]["sse"]


def test_secrets_are_redacted():
    record = {"headers": {"Authorization": "Bearer sk-abcdef123456"}, "api_key": "k-1",
              "text": "my key is sk-proj-ABCDEFGH12345678 ok", "max_tokens": 5,
              "usage": {"prompt_tokens": 3}}
    out = redact(record)
    assert out["headers"]["Authorization"] == REDACTED and out["api_key"] == REDACTED
    assert "ABCDEFGH" not in out["text"] and out["max_tokens"] == 5
    assert out["usage"] == {"prompt_tokens": 3}


def test_client_request_with_a_key_is_redacted_on_disk(make_app, fake, tmp_path):
    folder = tmp_path / "convs"
    client = make_app(log_conversations=True, conversation_log_dir=str(folder)).test_client()
    chat(client, content="use sk-live-1234567890abcdef please", api_key="sk-secret-999999")
    text = open(folder / os.listdir(folder)[0]).read()
    assert "1234567890abcdef" not in text and "sk-secret-999999" not in text


def _writer(folder, worker, count):
    logger = ConversationLogger(folder)
    for i in range(count):
        rec = logger.start(f"{worker}-{i}", "none", "m", {"payload": "x" * 20000})
        rec.add_call({"provider_request": {}, "response": "y" * 5000})
        rec.finish({"ok": True})


def test_concurrent_processes_never_interleave(tmp_path):
    folder = str(tmp_path / "many")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(folder, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    records = read_lines(folder)  # json.loads fails on any torn or interleaved line
    assert len(records) == 160
    assert len({r["request_id"] for r in records}) == 160


def test_finish_writes_once(tmp_path):
    logger = ConversationLogger(str(tmp_path))
    rec = logger.start("r", "none", "m", {})
    rec.finish("a")
    rec.finish("b")
    assert len(read_lines(tmp_path)) == 1


def test_a_request_that_hits_a_bug_is_still_logged(make_app, fake, tmp_path):
    """A non-OptillmError (a bug) answers 500 and still writes the request's record."""
    folder = tmp_path / "conv"
    client = make_app(log_conversations=True, conversation_log_dir=str(folder)).test_client()
    fake.default = RuntimeError("surprise")
    r = chat(client, model="re2-fake", content="keep me")
    assert r.status_code == 500
    (line,) = read_lines(folder)
    assert line["client_request"]["messages"][0]["content"] == "keep me"
    assert line["error"] and "surprise" in line["error"]


def test_every_front_logs_under_the_clients_request_id(make_app, fake, tmp_path):
    """/v1/chat/completions, /v1/responses and /v1/messages: the record's request_id is the
    X-Request-ID the client sent (and the response echoes it)."""
    folder = tmp_path / "ids"
    client = make_app(log_conversations=True, conversation_log_dir=str(folder)).test_client()
    sent = {"chat-1": ("/v1/chat/completions",
                       {"model": "re2-fake", "messages": [{"role": "user", "content": "hi"}]}),
            "resp-1": ("/v1/responses", {"model": "re2-fake", "input": "hi"}),
            "msg-1": ("/v1/messages", {"model": "re2-fake", "max_tokens": 16,
                                       "messages": [{"role": "user", "content": "hi"}]})}
    for rid, (path, body) in sent.items():
        r = client.post(path, json=body, headers={"X-Request-ID": rid})
        assert r.status_code == 200, (path, r.get_json())
        assert r.headers["X-Request-ID"] == rid
    assert sorted(line["request_id"] for line in read_lines(folder)) == sorted(sent)
