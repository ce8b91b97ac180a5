"""The gateway's router: a public model name -> a group of endpoints (LLMProxy's model groups).

``RouterUpstream`` implements the whole ``Upstream`` interface over the groups of
``--config``'s ``model_groups``:

- **Weighted round-robin** within a group (smooth, as nginx does it: over many requests each
  endpoint serves its share of the weights, evenly interleaved). ``weight: 0`` marks a fallback,
  used only when no weighted endpoint is available (cooling down, rate-limited, or already
  failed for this request).
- **Failover**: a connection error, a timeout, a 5xx or a 429 makes the request go to another
  endpoint of the group, up to ``general_settings.retries`` more endpoints. Any other 4xx is
  the client's and comes back as it is. The client sees an error only when every endpoint it
  was offered to failed or was unavailable; the message names each endpoint and why, and the
  status is 429 when all were rate-limited, 504 when all timed out, else 502.
- **Cooldown**: ``allowed_fails`` consecutive failures take an endpoint out for
  ``cooldown_time`` seconds; afterwards one request probes it (a success resets the count,
  another failure cools it down again at once).
- **Rate limits**: a 429's ``Retry-After`` keeps the endpoint out for that long;
  ``x-ratelimit-remaining-requests`` / ``-tokens`` and ``x-ratelimit-reset-*`` response headers
  (counted down locally between answers) and the configured ``rpm`` / ``tpm`` (requests and
  tokens per endpoint over the last minute; a request's tokens are estimated at four bytes a
  token plus ``max_tokens``, then corrected from the answer's usage) skip an endpoint that would
  exceed them.

``complete``, ``stream``, ``complete_text`` and ``apply_template`` send the endpoint's model
name; ``forward`` (the passthrough's bytes) re-serialises the body with it. A model in no
group goes to ``default`` (the plain upstream), or is a 404 naming the groups when there is
none. A stream is failed over only until its first chunk: one that breaks midway cannot be
retried (the client already has part of it); the break counts as the endpoint's failure and
reaches the client as a cut stream.

Thread-safe (one lock per group, held only for bookkeeping, never during a call). The health
state lives in process memory: with several gunicorn workers each worker keeps its own view
of the endpoints (cooldowns, counts and limits are per worker), which is acceptable: each
finds out about a failing endpoint after ``allowed_fails`` of its own requests.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import (
    NotFoundError,
    OptillmError,
    RateLimitError,
    UpstreamError,
    UpstreamTimeoutError,
    from_upstream_status,
)
from ..types import ChatRequest, Chunk, Completion, Message
from .base import NO_META, CallMeta, Capabilities, RawResponse, Upstream
from .config import Endpoint, GatewayConfig, GeneralSettings

try:
    import orjson

    _loads, _dumps = orjson.loads, orjson.dumps
except ImportError:  # pragma: no cover
    _loads = json.loads

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj).encode()

log = logging.getLogger(__name__)

T = TypeVar("T")
HeaderSink = Callable[[Mapping[str, str]], None]
#: ``factory(endpoint, on_headers) -> Upstream``: builds one endpoint's upstream.
EndpointFactory = Callable[[Endpoint, HeaderSink], Upstream]

WINDOW = 60.0             # seconds: the rpm / tpm window
LATENCY_SAMPLES = 256     # recent successful calls kept for p50 / p95
DEFAULT_RESET = 60.0      # seconds a rate-limit header counts when it names no reset
#: Latency histogram bucket bounds (seconds) for /metrics.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_TOTAL_TOKENS = re.compile(rb'"total_tokens"\s*:\s*(\d+)')


@dataclass(frozen=True)
class Failure:
    """Why one endpoint did not serve a request: ``kind`` is ``timeout``, ``rate_limit`` or
    ``error``; ``tried`` is False when it was skipped without a call."""

    endpoint: str
    kind: str
    reason: str
    tried: bool
    retry_after: float | None = None

    def describe(self) -> str:
        return f"{self.endpoint}: {self.reason}" if self.tried else \
            f"{self.endpoint}: skipped, {self.reason}"


def parse_duration(text: str | None, wall: Callable[[], float] = time.time) -> float | None:
    """Seconds in a rate-limit reset header: ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"``,
    a plain number of seconds, or a Unix time (then the seconds until it). None if unreadable."""
    if not text:
        return None
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(n) * scale[u] for n, u in parts)
    return max(0.0, value - wall()) if value > 1e9 else max(0.0, value)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and isinstance(headers, dict):  # a plain dict is case-sensitive
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def failure_kind(exc: OptillmError) -> str | None:
    """``timeout``, ``rate_limit`` or ``error`` for a failure worth another endpoint; None for
    an answer that is the client's (a 4xx other than 408 and 429)."""
    if isinstance(exc, RateLimitError):
        return "rate_limit"
    if isinstance(exc, UpstreamTimeoutError):
        return "timeout"
    if isinstance(exc, UpstreamError):
        status = exc.upstream_status
        return None if status is not None and 400 <= status < 500 and status != 408 \
            else "error"
    return None


