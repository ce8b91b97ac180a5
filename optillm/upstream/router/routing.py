"""The gateway's router: a public model name -> a group of endpoints (LLMProxy's model groups).

``RouterUpstream`` implements the whole ``Upstream`` interface over the groups of
``--config``'s ``model_groups``:

- **Weighted round-robin** within a group (smooth, as nginx does it: over many requests each
  endpoint serves its share of the weights, evenly interleaved). ``weight: 0`` marks a fallback,
  used only when no weighted endpoint is available (cooling down, rate-limited, or already
  failed for this request).
- **Failover**: a connection error, a timeout, a 5xx or a 429 makes the request go to another
  endpoint of the group, up to ``general_settings.retries`` more attempts. When every
  endpoint was tried and attempts are left, one that answered 500/502/503 or could not be
  reached is tried again after a backoff with jitter (``optillm.upstream.retry``), so a
  one-endpoint group retries too; a rate-limited, timed-out or cooling endpoint is not.
  Any other 4xx is the client's and comes back as it is. The client sees an error only when
  every endpoint it was offered to failed or was unavailable; the message names each
  endpoint and why, and the status is 429 when all were rate-limited, 504 when all timed out,
  else 502.
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

Thread-safe (one lock per group, held only for bookkeeping, never during a call). Where the
state lives: with a Redis URL (``--redis-url`` or ``general_settings.redis_url``) the
consecutive failures, cooldowns, ``Retry-After`` waits and the ``rpm`` / ``tpm`` windows are
kept in Redis (``optillm.upstream.router.shared``), one view for every worker and instance;
without one they live in this process's memory (``health.LocalHealth``, ``limits.LocalWindow``)
and each gunicorn worker keeps its own (so ``--workers 2`` may send up to twice ``rpm``). The
``x-ratelimit-*`` header counts, the round-robin and the ``/stats`` counts are always per
process. This module selects and fails over; ``health``, ``limits``, ``shared`` and ``relay``
beside it hold the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from ...errors import (
    NotFoundError,
    OptillmError,
    UpstreamError,
    from_upstream_status,
)
from ...errors import error_text as _error_text
from ...types import ChatRequest, Chunk, Completion, Message
from ..base import NO_META, CallMeta, Capabilities, RawResponse, Upstream
from ..config import Endpoint, GeneralSettings
from ..retry import RetryPolicy
from .health import EndpointState, Failure, exhausted, failure_kind
from .limits import estimate_tokens as _estimate
from .limits import max_tokens as _max_tokens
from .relay import (
    ChunkRelay,
    checked_body,
    close_quietly,
    count_body_tokens,
    drain,
    first_bytes,
    relay_bytes,
)

_loads, _dumps = orjson.loads, orjson.dumps

log = logging.getLogger(__name__)

T = TypeVar("T")
HeaderSink = Callable[[Mapping[str, str]], None]
#: ``factory(endpoint, on_headers) -> Upstream``: builds one endpoint's upstream.
EndpointFactory = Callable[[Endpoint, HeaderSink], Upstream]


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
        The reasons of unavailable endpoints go to ``skipped``. With shared limits the count
        is taken atomically in Redis: when another worker filled the window first, the next
        candidate is picked."""
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
            while weighted or fallbacks:
                candidates = weighted or fallbacks
                total = 0.0
                best = candidates[0]
                for ep in candidates:
                    weight = ep.endpoint.weight or 1.0
                    ep.current += weight
                    total += weight
                    if ep.current > best.current:
                        best = ep
                best.current -= total
                why = best.take(now, tokens)
                if why is None:
                    return best
                skipped[best.name] = why
                candidates.remove(best)
            return None


