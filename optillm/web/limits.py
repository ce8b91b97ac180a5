"""Inbound rate limits per client key: ``--rate-limit 60/minute``.

``install(app, settings, redis_url)`` adds a check before every request (but health, metrics,
stats, docs and CORS preflights): each bearer key (``Authorization: Bearer``, ``api-key`` or
``x-api-key``; the client's address when it sends none) gets the limit on its own, counted
by the ``limits`` library's moving window (exact: one entry per request). Over the limit the
answer is a 429 OpenAI error (``rate_limit_error``, code ``rate_limit_exceeded``) with
``Retry-After`` (seconds until the oldest request leaves the window).

Keys are never stored: the counter is named by the first 32 hex digits of the key's SHA-256.
With a Redis URL (``--redis-url`` or the config's ``general_settings.redis_url``) the counts
live in Redis, one limit over every worker and instance; without one they live in each
process's memory (with ``--workers N`` a key may then send up to N times the limit).
The limit text is ``limits``' notation: ``60/minute``, ``1000/hour``, ``10/second;100/day``.
"""

from __future__ import annotations

import hashlib
import time

from flask import request

from ..errors import MissingExtraError, RateLimitError

#: Paths never limited (monitoring and docs).
EXEMPT = ("/health", "/metrics", "/stats", "/docs")


def key_id(key: str) -> str:
    """The name a key's counter is stored under: 32 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class InboundLimiter:
    """Per-key limits over one ``limits`` storage (``memory://`` or a Redis URL).

    Raises (at construction): ValueError for a limit text ``limits`` cannot read;
    MissingExtraError when ``limits`` is not installed.
    """

    def __init__(self, text: str, storage_url: str | None = None):
        try:
            from limits import parse_many
            from limits.storage import storage_from_string
            from limits.strategies import MovingWindowRateLimiter
        except ImportError:
            raise MissingExtraError.for_extra("--rate-limit", "gateway", "limits") from None
        try:
            self.items = parse_many(text)
        except ValueError as exc:
            raise ValueError(f"--rate-limit {text!r}: {exc} (e.g. 60/minute)") from None
        self.text = text
        self.shared = bool(storage_url)
        storage = storage_from_string(storage_url or "memory://",
                                      **({"key_prefix": "optillm-inbound"} if storage_url
                                         else {}))
        self.limiter = MovingWindowRateLimiter(storage)

    def check(self, client: str) -> None:
        """Count one request of ``client`` (a key id or an address).

        Raises: RateLimitError (429, ``retry_after`` set) when it is over a limit.
        """
        for item in self.items:
            if not self.limiter.hit(item, client):
                stats = self.limiter.get_window_stats(item, client)
                wait = max(1.0, stats.reset_time - time.time())
                raise RateLimitError(f"rate limit of {item} for this API key reached "
                                     f"(--rate-limit {self.text}); retry in {wait:.0f} s",
                                     retry_after=wait)


def install(app, text: str | None, redis_url: str | None = None) -> InboundLimiter | None:
    """Check ``text`` (``--rate-limit``) before each request of ``app``; None when unset."""
    if not text:
        return None
    limiter = InboundLimiter(text, redis_url)
    from .chat import _client_key

    @app.before_request
    def _rate_limit() -> None:
        if request.method == "OPTIONS" or request.path.startswith(EXEMPT):
            return
        key = _client_key()
        limiter.check(key_id(key) if key else f"addr:{request.remote_addr}")

    app.extensions["optillm_rate_limit"] = limiter
    return limiter
