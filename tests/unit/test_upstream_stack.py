"""The upstream wrappers: n emulation and exact usage, batching, call recording."""

import threading

import pytest

from optillm.concurrency import BoundedExecutor
from optillm.errors import BadRequestError, UpstreamError
from optillm.types import ChatRequest, Message
from optillm.upstream.base import CallMeta
from optillm.upstream.batching import BatchingUpstream
from optillm.upstream.choices import ChoicesUpstream
from optillm.upstream.recording import RecordingUpstream

from ..fakes import FakeUpstream


@pytest.fixture
def executor():
    ex = BoundedExecutor(8)
    yield ex
    ex.shutdown()


def req(text="hi", n=1, **params):
    return ChatRequest("m", (Message("user", text),), n=n, params=params)


def test_n_native_when_supported(executor):
    fake = FakeUpstream(default=["a", "b c"])
    out = ChoicesUpstream(fake, executor).complete(req(n=2))
    assert out.texts == ["a", "b c"] and len(fake.history) == 1
    assert out.usage.completion_tokens == 3


def test_n_emulated_when_ignored(executor):
    fake = FakeUpstream(default="x y", supports_n=False)
    stack = ChoicesUpstream(fake, executor)
    out = stack.complete(req(n=4))
    assert len(out.choices) == 4 and [c.index for c in out.choices] == [0, 1, 2, 3]
    assert out.usage.completion_tokens == 8 and stack.max_n == 1
    assert [r.n for r in fake.history] == [4, 1, 1, 1]


def test_n_split_at_the_upstreams_refusal_bound(executor):
    fake = FakeUpstream(default="t", max_n=4)
    stack = ChoicesUpstream(fake, executor)
    out = stack.complete(req(n=6))
    assert len(out.choices) == 6 and stack.max_n == 4
    assert sorted(r.n for r in fake.history[1:]) == [2, 4]


def test_llama_server_style_usage_is_corrected(executor):
    fake = FakeUpstream(default=["one two three", "four", "five six"], count_all_choices=False)
    stack = ChoicesUpstream(fake, executor)
    out = stack.complete(req(n=3))
    assert out.usage.completion_tokens == 6  # not 3, which the upstream reported
    assert all(c.logprobs is None for c in out.choices)  # the client did not ask for them
    assert stack.counts_one_choice is True


def test_correct_upstream_is_trusted_after_one_check(executor):
    fake = FakeUpstream(default=["a", "b"])
    stack = ChoicesUpstream(fake, executor)
    stack.complete(req(n=2))
    stack.complete(req(n=2))
    assert fake.history[0].params.get("logprobs") is True
    assert "logprobs" not in fake.history[1].params


def test_client_logprobs_kept(executor):
    fake = FakeUpstream(default=["a", "b"])
    out = ChoicesUpstream(fake, executor).complete(req(n=2, logprobs=True))
    assert all(c.logprobs["content"] for c in out.choices)


def test_other_bad_requests_propagate(executor):
    fake = FakeUpstream(default=BadRequestError("upstream: messages too long"))
    with pytest.raises(BadRequestError, match="too long"):
        ChoicesUpstream(fake, executor).complete(req(n=2))


def test_recording_reports_every_call(executor):
    fake = FakeUpstream(default="ok")
    calls = []
    meta = CallMeta("r1", None, calls.append)
    stack = RecordingUpstream(fake)
    stack.complete(req(), meta)
    list(stack.stream(req(), meta))
    assert len(calls) == 2 and calls[0]["response"]["choices"][0]["message"]["content"] == "ok"
    assert calls[1]["response"]["choices"][0]["content"] == "ok" and calls[1]["error"] is None
    fake.default = UpstreamError("boom")
    with pytest.raises(UpstreamError):
        stack.complete(req(), meta)
    assert calls[2]["error"] == "boom"


def test_recording_costs_nothing_without_a_listener():
    fake = FakeUpstream()
    stack = RecordingUpstream(fake)
    assert stack.stream(req()).__class__.__name__ == "generator"  # the inner one, untouched


def run_together(fn, items):
    results = [None] * len(items)
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, fn(items[i])))
               for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_batcher_merges_identical_prompts_into_one_n_call(executor):
    fake = FakeUpstream(default=["a", "b b", "c c c"], count_all_choices=False)
    batcher = BatchingUpstream(ChoicesUpstream(fake, executor), executor, max_size=3,
                               wait_ms=200)
    outs = run_together(batcher.complete, [req("same"), req("same"), req("same")])
    assert len(fake.history) == 1 and fake.history[0].n == 3
    assert sorted(o.text for o in outs) == ["a", "b b", "c c c"]
    by_text = {o.text: o.usage.completion_tokens for o in outs}
    assert by_text == {"a": 1, "b b": 2, "c c c": 3}  # each its own tokens, exactly
    assert all(o.usage.prompt_tokens == 1 for o in outs)
    assert all(c.logprobs is None for o in outs for c in o.choices)


def test_batcher_never_merges_seeded_requests(executor):
    fake = FakeUpstream(default="s")
    batcher = BatchingUpstream(fake, executor, max_size=2, wait_ms=100)
    run_together(batcher.complete, [req("same", seed=1), req("same", seed=1)])
    assert [r.n for r in fake.history] == [1, 1]


def test_batcher_sends_different_prompts_concurrently(executor):
    fake = FakeUpstream(default="x", delay=0.2)
    batcher = BatchingUpstream(fake, executor, max_size=4, wait_ms=50)
    outs = run_together(batcher.complete, [req(f"p{i}") for i in range(4)])
    assert len(outs) == 4 and fake.max_active == 4 and batcher.batches_sent == 1


def test_batcher_failure_fails_only_its_request(executor):
    fake = FakeUpstream(default="fine")
    fake.when_contains("poison", UpstreamError("bad one"))
    batcher = BatchingUpstream(fake, executor, max_size=3, wait_ms=100)

    def call(text):
        try:
            return batcher.complete(req(text)).text
        except UpstreamError as exc:
            return f"error: {exc.message}"

    outs = run_together(call, ["ok1", "poison", "ok2"])
    assert outs == ["fine", "error: bad one", "fine"]


def test_batcher_groups_by_parameters(executor):
    fake = FakeUpstream(default="x")
    batcher = BatchingUpstream(fake, executor, max_size=2, wait_ms=100)
    run_together(batcher.complete, [req("a", temperature=0.1), req("a", temperature=0.9)])
    assert batcher.batches_sent == 2  # different sampling parameters never share a batch


def test_batch_mode_end_to_end_result_unchanged(make_app, fake):
    from ..conftest import chat

    fake.default = "same answer"
    client = make_app(batch_mode=True, batch_wait_ms=5).test_client()
    data = chat(client).get_json()
    assert data["choices"][0]["message"]["content"] == "same answer"
    assert fake.forwarded == [] and len(fake.history) == 1  # typed path, batched