class EndpointState:
    """One endpoint's upstream and what the router knows of it. Changed under its group's lock;
    ``now`` is the router's clock (seconds, monotonic)."""

    def __init__(self, endpoint: Endpoint, name: str):
        self.endpoint = endpoint
        self.name = name
        self.upstream: Upstream | None = None
        self.current = 0.0                  # smooth weighted round-robin
        self.requests = 0
        self.failures: Counter[str] = Counter()
        self.consecutive_fails = 0
        self.cooldown_until = 0.0
        self.cooldown_kind = "error"
        self.retry_until = 0.0              # Retry-After
        self.last_error = ""
        self.rl_requests: int | None = None  # from x-ratelimit-* headers, counted down locally
        self.rl_requests_reset = 0.0
        self.rl_tokens: int | None = None
        self.rl_tokens_reset = 0.0
        self.window: deque[tuple[float, int, int]] = deque()  # (time, requests, tokens)
        self.window_requests = 0
        self.window_tokens = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0

    # -- availability ------------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        while self.window and self.window[0][0] <= now - WINDOW:
            _, requests, tokens = self.window.popleft()
            self.window_requests -= requests
            self.window_tokens -= tokens

    def unavailable(self, now: float, tokens: int) -> Failure | None:
        """Why this endpoint must be skipped now (None: it may take a request of ``tokens``)."""
        ep = self.endpoint
        if now < self.cooldown_until:
            left = self.cooldown_until - now
            return Failure(self.name, self.cooldown_kind,
                           f"cooling down for {left:.1f} s more after {self.consecutive_fails} "
                           f"consecutive failures (last: {self.last_error})", False, left)
        if now < self.retry_until:
            left = self.retry_until - now
            return Failure(self.name, "rate_limit", f"asked to wait (Retry-After) {left:.1f} s "
                           f"more", False, left)
        if self.rl_requests is not None:
            if now >= self.rl_requests_reset:
                self.rl_requests = None
            elif self.rl_requests <= 0:
                left = self.rl_requests_reset - now
                return Failure(self.name, "rate_limit", f"no requests left "
                               f"(x-ratelimit-remaining-requests) for {left:.1f} s", False, left)
        if self.rl_tokens is not None:
            if now >= self.rl_tokens_reset:
                self.rl_tokens = None
            elif self.rl_tokens < tokens:
                left = self.rl_tokens_reset - now
                return Failure(self.name, "rate_limit", f"{self.rl_tokens} tokens left "
                               f"(x-ratelimit-remaining-tokens), about {tokens} needed, for "
                               f"{left:.1f} s", False, left)
        if ep.rpm is None and ep.tpm is None:
            return None
        self._prune(now)
        left = (self.window[0][0] + WINDOW - now) if self.window else 0.0
        if ep.rpm is not None and self.window_requests >= ep.rpm:
            return Failure(self.name, "rate_limit", f"rpm limit {ep.rpm} reached "
                           f"({self.window_requests} requests in the last minute)", False, left)
        if ep.tpm is not None and self.window_tokens > 0 and \
                self.window_tokens + tokens > ep.tpm:
            return Failure(self.name, "rate_limit", f"tpm limit {ep.tpm} would be exceeded "
                           f"({self.window_tokens} tokens in the last minute, about {tokens} "
                           f"more)", False, left)
        return None

    # -- outcomes ------------------------------------------------------------------------------

    def sent(self, now: float, tokens: int) -> None:
        self.requests += 1
        self.window.append((now, 1, tokens))
        self.window_requests += 1
        self.window_tokens += tokens
        if self.rl_requests is not None:
            self.rl_requests -= 1
        if self.rl_tokens is not None:
            self.rl_tokens -= tokens
        if len(self.window) > 4096 and self.endpoint.rpm is None and self.endpoint.tpm is None:
            self._prune(now)  # nothing else prunes it when no limit is configured

    def add_tokens(self, now: float, delta: int) -> None:
        if delta:
            self.window.append((now, 0, delta))
            self.window_tokens += delta

    def succeeded(self, latency: float) -> None:
        self.consecutive_fails = 0
        self.latencies.append(latency)
        self.buckets[bisect.bisect_left(BUCKETS, latency)] += 1
        self.latency_sum += latency

    def failed(self, now: float, kind: str, reason: str, retry_after: float | None,
               general: GeneralSettings) -> None:
        self.failures[kind] += 1
        self.consecutive_fails += 1
        self.last_error = reason[:300]
        if retry_after:
            self.retry_until = max(self.retry_until, now + min(retry_after, 86400.0))
        if self.consecutive_fails >= general.allowed_fails and general.cooldown_time > 0:
            self.cooldown_until = now + general.cooldown_time
            self.cooldown_kind = kind
            log.warning("endpoint %s cools down for %.0f s after %d consecutive failures: %s",
                        self.name, general.cooldown_time, self.consecutive_fails, reason)

    def note_headers(self, headers: Mapping[str, str], now: float) -> None:
        """Take in ``x-ratelimit-remaining-*`` / ``x-ratelimit-reset-*`` of an answer."""
        remaining = _int(_header(headers, "x-ratelimit-remaining-requests"))
        if remaining is not None:
            reset = parse_duration(_header(headers, "x-ratelimit-reset-requests"))
            self.rl_requests = remaining
            self.rl_requests_reset = now + (DEFAULT_RESET if reset is None else reset)
        remaining = _int(_header(headers, "x-ratelimit-remaining-tokens"))
        if remaining is not None:
            reset = parse_duration(_header(headers, "x-ratelimit-reset-tokens"))
            self.rl_tokens = remaining
            self.rl_tokens_reset = now + (DEFAULT_RESET if reset is None else reset)

    def snapshot(self, now: float) -> dict[str, Any]:
        """What ``/stats`` and ``/metrics`` show of this endpoint."""
        self._prune(now)
        ep = self.endpoint
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

        cooldown = max(0.0, self.cooldown_until - now)
        known = {"remaining_requests": self.rl_requests if now < self.rl_requests_reset
                 else None,
                 "remaining_tokens": self.rl_tokens if now < self.rl_tokens_reset else None}
        return {
            "name": self.name, "base_url": ep.base_url, "model": ep.model, "weight": ep.weight,
            "requests": self.requests, "failures": sum(self.failures.values()),
            "failures_by_kind": dict(self.failures),
            "consecutive_fails": self.consecutive_fails,
            "cooldown": {"active": cooldown > 0, "remaining_s": round(cooldown, 2)},
            "retry_after_remaining_s": round(max(0.0, self.retry_until - now), 2),
            "rate_limit": {**known,
                           "reset_requests_s": round(max(0.0, self.rl_requests_reset - now), 2)
                           if known["remaining_requests"] is not None else None,
                           "reset_tokens_s": round(max(0.0, self.rl_tokens_reset - now), 2)
                           if known["remaining_tokens"] is not None else None},
            "last_minute": {"requests": self.window_requests, "tokens": self.window_tokens,
                            "rpm": ep.rpm, "tpm": ep.tpm},
            "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "samples": len(ordered)},
            "latency_histogram": {"buckets": list(BUCKETS), "counts": list(self.buckets),
                                  "sum_s": self.latency_sum},
            "last_error": self.last_error or None,
        }


