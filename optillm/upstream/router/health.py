"""An endpoint's health: why it failed, consecutive failures, cooldowns, ``Retry-After`` waits.

- ``Failure``: why one endpoint did not serve a request; ``failure_kind`` sorts an error into
  ``timeout``, ``rate_limit``, ``error`` or the client's own (None).
- ``LocalHealth``: consecutive failures, the cooldown they start and the upstream's
  ``Retry-After`` wait, in this process (the router's clock: monotonic seconds).
- ``exhausted``: the client's error when no endpoint served, naming each and why.
- ``EndpointState``: one endpoint of a group with its health, its limits
  (``optillm.upstream.router.limits``) and its counts and latencies for ``/stats``.

The shared variant of the health (Redis: one view for every worker and instance) is
``optillm.upstream.router.shared.SharedHealth``; it has ``LocalHealth``'s methods.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import OptillmError, RateLimitError, UpstreamError, UpstreamTimeoutError
from ..base import Upstream
from ..config import Endpoint, GeneralSettings
from .limits import HeaderLimits, LocalWindow

log = logging.getLogger(__name__)

LATENCY_SAMPLES = 256     # recent successful calls kept for p50 / p95
#: Latency histogram bucket bounds (seconds) for /metrics.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


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


def exhausted(group: str, endpoints: Sequence[EndpointState], tried: Sequence[EndpointState],
              reasons: dict[str, Failure], retries: int) -> OptillmError:
    """The client's error when no endpoint of ``group`` served: 429 when every one was
    rate-limited (the shortest wait as ``retry_after``), 504 when every one timed out, else
    502; the message names each endpoint and why (``tried`` may repeat one: attempts)."""
    unique = list(dict.fromkeys(tried))
    failures = [reasons[ep.name] for ep in unique if ep.name in reasons]
    failures += [f for name, f in reasons.items() if not f.tried]
    untried = [ep.name for ep in endpoints if ep.name not in reasons]
    lines = [f.describe() for f in failures]
    lines += [f"{name}: not tried (general_settings.retries = {retries})" for name in untried]
    attempts = f", {len(tried)} attempts" if len(tried) > len(unique) else ""
    message = (f"no endpoint of model group {group!r} could serve the request "
               f"({len(unique)} of {len(endpoints)} tried{attempts}): " + "; ".join(lines))
    kinds = {f.kind for f in failures}
    waits = [f.retry_after for f in failures if f.retry_after]
    if kinds == {"rate_limit"}:
        return RateLimitError(message, retry_after=min(waits) if waits else None)
    if kinds == {"timeout"}:
        return UpstreamTimeoutError(message)
    return UpstreamError(message, retry_after=min(waits) if waits else None)


class LocalHealth:
    """Consecutive failures, cooldown and ``Retry-After`` of one endpoint, in this process.
    Called under the group's lock; ``now`` is monotonic seconds."""

    shared = False

    def __init__(self, name: str):
        self.name = name
        self.consecutive_fails = 0
        self.cooldown_until = 0.0
        self.cooldown_kind = "error"
        self.retry_until = 0.0
        self.last_error = ""

    def blocked(self, now: float) -> Failure | None:
        """Why the endpoint must not be called now (cooling down, or asked to wait)."""
        if now < self.cooldown_until:
            left = self.cooldown_until - now
            return Failure(self.name, self.cooldown_kind,
                           f"cooling down for {left:.1f} s more after {self.consecutive_fails} "
                           f"consecutive failures (last: {self.last_error})", False, left)
        if now < self.retry_until:
            left = self.retry_until - now
            return Failure(self.name, "rate_limit", f"asked to wait (Retry-After) {left:.1f} s "
                           f"more", False, left)
        return None

    def failed(self, now: float, kind: str, reason: str, retry_after: float | None,
               general: GeneralSettings) -> None:
        """One more consecutive failure: ``allowed_fails`` of them start a cooldown."""
        self.consecutive_fails += 1
        self.last_error = reason[:300]
        if retry_after:
            self.retry_until = max(self.retry_until, now + min(retry_after, 86400.0))
        if self.consecutive_fails >= general.allowed_fails and general.cooldown_time > 0:
            self.cooldown_until = now + general.cooldown_time
            self.cooldown_kind = kind
            log.warning("endpoint %s cools down for %.0f s after %d consecutive failures: %s",
                        self.name, general.cooldown_time, self.consecutive_fails, reason)

    def answered(self) -> None:
        """The endpoint answered (a success, or the client's own error): the count restarts."""
        self.consecutive_fails = 0

    def view(self, now: float) -> dict[str, Any]:
        cooldown = max(0.0, self.cooldown_until - now)
        return {"consecutive_fails": self.consecutive_fails,
                "cooldown": {"active": cooldown > 0, "remaining_s": round(cooldown, 2)},
                "retry_after_remaining_s": round(max(0.0, self.retry_until - now), 2),
                "last_error": self.last_error or None}


