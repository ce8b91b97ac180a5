"""The approach registry: slug -> ``Approach``, filled through the ``register_approaches`` hook.

An approach is a plain function ``run(ctx: RunContext) -> Answer | str | Completion`` plus a
slug and, optionally, a dataclass of per-request options whose fields are read from the request
body (flat, e.g. ``{"best_of_n": 5}``, or nested under ``"optillm"``). Dispatch is a lookup here,
never a chain of ``if`` on the slug.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequestError, NotFoundError

#: Body fields that belong to the proxy and are never sent upstream.
RESERVED_FIELDS = frozenset({"optillm_approach", "optillm", "return_full_response",
                             "max_total_tokens", "max_upstream_calls"})


@dataclass(frozen=True)
class Approach:
    """A registered approach.

    Attributes:
        slug: the name used in model prefixes and ``optillm_approach``.
        run: ``run(ctx) -> Answer | str | Completion``.
        options: a dataclass type; its fields (with defaults) are the per-request options.
        streams: True when ``run`` makes its last upstream call with ``final=True`` and
            returns that call's text unchanged, so the answer can be streamed as generated.
        serves_n: True when ``run`` answers all ``n`` choices of ``ctx.request.n`` itself
            (``none``); otherwise the pipeline runs it ``n`` times concurrently.
        description: one line for ``/v1/models`` and the docs.
        source: where it came from (module or file path), for error messages.
    """

    slug: str
    run: Callable[..., Any]
    options: type | None = None
    streams: bool = False
    serves_n: bool = False
    description: str = ""
    source: str = ""


class Registry:
    """Approaches by slug. Filled at start-up, read-only afterwards."""

    def __init__(self) -> None:
        self._approaches: dict[str, Approach] = {}
        self._option_names: frozenset[str] = frozenset()

    def register(self, approach: Approach | Callable[..., Any] | None = None, /, **kwargs: Any
                 ) -> Approach:
        """Add an approach; ``register(fn, slug=...)`` builds the ``Approach`` for you.

        Raises:
            ValueError: the slug is empty, malformed or already registered.
        """
        if not isinstance(approach, Approach):
            approach = Approach(run=approach, **kwargs)
        slug = approach.slug
        if not slug or any(ch in slug for ch in "&|/ ") or slug != slug.strip():
            raise ValueError(f"invalid approach slug {slug!r} (from {approach.source})")
        if slug in self._approaches:
            other = self._approaches[slug]
            raise ValueError(f"approach slug {slug!r} from {approach.source or '?'} is already "
                             f"registered by {other.source or '?'}")
        if approach.options is not None and not dataclasses.is_dataclass(approach.options):
            raise ValueError(f"options of {slug!r} must be a dataclass type")
        self._approaches[slug] = approach
        names = set(self._option_names)
        if approach.options is not None:
            names.update(f.name for f in dataclasses.fields(approach.options))
        self._option_names = frozenset(names)
        return approach

    def __contains__(self, slug: str) -> bool:
        return slug in self._approaches

    def __iter__(self):
        return iter(sorted(self._approaches))

    def __len__(self) -> int:
        return len(self._approaches)

    def get(self, slug: str) -> Approach:
        """Raises: NotFoundError naming the slug and the known ones."""
        try:
            return self._approaches[slug]
        except KeyError:
            raise NotFoundError(f"unknown approach {slug!r}; known approaches: "
                                f"{', '.join(sorted(self._approaches))}",
                                param="model", code="approach_not_found") from None

    @property
    def proxy_fields(self) -> frozenset[str]:
        """Every body field the proxy consumes (all approaches' options and reserved ones)."""
        return self._option_names | RESERVED_FIELDS

    def build_options(self, approach: Approach, body: Mapping[str, Any],
                      defaults: Mapping[str, Any] | None = None) -> Any:
        """The approach's options: flat body fields, then ``body["optillm"]``, then
        ``defaults`` (what a model-name form implies, e.g. ``x-wait-6``), then the dataclass's.

        Raises:
            BadRequestError: a value has the wrong type or fails the options' checks.
        """
        if approach.options is None:
            return None
        nested = body.get("optillm")
        nested = nested if isinstance(nested, dict) else {}
        defaults = defaults or {}
        hints = typing.get_type_hints(approach.options)
        values = {}
        for f in dataclasses.fields(approach.options):
            if f.name in body:
                raw = body[f.name]
            elif f.name in nested:
                raw = nested[f.name]
            elif f.name in defaults:
                raw = defaults[f.name]
            else:
                continue
            values[f.name] = _coerce(raw, hints.get(f.name, Any), f.name)
        try:
            return approach.options(**values)
        except (TypeError, ValueError) as exc:
            raise BadRequestError(f"invalid options for {approach.slug}: {exc}") from None


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Check ``value`` against a simple type hint, converting int <-> float where lossless."""
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except BadRequestError:
                continue
        raise BadRequestError(f"'{name}' has the wrong type", param=name)
    if origin is not None:
        hint = origin
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise BadRequestError(f"'{name}' must be of type {getattr(hint, '__name__', hint)}, "
                          f"got {type(value).__name__}", param=name)
