"""``proxy``: OptiLLM's load-balancing plugin, as a name its clients can keep sending.

In OptiLLM 0.4.0, ``proxy`` sends a request through its own provider pool (weights, health
checks, failover, from ``proxy_config.yaml``), optionally wrapping another approach named by
the body's ``proxy_wrap`` (also ``wrapped_approach`` or ``wrap``), so that every call of that
approach goes through the pool. Here every upstream call already goes through the gateway
(``--config`` ``model_groups``: weighted round-robin, failover, cooldowns, rate limits,
``upstream/router``), so ``proxy`` means exactly that:

- with ``proxy_wrap: "<slug>"`` it runs that registered approach on the request
  (``ctx.run_approach``; an unknown slug is a 404 naming the known ones), whose calls the
  gateway routes;
- without it, the request goes to the base model as it is (one call, streamed to a streaming
  client), routed by the gateway.

OptiLLM's ``proxy_config.yaml`` providers map onto a ``model_groups`` entry of ``--config``
(``base_url``, ``api_key``, ``weight``; docs/approaches.md). Calls: the wrapped approach's,
or one. Options (request body): ``proxy_wrap`` (str, aliases ``wrapped_approach``, ``wrap``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import opt
from ..toolkit.context import Answer, RunContext
from ..types import Completion

SLUG = "proxy"
STREAMS = True


@dataclass(frozen=True)
class Options:
    proxy_wrap: str | None = opt(None, aliases=("wrapped_approach", "wrap"))


def run(ctx: RunContext) -> Answer | Completion:
    wrapped = (ctx.options.proxy_wrap or "").strip()
    if wrapped and wrapped not in ("none", SLUG):
        return ctx.run_approach(wrapped)
    return ctx.complete(answer=True, final=True)