class ModelGroup:
    """The endpoints of one public model name, and the lock that guards their state."""

    def __init__(self, name: str, endpoints: Sequence[EndpointState]):
        self.name = name
        self.endpoints = list(endpoints)
        self.lock = threading.Lock()

    def pick(self, now: float, tokens: int, exclude: Sequence[EndpointState],
             skipped: dict[str, Failure]) -> EndpointState | None:
        """The next endpoint by smooth weighted round-robin among the available weighted ones
        (fallbacks, weight 0, only when none is), counted as sent; None when none is available.
        The reasons of unavailable endpoints go to ``skipped``."""
        with self.lock:
            weighted: list[EndpointState] = []
            fallbacks: list[EndpointState] = []
            for ep in self.endpoints:
                if ep in exclude:
                    continue
                why = ep.unavailable(now, tokens)
                if why is not None:
                    skipped[ep.name] = why
                elif ep.endpoint.weight > 0:
                    weighted.append(ep)
                else:
                    fallbacks.append(ep)
            candidates = weighted or fallbacks
            if not candidates:
                return None
            total = 0.0
            best = candidates[0]
            for ep in candidates:
                weight = ep.endpoint.weight or 1.0
                ep.current += weight
                total += weight
                if ep.current > best.current:
                    best = ep
            best.current -= total
            best.sent(now, tokens)
            return best


