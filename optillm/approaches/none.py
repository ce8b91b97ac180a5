"""Passthrough: the request goes to the upstream as the client sent it.

The HTTP route relays bytes for this approach (the hot path); this module serves it when the
typed path is needed (``n > 1`` with exact usage, ``&``/``|`` combinations, batch mode).
"""

from __future__ import annotations

from ..toolkit.context import RunContext
from ..types import Completion

SLUG = "none"
STREAMS = True
SERVES_N = True


def run(ctx: RunContext) -> Completion:
    n = ctx.request.n
    return ctx.complete(n=n, answer=True, final=n == 1)
