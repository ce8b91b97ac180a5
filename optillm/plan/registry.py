"""The approach registry: slug -> ``Approach``, filled through the ``register_approaches`` hook.

An approach is a plain function ``run(ctx: RunContext) -> Answer | str | Completion`` plus a
slug and, optionally, a dataclass of per-request options whose fields are read from the request
body (flat, e.g. ``{"best_of_n": 5}``, or nested under ``"optillm"``). A field's bounds, choices
and aliases are declared once with ``optillm.options.opt`` and checked here, in
``build_options``. Dispatch is a lookup here, never a chain of ``if`` on the slug.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequestError, NotFoundError
from ..options import accepted_names, names_of, refuse_unsupported, spec

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
        self._option_names: dict[str, frozenset[str]] = {}

    def register(self, approach: Approach | Callable[..., Any] | None = None, /, **kwargs: Any
                 ) -> Approach:
        """Add an approach; ``register(fn, slug=...)`` builds the ``Approach`` for you.

        Raises:
            ValueError: the slug is empty, malformed or already registered; its options are
                not a dataclass, or two of their fields share a name or alias.
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
        if approach.options is not None:
            seen: dict[str, str] = {}
            for f in dataclasses.fields(approach.options):
                for name in names_of(f):
                    if name in seen or name in RESERVED_FIELDS:
                        raise ValueError(f"option name {name!r} of {slug!r} (field {f.name}) "
                                         f"is already taken by {seen.get(name, 'the proxy')}")
                    seen[name] = f.name
        self._approaches[slug] = approach
        self._option_names[slug] = accepted_names(approach.options)
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

    def option_names(self, slug: str) -> frozenset[str]:
        """The body fields approach ``slug`` reads (its options' names and aliases)."""
        return self._option_names.get(slug, frozenset())

    def consumed_fields(self, slugs: Iterable[str]) -> frozenset[str]:
        """The body fields a request running ``slugs`` consumes and never sends upstream:
        ``RESERVED_FIELDS`` plus those approaches' option names. Another approach's option
        names are ordinary upstream fields for this request (a plugin declaring ``seed``
        does not take ``seed`` from a ``bon`` request)."""
        names = set(RESERVED_FIELDS)
        for slug in slugs:
            names.update(self.option_names(slug))
        return frozenset(names)

    def build_options(self, approach: Approach, body: Mapping[str, Any],
                      defaults: Mapping[str, Any] | None = None) -> Any:
        """The approach's options: flat body fields, then ``body["optillm"]``, then
        ``defaults`` (what a model-name form implies, e.g. ``x-wait-6``), then the dataclass's.
        In each source a field is found by its name, then by its aliases (``opt(aliases=)``).

        Raises:
            BadRequestError: a value has the wrong type, is outside the field's declared
                bounds or choices (``param`` = the name as sent, the message the allowed
                range), or fails the options' own ``__post_init__`` checks; an OptiLLM name
                the options declare ``UNSUPPORTED`` is sent (``param`` = that name).
        """
        if approach.options is None:
            return None
        nested = body.get("optillm")
        nested = nested if isinstance(nested, dict) else {}
        defaults = defaults or {}
        refuse_unsupported(approach.options, approach.slug, body, nested)
        hints = typing.get_type_hints(approach.options)
        values = {}
        for f in dataclasses.fields(approach.options):
            found = _lookup(names_of(f), (body, nested, defaults))
            if found is None:
                continue
            sent, raw = found
            field_spec = spec(f)
            try:
                value = _coerce(raw, hints.get(f.name, Any), sent)
            except BadRequestError as exc:
                if field_spec is not None and field_spec.bounded:
                    exc.message = f"{exc.message} ({sent} must be {field_spec.describe()})"
                    exc.args = (exc.message,)
                raise
            if field_spec is not None:
                field_spec.check(sent, value)
            values[f.name] = value
        try:
            return approach.options(**values)
        except (TypeError, ValueError) as exc:
            raise BadRequestError(f"invalid options for {approach.slug}: {exc}") from None


def _lookup(names: tuple[str, ...], sources: tuple[Mapping[str, Any], ...]
            ) -> tuple[str, Any] | None:
    """``(name as found, value)`` from the first source holding any of ``names``."""
    for source in sources:
        for name in names:
            if name in source:
                return name, source[name]
    return None


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
