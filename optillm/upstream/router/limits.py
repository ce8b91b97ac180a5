"""An endpoint's rate limits: the upstream's ``x-ratelimit-*`` headers and the configured
``rpm`` / ``tpm``.

- ``HeaderLimits``: ``x-ratelimit-remaining-requests`` / ``-tokens`` and
  ``x-ratelimit-reset-*`` of the last answer, counted down locally until the reset (always
  this process's: each worker sees the headers of its own answers).
- ``LocalWindow``: requests and tokens per endpoint over the last minute, in this process
  (with several workers each keeps its own, so together they may send ``workers x rpm``).
  A request's tokens are estimated at four bytes a token plus ``max_tokens``, then corrected
  from the answer's usage. The shared variant is ``optillm.upstream.router.shared``.
- ``parse_duration``: the reset headers' durations (``"6m0s"``, ``"20ms"``, seconds, a time).

Both windows have ``blocked(now, tokens)`` (a check), ``take(now, tokens)`` (check and count,
atomically), ``add_tokens(now, delta)`` and ``view(now)``; ``now`` is monotonic seconds.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..config import Endpoint

WINDOW = 60.0             # seconds: the rpm / tpm window
DEFAULT_RESET = 60.0      # seconds a rate-limit header counts when it names no reset
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


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


def max_tokens(params: Mapping[str, Any]) -> int:
    """A request's ``max_completion_tokens`` or ``max_tokens`` (0 when it names none)."""
    value = params.get("max_completion_tokens") or params.get("max_tokens") or 0
    return value if isinstance(value, int) else 0


def estimate_tokens(messages: Sequence[Any], params: Mapping[str, Any]) -> int:
    """A request's tokens for rate limits: four characters a token, plus ``max_tokens``."""
    return sum(len(m.text) for m in messages) // 4 + max_tokens(params)


def _failure(name: str, reason: str, left: float):
    from .health import Failure  # (health imports this module)

    return Failure(name, "rate_limit", reason, False, left)


class HeaderLimits:
    """What the upstream's ``x-ratelimit-*`` headers said, counted down per request sent."""

    def __init__(self, name: str):
        self.name = name
        self.requests: int | None = None
        self.requests_reset = 0.0
        self.tokens: int | None = None
        self.tokens_reset = 0.0

    def note(self, headers: Mapping[str, str], now: float) -> None:
        """Take in ``x-ratelimit-remaining-*`` / ``x-ratelimit-reset-*`` of an answer."""
        remaining = _int(_header(headers, "x-ratelimit-remaining-requests"))
        if remaining is not None:
            reset = parse_duration(_header(headers, "x-ratelimit-reset-requests"))
            self.requests = remaining
            self.requests_reset = now + (DEFAULT_RESET if reset is None else reset)
        remaining = _int(_header(headers, "x-ratelimit-remaining-tokens"))
        if remaining is not None:
            reset = parse_duration(_header(headers, "x-ratelimit-reset-tokens"))
            self.tokens = remaining
            self.tokens_reset = now + (DEFAULT_RESET if reset is None else reset)

    def blocked(self, now: float, tokens: int):
        """A Failure when the headers leave no room for a request of ``tokens``, else None."""
        if self.requests is not None:
            if now >= self.requests_reset:
                self.requests = None
            elif self.requests <= 0:
                left = self.requests_reset - now
                return _failure(self.name, f"no requests left (x-ratelimit-remaining-requests) "
                                f"for {left:.1f} s", left)
        if self.tokens is not None:
            if now >= self.tokens_reset:
                self.tokens = None
            elif self.tokens < tokens:
                left = self.tokens_reset - now
                return _failure(self.name, f"{self.tokens} tokens left "
                                f"(x-ratelimit-remaining-tokens), about {tokens} needed, for "
                                f"{left:.1f} s", left)
        return None

    def sent(self, tokens: int) -> None:
        if self.requests is not None:
            self.requests -= 1
        if self.tokens is not None:
            self.tokens -= tokens

    def view(self, now: float) -> dict[str, Any]:
        requests = self.requests if now < self.requests_reset else None
        tokens = self.tokens if now < self.tokens_reset else None
        return {"remaining_requests": requests, "remaining_tokens": tokens,
                "reset_requests_s": round(max(0.0, self.requests_reset - now), 2)
                if requests is not None else None,
                "reset_tokens_s": round(max(0.0, self.tokens_reset - now), 2)
                if tokens is not None else None}


class LocalWindow:
    """Requests and tokens of one endpoint over the last ``WINDOW`` seconds, in this process;
    ``blocked`` refuses a request that would pass ``rpm`` or ``tpm`` (a first request larger
    than ``tpm`` still goes: it could never go otherwise)."""

    def __init__(self, name: str, endpoint: Endpoint):
        self.name = name
        self.rpm = endpoint.rpm
        self.tpm = endpoint.tpm
        self.window: deque[tuple[float, int, int]] = deque()  # (time, requests, tokens)
        self.requests = 0
        self.tokens = 0

    def _prune(self, now: float) -> None:
        while self.window and self.window[0][0] <= now - WINDOW:
            _, requests, tokens = self.window.popleft()
            self.requests -= requests
            self.tokens -= tokens

    def blocked(self, now: float, tokens: int):
        if self.rpm is None and self.tpm is None:
            return None
        self._prune(now)
        left = (self.window[0][0] + WINDOW - now) if self.window else 0.0
        if self.rpm is not None and self.requests >= self.rpm:
            return _failure(self.name, f"rpm limit {self.rpm} reached ({self.requests} "
                            f"requests in the last minute)", left)
        if self.tpm is not None and self.tokens > 0 and self.tokens + tokens > self.tpm:
            return _failure(self.name, f"tpm limit {self.tpm} would be exceeded "
                            f"({self.tokens} tokens in the last minute, about {tokens} more)",
                            left)
        return None

    def take(self, now: float, tokens: int):
        why = self.blocked(now, tokens)  # (under the group's lock: nothing changed since)
        if why is not None:
            return why
        self.window.append((now, 1, tokens))
        self.requests += 1
        self.tokens += tokens
        if len(self.window) > 4096 and self.rpm is None and self.tpm is None:
            self._prune(now)  # nothing else prunes it when no limit is configured
        return None

    def add_tokens(self, now: float, delta: int) -> None:
        if delta:
            self.window.append((now, 0, delta))
            self.tokens += delta

    def view(self, now: float) -> dict[str, int]:
        self._prune(now)
        return {"requests": self.requests, "tokens": self.tokens}
