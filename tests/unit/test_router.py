"""The gateway's router over scripted fake endpoints: weights, fallbacks, failover, cooldown,
Retry-After, rate limits (headers, rpm, tpm), the passthrough's bytes and streams."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from optillm.errors import (
    BadRequestError,
    NotFoundError,
    RateLimitError,
    UpstreamError,
    UpstreamTimeoutError,
    from_upstream_status,
    parse_retry_after,
)
from optillm.types import ChatRequest, Message
from optillm.upstream.base import RawResponse
from optillm.upstream.config import Endpoint, GeneralSettings
from optillm.upstream.router import RouterUpstream, parse_duration

from ..fakes import FakeUpstream


class Clock:
    """An injectable monotonic clock."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Endpoints:
    """Fake endpoint upstreams by endpoint name, and the header callbacks the router gave."""

    def __init__(self, **fakes: FakeUpstream):
        self.fakes = fakes
        self.on_headers = {}

    def __call__(self, endpoint: Endpoint, on_headers):
        self.on_headers[endpoint.name] = on_headers
        return self.fakes[endpoint.name]


def ep(name: str, weight: float = 1, model: str | None = None, **kw) -> Endpoint:
    return Endpoint(base_url=f"http://{name}.invalid/v1", model=model or f"{name}-model",
                    weight=weight, name=name, **kw)


def router(groups, fakes: Endpoints, default=None, clock=None, **general) -> RouterUpstream:
    general.setdefault("retries", 2)
    return RouterUpstream(groups, default, fakes, GeneralSettings(**general),
                          clock=clock or Clock(), sleep=lambda seconds: None)


def req(model="pub", text="hello there", **params) -> ChatRequest:
    return ChatRequest(model, (Message("user", text),), params=params)


def served_by(fakes: Endpoints) -> Counter:
    return Counter({name: len(f.history) for name, f in fakes.fakes.items()})


def status_error(status: int, message: str = "boom", **headers) -> Exception:
    return from_upstream_status(status, message, headers or None)


# -- weighted round-robin and fallbacks ----------------------------------------------------


def test_weights_are_observed_over_many_requests():
    fakes = Endpoints(a=FakeUpstream(), b=FakeUpstream())
    r = router({"pub": [ep("a", 3), ep("b", 1)]}, fakes)
    for _ in range(400):
        r.complete(req())
    counts = served_by(fakes)
    assert abs(counts["a"] / 400 - 0.75) < 0.02 and counts["a"] + counts["b"] == 400


def test_weights_interleave_rather_than_burst():
    fakes = Endpoints(a=FakeUpstream(), b=FakeUpstream(), c=FakeUpstream())
    r = router({"pub": [ep("a", 2), ep("b", 1), ep("c", 1)]}, fakes)
    for _ in range(8):
        r.complete(req())
    assert served_by(fakes) == {"a": 4, "b": 2, "c": 2}


def test_model_name_is_rewritten_per_endpoint():
    fakes = Endpoints(a=FakeUpstream())
    r = router({"pub": [ep("a", model="upstream-a")]}, fakes)
    out = r.complete(req())
    assert fakes.fakes["a"].history[0].model == "upstream-a" and out.model == "upstream-a"


def test_fallback_only_endpoint_is_unused_while_weighted_ones_serve():
    fakes = Endpoints(a=FakeUpstream(), fb=FakeUpstream())
    r = router({"pub": [ep("a", 1), ep("fb", 0)]}, fakes)
    for _ in range(20):
        r.complete(req())
    assert served_by(fakes) == {"a": 20, "fb": 0}


def test_fallback_serves_when_every_weighted_endpoint_fails():
    fakes = Endpoints(a=FakeUpstream(default=status_error(500)),
                      b=FakeUpstream(default=status_error(503)), fb=FakeUpstream(default="fb!"))
    r = router({"pub": [ep("a"), ep("b"), ep("fb", 0)]}, fakes)
    assert r.complete(req()).text == "fb!"
    assert served_by(fakes) == {"a": 1, "b": 1, "fb": 1}


def test_fallback_serves_while_weighted_endpoints_cool_down():
    clock = Clock()
    fakes = Endpoints(a=FakeUpstream(default=status_error(500)), fb=FakeUpstream())
    r = router({"pub": [ep("a"), ep("fb", 0)]}, fakes, clock=clock, allowed_fails=1,
               cooldown_time=30)
    r.complete(req())  # a fails and cools down; fb answers
    for _ in range(5):
        r.complete(req())
    assert served_by(fakes) == {"a": 1, "fb": 6}


