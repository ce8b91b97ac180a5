"""The router's limits and health shared in Redis: two processes (spawned, so nothing is
shared but Redis) against a real ``redis-server`` (``tests/redis_fixture.py``), each with its
own ``RouterUpstream`` over scripted fake endpoints, as two gunicorn workers or two
instances would be. Without Redis the same limits hold per process (checked too)."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest

from optillm.errors import RateLimitError, UpstreamError
from optillm.types import ChatRequest, Message
from optillm.upstream.config import Endpoint, GeneralSettings
from optillm.upstream.router import RouterUpstream
from optillm.upstream.router.shared import SharedState

from ..fakes import FakeUpstream
from ..redis_fixture import redis_url  # noqa: F401 - the fixture


def _router(url: str | None, group: str, rpm: int | None = None, fails: bool = False,
            allowed_fails: int = 3, fakes: dict | None = None,
            tpm: int | None = None) -> RouterUpstream:
    endpoint = Endpoint(base_url="http://a.invalid/v1", model="a-model", name="a", rpm=rpm,
                        tpm=tpm)
    reply: object = "ok"
    if fails:
        reply = UpstreamError("upstream: boom (status 500)")
        reply.upstream_status = 500
    fake = FakeUpstream(default=reply)
    if fakes is not None:
        fakes["a"] = fake
    general = GeneralSettings(retries=0, allowed_fails=allowed_fails, cooldown_time=30)
    return RouterUpstream({group: [endpoint]}, None, lambda ep, on_headers: fake, general,
                          shared=SharedState(url) if url else None)


def _send(url: str | None, group: str, n: int, rpm: int | None, fails: bool,
          allowed_fails: int, tpm: int | None = None) -> dict[str, int]:
    """In a child process: ``n`` requests (``max_tokens`` 30 each); what became of them,
    and the calls made."""
    fakes: dict = {}
    router = _router(url, group, rpm, fails, allowed_fails, fakes, tpm)
    out = {"served": 0, "rate_limited": 0, "failed": 0, "skipped": 0}
    for _ in range(n):
        try:
            router.complete(ChatRequest(group, (Message("user", "hi"),),
                                        params={"max_tokens": 30}))
            out["served"] += 1
        except RateLimitError:
            out["rate_limited"] += 1
        except UpstreamError as exc:
            out["skipped" if "0 of 1 tried" in exc.message else "failed"] += 1
    out["calls"] = len(fakes["a"].history)
    return out


def _in_two_processes(url, group, n, rpm=None, fails=False, allowed_fails=3, tpm=None):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = [pool.apply_async(_send, (url, group, n, rpm, fails, allowed_fails, tpm))
                   for _ in range(2)]
        return [r.get(timeout=60) for r in results]


def _group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"  # fresh keys for each test


def test_rpm_holds_across_two_processes_with_redis(redis_url):  # noqa: F811
    results = _in_two_processes(redis_url, _group(), 15, rpm=10)
    assert sum(r["calls"] for r in results) == 10  # 30 requests, the limit is 10 a minute
    assert sum(r["served"] for r in results) == 10
    assert sum(r["rate_limited"] for r in results) == 20


def test_tpm_holds_across_two_processes_with_redis(redis_url):  # noqa: F811
    # each request is estimated at 30 tokens (max_tokens; the answer's usage is smaller, and
    # a shared window is corrected upwards only): 100 a minute fit 3 of the 8
    results = _in_two_processes(redis_url, _group(), 4, tpm=100)
    assert sum(r["calls"] for r in results) == 3
    assert sum(r["rate_limited"] for r in results) == 5


def test_rpm_is_per_process_without_redis():
    results = _in_two_processes(None, _group(), 15, rpm=10)
    assert [r["calls"] for r in results] == [10, 10]  # each process its own window


def test_failure_counts_and_cooldown_are_shared(redis_url):  # noqa: F811
    group = _group()
    # two processes, two failures each: 4 consecutive failures reach allowed_fails = 3 once
    # shared; each alone would have stopped at 2 (no cooldown)
    first = _in_two_processes(redis_url, group, 2, fails=True, allowed_fails=3)
    assert sum(r["calls"] for r in first) >= 3
    # a third process sees the cooldown and makes no call
    later = _send(redis_url, group, 3, None, True, 3)
    assert later["calls"] == 0 and later["skipped"] == 3


def test_a_success_anywhere_resets_the_shared_count(redis_url):  # noqa: F811
    group = _group()
    _send(redis_url, group, 2, None, True, 3)          # two failures
    _send(redis_url, group, 1, None, False, 3)         # one success elsewhere
    after = _send(redis_url, group, 2, None, True, 3)  # two more: 2 < 3, still no cooldown
    assert after["calls"] == 2
    router = _router(redis_url, group)
    state = router.snapshot()["model_groups"][group][0]
    assert state["shared"] and state["consecutive_fails"] == 2
    assert not state["cooldown"]["active"]


def test_retry_after_is_shared(redis_url):  # noqa: F811
    group = _group()
    fakes: dict = {}
    router = _router(redis_url, group, fakes=fakes)
    err = RateLimitError("upstream: slow down", retry_after=20)
    err.upstream_status = 429
    fakes["a"].enqueue(err)
    with pytest.raises(RateLimitError):
        router.complete(ChatRequest(group, (Message("user", "hi"),)))
    other = _send(redis_url, group, 2, None, False, 10)
    assert other["calls"] == 0 and other["rate_limited"] == 2


def test_shared_snapshot_counts_the_window(redis_url):  # noqa: F811
    group = _group()
    _in_two_processes(redis_url, group, 3, rpm=10)
    state = _router(redis_url, group, rpm=10).snapshot()["model_groups"][group][0]
    assert state["last_minute"]["requests"] == 6 and state["last_minute"]["rpm"] == 10


def test_unreachable_redis_is_a_clear_error():
    from optillm.upstream.store import StoreError

    with pytest.raises(StoreError, match="cannot reach Redis"):
        SharedState("redis://127.0.0.1:1/0")


# -- inbound limits per client key (--rate-limit) ---------------------------------------------


def _ask(client, key: str):
    return client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "fake-model",
                             "messages": [{"role": "user", "content": "hi"}]})


def test_inbound_limit_per_key_is_a_429_with_retry_after(make_app):
    client = make_app(rate_limit="3/minute").test_client()
    assert [_ask(client, "sk-one").status_code for _ in range(3)] == [200, 200, 200]
    r = _ask(client, "sk-one")
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    err = r.get_json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
    assert _ask(client, "sk-two").status_code == 200  # another key, its own limit
    assert client.get("/health").status_code == 200   # never limited


def test_inbound_limit_is_shared_through_redis_and_keys_are_hashed(make_app, redis_url):  # noqa: F811
    import redis

    key = f"sk-secret-{uuid.uuid4().hex}"
    first = make_app(rate_limit="3/minute", redis_url=redis_url).test_client()
    second = make_app(rate_limit="3/minute", redis_url=redis_url).test_client()
    assert [_ask(c, key).status_code for c in (first, second, first)] == [200, 200, 200]
    assert _ask(second, key).status_code == 429  # the 4th, whichever instance takes it
    stored = [k.decode() for k in redis.Redis.from_url(redis_url).keys("*")]
    assert stored and not any(key in k for k in stored)


def test_a_bad_rate_limit_text_fails_at_start(make_app):
    with pytest.raises(ValueError, match="--rate-limit"):
        make_app(rate_limit="sixty a minute")
