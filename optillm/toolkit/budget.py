"""A request's ``Budget`` (bounds on upstream tokens and calls, shared by every ``RunContext``
of the request) and ``BudgetExhausted``, raised at the next upstream call once it is spent.

The bounds come from the body fields ``max_total_tokens`` and ``max_upstream_calls``
(``optillm.plan.pipeline.request_budget``); ``optillm.toolkit.context`` re-exports both names.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import OptillmError
from ..types import Usage


class BudgetExhausted(OptillmError):
    """The request's budget (``max_total_tokens`` / ``max_upstream_calls``) is spent. An
    approach that can answer with what it has catches it; otherwise it reaches the client as
    a 400 with code ``budget_exceeded``."""

    status = 400
    type = "invalid_request_error"
    code = "budget_exceeded"


class Budget:
    """A per-request bound on upstream work, shared by every ``RunContext`` of the request.

    ``max_total_tokens`` bounds prompt + completion tokens summed over every upstream call;
    ``max_upstream_calls`` bounds their number (a call with ``n`` counts once). None means
    unbounded. Thread-safe; one per request, never shared between requests.
    """

    def __init__(self, max_total_tokens: int | None = None,
                 max_upstream_calls: int | None = None):
        self.max_total_tokens = max_total_tokens
        self.max_upstream_calls = max_upstream_calls
        self._lock = threading.Lock()
        self.tokens = 0
        self.calls = 0
        self.pending = 0  # calls checked and started, not yet charged (``reserve``)
        self.stopped_early = False

    @property
    def bounded(self) -> bool:
        return self.max_total_tokens is not None or self.max_upstream_calls is not None

    def spend(self, usage: Usage, calls: int = 1) -> None:
        """Charge a finished call (``calls`` = 0 for usage that made no call); it settles a
        reservation made by ``check``."""
        with self._lock:
            self.tokens += usage.total_tokens
            self.calls += calls
            self.pending = max(0, self.pending - calls)

    def release(self) -> None:
        """Give back a reservation whose call failed before it could be charged."""
        with self._lock:
            self.pending = max(0, self.pending - 1)

    @property
    def exhausted(self) -> bool:
        """True once either bound is reached."""
        return ((self.max_total_tokens is not None and self.tokens >= self.max_total_tokens)
                or (self.max_upstream_calls is not None
                    and self.calls + self.pending >= self.max_upstream_calls))

    @property
    def tokens_left(self) -> int | None:
        if self.max_total_tokens is None:
            return None
        return max(0, self.max_total_tokens - self.tokens)

    def check(self, slug: str, reserve: bool = False) -> None:
        """Before an upstream call: with ``reserve``, the call is counted against
        ``max_upstream_calls`` at once (as pending, until ``spend`` or ``release``), so that
        concurrent calls of one fan-out cannot all pass the same check and overshoot it.

        Raises: BudgetExhausted (and marks the run as stopped early) once spent.
        """
        with self._lock:
            if not self.exhausted:
                if reserve and self.max_upstream_calls is not None:
                    self.pending += 1
                return
            self.stopped_early = True
            raise BudgetExhausted(
                f"approach {slug!r} spent the request's budget "
                f"({self.tokens} of {self.max_total_tokens} tokens, {self.calls} of "
                f"{self.max_upstream_calls} calls)")

    def report(self) -> dict[str, Any]:
        """``{"max_total_tokens", "max_upstream_calls", "tokens", "calls", "stopped_early"}``."""
        return {"max_total_tokens": self.max_total_tokens,
                "max_upstream_calls": self.max_upstream_calls,
                "tokens": self.tokens, "calls": self.calls,
                "stopped_early": self.stopped_early}
