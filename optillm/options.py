"""Per-request option fields: bounds, choices and aliases declared once, in field metadata.

API, for an approach's ``Options`` dataclass::

    from dataclasses import dataclass
    from ..options import opt

    @dataclass(frozen=True)
    class Options:
        best_of_n: int = opt(3, ge=1, le=32)                   # 1 <= best_of_n <= 32
        mcts_simulations: int = opt(2, ge=1, le=32, aliases=("simulations",))
        readurls_timeout: float = opt(10.0, gt=0, le=60, unit="seconds")
        tts_mode: str = opt("offline", choices=("offline", "online"))
        tts_warmup: int | None = opt(None, ge=1)                 # None is never range-checked

        def __post_init__(self):            # only checks bounds cannot say (cross-field)
            ...                              # raise ValueError -> 400

``opt(default, *, ge, le, gt, lt, choices, aliases, unit, default_factory)`` returns a
``dataclasses.field`` whose ``metadata[KEY]`` is a ``Spec``. ``Registry.build_options`` (in
``optillm.plan.registry``) reads each field from its name or any alias (an alias is another
name a client may send, e.g. OptiLLM's), checks its type, then ``Spec.check(name, value)``:
a value outside the range raises ``BadRequestError`` (400, ``param`` = the name the client sent,
code ``invalid_option``) saying the allowed range. A plain ``dataclasses`` default has no
bounds and no aliases.

An ``Options`` class may also declare ``UNSUPPORTED: ClassVar[Mapping[str, str]]``: option
names OptiLLM accepts for that approach that have no counterpart here, each with the reason;
a request sending one is a 400 naming it (``param``, code ``unsupported_option``) instead of a
silently ignored field.

Module-level helpers: ``spec(field)`` (its ``Spec`` or None), ``accepted_names(cls)`` (field
names and aliases: what the proxy consumes from a body for that approach), ``unsupported(cls)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadRequestError

#: The ``dataclasses.field`` metadata key holding a field's ``Spec``.
KEY = "optillm"
#: The error code of an option outside its range or choices.
CODE = "invalid_option"
#: The error code of an OptiLLM option name this approach has no counterpart for.
UNSUPPORTED_CODE = "unsupported_option"


@dataclass(frozen=True)
class Spec:
    """What values one option accepts. Bounds apply to numbers, ``choices`` to any value;
    ``None`` (for an optional field) is never checked. ``unit`` is only for messages."""

    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    aliases: tuple[str, ...] = ()
    unit: str = ""

    @property
    def bounded(self) -> bool:
        return any(b is not None for b in (self.ge, self.le, self.gt, self.lt, self.choices))

    def describe(self) -> str:
        """The allowed values in words: ``"between 1 and 32"``, ``"one of 'a', 'b'"``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        unit = f" {self.unit}" if self.unit else ""
        if self.ge is not None and self.le is not None:
            return f"between {_num(self.ge)} and {_num(self.le)}{unit}"
        parts = []
        if self.ge is not None:
            parts.append(f"at least {_num(self.ge)}")
        if self.gt is not None:
            parts.append(f"more than {_num(self.gt)}")
        if self.le is not None:
            parts.append(f"at most {_num(self.le)}")
        if self.lt is not None:
            parts.append(f"less than {_num(self.lt)}")
        return " and ".join(parts) + unit if parts else "any value"

    def allows(self, value: Any) -> bool:
        """True when ``value`` (already of the field's type) is inside the range/choices."""
        if value is None:
            return True
        if self.choices is not None and value not in self.choices:
            return False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and math.isnan(value):
                return not self.bounded
            checks = ((self.ge, lambda b: value >= b), (self.le, lambda b: value <= b),
                      (self.gt, lambda b: value > b), (self.lt, lambda b: value < b))
            return all(bound is None or ok(bound) for bound, ok in checks)
        return True

    def check(self, name: str, value: Any) -> None:
        """Raises: BadRequestError (400, ``param=name``) naming the allowed values."""
        if not self.allows(value):
            raise BadRequestError(f"{name} must be {self.describe()}, got {value!r}",
                                  param=name, code=CODE)


def opt(default: Any = dataclasses.MISSING, *, ge: float | None = None,
        le: float | None = None, gt: float | None = None, lt: float | None = None,
        choices: Iterable[Any] | None = None, aliases: Iterable[str] = (), unit: str = "",
        default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a default and a ``Spec`` in its metadata (see the module doc).

    Raises: ValueError when the default itself falls outside the declared range (a
    programming error, caught at import).
    """
    spec = Spec(ge=ge, le=le, gt=gt, lt=lt,
                choices=tuple(choices) if choices is not None else None,
                aliases=tuple(aliases), unit=unit)
    if default is not dataclasses.MISSING and not spec.allows(default):
        raise ValueError(f"default {default!r} is not {spec.describe()}")
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={KEY: spec})


def spec(field: dataclasses.Field) -> Spec | None:
    """The field's ``Spec`` (from ``opt``), else None."""
    found = field.metadata.get(KEY)
    return found if isinstance(found, Spec) else None


def names_of(field: dataclasses.Field) -> tuple[str, ...]:
    """The names a client may send for ``field``: its own, then its aliases."""
    found = spec(field)
    return (field.name, *(found.aliases if found else ()))


def accepted_names(options: type | None) -> frozenset[str]:
    """Every body field an ``Options`` dataclass reads (names and aliases)."""
    if options is None:
        return frozenset()
    return frozenset(n for f in dataclasses.fields(options) for n in names_of(f))


def unsupported(options: type | None) -> Mapping[str, str]:
    """``{name: reason}`` of the option names ``options`` refuses (its ``UNSUPPORTED``)."""
    found = getattr(options, "UNSUPPORTED", None) if options is not None else None
    return dict(found) if isinstance(found, Mapping) else {}


def refuse_unsupported(options: type | None, slug: str, *sources: Mapping[str, Any]) -> None:
    """Raises: BadRequestError (400, ``param`` = the name) when a source holds one of the
    names ``options`` declares ``UNSUPPORTED``."""
    for name, why in unsupported(options).items():
        if any(name in source for source in sources):
            raise BadRequestError(f"{name} is an OptiLLM option of {slug!r} that this server "
                                  f"does not support: {why}", param=name,
                                  code=UNSUPPORTED_CODE)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)
