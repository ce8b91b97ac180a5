"""The response cache is composed once: the passthrough's bytes are cached by the stack's
``CachingUpstream.forward`` (which marks each answer hit or miss), an approach request's final
answer by the plan layer's ``AnswerCache``; the HTTP face (``web/chat.py``) touches the cache
itself only for the ``/cache`` admin routes. (The end-to-end behaviour is in test_cache.py.)"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from optillm.concurrency import BoundedExecutor
from optillm.errors import BadRequestError
from optillm.plan.answer_cache import AnswerCache
from optillm.plan.loader import build_registry
from optillm.plan.pipeline import Pipeline
from optillm.types import SINGLE, ChatRequest, Message, Plan
from optillm.upstream.base import CallMeta
from optillm.upstream.cache import CacheCallMeta, CacheControl, CachingUpstream, ResponseCache
from optillm.upstream.recording import RecordingUpstream

from ..fakes import FakeUpstream

CHAT = Path(__file__).resolve().parents[2] / "optillm" / "web" / "chat.py"
ADMIN = {"clear_cache", "cache_stats", "_cache"}


class DictStore:
    def __init__(self):
        self.data: dict[str, bytes] = {}

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value, ttl=None):
        self.data[key] = value

    def delete(self, key):
        self.data.pop(key, None)

    def clear(self, prefix=""):
        keys = [k for k in self.data if k.startswith(prefix)]
        for k in keys:
            del self.data[k]
        return len(keys)

    def close(self):
        pass


def test_the_face_touches_the_cache_only_in_its_admin_routes():
    """No ``svc.cache`` / ``services().cache`` outside the admin routes, and from the cache
    module only the directive's types."""
    found = []
    for fn in ast.walk(ast.parse(CHAT.read_text())):
        if not isinstance(fn, ast.FunctionDef) or fn.name in ADMIN:
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute) and node.attr == "cache" and (
                    (isinstance(node.value, ast.Name) and node.value.id == "svc")
                    or (isinstance(node.value, ast.Call)
                        and getattr(node.value.func, "id", "") == "services")):
                found.append(f"{fn.name}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("cache"):
                extra = {a.name for a in node.names} - {"CacheControl", "CacheCallMeta"}
                if extra:
                    found.append(f"{fn.name}:{node.lineno}: imports {sorted(extra)}")
    assert found == [], found


def body(**fields) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                       **fields}).encode()


@pytest.fixture
def layer():
    fake = FakeUpstream(default="the answer")
    return fake, CachingUpstream(fake, ResponseCache(DictStore(), 60))


def read(response) -> bytes:
    return b"".join(response.chunks)


def test_forward_marks_a_miss_then_replays_the_same_bytes_as_a_hit(layer):
    fake, cached = layer
    first = cached.forward(body(temperature=0))
    data = read(first)
    second = cached.forward(body(temperature=0))
    assert (first.cache, second.cache) == ("miss", "hit")
    assert read(second) == data and len(fake.forwarded) == 1


def test_forward_of_a_non_deterministic_body_is_a_miss_that_goes_up(layer):
    fake, cached = layer
    for _ in range(2):
        response = cached.forward(body(temperature=0.7))
        assert response.cache == "miss" and read(response)
    assert len(fake.forwarded) == 2


def test_forward_of_a_body_that_is_no_json_object_goes_up_uncached(layer):
    fake, cached = layer
    with pytest.raises(BadRequestError):  # the fake upstream refuses it, as a server would
        cached.forward(b"[1, 2]")
    assert fake.forwarded == [b"[1, 2]"]


def test_the_directive_comes_with_the_meta(layer):
    fake, cached = layer
    no_cache = CacheCallMeta(cache=CacheControl.parse({"no-cache": True}))
    for _ in range(2):
        assert read(cached.forward(body(seed=1), no_cache))
    assert cached.forward(body(seed=1)).cache == "miss"
    assert len(fake.forwarded) == 3


def test_the_mark_survives_the_conversation_logger_above(layer):
    fake, cached = layer
    calls = []
    stack = RecordingUpstream(cached)
    meta = CallMeta("r", None, calls.append)
    read(stack.forward(body(temperature=0), meta))
    again = stack.forward(body(temperature=0), meta)
    read(again)
    assert again.cache == "hit" and len(calls) == 2


# -- the approach-answer cache over the pipeline ---------------------------------------------------

@pytest.fixture
def answers():
    fake = FakeUpstream(default="re2 answer")
    _, registry = build_registry(entry_points=False)
    executor = BoundedExecutor(2)
    pipeline = Pipeline(registry, fake, executor)
    yield fake, pipeline, ResponseCache(DictStore(), 60)
    executor.shutdown()


PLAN = Plan(SINGLE, ("re2",), "m")
REQUEST = ChatRequest("re2-m", (Message("user", "hi"),), params={"temperature": 0})
BODY = {"model": "re2-m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def test_off_it_runs_every_request_with_no_status(answers):
    fake, pipeline, _ = answers
    job = AnswerCache(pipeline).prepare(PLAN, REQUEST, BODY, CallMeta())
    assert job.status is None
    job.keep(job.run().completion)
    assert AnswerCache(pipeline).prepare(PLAN, REQUEST, BODY, CallMeta()).run().calls == 1
    assert len(fake.history) == 2


def test_a_kept_answer_is_replayed_without_upstream_calls(answers):
    fake, pipeline, cache = answers
    store = AnswerCache(pipeline, cache)
    job = store.prepare(PLAN, REQUEST, BODY, CallMeta())
    result = job.run()
    assert job.status == "miss" and result.calls == 1
    job.keep(result.completion)
    again = store.prepare(PLAN, REQUEST, BODY, CallMeta())
    replay = again.run()
    assert again.status == "hit" and replay.calls == 0
    assert replay.completion.text == result.completion.text == "re2 answer"
    assert len(fake.history) == 1
    other = store.prepare(Plan(SINGLE, ("re2",), "m", {"x": 1}), REQUEST, BODY, CallMeta())
    assert other.status == "miss"  # the plan is part of the key


def test_no_store_reads_but_keeps_nothing(answers):
    fake, pipeline, cache = answers
    store = AnswerCache(pipeline, cache)
    meta = CacheCallMeta(cache=CacheControl.parse({"no-store": True}))
    job = store.prepare(PLAN, REQUEST, BODY, meta)
    job.keep(job.run().completion)
    assert store.prepare(PLAN, REQUEST, BODY, CallMeta()).status == "miss"
    assert cache.stats()["writes"] == 0
