"""Answer normalisation: canonical text for equality (``normalize``).

Numbers lose thousands separators, a leading ``$``, a trailing ``%`` or unit word and trailing
zeros (``"$1,234.50"`` -> ``"1234.5"``); maths loses spaces, ``$`` delimiters and ``\\left``;
prose is lower-cased with whitespace collapsed; code (several lines) keeps case and
indentation. ``_is_mathy`` (digits, operators, single-letter variables and known LaTeX commands
only) also decides what extraction and equivalence treat as maths.
"""

from __future__ import annotations

import re
import textwrap
from decimal import Decimal, InvalidOperation

_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_UNIT = r"(?:%|[a-zA-Z]{2,}(?:[ ./][a-zA-Z]+)*(?:\^?[23\u00b2\u00b3])?|[ \t][a-zA-Z](?![\w^]))"
_NUMBER_WITH_UNIT = re.compile(
    r"([-+]?)[ \t]*\$?[ \t]*(-?)[ \t]*((?:\d{1,3}(?:,\d{3})+|\d*)(?:\.\d+)?)[ \t]*"
    r"(" + _UNIT + r")?")
_MATH_WORDS = frozenset({"pi", "sqrt", "frac", "infty", "inf", "ln", "log", "sin", "cos", "tan",
                         "exp", "mod"})
_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)"
                             r"[ \t]*\{([^{}]*)\}")
_LATEX_SPACING = re.compile(r"\\[,;:! ]|\\(?:left|right|displaystyle)(?![a-zA-Z])|"
                            r"\^\{?\\circ\}?|\u00b0")
_MATH_COMMANDS = frozenset({
    "frac", "sqrt", "pi", "cdot", "times", "div", "infty", "pm", "mp", "le", "leq", "ge",
    "geq", "ne", "neq", "lt", "gt", "theta", "alpha", "beta", "gamma", "sin", "cos", "tan",
    "log", "ln", "exp", "cup", "cap"})
_MATH_CHARS = re.compile(r"[0-9A-Za-z \t+\-*/^_(){}\[\].,=<>|!%:'\\]*")
_COMMAND = re.compile(r"\\([a-zA-Z]+)")


def normalize(answer: str) -> str:
    """Canonical text of an answer, for equality (idempotent).

    Numbers: ``"$1,234.50"`` -> ``"1234.5"``, ``"50%"`` -> ``"50"``, ``"12 cm"`` -> ``"12"``,
    ``"7.0"`` -> ``"7"``, ``"\u22123"`` -> ``"-3"``. Maths (digits, operators, single-letter
    variables, LaTeX commands): spaces, ``$``/``\\(`` delimiters, ``\\left``/``\\right``,
    ``\\text{}`` wrappers and degree signs removed, ``\\dfrac``/``\\tfrac`` -> ``\\frac``.
    Prose: lower-cased, whitespace collapsed, trailing period dropped. Several lines (code):
    trailing spaces and surrounding blank lines dropped, dedented, case kept.
    """
    if "\n" in answer.strip():
        return _normalize_code(answer)
    # one space per run first: the patterns below then never see long runs to split
    a = re.sub(r"\s+", " ", _unmark(answer)).replace("\u2212", "-")
    a = _strip_delimiters(a.strip().rstrip(".;,").strip())
    a = _LATEX_WRAPPERS.sub(r"\1", a)
    a = _LATEX_SPACING.sub(" ", a).replace("\\%", "%").replace("\\$", "$")
    a = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", a).strip().rstrip(".;,").strip()
    number = _as_number(a)
    if number is not None:
        return number
    if _is_mathy(a):
        a = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\0", a)  # keep "\pi r" apart
        return re.sub(r"\s+", "", a).replace("\0", " ")
    return re.sub(r"\s+", " ", a).lower()


def _unmark(text: str) -> str:
    """``text`` without markdown emphasis (``**x**``, ``__x__``, backticks, stray ``*``)."""
    text = _BOLD.sub(lambda m: m.group(1) or m.group(2), text.replace("`", ""))
    return text.strip().strip("*").strip()


def _strip_delimiters(a: str) -> str:
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(a) > len(left) + len(right) and a.startswith(left) and a.endswith(right):
            return a[len(left):-len(right)].strip()
    return a


def _is_number_with_unit(a: str) -> bool:
    return _as_number(a.replace("\u2212", "-")) is not None


def _as_number(a: str) -> str | None:
    """``a`` as a canonical decimal when it is one number (with currency, %, a unit word)."""
    m = _NUMBER_WITH_UNIT.fullmatch(a)
    if not m or not re.search(r"\d", m.group(3)):
        return None
    unit = (m.group(4) or "").strip()
    if unit.lower() in _MATH_WORDS or (len(unit) == 1 and unit != "%"
                                       and not m.group(0).endswith(" " + unit)):
        return None
    digits = m.group(3).replace(",", "")
    if len(digits) > 200:
        return None
    try:
        value = Decimal(digits)
    except InvalidOperation:
        return None
    if (m.group(1) == "-") != (m.group(2) == "-"):
        value = -value
    if value == value.to_integral_value():
        text = str(int(value))
    else:
        text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def _is_mathy(a: str) -> bool:
    """Digits, operators, single-letter variables and known LaTeX commands only (no words)."""
    if not a or not _MATH_CHARS.fullmatch(a):
        return False
    commands = _COMMAND.findall(a)
    if any(c not in _MATH_COMMANDS for c in commands):
        return False
    rest = _COMMAND.sub(" ", a)
    return re.search(r"[a-zA-Z]{2,}", rest) is None


def _normalize_code(code: str) -> str:
    lines = [line.rstrip() for line in code.replace("\r\n", "\n").split("\n")]
    return textwrap.dedent("\n".join(lines)).strip("\n")