# -- failover -------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [
    status_error(500), status_error(502), status_error(429),
    UpstreamTimeoutError("upstream timed out: read timeout"),
    UpstreamError("upstream unreachable: connection refused"),
], ids=["500", "502", "429", "timeout", "connection"])
def test_failover_to_another_endpoint(failure):
    fakes = Endpoints(a=FakeUpstream(default=failure), b=FakeUpstream(default="from b"))
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, fakes)
    assert r.complete(req()).text == "from b"
    assert served_by(fakes) == {"a": 1, "b": 1}
    assert r.snapshot()["router"] == {"routed": 1, "retried": 1, "exhausted": 0}


@pytest.mark.parametrize("failure", [
    BadRequestError("upstream: messages too long"), status_error(400), status_error(401),
    status_error(404), status_error(422)], ids=["bad", "400", "401", "404", "422"])
def test_the_clients_errors_are_not_retried(failure):
    fakes = Endpoints(a=FakeUpstream(default=failure), b=FakeUpstream())
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, fakes)
    with pytest.raises(type(failure)):
        r.complete(req())
    assert served_by(fakes) == {"a": 1, "b": 0}
    snap = r.snapshot()["model_groups"]["pub"][0]
    assert snap["failures"] == 0 and snap["consecutive_fails"] == 0


def test_retries_bound_the_endpoints_tried():
    fakes = Endpoints(**{n: FakeUpstream(default=status_error(500)) for n in "abcd"})
    r = router({"pub": [ep(n) for n in "abcd"]}, fakes, retries=1)
    with pytest.raises(UpstreamError) as info:
        r.complete(req())
    assert sum(served_by(fakes).values()) == 2
    assert "2 of 4 tried" in info.value.message and "not tried" in info.value.message


def test_error_names_every_endpoint_and_why():
    fakes = Endpoints(a=FakeUpstream(default=status_error(500, "disk on fire")),
                      b=FakeUpstream(default=UpstreamTimeoutError("upstream timed out")),
                      c=FakeUpstream(default=status_error(429, "slow down")))
    r = router({"pub": [ep("a"), ep("b"), ep("c")]}, fakes)
    with pytest.raises(UpstreamError) as info:
        r.complete(req())
    err = info.value
    assert err.status == 502
    for text in ("a: upstream: disk on fire", "b: upstream timed out", "c: upstream: slow down",
                 "3 of 3 tried", "'pub'"):
        assert text in err.message


def test_all_timed_out_is_504():
    fakes = Endpoints(a=FakeUpstream(default=UpstreamTimeoutError("upstream timed out")),
                      b=FakeUpstream(default=UpstreamTimeoutError("upstream timed out")))
    r = router({"pub": [ep("a"), ep("b")]}, fakes)
    with pytest.raises(UpstreamTimeoutError) as info:
        r.complete(req())
    assert info.value.status == 504 and "a:" in info.value.message and "b:" in info.value.message


def test_all_rate_limited_is_429_with_the_shortest_wait():
    fakes = Endpoints(a=FakeUpstream(default=status_error(429, **{"Retry-After": "7"})),
                      b=FakeUpstream(default=status_error(429, **{"retry-after-ms": "2500"})))
    r = router({"pub": [ep("a"), ep("b")]}, fakes)
    with pytest.raises(RateLimitError) as info:
        r.complete(req())
    assert info.value.status == 429 and info.value.retry_after == pytest.approx(2.5)


def test_unknown_model_goes_to_default_or_is_a_404_naming_the_groups():
    fakes = Endpoints(a=FakeUpstream())
    default = FakeUpstream(default="from default")
    r = router({"pub": [ep("a")]}, fakes, default=default)
    assert r.complete(req(model="other")).text == "from default"
    assert default.history[0].model == "other"
    r2 = router({"pub": [ep("a")], "pub2": [ep("a")]}, fakes)
    with pytest.raises(NotFoundError, match="'other'.*pub, pub2"):
        r2.complete(req(model="other"))


def test_models_lists_groups_then_the_defaults_models():
    r = router({"pub": [ep("a")]}, Endpoints(a=FakeUpstream()), default=FakeUpstream())
    assert [m["id"] for m in r.models()] == ["pub", "fake-model"]


# -- cooldown ---------------------------------------------------------------------------------