class _ChunkRelay(Iterator[Chunk]):
    """A stream's chunks after the first: a break counts as the endpoint's failure; token usage
    in the last chunk corrects the endpoint's tpm estimate. ``close()`` closes the upstream's."""

    def __init__(self, first: Chunk, inner: Iterator[Chunk], on_usage: Callable[[int], None],
                 on_break: Callable[[OptillmError], None]):
        self._first: Chunk | None = first
        self._inner = inner
        self._on_usage = on_usage
        self._on_break = on_break

    def __next__(self) -> Chunk:
        if self._first is not None:
            chunk, self._first = self._first, None
        else:
            try:
                chunk = next(self._inner)
            except OptillmError as exc:
                self._on_break(exc)
                raise
        if chunk.usage is not None:
            self._on_usage(chunk.usage.total_tokens)
        return chunk

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class RouterUpstream(Upstream):
    """The router (see the module docstring).

    Args:
        model_groups: public model name -> its endpoints (``GatewayConfig.model_groups``).
        default: the upstream for models in no group (None: those are a 404).
        endpoint_factory: ``factory(endpoint, on_headers) -> Upstream`` builds each endpoint's
            upstream; it calls ``on_headers(headers)`` with the headers of successful answers.
        general: ``retries``, ``allowed_fails``, ``cooldown_time``.
        clock: monotonic seconds (tests inject their own).
    """

    def __init__(self, model_groups: Mapping[str, Sequence[Endpoint]],
                 default: Upstream | None, endpoint_factory: EndpointFactory,
                 general: GeneralSettings = GeneralSettings(), *,
                 clock: Callable[[], float] = time.monotonic):
        self.default = default
        self.general = general
        self.clock = clock
        self.groups: dict[str, ModelGroup] = {}
        self.counters: Counter[str] = Counter()  # routed, retried, exhausted
        self._lock = threading.Lock()
        for public, endpoints in model_groups.items():
            seen: Counter[str] = Counter()
            states = []
            for endpoint in endpoints:
                name = endpoint.name or f"{endpoint.model}@{endpoint.base_url}"
                seen[name] += 1
                states.append(EndpointState(endpoint, name if seen[name] == 1 else
                                            f"{name}#{seen[name]}"))
            group = ModelGroup(public, states)
            for state in states:
                state.upstream = endpoint_factory(state.endpoint,
                                                  self._header_sink(group, state))
            self.groups[public] = group

    def _header_sink(self, group: ModelGroup, state: EndpointState) -> HeaderSink:
        def on_headers(headers: Mapping[str, str]) -> None:
            with group.lock:
                state.note_headers(headers, self.clock())
        return on_headers

    # -- routing -------------------------------------------------------------------------------

    def _target(self, model: str | None) -> ModelGroup | Upstream:
        group = self.groups.get(model) if model is not None else None
        if group is not None:
            return group
        if self.default is not None:
            return self.default
        raise NotFoundError(f"model {model!r} is in no model group of the gateway config; "
                            f"known: {', '.join(sorted(self.groups))}")

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def _run(self, group: ModelGroup, tokens: int,
             call: Callable[[EndpointState], T]) -> tuple[EndpointState, T]:
        """``call(endpoint)`` on endpoints of ``group`` until one succeeds (at most
        ``1 + retries`` of them). Returns the endpoint and the result.

        Raises: the client's own error (a 4xx) at once; when every endpoint failed or was
        unavailable, RateLimitError / UpstreamTimeoutError / UpstreamError naming each.
        """
        tried: list[EndpointState] = []
        reasons: dict[str, Failure] = {}
        self._count("routed")
        while len(tried) <= self.general.retries:
            ep = group.pick(self.clock(), tokens, tried, reasons)
            if ep is None:
                break
            if tried:
                self._count("retried")
            tried.append(ep)
            reasons.pop(ep.name, None)
            start = self.clock()
            try:
                result = call(ep)
            except OptillmError as exc:
                kind = failure_kind(exc)
                now = self.clock()
                with group.lock:
                    if exc.upstream_headers:
                        ep.note_headers(exc.upstream_headers, now)
                    if kind is None:  # the client's error: the endpoint answered
                        ep.consecutive_fails = 0
                        raise
                    ep.failed(now, kind, exc.message, exc.retry_after, self.general)
                log.info("endpoint %s of %s failed (%s), %s", ep.name, group.name,
                         exc.message, "trying another" if len(tried) <= self.general.retries
                         else "no retries left")
                reasons[ep.name] = Failure(ep.name, kind, exc.message, True, exc.retry_after)
                continue
            with group.lock:
                ep.succeeded(self.clock() - start)
            return ep, result
        self._count("exhausted")
        raise self._exhausted(group, tried, reasons)

    def _exhausted(self, group: ModelGroup, tried: list[EndpointState],
                   reasons: dict[str, Failure]) -> OptillmError:
        """The client's error when no endpoint served: the right status, every endpoint named."""
        failures = [reasons[ep.name] for ep in tried if ep.name in reasons]
        failures += [f for name, f in reasons.items() if not f.tried]
        untried = [ep.name for ep in group.endpoints if ep.name not in reasons]
        lines = [f.describe() for f in failures]
        lines += [f"{name}: not tried (general_settings.retries = {self.general.retries})"
                  for name in untried]
        message = (f"no endpoint of model group {group.name!r} could serve the request "
                   f"({len(tried)} of {len(group.endpoints)} tried): " + "; ".join(lines))
        kinds = {f.kind for f in failures}
        waits = [f.retry_after for f in failures if f.retry_after]
        if kinds == {"rate_limit"}:
            return RateLimitError(message, retry_after=min(waits) if waits else None)
        if kinds == {"timeout"}:
            return UpstreamTimeoutError(message)
        return UpstreamError(message, retry_after=min(waits) if waits else None)

    def _note_usage(self, group: ModelGroup, ep: EndpointState, estimate: int,
                    actual: int | None) -> None:
        if actual is not None and (ep.endpoint.tpm is not None or ep.rl_tokens is not None):
            with group.lock:
                ep.add_tokens(self.clock(), actual - estimate)

    def _on_break(self, group: ModelGroup, ep: EndpointState) -> Callable[[OptillmError], None]:
        def on_break(exc: OptillmError) -> None:
            with group.lock:
                ep.failed(self.clock(), failure_kind(exc) or "error",
                          f"stream broke midway: {exc.message}", exc.retry_after, self.general)
        return on_break

    # -- the Upstream interface -------------------------------------------------------------

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        target = self._target(request.model)
        if not isinstance(target, ModelGroup):
            return target.complete(request, meta)
        tokens = _estimate(request.messages, request.params)
        ep, result = self._run(target, tokens, lambda ep: ep.upstream.complete(
            request.replace(model=ep.endpoint.model), meta))
        self._note_usage(target, ep, tokens, result.usage.total_tokens)
        return result

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        """The chunks of the first endpoint that produced one. Failover happens only before
        the first chunk: a stream that breaks midway cannot be retried (raises the break's
        error after the chunks already given)."""
        target = self._target(request.model)
        if not isinstance(target, ModelGroup):
            return target.stream(request, meta)
        tokens = _estimate(request.messages, request.params)

        def call(ep: EndpointState) -> tuple[Iterator[Chunk], Chunk]:
            inner = ep.upstream.stream(request.replace(model=ep.endpoint.model), meta)
            try:
                return inner, next(inner)
            except StopIteration:
                _close(inner)
                raise UpstreamError("upstream stream ended before its first chunk") from None
            except BaseException:
                _close(inner)
                raise

        ep, (inner, first) = self._run(target, tokens, call)
        return _ChunkRelay(first, inner,
                           lambda used: self._note_usage(target, ep, tokens, used),
                           self._on_break(target, ep))

    def complete_text(self, prompt: str, model: str, params: Mapping[str, Any],
                      meta: CallMeta = NO_META) -> Completion:
        target = self._target(model)
        if not isinstance(target, ModelGroup):
            return target.complete_text(prompt, model, params, meta)
        tokens = len(prompt) // 4 + _max_tokens(params)
        ep, result = self._run(target, tokens, lambda ep: ep.upstream.complete_text(
            prompt, ep.endpoint.model, params, meta))
        self._note_usage(target, ep, tokens, result.usage.total_tokens)
        return result

    def apply_template(self, messages: Sequence[Message], model: str,
                       meta: CallMeta = NO_META) -> str:
        target = self._target(model)
        if not isinstance(target, ModelGroup):
            return target.apply_template(messages, model, meta)
        return self._run(target, 0, lambda ep: ep.upstream.apply_template(
            messages, ep.endpoint.model, meta))[1]

    def forward(self, body: bytes, meta: CallMeta = NO_META, stream: bool = False,
                model: str | None = None) -> RawResponse:
        """The passthrough: ``body`` re-serialised with each endpoint's model name. An endpoint
        answering 5xx or 429, one that cannot be reached or times out, a non-streamed answer
        that is not a JSON object, and a stream that ends or breaks before its first bytes, are
        failed over before any byte reaches the client; any other 4xx comes back as it is. A
        stream that breaks after its first bytes cannot be retried (see the module docstring).
        """
        if model is None:
            try:
                model = _loads(body).get("model")
            except (ValueError, AttributeError):
                model = None
        target = self._target(model)
        if not isinstance(target, ModelGroup):
            return target.forward(body, meta, stream, model)
        group = target
        tokens = len(body) // 4
        bodies: dict[str, bytes] = {}

        def body_for(upstream_model: str) -> bytes:
            if upstream_model == model:
                return body
            if upstream_model not in bodies:
                bodies[upstream_model] = _dumps({**_loads(body), "model": upstream_model})
            return bodies[upstream_model]

        def call(ep: EndpointState) -> RawResponse:
            raw = ep.upstream.forward(body_for(ep.endpoint.model), meta, stream,
                                      ep.endpoint.model)
            if raw.status >= 500 or raw.status == 429:
                data = _drain(raw)
                raise from_upstream_status(raw.status, _error_text(data, raw.status),
                                           raw.headers)
            if raw.headers:
                with group.lock:
                    ep.note_headers(raw.headers, self.clock())
            if raw.status >= 400:
                return raw  # the client's error, as it is
            if not stream:
                return _checked_body(raw)
            return _first_bytes(raw)

        ep, raw = self._run(group, tokens, call)
        if raw.status >= 400:
            return raw
        track = ep.endpoint.tpm is not None or ep.rl_tokens is not None
        if not stream:
            return self._count_body_tokens(group, ep, tokens, raw) if track else raw
        return RawResponse(raw.status, raw.content_type,
                           self._relay_bytes(group, ep, tokens, raw.chunks, track),
                           raw.close, raw.headers)

    def _count_body_tokens(self, group: ModelGroup, ep: EndpointState, estimate: int,
                           raw: RawResponse) -> RawResponse:
        data = b"".join(raw.chunks)
        found = _TOTAL_TOKENS.search(data)
        self._note_usage(group, ep, estimate, int(found.group(1)) if found else None)
        return RawResponse(raw.status, raw.content_type, iter((data,)), raw.close, raw.headers)

    def _relay_bytes(self, group: ModelGroup, ep: EndpointState, estimate: int,
                     chunks: Iterator[bytes], track: bool) -> Iterator[bytes]:
        try:
            for part in chunks:
                if track and b'"total_tokens"' in part:
                    found = _TOTAL_TOKENS.search(part)
                    if found:
                        self._note_usage(group, ep, estimate, int(found.group(1)))
                yield part
        except OptillmError as exc:
            self._on_break(group, ep)(exc)
            raise

    def models(self, meta: CallMeta = NO_META) -> list[dict[str, Any]]:
        """The public group names, then the default upstream's models (when it answers)."""
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "optillm-gateway"}
                for name in self.groups]
        if self.default is not None:
            try:
                data += [m for m in self.default.models(meta) if m.get("id") not in self.groups]
            except OptillmError as exc:
                log.warning("default upstream /models failed: %s", exc.message)
        return data

    @property
    def capabilities(self) -> Capabilities:
        return self.default.capabilities if self.default is not None else Capabilities()

    def close(self) -> None:
        for group in self.groups.values():
            for ep in group.endpoints:
                if ep.upstream is not None:
                    ep.upstream.close()
        if self.default is not None:
            self.default.close()

    # -- observability -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Per group, each endpoint's counts, health, limits and latency; and the router's
        ``routed`` / ``retried`` / ``exhausted`` counts. For ``/stats`` and ``/metrics``."""
        now = self.clock()
        groups = {}
        for name, group in self.groups.items():
            with group.lock:
                groups[name] = [ep.snapshot(now) for ep in group.endpoints]
        with self._lock:
            counters = {k: self.counters[k] for k in ("routed", "retried", "exhausted")}
        return {"model_groups": groups, "router": counters}


# -- helpers ---------------------------------------------------------------------------------


def _max_tokens(params: Mapping[str, Any]) -> int:
    value = params.get("max_completion_tokens") or params.get("max_tokens") or 0
    return value if isinstance(value, int) else 0


def _estimate(messages: Sequence[Message], params: Mapping[str, Any]) -> int:
    """A request's tokens for rate limits: four characters a token, plus ``max_tokens``."""
    return sum(len(m.text) for m in messages) // 4 + _max_tokens(params)


