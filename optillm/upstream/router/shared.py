"""The router's health and rate limits in Redis: one view for every worker and instance.

``SharedState(redis_url)`` hands out, per endpoint of a group, the two halves the router
otherwise keeps in process memory:

- ``SharedHealth``: consecutive failures (``INCR``; ``DEL`` once it answers), the cooldown
  they start and the upstream's ``Retry-After`` wait (keys with a time to live, whose values
  say until when, in wall-clock seconds, and why). Plain Redis: the ``limits`` library
  counts hits, it has no place for "why" or "until".
- ``SharedWindow``: ``rpm`` with the ``limits`` library's moving window (exact: one entry per
  request, refused atomically by a Lua script in Redis) and ``tpm`` with its sliding-window
  counter (an amount per window, so a token count is not one entry per token). The usage an
  answer reports corrects the tokens upwards only (``limits`` cannot give hits back).

Keys: ``optillm:router:<group>:<endpoint>:{fails,cooldown,retry}`` and ``limits``' own
under ``optillm-limits``. Every process computes the same names from the config, so two
instances with one config and one Redis share their endpoints. A Redis that fails mid-way
raises ``StoreError`` (never silently falls back to a per-process view).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..config import Endpoint, GeneralSettings
from ..store import StoreError
from .health import Failure

#: Seconds the failure count outlives the last failure.
FAILS_TTL = 86400


class SharedState:
    """A Redis connection and the ``limits`` limiters over it.

    Raises: StoreError when the packages are missing or Redis does not answer.
    """

    def __init__(self, url: str, namespace: str = "optillm:router:"):
        try:
            import redis
            from limits.storage import RedisStorage
            from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
        except ImportError as exc:
            raise StoreError(f"shared router limits need 'redis' and 'limits' ({exc.name} is "
                             f"missing): pip install 'optillm[gateway]'") from None
        self.url = url
        self.ns = namespace
        self.errors = redis.RedisError
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            self.client.ping()
            storage = RedisStorage(url, key_prefix="optillm-limits", socket_timeout=5)
        except redis.RedisError as exc:
            raise StoreError(f"cannot reach Redis at {url}: {exc}") from exc
        self.requests = MovingWindowRateLimiter(storage)
        self.tokens = SlidingWindowCounterRateLimiter(storage)

    def health(self, group: str, name: str) -> SharedHealth:
        return SharedHealth(self, f"{self.ns}{group}:{name}:", name)

    def window(self, group: str, name: str, endpoint: Endpoint) -> SharedWindow:
        return SharedWindow(self, f"{group}:{name}", name, endpoint)

    def run(self, fn, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``; a Redis failure becomes StoreError."""
        try:
            return fn(*args, **kwargs)
        except self.errors as exc:
            raise StoreError(f"Redis at {self.url} failed: {exc}") from exc