def test_cooldown_after_consecutive_failures_and_recovery():
    clock = Clock()
    a = FakeUpstream(default=status_error(500))
    fakes = Endpoints(a=a, b=FakeUpstream())
    r = router({"pub": [ep("a", 1), ep("b", 1)]}, fakes, clock=clock, allowed_fails=2,
               cooldown_time=30)
    for _ in range(6):
        r.complete(req())  # every request is served (by b when a fails)
    assert len(a.history) == 2  # then a cooled down and got nothing more
    state = r.snapshot()["model_groups"]["pub"][0]
    assert state["cooldown"]["active"] and state["consecutive_fails"] == 2
    clock.advance(29)
    r.complete(req())
    r.complete(req())
    assert len(a.history) == 2
    clock.advance(2)
    a.default = "a is back"
    texts = [r.complete(req()).text for _ in range(4)]
    assert texts.count("a is back") == 2  # recovered: its share again
    state = r.snapshot()["model_groups"]["pub"][0]
    assert not state["cooldown"]["active"] and state["consecutive_fails"] == 0


def test_a_probe_failing_after_cooldown_cools_down_again_at_once():
    clock = Clock()
    a = FakeUpstream(default=status_error(500))
    r = router({"pub": [ep("a"), ep("b")]}, Endpoints(a=a, b=FakeUpstream()), clock=clock,
               allowed_fails=3, cooldown_time=10)
    for _ in range(6):
        r.complete(req())
    assert len(a.history) == 3
    clock.advance(11)
    for _ in range(6):
        r.complete(req())
    assert len(a.history) == 4  # one probe, then out again


def test_every_endpoint_cooling_down_fails_fast_naming_them():
    clock = Clock()
    fakes = Endpoints(a=FakeUpstream(default=status_error(500)),
                      b=FakeUpstream(default=status_error(500)))
    r = router({"pub": [ep("a"), ep("b")]}, fakes, clock=clock, allowed_fails=1,
               cooldown_time=60)
    with pytest.raises(UpstreamError):
        r.complete(req())
    with pytest.raises(UpstreamError) as info:
        r.complete(req())
    assert sum(served_by(fakes).values()) == 2  # the second request made no call
    assert "0 of 2 tried" in info.value.message
    assert "a: skipped, cooling down for 60.0 s" in info.value.message


# -- rate limits ---------------------------------------------------------------------------


def test_retry_after_skips_the_endpoint_for_that_long():
    clock = Clock()
    a = FakeUpstream().enqueue(status_error(429, **{"Retry-After": "5"}))
    fakes = Endpoints(a=a, b=FakeUpstream())
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, fakes, clock=clock, allowed_fails=10)
    r.complete(req())
    for _ in range(5):
        r.complete(req())
    assert len(a.history) == 1
    assert r.snapshot()["model_groups"]["pub"][0]["retry_after_remaining_s"] == 5
    clock.advance(5.5)
    r.complete(req())
    assert len(a.history) == 2


def test_remaining_requests_header_skips_until_reset():
    clock = Clock()
    fakes = Endpoints(a=FakeUpstream(), b=FakeUpstream())
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, fakes, clock=clock)
    fakes.on_headers["a"]({"x-ratelimit-remaining-requests": "2",
                           "x-ratelimit-reset-requests": "6m0s"})
    for _ in range(5):
        r.complete(req())
    assert served_by(fakes)["a"] == 2  # counted down locally: 2 left, then none
    assert r.snapshot()["model_groups"]["pub"][0]["rate_limit"]["remaining_requests"] == 0
    clock.advance(361)
    r.complete(req())
    assert served_by(fakes)["a"] == 3


def test_remaining_tokens_header_skips_requests_that_do_not_fit():
    clock = Clock()
    fakes = Endpoints(a=FakeUpstream(), b=FakeUpstream())
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, fakes, clock=clock)
    fakes.on_headers["a"]({"X-RateLimit-Remaining-Tokens": "100",
                           "X-RateLimit-Reset-Tokens": "20s"})
    r.complete(req(max_tokens=500))
    assert served_by(fakes) == {"a": 0, "b": 1}
    r.complete(req(max_tokens=10))
    assert served_by(fakes) == {"a": 1, "b": 1}