class RouterUpstream(Upstream):
    """The router (see the module docstring).

    Args:
        model_groups: public model name -> its endpoints (``GatewayConfig.model_groups``).
        default: the upstream for models in no group (None: those are a 404).
        endpoint_factory: ``factory(endpoint, on_headers) -> Upstream`` builds each endpoint's
            upstream; it calls ``on_headers(headers)`` with the headers of successful answers.
        general: ``retries``, ``allowed_fails``, ``cooldown_time``.
        clock: monotonic seconds (tests inject their own). sleep: waits (seconds) between
            attempts when every endpoint was tried and retries are left.
        shared: ``shared.SharedState`` (Redis) to keep health and rpm/tpm windows in, one
            view for every process; None keeps them in this one.
    """

    def __init__(self, model_groups: Mapping[str, Sequence[Endpoint]],
                 default: Upstream | None, endpoint_factory: EndpointFactory,
                 general: GeneralSettings = GeneralSettings(), *,
                 clock: Callable[[], float] = time.monotonic, shared: Any = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.default = default
        self.shared = shared
        self.sleep = sleep
        #: the backoff (with jitter) before an endpoint already tried is tried again
        self.backoff = RetryPolicy(retries=general.retries)
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
                name = name if seen[name] == 1 else f"{name}#{seen[name]}"
                if shared is None:
                    states.append(EndpointState(endpoint, name))
                else:
                    states.append(EndpointState(endpoint, name, shared.health(public, name),
                                                shared.window(public, name, endpoint)))
            group = ModelGroup(public, states)
            for state in states:
                state.upstream = endpoint_factory(state.endpoint,
                                                  self._header_sink(group, state))
            self.groups[public] = group

    def _header_sink(self, group: ModelGroup, state: EndpointState) -> HeaderSink:
        def on_headers(headers: Mapping[str, str]) -> None:
            with group.lock:
                state.headers.note(headers, self.clock())
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
        last: OptillmError | None = None
        self._count("routed")
        while len(tried) <= self.general.retries:
            ep = group.pick(self.clock(), tokens, tried, reasons)
            if ep is None and last is not None and failure_kind(last) == "error":
                # every endpoint was tried: the available ones again, after a backoff
                wait = self.backoff.delay(len(tried) - 1, last, 0.0)
                if wait is not None:
                    self.sleep(wait)
                    ep = group.pick(self.clock(), tokens, (), reasons)
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
                        ep.headers.note(exc.upstream_headers, now)
                    if kind is None:  # the client's error: the endpoint answered
                        ep.health.answered()
                        raise
                    ep.failed(now, kind, exc.message, exc.retry_after, self.general)
                log.info("endpoint %s of %s failed (%s), %s", ep.name, group.name,
                         exc.message, "trying another" if len(tried) <= self.general.retries
                         else "no retries left")
                reasons[ep.name] = Failure(ep.name, kind, exc.message, True, exc.retry_after)
                last = exc
                continue
            with group.lock:
                ep.succeeded(self.clock() - start)
            return ep, result
        self._count("exhausted")
        raise exhausted(group.name, group.endpoints, tried, reasons, self.general.retries)

    def _note_usage(self, group: ModelGroup, ep: EndpointState, estimate: int,
                    actual: int | None) -> None:
        if actual is not None and ep.tracks_tokens:
            with group.lock:
                ep.window.add_tokens(self.clock(), actual - estimate)

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
                close_quietly(inner)
                raise UpstreamError("upstream stream ended before its first chunk") from None
            except BaseException:
                close_quietly(inner)
                raise

        ep, (inner, first) = self._run(target, tokens, call)
        return ChunkRelay(first, inner,
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

    def count_tokens(self, text: str, model: str, meta: CallMeta = NO_META) -> int:
        target = self._target(model)
        if not isinstance(target, ModelGroup):
            return target.count_tokens(text, model, meta)
        return self._run(target, 0, lambda ep: ep.upstream.count_tokens(
            text, ep.endpoint.model, meta))[1]

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
                data = drain(raw)
                raise from_upstream_status(raw.status, _error_text(data, raw.status),
                                           raw.headers)
            if raw.headers:
                with group.lock:
                    ep.headers.note(raw.headers, self.clock())
            if raw.status >= 400:
                return raw  # the client's error, as it is
            if not stream:
                return checked_body(raw)
            return first_bytes(raw)

        ep, raw = self._run(group, tokens, call)
        if raw.status >= 400:
            return raw
        def on_usage(used: int | None) -> None:
            self._note_usage(group, ep, tokens, used)

        track = ep.tracks_tokens
        if not stream:
            return count_body_tokens(raw, on_usage) if track else raw
        return RawResponse(raw.status, raw.content_type,
                           relay_bytes(raw.chunks, on_usage if track else None,
                                       self._on_break(group, ep)),
                           raw.close, raw.headers)

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