class EndpointState:
    """One endpoint's upstream and what the router knows of it. Changed under its group's lock;
    ``now`` is the router's clock (seconds, monotonic). ``health`` and ``window`` are this
    process's (``LocalHealth``, ``LocalWindow``) unless the router shares them in Redis."""

    def __init__(self, endpoint: Endpoint, name: str, health: Any = None, window: Any = None):
        self.endpoint = endpoint
        self.name = name
        self.upstream: Upstream | None = None
        self.current = 0.0                  # smooth weighted round-robin
        self.requests = 0
        self.failures: Counter[str] = Counter()
        self.health = health if health is not None else LocalHealth(name)
        self.window = window if window is not None else LocalWindow(name, endpoint)
        self.headers = HeaderLimits(name)   # x-ratelimit-*, counted down locally
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0

    @property
    def tracks_tokens(self) -> bool:
        """Whether answers' token usage must be counted (a tpm limit or a token header)."""
        return self.endpoint.tpm is not None or self.headers.tokens is not None

    def unavailable(self, now: float, tokens: int) -> Failure | None:
        """Why this endpoint must be skipped now (None: it may take a request of ``tokens``;
        a shared window is only checked when the request is taken, by ``take``)."""
        return self.health.blocked(now) or self.headers.blocked(now, tokens) or \
            self.window.blocked(now, tokens)

    def take(self, now: float, tokens: int) -> Failure | None:
        """Count a request of ``tokens`` as sent; a Failure (nothing counted) when the window
        is full (another worker may have filled a shared one since ``unavailable``)."""
        why = self.window.take(now, tokens)
        if why is None:
            self.requests += 1
            self.headers.sent(tokens)
        return why

    def succeeded(self, latency: float) -> None:
        self.health.answered()
        self.latencies.append(latency)
        self.buckets[bisect.bisect_left(BUCKETS, latency)] += 1
        self.latency_sum += latency

    def failed(self, now: float, kind: str, reason: str, retry_after: float | None,
               general: GeneralSettings) -> None:
        self.failures[kind] += 1
        self.health.failed(now, kind, reason, retry_after, general)

    def snapshot(self, now: float) -> dict[str, Any]:
        """What ``/stats`` and ``/metrics`` show of this endpoint."""
        ep = self.endpoint
        ordered = sorted(self.latencies)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

        health = self.health.view(now)
        return {
            "name": self.name, "base_url": ep.base_url, "model": ep.model, "weight": ep.weight,
            "requests": self.requests, "failures": sum(self.failures.values()),
            "failures_by_kind": dict(self.failures),
            "consecutive_fails": health["consecutive_fails"],
            "cooldown": health["cooldown"],
            "retry_after_remaining_s": health["retry_after_remaining_s"],
            "rate_limit": self.headers.view(now),
            "last_minute": {**self.window.view(now), "rpm": ep.rpm, "tpm": ep.tpm},
            "shared": bool(self.health.shared),
            "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "samples": len(ordered)},
            "latency_histogram": {"buckets": list(BUCKETS), "counts": list(self.buckets),
                                  "sum_s": self.latency_sum},
            "last_error": health["last_error"],
        }