def test_rate_limit_headers_on_a_429_are_taken_in():
    clock = Clock()
    a = FakeUpstream().enqueue(status_error(429, **{"x-ratelimit-remaining-requests": "0",
                                                    "x-ratelimit-reset-requests": "30s"}))
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, Endpoints(a=a, b=FakeUpstream()),
               clock=clock, allowed_fails=10)
    for _ in range(4):
        r.complete(req())
    assert len(a.history) == 1
    clock.advance(31)
    r.complete(req())
    assert len(a.history) == 2


def test_rpm_limit_skips_the_endpoint_within_the_minute():
    clock = Clock()
    fakes = Endpoints(a=FakeUpstream(), b=FakeUpstream())
    r = router({"pub": [ep("a", 100, rpm=3), ep("b", 1)]}, fakes, clock=clock)
    for _ in range(10):
        r.complete(req())
        clock.advance(1)
    assert served_by(fakes) == {"a": 3, "b": 7}
    clock.advance(60)
    r.complete(req())
    assert served_by(fakes)["a"] == 4


def test_rpm_on_every_endpoint_gives_429_with_the_wait():
    clock = Clock()
    r = router({"pub": [ep("a", rpm=1), ep("b", rpm=1)]},
               Endpoints(a=FakeUpstream(), b=FakeUpstream()), clock=clock)
    r.complete(req())
    r.complete(req())
    clock.advance(20)
    with pytest.raises(RateLimitError) as info:
        r.complete(req())
    assert "rpm limit 1 reached" in info.value.message
    assert info.value.retry_after == pytest.approx(40)


def test_tpm_limit_counts_the_answers_usage():
    clock = Clock()
    fakes = Endpoints(a=FakeUpstream(default="one two three four five"), b=FakeUpstream())
    r = router({"pub": [ep("a", 100, tpm=20), ep("b", 1)]}, fakes, clock=clock)
    text = "word " * 8  # 40 chars: about 10 tokens estimated; usage says 8 + 5 = 13
    r.complete(req(text=text))
    assert r.snapshot()["model_groups"]["pub"][0]["last_minute"]["tokens"] == 13
    r.complete(req(text=text))  # 13 + 10 > 20: skipped
    assert served_by(fakes) == {"a": 1, "b": 1}
    clock.advance(61)
    r.complete(req(text=text))
    assert served_by(fakes) == {"a": 2, "b": 1}


# -- streams, text completions, templates ------------------------------------------------


class BreakingStream(FakeUpstream):
    """Streams two chunks, then fails (``cut=True``) or fails before the first one."""

    def __init__(self, cut: bool, **kw):
        super().__init__(**kw)
        self.cut = cut

    def stream(self, request, meta=None):
        self.history.append(request)
        inner = super()._chunks(self._reply(request))

        def chunks() -> Iterator:
            if self.cut:
                yield next(inner)
                yield next(inner)
            raise UpstreamError("upstream stream broke: connection reset")

        return chunks()


def test_stream_fails_over_before_its_first_chunk():
    fakes = Endpoints(a=BreakingStream(cut=False), b=FakeUpstream(default="fine answer"))
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, fakes)
    text = "".join(c.content for c in r.stream(req()))
    assert text == "fine answer" and fakes.fakes["b"].history[0].model == "b-model"


def test_a_stream_cut_midway_is_not_retried_and_counts_as_a_failure():
    fakes = Endpoints(a=BreakingStream(cut=True, default="one two three four"),
                      b=FakeUpstream())
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, fakes)
    got = []
    with pytest.raises(UpstreamError, match="broke"):
        for chunk in r.stream(req()):
            got.append(chunk.content)
    assert got == ["one ", "two "] and served_by(fakes) == {"a": 1, "b": 0}
    state = r.snapshot()["model_groups"]["pub"][0]
    assert state["failures"] == 1 and "midway" in state["last_error"]


def test_complete_text_and_apply_template_use_the_endpoints_model():
    a = FakeUpstream(default=status_error(500))
    b = FakeUpstream(default="continued")
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, Endpoints(a=a, b=b))
    assert r.complete_text("Once upon", "pub", {"max_tokens": 5}).text == "continued"
    assert b.text_calls[0]["model"] == "b-model"
    assert r.apply_template([Message("user", "hi")], "pub").endswith("<|assistant|>")


# -- the passthrough's bytes ------------------------------------------------------------------