def _close(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


def _drain(raw: RawResponse) -> bytes:
    try:
        return b"".join(raw.chunks)
    except OptillmError:
        return b""
    finally:
        raw.close()


def _error_text(data: bytes, status: int) -> str:
    try:
        parsed = _loads(data)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        inner = parsed.get("error", parsed)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return data[:300].decode("utf-8", "replace") or f"status {status}"


def _checked_body(raw: RawResponse) -> RawResponse:
    """The whole non-streamed answer, checked to be a JSON object.

    Raises: UpstreamError when it is not (a truncated or garbled answer).
    """
    data = _drain(raw)
    try:
        ok = isinstance(_loads(data), dict)
    except ValueError:
        ok = False
    if not ok:
        raise UpstreamError(f"upstream returned malformed JSON: "
                            f"{data[:200].decode('utf-8', 'replace')!r}")
    return RawResponse(raw.status, raw.content_type, iter((data,)), lambda: None, raw.headers)


def _first_bytes(raw: RawResponse) -> RawResponse:
    """A streamed answer whose first bytes have arrived (so a stream that fails at once is
    failed over). Raises: UpstreamError when it ends or breaks before them."""
    chunks = iter(raw.chunks)
    try:
        first = next(chunks)
        while not first:
            first = next(chunks)
    except StopIteration:
        raw.close()
        raise UpstreamError("upstream stream ended before its first bytes") from None
    except BaseException:
        raw.close()
        raise

    def relay() -> Iterator[bytes]:
        yield first
        yield from chunks

    return RawResponse(raw.status, raw.content_type, relay(), raw.close, raw.headers)


def build_router(gateway: GatewayConfig, default: Upstream | None, settings: Any,
                 executor: Any) -> RouterUpstream:
    """The router over ``gateway.model_groups``: one ``ChoicesUpstream(OpenAIUpstream(...))``
    per endpoint, each with its own connection pool and no retries of its own (the router
    retries on another endpoint). ``settings`` gives the default timeout and pool size."""
    from .choices import ChoicesUpstream
    from .openai_client import OpenAIUpstream

    def factory(endpoint: Endpoint, on_headers: HeaderSink) -> Upstream:
        azure = (endpoint.base_url, endpoint.azure_api_version) \
            if endpoint.azure_api_version else None
        client = OpenAIUpstream(endpoint.base_url, endpoint.api_key, azure=azure,
                                timeout=endpoint.timeout or settings.upstream_timeout,
                                retries=0, pool_size=max(8, settings.max_parallel_calls * 2),
                                on_headers=on_headers)
        return ChoicesUpstream(client, executor)

    return RouterUpstream(gateway.model_groups, default, factory, gateway.general)
