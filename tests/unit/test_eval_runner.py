"""The runner and ``optillm-eval`` against a real proxy (over HTTP) on a scripted upstream:
what each request asks, concurrency, usage, options, JSONL records and resuming."""

from __future__ import annotations

import json
import threading

import openai
import pytest
from werkzeug.serving import make_server

from optillm.eval import runner
from optillm.eval.cli import main, parse_option, select
from optillm.eval.datasets import Problem, load
from optillm.eval.runner import RunConfig, read_results, run

from ..fakes import FakeUpstream

# the first four ASDiv problems (golds 9, 15, 16, 6), answered right for the first three
ANSWERS = {"Seven red apples": "9", "Ellen has six": "15", "Janet has nine": "16"}


def reply(request):
    text = request.messages[-1].text
    for start, answer in ANSWERS.items():
        if start in text:
            return f"Let me think.\nThe answer is {answer}."
    return "The answer is 1,000."


@pytest.fixture
def server(make_app, fake):
    """The app over ``fake`` served over HTTP on a free port; yields its /v1 URL."""
    fake.default = reply
    srv = make_server("127.0.0.1", 0, make_app(), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}/v1"
    srv.shutdown()
    thread.join(5)


def calls(fake: FakeUpstream) -> int:
    return len(fake.forwarded) + len(fake.history)


def cli(url, out, *extra):
    return main(["--dataset", "asdiv", "--model", "fake-model", "--base-url", url,
                 "--api-key", "sk-x", "--output", str(out), "--no-progress", *extra])


def test_run_records_scored_answers(server, fake, tmp_path):
    out = tmp_path / "r.jsonl"
    assert cli(server, out, "--limit", "4", "--max-tokens", "32") == 0
    records = read_results(out)
    assert [(r["id"], r["gold"], r["predicted"], r["correct"]) for r in
            sorted(records, key=lambda r: int(r["id"]))] == [
        ("0", "9", "9", True), ("1", "15", "15", True), ("2", "16", "16", True),
        ("3", "6", "1000", False)]
    [r] = [r for r in records if r["id"] == "0"]  # records come in the order they finish
    assert r["dataset"] == "asdiv" and r["approach"] == "none" and r["model"] == "fake-model"
    assert r["error"] is None and r["upstream_calls"] == 1 and r["wall_s"] >= 0
    assert r["prompt_tokens"] > 0 and r["completion_tokens"] == 7  # the fake counts words
    sent = [json.loads(b) for b in fake.forwarded]
    assert len(sent) == 4 and all(b["model"] == "fake-model" and b["max_tokens"] == 32
                                  and b["temperature"] == 0.0 for b in sent)
    # a word problem: the eval's system message (reason first), then the problem
    assert [m["role"] for m in sent[0]["messages"]] == ["system", "user"]
    assert sent[0]["messages"][0]["content"].startswith("Reason step by step")
    assert "The answer is N" in sent[0]["messages"][1]["content"]


def test_approach_prefix_options_and_usage(server, fake, tmp_path):
    out = tmp_path / "r.jsonl"
    assert cli(server, out, "--limit", "2", "--approaches", "none,majority_voting",
               "--option", "majority_voting_k=3", "--option", 'answer_format="number"') == 0
    records = read_results(out)
    sc = [r for r in records if r["approach"] == "majority_voting"]
    assert len(sc) == 2 and all(r["correct"] for r in sc)
    # majority voting draws k samples in one call with n: its usage is that call's
    assert all(h.model == "fake-model" and h.n == 3 for h in fake.history)
    by_id = {r["id"]: r for r in sc}
    for h in fake.history:
        pid = "0" if "Seven red apples" in h.messages[-1].text else "1"
        assert by_id[pid]["completion_tokens"] == 3 * 7
    assert all(r["upstream_calls"] == 1 for r in sc)  # X-Optillm-Upstream-Calls: one n=3 call
    none_bodies = [json.loads(b) for b in fake.forwarded]
    assert all("majority_voting_k" not in b and "answer_format" not in b for b in none_bodies)