class RawFake(FakeUpstream):
    """``forward`` answers from a queue of ``(status, body bytes, headers)`` or exceptions."""

    def __init__(self, *answers, **kw):
        super().__init__(**kw)
        self.answers = list(answers)
        self.closed = 0

    def forward(self, body, meta=None, stream=False, model=None):
        self.forwarded.append(body)
        answer = self.answers.pop(0) if self.answers else (200, b'{"ok": 1}', {})
        if isinstance(answer, Exception):
            raise answer
        status, data, headers = answer

        def close():
            self.closed += 1

        parts = data if isinstance(data, list) else [data]
        return RawResponse(status, "application/json", iter(parts), close, headers)


def raw_body(model="pub", **extra) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                       **extra}).encode()


def test_forward_rewrites_the_model_and_keeps_other_fields():
    a = RawFake()
    r = router({"pub": [ep("a", model="up-a")]}, Endpoints(a=a))
    out = r.forward(raw_body(seed=7, tools=[]), model="pub")
    assert out.status == 200 and b"".join(out.chunks) == b'{"ok": 1}'
    sent = json.loads(a.forwarded[0])
    assert sent["model"] == "up-a" and sent["seed"] == 7 and sent["tools"] == []


def test_forward_sends_the_clients_bytes_when_the_model_is_the_same():
    a = RawFake()
    r = router({"pub": [ep("a", model="pub")]}, Endpoints(a=a))
    body = raw_body()
    r.forward(body, model="pub")
    assert a.forwarded[0] is body


@pytest.mark.parametrize("answer", [
    (500, b'{"error": {"message": "oops"}}', {}),
    (429, b'{"error": {"message": "slow"}}', {"Retry-After": "3"}),
    (200, b'{"id": "chatcmpl-x", "choices": [', {}),
    UpstreamTimeoutError("upstream timed out"),
    UpstreamError("upstream unreachable: refused"),
], ids=["500", "429", "malformed", "timeout", "connection"])
def test_forward_fails_over_before_any_byte(answer):
    a, b = RawFake(answer), RawFake((200, b'{"from": "b"}', {}))
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, Endpoints(a=a, b=b))
    out = r.forward(raw_body(), model="pub")
    assert b"".join(out.chunks) == b'{"from": "b"}'
    if not isinstance(answer, Exception):
        assert a.closed == 1  # the failed answer's connection was released


def test_forward_returns_the_clients_4xx_as_it_is():
    a = RawFake((400, b'{"error": {"message": "bad messages"}}', {}))
    b = RawFake()
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, Endpoints(a=a, b=b))
    out = r.forward(raw_body(), model="pub")
    assert out.status == 400 and b"bad messages" in b"".join(out.chunks)
    assert not b.forwarded


def test_forward_when_all_fail_names_them_with_the_upstreams_messages():
    a = RawFake(*[(503, b'{"error": {"message": "overloaded"}}', {})] * 3)
    b = RawFake(*[(500, b"<html>crash</html>", {})] * 3)  # (every attempt fails)
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, Endpoints(a=a, b=b))
    with pytest.raises(UpstreamError) as info:
        r.forward(raw_body(), model="pub")
    assert "a: upstream: overloaded (status 503)" in info.value.message
    assert "b: upstream: <html>crash</html> (status 500)" in info.value.message


def test_forward_stream_fails_over_when_it_ends_before_any_byte():
    a = RawFake((200, [b"", b""], {}))
    b = RawFake((200, [b"data: 1\n\n", b"data: [DONE]\n\n"], {}))
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, Endpoints(a=a, b=b))
    out = r.forward(raw_body(stream=True), stream=True, model="pub")
    assert b"".join(out.chunks) == b"data: 1\n\ndata: [DONE]\n\n"


def test_forward_stream_broken_midway_raises_and_counts():
    def broken():
        yield b"data: 1\n\n"
        raise UpstreamError("upstream stream broke: IncompleteRead")

    class Broken(RawFake):
        def forward(self, body, meta=None, stream=False, model=None):
            return RawResponse(200, "text/event-stream", broken())

    b = RawFake()
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, Endpoints(a=Broken(), b=b))
    out = r.forward(raw_body(stream=True), stream=True, model="pub")
    got = []
    with pytest.raises(UpstreamError):
        for part in out.chunks:
            got.append(part)
    assert got == [b"data: 1\n\n"] and not b.forwarded
    assert r.snapshot()["model_groups"]["pub"][0]["failures"] == 1


