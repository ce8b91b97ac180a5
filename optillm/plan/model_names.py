"""The model-name forms beyond the prefix form: each turns a model string into a ``Plan``.

Registered by the plugin manager (``optillm.plan.loader``) as one ``parse_model`` hook; a
plugin's own forms run before it, the prefix form (``moa-gpt-4o``, ``planner.PrefixParser``)
after it, and ``profile/<name>`` of the ``--config`` profiles (``profiles.ProfileParser``)
first. The forms, in the order tried::

    qwen-wait-6                     wait on qwen, wait_rounds=6 (TTC-LLM's proxy; N in 1..20)
    composite/moa/gpt-4o            moa on gpt-4o (Composite LLM; the model may have slashes)
    composite/moa&re2/gpt-4o        a sequence, as in the prefix form (``|``: parallel)
    profile/<name>                  404 here: only reached when no profiles are configured
    council/gpt-4o                  council on gpt-4o (``council-gpt-4o`` is the prefix form)

Each form names its approach by slug and steps aside (returns None) when that approach is not
registered; a form that names an unknown approach is a 404, a malformed one a 400.
"""

from __future__ import annotations

import re

from ..approaches.council import SLUG as COUNCIL
from ..approaches.wait import MAX_ROUNDS as MAX_WAIT_ROUNDS
from ..approaches.wait import SLUG as WAIT
from ..errors import BadRequestError, NotFoundError
from ..hookspecs import hookimpl
from ..types import SINGLE, Plan
from .planner import parse_prefix, split_slugs
from .registry import Registry

COUNCIL_PREFIX = "council/"
COMPOSITE = "composite/"
PROFILE = "profile/"

_WAIT_SUFFIX = re.compile(r"^(?P<base>.+)-wait-(?P<rounds>[0-9]+)$")


def wait_suffix(model: str, registry: Registry) -> Plan | None:
    """``<model>-wait-N`` -> ``Plan(SINGLE, ("wait",), model, {"wait_rounds": N})``.

    Only a numeric N counts (``foo-wait-x`` stays a model name). ``wait-<model>-wait-N`` is
    the same plan.

    Raises: ``BadRequestError`` when N is outside 1..20, or the name also carries another
    approach prefix (``moa-gpt-4o-wait-3``), which has no defined meaning.
    """
    match = _WAIT_SUFFIX.match(model)
    if match is None or WAIT not in registry:
        return None
    base, digits = match.group("base"), match.group("rounds")
    rounds = int(digits) if len(digits) < 10 else 10 ** 10  # no 5,000-digit int() here
    if not 1 <= rounds <= MAX_WAIT_ROUNDS:
        raise BadRequestError(f"model {model!r}: the -wait-N suffix takes 1 to "
                              f"{MAX_WAIT_ROUNDS} rounds, got {digits[:12]}", param="model",
                              code="integer_out_of_range")
    prefixed = parse_prefix(base, registry)
    if prefixed is not None:
        if prefixed.slugs != (WAIT,):
            raise BadRequestError(f"model {model!r}: the -wait-N suffix cannot be combined "
                                  f"with another approach ({prefixed.label!r}); use either "
                                  f"'{base}' or '{prefixed.model}-wait-{rounds}'",
                                  param="model")
        base = prefixed.model
    return Plan(SINGLE, (WAIT,), base, {"wait_rounds": rounds})


def profile_name(model: str) -> str | None:
    """The name in ``profile/<name>`` or ``composite/profile/<name>``, else None."""
    for prefix in (PROFILE, COMPOSITE + PROFILE):
        if model.startswith(prefix):
            return model[len(prefix):]
    return None


def composite(model: str, registry: Registry) -> Plan | None:
    """``composite/<strategy>/<model>`` -> the strategy's plan on ``<model>``; ``profile/<name>``
    (reached only when no ``ProfileParser`` answered) -> 404, no profiles configured.

    Raises: NotFoundError (unknown strategy; no profiles), BadRequestError (no strategy or no
    model after ``composite/``; ``&`` and ``|`` mixed).
    """
    name = profile_name(model)
    if name is not None:
        raise NotFoundError(f"unknown profile {name!r}: no profiles are configured (the "
                            f"'profiles' section of --config)", param="model",
                            code="profile_not_found")
    if not model.startswith(COMPOSITE):
        return None
    strategy, _, base = model[len(COMPOSITE):].partition("/")
    if not strategy.strip() or not base.strip():
        raise BadRequestError(f"model {model!r}: expected 'composite/<strategy>/<model>'",
                              param="model")
    op, slugs = split_slugs(strategy)
    unknown = [s for s in slugs if s not in registry]
    if unknown:
        raise NotFoundError(f"unknown strategy {unknown[0]!r} in model {model!r}; known "
                            f"approaches: {', '.join(registry)}", param="model",
                            code="approach_not_found")
    return Plan(op, slugs, base)


def council_slash(model: str, registry: Registry) -> Plan | None:
    """``council/<model>`` -> ``council`` on ``<model>``.

    Raises: ``BadRequestError`` for ``council/`` without a model.
    """
    if not model.startswith(COUNCIL_PREFIX) or COUNCIL not in registry:
        return None
    base = model[len(COUNCIL_PREFIX):]
    if not base.strip():
        raise BadRequestError(f"model {model!r} names no base model after "
                              f"{COUNCIL_PREFIX!r}", param="model")
    return Plan(SINGLE, (COUNCIL,), base)


FORMS = (wait_suffix, composite, council_slash)


@hookimpl
def parse_model(model, registry):
    """The first of ``FORMS`` that recognises ``model``, else None (see the module docstring).

    Raises: what the recognising form raises.
    """
    for form in FORMS:
        plan = form(model, registry)
        if plan is not None:
            return plan
    return None