def _until(raw: bytes | None) -> dict[str, Any] | None:
    """A stored wait that has not ended yet (its ``until`` is wall-clock seconds)."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("until", 0) <= time.time():
        return None
    return value


class SharedHealth:
    """``LocalHealth``'s methods over Redis keys (``now`` is ignored: Redis keeps the time)."""

    shared = True

    def __init__(self, state: SharedState, prefix: str, name: str):
        self.state = state
        self.name = name
        self.k_fails, self.k_cool, self.k_retry = (prefix + "fails", prefix + "cooldown",
                                                   prefix + "retry")

    def blocked(self, now: float) -> Failure | None:
        cool, retry = self.state.run(self.state.client.mget, self.k_cool, self.k_retry)
        wall = time.time()
        value = _until(cool)
        if value is not None:
            left = value["until"] - wall
            return Failure(self.name, value.get("kind", "error"),
                           f"cooling down for {left:.1f} s more after {value.get('fails')} "
                           f"consecutive failures (last: {value.get('reason')})", False, left)
        value = _until(retry)
        if value is not None:
            left = value["until"] - wall
            return Failure(self.name, "rate_limit", f"asked to wait (Retry-After) {left:.1f} s "
                           f"more", False, left)
        return None

    def failed(self, now: float, kind: str, reason: str, retry_after: float | None,
               general: GeneralSettings) -> None:
        client = self.state.client
        pipe = client.pipeline()
        pipe.incr(self.k_fails)
        pipe.expire(self.k_fails, FAILS_TTL)
        fails = self.state.run(pipe.execute)[0]
        wall = time.time()
        if retry_after:
            wait = min(retry_after, 86400.0)
            self.state.run(client.set, self.k_retry,
                           json.dumps({"until": wall + wait}), None, max(1, int(wait * 1000)))
        if fails >= general.allowed_fails and general.cooldown_time > 0:
            value = {"until": wall + general.cooldown_time, "kind": kind, "fails": fails,
                     "reason": reason[:300]}
            self.state.run(client.set, self.k_cool, json.dumps(value), None,
                           max(1, int(general.cooldown_time * 1000)))

    def answered(self) -> None:
        # Another process may have counted failures since: reset the shared count always.
        self.state.run(self.state.client.delete, self.k_fails)

    def view(self, now: float) -> dict[str, Any]:
        fails, cool, retry = self.state.run(self.state.client.mget, self.k_fails, self.k_cool,
                                            self.k_retry)
        wall = time.time()
        cooling = _until(cool)
        waiting = _until(retry)
        left = cooling["until"] - wall if cooling else 0.0
        return {"consecutive_fails": int(fails or 0),
                "cooldown": {"active": left > 0, "remaining_s": round(max(0.0, left), 2)},
                "retry_after_remaining_s": round(waiting["until"] - wall, 2) if waiting
                else 0.0,
                "last_error": cooling.get("reason") if cooling else None}


class SharedWindow:
    """``LocalWindow``'s methods over the ``limits`` library's Redis storage."""

    def __init__(self, state: SharedState, key: str, name: str, endpoint: Endpoint):
        from limits import RateLimitItemPerMinute

        self.state = state
        self.key = key
        self.name = name
        self.rpm, self.tpm = endpoint.rpm, endpoint.tpm
        self.rpm_item = RateLimitItemPerMinute(self.rpm) if self.rpm else None
        self.tpm_item = RateLimitItemPerMinute(self.tpm) if self.tpm else None

    def blocked(self, now: float, tokens: int) -> Failure | None:
        return None  # checked when taken (atomically), see ``take``

    def _refused(self, limiter, item, what: str) -> Failure:
        stats = self.state.run(limiter.get_window_stats, item, self.key)
        left = max(0.0, stats.reset_time - time.time())
        return Failure(self.name, "rate_limit", f"{what} (shared by every worker, in Redis)",
                       False, left)

    def take(self, now: float, tokens: int) -> Failure | None:
        cost = min(max(tokens, 1), self.tpm) if self.tpm else 0
        if self.tpm_item is not None and not self.state.run(
                self.state.tokens.test, self.tpm_item, self.key, cost=cost):
            return self._refused(self.state.tokens, self.tpm_item,
                                 f"tpm limit {self.tpm} would be exceeded (about {tokens} "
                                 f"tokens more)")
        if self.rpm_item is not None and not self.state.run(
                self.state.requests.hit, self.rpm_item, self.key):
            return self._refused(self.state.requests, self.rpm_item,
                                 f"rpm limit {self.rpm} reached")
        if self.tpm_item is not None:
            self.state.run(self.state.tokens.hit, self.tpm_item, self.key, cost=cost)
        return None

    def add_tokens(self, now: float, delta: int) -> None:
        if delta > 0 and self.tpm_item is not None:
            self.state.run(self.state.tokens.hit, self.tpm_item, self.key, cost=delta)

    def view(self, now: float) -> dict[str, int]:
        out = {"requests": 0, "tokens": 0}
        if self.rpm_item is not None:
            stats = self.state.run(self.state.requests.get_window_stats, self.rpm_item,
                                   self.key)
            out["requests"] = self.rpm - stats.remaining
        if self.tpm_item is not None:
            stats = self.state.run(self.state.tokens.get_window_stats, self.tpm_item,
                                   self.key)
            out["tokens"] = self.tpm - stats.remaining
        return out