def test_forward_headers_feed_the_rate_limits():
    clock = Clock()
    a = RawFake((200, b'{"usage": {"total_tokens": 9}}',
                 {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "10s"}))
    b = RawFake()
    r = router({"pub": [ep("a", 100), ep("b", 1)]}, Endpoints(a=a, b=b), clock=clock)
    for _ in range(3):
        r.forward(raw_body(), model="pub")
    assert len(a.forwarded) == 1 and len(b.forwarded) == 2


def test_forward_of_a_model_in_no_group_goes_to_default():
    default = RawFake((200, b'{"d": 1}', {}))
    r = router({"pub": [ep("a")]}, Endpoints(a=RawFake()), default=default)
    assert b"".join(r.forward(raw_body("other"), model="other").chunks) == b'{"d": 1}'
    assert b"".join(r.forward(raw_body("other")).chunks) == b'{"ok": 1}'  # model from body


# -- concurrency and parsing ------------------------------------------------------------------


def test_concurrent_requests_keep_exact_counts():
    fakes = Endpoints(a=FakeUpstream(delay=0.001), b=FakeUpstream(delay=0.001))
    r = router({"pub": [ep("a", 1), ep("b", 1)]}, fakes)

    def worker():
        for _ in range(50):
            r.complete(req())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = served_by(fakes)
    assert counts == {"a": 200, "b": 200}
    assert sum(e["requests"] for e in r.snapshot()["model_groups"]["pub"]) == 400


def test_snapshot_has_latency_percentiles():
    r = router({"pub": [ep("a")]}, Endpoints(a=FakeUpstream()))
    r.complete(req())
    state = r.snapshot()["model_groups"]["pub"][0]
    assert state["latency_ms"]["samples"] == 1 and state["latency_ms"]["p50"] is not None
    assert state["name"] == "a" and state["requests"] == 1


def test_default_endpoint_names_are_model_at_base_url():
    e = Endpoint(base_url="http://x.invalid/v1", model="m")
    r = router({"pub": [e, e]}, lambda endpoint, on_headers: FakeUpstream())
    names = [s["name"] for s in r.snapshot()["model_groups"]["pub"]]
    assert names == ["m@http://x.invalid/v1", "m@http://x.invalid/v1#2"]


@pytest.mark.parametrize("text,seconds", [
    ("1s", 1), ("6m0s", 360), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("30", 30),
    ("0.5", 0.5), ("soon", None), ("", None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_parse_retry_after():
    assert parse_retry_after({"Retry-After": "3"}) == 3
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0
    assert parse_retry_after({"Retry-After": "later"}) is None
    assert parse_retry_after(None) is None


# -- the same endpoint again, once every endpoint was tried ------------------------------------


def test_a_one_endpoint_group_retries_a_5xx_after_a_backoff():
    waits = []
    a = FakeUpstream().enqueue(status_error(503))
    r = RouterUpstream({"pub": [ep("a")]}, None, Endpoints(a=a), GeneralSettings(retries=2),
                       clock=Clock(), sleep=waits.append)
    assert r.complete(req()).text == "ok"
    assert len(a.history) == 2 and len(waits) == 1 and 0 <= waits[0] <= 0.2
    assert r.snapshot()["router"] == {"routed": 1, "retried": 1, "exhausted": 0}


def test_a_one_endpoint_group_gives_up_after_its_retries_naming_the_attempts():
    waits = []
    a = FakeUpstream(default=status_error(500, "still broken"))
    r = RouterUpstream({"pub": [ep("a")]}, None, Endpoints(a=a),
                       GeneralSettings(retries=2, allowed_fails=10), clock=Clock(),
                       sleep=waits.append)
    with pytest.raises(UpstreamError) as info:
        r.complete(req())
    assert len(a.history) == 3 and len(waits) == 2
    assert "1 of 1 tried, 3 attempts" in info.value.message
    assert info.value.message.count("still broken") == 1


@pytest.mark.parametrize("failure", [
    status_error(429, **{"Retry-After": "1"}), UpstreamTimeoutError("upstream timed out"),
    UpstreamError("upstream returned malformed JSON: '{'")],
    ids=["429", "timeout", "malformed"])
def test_the_same_endpoint_is_not_retried_for_rate_limits_timeouts_or_bad_answers(failure):
    waits = []
    a = FakeUpstream(default=failure)
    r = RouterUpstream({"pub": [ep("a")]}, None, Endpoints(a=a),
                       GeneralSettings(retries=2, allowed_fails=10), clock=Clock(),
                       sleep=waits.append)
    with pytest.raises(type(failure)):
        r.complete(req())
    assert len(a.history) == 1 and waits == []