def test_requests_run_concurrently(make_app, tmp_path):
    fake = FakeUpstream(default=reply, delay=0.3)
    srv = make_server("127.0.0.1", 0, make_app(fake), threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/v1"
        assert cli(url, tmp_path / "r.jsonl", "--limit", "6", "--approaches", "re2",
                   "--concurrency", "3") == 0
    finally:
        srv.shutdown()
    assert len(fake.history) == 6 and fake.max_active == 3


def test_second_run_with_larger_limit_asks_only_the_rest(server, fake, tmp_path):
    out = tmp_path / "r.jsonl"
    assert cli(server, out, "--limit", "2") == 0
    assert calls(fake) == 2
    assert cli(server, out, "--limit", "4") == 0
    assert calls(fake) == 4
    asked = [json.loads(b)["messages"][-1]["content"] for b in fake.forwarded]
    assert "Janet has nine" in asked[2] + asked[3] and "Seven red" not in asked[2] + asked[3]
    assert cli(server, out, "--limit", "4") == 0
    assert calls(fake) == 4  # nothing left to do
    assert sorted(int(r["id"]) for r in read_results(out)) == [0, 1, 2, 3]


class DyingClient:
    """An openai client wrapper that dies (like a killed run) after ``k`` requests."""

    def __init__(self, client, k):
        self.client, self.k, self.n, self.lock = client, k, 0, threading.Lock()
        self.chat = self
        self.completions = self
        self.with_raw_response = self

    def create(self, **kw):
        with self.lock:
            self.n += 1
            if self.n > self.k:
                raise KeyboardInterrupt
        return self.client.chat.completions.with_raw_response.create(**kw)


def test_interrupted_run_resumes_where_it_stopped(server, fake, tmp_path):
    out = tmp_path / "r.jsonl"
    problems = select(load("asdiv"), 6, seed=7)
    config = RunConfig(model="fake-model", approaches=("none",), concurrency=1)
    client = openai.OpenAI(base_url=server, api_key="sk-x", max_retries=0)
    with pytest.raises(KeyboardInterrupt):
        run(DyingClient(client, 3), problems, config, out, progress=False)
    first = {r["id"] for r in read_results(out)}
    assert len(first) == 3 and calls(fake) == 3
    with open(out, "a") as fh:
        fh.write('{"dataset": "asdiv", "id": "cut')  # a line cut short by the kill
    again = run(client, problems, config, out, progress=False)
    assert calls(fake) == 6
    assert {r.id for r in again} == {p.id for p in problems} - first
    assert {r["id"] for r in read_results(out)} == {p.id for p in problems}


def test_failed_requests_are_recorded_and_retried(make_app, tmp_path):
    fake = FakeUpstream(default=reply)
    srv = make_server("127.0.0.1", 0, make_app(fake), threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url, out = f"http://127.0.0.1:{srv.server_port}/v1", tmp_path / "r.jsonl"
    try:
        # a bad option value is a 400 from the proxy: recorded, not counted as done
        assert cli(url, out, "--limit", "2", "--approaches", "majority_voting",
                   "--option", "majority_voting_k=0") == 1
        failed = read_results(out)
        assert len(failed) == 2 and all(r["error"] and not r["correct"] for r in failed)
        assert failed[0]["error"].startswith("BadRequestError") and calls(fake) == 0
        assert runner.done_keys(failed) == set()
        assert cli(url, out, "--limit", "2", "--approaches", "majority_voting") == 0
        assert calls(fake) == 2  # both retried
        assert len(runner.done_keys(read_results(out))) == 2
    finally:
        srv.shutdown()


def test_unreachable_endpoint_is_an_error_record(tmp_path):
    out = tmp_path / "r.jsonl"
    assert cli("http://127.0.0.1:9/v1", out, "--limit", "1", "--timeout", "5") == 1
    [r] = read_results(out)
    assert r["error"].startswith("APIConnectionError") and r["prompt_tokens"] is None


def test_seeded_slice_is_stable_and_random():
    problems = load("gsm8k")
    a, b = select(problems, 5, 1), select(problems, 5, 1)
    assert [p.id for p in a] == [p.id for p in b] != [p.id for p in select(problems, 5, 2)]
    assert [p.id for p in select(problems, 3, None)] == ["0", "1", "2"]


def test_option_parsing():
    assert parse_option("k=3") == ("k", 3)
    assert parse_option("flag=true") == ("flag", True)
    assert parse_option("name=abc") == ("name", "abc")
    assert parse_option('x={"a": [1]}') == ("x", {"a": [1]})
    with pytest.raises(Exception, match="key=value"):
        parse_option("novalue")


@pytest.mark.parametrize("args,message", [
    (["--dataset", "nope"], "unknown dataset"),
    (["--concurrency", "0"], "concurrency must be >= 1"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--max-tokens", "0"], "max_tokens must be >= 1"),
    (["--option", "oops"], "key=value"),
])
def test_bad_arguments_exit_2(args, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--output", str(tmp_path / "r.jsonl")])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_problem_ids_in_user_field(server, fake, tmp_path):
    problems = [Problem("asdiv", "x1", "Seven red apples. How many?", "9", "number")]
    client = openai.OpenAI(base_url=server, api_key="sk-x", max_retries=0)
    [r] = run(client, problems, RunConfig(model="fake-model"), tmp_path / "r.jsonl",
              progress=False)
    assert r.correct and json.loads(fake.forwarded[0])["user"] == "optillm-eval/asdiv/x1/none"


def test_temperature_default_sends_none():
    from optillm.eval.cli import parse_temperature

    assert parse_temperature("default") is None and parse_temperature("0.7") == 0.7
    with pytest.raises(Exception, match="not a temperature"):
        parse_temperature("hot")


def test_labels_record_one_slug_under_two_names(server, fake, tmp_path):
    out = tmp_path / "r.jsonl"
    assert cli(server, out, "--limit", "1", "--approaches", "a=re2,b=re2") == 0
    records = read_results(out)
    assert sorted(r["approach"] for r in records) == ["a", "b"]
    assert len(fake.history) == 2 and all(h.model == "fake-model" for h in fake.history)
    assert all("Read the question again" in h.messages[-1].text for h in fake.history)
    assert cli(server, out, "--limit", "1", "--approaches", "a=re2,b=re2") == 0
    assert len(fake.history) == 2  # resumed: both labels done


def test_sample_answers_come_from_voting_metadata():
    from optillm.eval.runner import sample_answers
    choice = {"message": {"content": "x"}, "optillm_router": {"approach": "pal"},
              "optillm_pal": {"k": 3, "answers": ["18", None, 18.0]}}
    assert sample_answers(choice) == ["18", None, "18.0"]
    assert sample_answers({"optillm_votes": {"answers": list(range(100))}}) == \
        [str(i) for i in range(64)]
    assert sample_answers({"message": {}, "optillm_mcts": {"depth": 2}}) is None
    assert sample_answers({"optillm_pal": "not a mapping"}) is None
