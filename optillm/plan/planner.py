"""The plan parser: which approaches a request asks for, on which base model.

Precedence (first that applies): the body's ``optillm_approach``; an
``<optillm_approach>x</optillm_approach>`` tag in a system or user message (removed before the
request goes upstream); the body's ``tts_strategy`` (the test-time-scaling service's fields,
served by ``deepconf`` when it is registered); the model name (``parse_model`` hook:
plugins' forms first, then the built-in prefix form); the server's ``--approach`` when it
is not ``auto``; else passthrough.

Model-name forms of the built-in parser::

    moa-gpt-4o-mini          single: moa on gpt-4o-mini
    moa&re2-gpt-4o-mini      sequence: each stage's answer becomes the next stage's query
    bon|moa-gpt-4o-mini      parallel: one choice per approach

A prefix counts only when every part of it is a registered slug, so ``llama-3-8b`` stays a
model name; a prefix joined by ``&``/``|`` naming an unknown approach is a 404.

``auto`` (OptiLLM's default approach) is not an approach but this very decision: the body's
``optillm_approach: "auto"`` and the ``auto-<model>`` prefix mean "as the rest says" (the
tag, the model name, else passthrough), the same as ``--approach auto``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from ..errors import BadRequestError, NotFoundError
from ..hookspecs import hookimpl
from ..types import PARALLEL, SEQUENCE, SINGLE, Message, Plan
from .registry import Registry

__all__ = ["AUTO", "PARALLEL", "SEQUENCE", "SINGLE", "Plan", "PrefixParser",
           "cached_plan_for_model", "extract_tag", "parse_plan", "parse_prefix",
           "plan_for_model", "split_slugs"]

AUTO = "auto"
ROUTED_AUTO = "router"  # what --approach auto becomes with --router-table
_TAG = re.compile(r"<optillm_approach>\s*(.*?)\s*</optillm_approach>", re.DOTALL)


def split_slugs(spec: str) -> tuple[str, tuple[str, ...]]:
    """``"moa&re2"`` -> (SEQUENCE, ("moa", "re2")). Mixing ``&`` and ``|`` is a 400."""
    if "&" in spec and "|" in spec:
        raise BadRequestError(f"cannot mix '&' and '|' in {spec!r}", param="model")
    if "&" in spec:
        return SEQUENCE, tuple(s.strip() for s in spec.split("&"))
    if "|" in spec:
        return PARALLEL, tuple(s.strip() for s in spec.split("|"))
    return SINGLE, (spec.strip(),)


def _check_known(slugs: tuple[str, ...], registry: Registry, where: str) -> None:
    unknown = [s for s in slugs if s not in registry]
    if unknown:
        raise NotFoundError(f"unknown approach {unknown[0]!r} in {where}; known approaches: "
                            f"{', '.join(registry)}", param="model", code="approach_not_found")


def parse_prefix(model: str, registry: Registry) -> Plan | None:
    """The built-in ``<slugs>-<model>`` form, or None when the model has no approach prefix.

    The longest head whose parts are all registered slugs wins (slugs may contain dashes).
    """
    best: Plan | None = None
    bad_combination: tuple[str, ...] | None = None
    for i, ch in enumerate(model):
        if ch != "-" or i == 0 or i == len(model) - 1:
            continue
        head = model[:i]
        op, slugs = split_slugs(head) if ("&" in head or "|" in head) else (SINGLE, (head,))
        if all(s in registry for s in slugs):
            best = Plan(op, slugs, model[i + 1:])
        elif op != SINGLE and any(s in registry for s in slugs):
            bad_combination = bad_combination or slugs
    if best is None and bad_combination:
        _check_known(bad_combination, registry, f"model {model!r}")
    return best


class PrefixParser:
    """The default ``parse_model`` implementation, registered ``trylast``."""

    @hookimpl(trylast=True)
    def parse_model(self, model, registry):
        return parse_prefix(model, registry)


def extract_tag(messages: tuple[Message, ...]) -> tuple[str | None, tuple[Message, ...]]:
    """Find and remove ``<optillm_approach>`` in system/user messages (the last tag wins)."""
    found = None
    out = []
    for m in messages:
        if m.role in ("system", "developer", "user") and isinstance(m.content, str) \
                and "<optillm_approach>" in m.content:
            tags = _TAG.findall(m.content)
            if tags:
                found = tags[-1]
                m = Message(m.role, _TAG.sub("", m.content).strip(), m.extra)
        out.append(m)
    return (found, tuple(out)) if found is not None else (None, messages)


@functools.lru_cache(maxsize=1024)
def cached_plan_for_model(model: str, registry: Registry, hook=None,
                          default_approach: str = "auto",
                          default_model: str | None = None) -> Plan:
    """``plan_for_model``, remembered for the last 1,024 distinct arguments: the passthrough
    asks it on every request, and a plan depends only on the name, the registry and the
    plugins' ``parse_model`` hooks, all fixed once the app is built. Errors are not cached.
    """
    return plan_for_model(model, registry, hook, default_approach, default_model)


def plan_for_model(model: str, registry: Registry, hook=None, default_approach: str = "auto",
                   default_model: str | None = None) -> Plan:
    """The plan a model name implies (plugins' forms, the prefix form, the server default).

    Raises:
        NotFoundError: an unknown approach is named. BadRequestError: a malformed spec.
    """
    if model.startswith(AUTO + "-") and AUTO not in registry and len(model) > len(AUTO) + 1:
        model = model[len(AUTO) + 1:]  # auto-<model>: as the rest of the name says
        # with --router-table the server's auto is the learned router (Settings)
        default_approach = default_approach if default_approach == ROUTED_AUTO else AUTO
    parsed = hook.parse_model(model=model, registry=registry) if hook is not None \
        else parse_prefix(model, registry)
    if parsed:
        return parsed
    if model in registry and default_model:
        return Plan(SINGLE, (model,), default_model)
    if default_approach and default_approach != "auto":
        op, slugs = split_slugs(default_approach)
        _check_known(slugs, registry, "--approach")
        return Plan(op, slugs, model)
    return Plan(SINGLE, ("none",), model)


def parse_plan(model: str, body: Mapping[str, Any], messages: tuple[Message, ...],
               registry: Registry, hook=None, default_approach: str = "auto",
               default_model: str | None = None) -> tuple[Plan, tuple[Message, ...]]:
    """Decide the plan of a request; returns it with the messages (tag removed).

    Raises:
        NotFoundError: an unknown approach is named. BadRequestError: a malformed spec.
    """
    tag, messages = extract_tag(messages)
    spec = body.get("optillm_approach")
    if spec is not None and not isinstance(spec, str):
        raise BadRequestError("'optillm_approach' must be a string", param="optillm_approach")
    spec = spec or tag
    if spec is not None and spec.strip() == AUTO and AUTO not in registry:
        spec = None  # "auto" (body or tag): decide as if nothing were named
    if not spec and body.get("tts_strategy") is not None and "deepconf" in registry:
        spec = "deepconf"  # the test-time-scaling service's request fields (tts_*)
    if spec:
        op, slugs = split_slugs(spec)
        _check_known(slugs, registry, "optillm_approach" if body.get("optillm_approach")
                     else "the <optillm_approach> tag")
        from_model = plan_for_model(model, registry, hook, "auto", default_model)
        return Plan(op, slugs, from_model.model, from_model.options), messages
    return plan_for_model(model, registry, hook, default_approach, default_model), messages
