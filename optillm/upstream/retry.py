"""Retries of failed upstream calls: which failures, how long to wait, when to stop.

One ``RetryPolicy`` per HTTP client (``OpenAIUpstream``), used by the passthrough's bytes and
by the SDK calls of approaches alike, before anything of the answer has reached the client:

- **Retried**: no answer (``UpstreamUnreachableError``: refused, reset or dropped connection)
  and the statuses 429, 500, 502 and 503. Everything else is final at once: the client's own
  4xx, a timeout (504: ``--upstream-timeout`` already passed once), a malformed answer (502).
- **Wait**: the answer's ``Retry-After`` (or ``retry-after-ms``) when it gives one, else
  exponential backoff with full jitter: a uniform draw in ``[0, min(max_backoff,
  base * 2**k))`` for the ``k``-th retry (AWS Architecture Blog, "Exponential Backoff And
  Jitter", 2015). A ``Retry-After`` longer than ``max_retry_after`` is not waited for: the
  error goes to the client at once, carrying it (a 429 with its ``Retry-After``).
- **Stop**: after ``retries`` retries, or when the wait would end past ``budget`` seconds
  from the first attempt (the upstream timeout); the last error is raised.

No state: a policy is a frozen value and ``call`` keeps its counts on the stack.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import OptillmError, UpstreamUnreachableError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Upstream statuses worth another try.
RETRY_STATUSES = frozenset({429, 500, 502, 503})


def retryable(exc: BaseException) -> bool:
    """True for a failure worth another try (see the module docstring)."""
    if isinstance(exc, UpstreamUnreachableError):
        return True
    return isinstance(exc, OptillmError) and exc.upstream_status in RETRY_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries. Units: seconds.

    Args:
        retries: retries after the first attempt (``--upstream-retries``); 0 turns them off.
        base: the first backoff's upper bound; it doubles with each retry.
        max_backoff: the largest backoff (without ``Retry-After``).
        max_retry_after: the longest ``Retry-After`` waited for.
        budget: no wait may end later than this after the first attempt (None: no bound).
    """

    retries: int = 2
    base: float = 0.2
    max_backoff: float = 4.0
    max_retry_after: float = 20.0
    budget: float | None = None

    def delay(self, retry: int, exc: OptillmError, elapsed: float) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based) after ``exc``, ``elapsed``
        seconds after the first attempt; None when it must not be retried."""
        if retry >= self.retries or not retryable(exc):
            return None
        wait = exc.retry_after
        if wait is not None:
            if wait > self.max_retry_after:
                return None
        else:
            wait = random.uniform(0.0, min(self.max_backoff, self.base * 2 ** retry))
        if self.budget is not None and elapsed + wait > self.budget:
            return None
        return wait

    def call(self, attempt: Callable[[], T], *, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> T:
        """``attempt()`` until it returns, or until a failure that must not be retried.

        Raises: the last attempt's error (an ``OptillmError``; other exceptions at once).
        """
        try:
            return attempt()  # the happy path: no clock read, no loop
        except OptillmError as exc:
            error = exc
        start = clock()
        retry = 0
        while True:
            wait = self.delay(retry, error, clock() - start)
            if wait is None:
                raise error
            log.info("upstream call failed (%s); retry %d of %d in %.2f s", error.message,
                     retry + 1, self.retries, wait)
            sleep(wait)
            retry += 1
            try:
                return attempt()
            except OptillmError as exc:
                error = exc


NO_RETRIES = RetryPolicy(retries=0)
