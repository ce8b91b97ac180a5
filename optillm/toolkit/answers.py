"""Answers: turn a completion into a comparable final answer, compare answers, vote on them.

Every strategy that compares answers uses this module (``self_consistency``,
``majority_voting``, ``genselect``, the test-time scaling strategies).

- ``extract_answer(text, answer_format="auto") -> str | None``: the final answer a completion
  states, normalised. Formats (``ANSWER_FORMATS``, chosen per request as ``answer_format``):
  ``boxed`` the last ``\\boxed{...}`` (nested braces kept); ``number`` the stated or else the
  last number; ``choice`` a multiple-choice letter A-J (stated, else the last "(X)");
  ``code`` the last fenced code block; ``text`` the whole reply; ``auto`` tries, in order:
  the last ``\\boxed{}``, GSM8K's ``#### X``, "the (final) answer is X" / "**Final Answer:**
  X" / "Answer: (B)", a choice letter stated as the answer, a closing code block, then the
  last number in the text.
- ``normalize(answer) -> str``: canonical text for equality. Numbers lose thousands
  separators, a leading ``$``, a trailing ``%`` or unit word and trailing zeros
  (``"$1,234.50"`` -> ``"1234.5"``); maths loses spaces, ``$`` delimiters and ``\\left``;
  prose is lower-cased with whitespace collapsed; code (several lines) keeps case and
  indentation.
- ``equivalent(a, b) -> bool`` and ``group_answers(answers)``: equality of normalised strings,
  then mathematical equivalence checked by math-verify (Hugging Face,
  https://github.com/huggingface/Math-Verify), so ``1/2``, ``0.5`` and ``\\frac{1}{2}`` are one
  answer. math-verify is optional (the ``full`` extra); without it, equivalence is equality of
  normalised strings (``math_verify_available()`` says which).
- ``vote(answers, weights=None) -> Vote``: a weighted vote over groups of equivalent answers;
  weights are pluggable: 1 each (``count``) or per-sample ``confidence_weight(logprobs)``.

Bounded time. math-verify's own timeout uses ``signal.alarm``, which only works in the main
thread, so it is switched off (``parsing_timeout=None``, ``timeout_seconds=None``) and the time
is bounded here instead: only short answers built from numbers, operators, single-letter
variables and a small set of LaTeX commands, with exponents and factorials of at most two
digits, reach sympy (a power tower like ``9^{9^9}`` would hold the GIL for minutes in one C
call); the work runs on a daemon thread that the caller waits for at most ``timeout`` seconds,
stopping between steps once the caller gave up; and it is serialised process-wide (math-verify's
ANTLR parser shares caches between calls), so a caller that cannot get the worker in time falls
back to string equality. Pairs not compared in time stay apart. Extraction itself uses
linear-time patterns only.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import re
import textwrap
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

ANSWER_FORMATS = ("auto", "boxed", "number", "choice", "code", "text")
WEIGHTINGS = ("count", "confidence")

#: Seconds one equivalence check or one vote's equivalence pass may take (math-verify only).
MATH_TIMEOUT = 2.0
#: Longest normalised answer handed to math-verify; longer ones compare as strings.
MAX_MATH_CHARS = 80
#: Longest prose accepted as a stated answer ("the answer is Paris") in ``auto`` format.
MAX_STATED_PROSE = 60
#: Most distinct answers of one vote compared with math-verify (pairs grow quadratically).
MAX_MATH_GROUPS = 12

# -- extraction -------------------------------------------------------------------------------

_HASHES = re.compile(r"####[ \t]*([^\n]+)")
_STATED = re.compile(
    r"(?:\bfinal[ \t]+answer|\bthe[ \t]+(?:correct[ \t]+|final[ \t]+)?answer|^[ \t>*#_]*answer)"
    r"[ \t*_]*(?:is\b|[:=\uff1a])[ \t*_:\uff1a]*([^\n]+)",
    re.IGNORECASE | re.MULTILINE)
# "answer (C)", "option [B]"; a bare letter only after "is" or ":" ("answer is B.", "Answer: C")
# so that a listing like "Option A: 5 apples" is not read as a choice
_CHOICE = re.compile(
    r"(?i:\b(?:answer|option|choice))[ \t]*(?:(?i:is)\b[ \t]*)?(?:[:\uff1a*]+[ \t]*)?"
    r"(?:\(([A-J])\)|\[([A-J])\])"
    r"|(?i:\b(?:answer|option|choice))[ \t]*(?:(?i:is)\b|[:\uff1a])[ \t]*(?:[:\uff1a][ \t]*)?"
    r"(?:\*+[ \t]*)?([A-J])(?=[).:,*]|[ \t]*$)", re.MULTILINE)
_CHOICE_ONLY = re.compile(r"[(\[]?([A-J])(?:[)\]](?:[ \t].*)?|[.:][ \t].*)?")
_PAREN_CHOICE = re.compile(r"\(([A-J])\)")
_LEADING_CHOICE = re.compile(r"[(\[]?([A-J])\b")
_NUMBER = re.compile(r"(?:(?<![\w)])[-\u2212])?(?<![\w.])\$?"
                     r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?![\d.]))?")
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_EQUALS = re.compile(r"(?<![<>!=])=(?!=)")
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_LEADING_NUMBER = re.compile(r"([-\u2212]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)[ \t]+[a-zA-Z]")


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced.

    Returns None when there is none or its braces never close. Linear in ``len(text)``.
    """
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    j = i
    while j < len(text) and depth:
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
        j += 1
    return text[i:j - 1].strip() if depth == 0 else None


def last_code_block(text: str) -> str | None:
    """The body of the last fenced (```) code block; an unclosed last fence runs to the end."""
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else None


def extract_answer(text: str, answer_format: str = "auto") -> str | None:
    """The final answer stated in ``text``, normalised (see ``normalize``).

    ``answer_format`` is one of ``ANSWER_FORMATS`` (see the module docstring). Returns None
    when nothing answer-like is found (``text`` format: when the text is blank).

    Raises:
        ValueError: ``answer_format`` is not one of ``ANSWER_FORMATS``.
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {', '.join(ANSWER_FORMATS)}, "
                         f"got {answer_format!r}")
    if not text or not text.strip():
        return None
    if answer_format == "boxed":
        boxed = last_boxed(text)
        return normalize(boxed) if boxed else None
    if answer_format == "code":
        block = last_code_block(text)
        return _normalize_code(block) if block and block.strip() else None
    if answer_format == "text":
        return normalize(" ".join(text.split()))
    if answer_format == "number":
        return _number_answer(text)
    if answer_format == "choice":
        return _choice_answer(text)
    return _auto_answer(text)


def _stated(text: str) -> str | None:
    """The text after the last "#### " or, failing that, the last "the answer is"."""
    for pattern in (_HASHES, _STATED):
        matches = pattern.findall(text)
        if matches:
            stated = matches[-1].strip()
            inner = _STATED.findall(stated)  # "Final answer: the answer is 5"
            return inner[-1].strip() if inner else stated
    return None


def _clean_stated(stated: str) -> str:
    """A stated answer without the rest of its sentence, markdown and math delimiters."""
    boxed = last_boxed(stated)
    if boxed:
        return boxed
    s = _unmark(stated)
    cut = _SENTENCE_END.search(s)
    if cut:
        s = s[:cut.start()]
    s = _strip_delimiters(s.strip().rstrip(".;,").strip())
    return s


def _auto_answer(text: str) -> str | None:
    boxed = last_boxed(text)
    if boxed:
        answer = normalize(boxed)
        letter = _CHOICE_ONLY.fullmatch(answer)  # \boxed{(B)}
        return letter.group(1) if letter else answer
    stated = _stated(text)
    if stated is not None:
        answer = _interpret_stated(_clean_stated(stated))
        if answer and (len(answer) <= MAX_STATED_PROSE or _is_mathy(answer)):
            return answer  # longer prose is a sentence about the answer, not the answer
    choice = _last_choice(text)
    if choice:
        return choice
    block = last_code_block(text)
    if block and block.strip():
        tail = text[text.rfind("```") + 3:] if text.count("```") % 2 == 0 else ""
        if not re.search(r"\d", tail):
            return _normalize_code(block)
    return _last_number(text)


def _interpret_stated(s: str) -> str | None:
    """A cleaned stated answer -> a choice letter, a number, the value assigned, or the text."""
    if not s:
        return None
    letter = _CHOICE_ONLY.fullmatch(s)
    if letter:
        return letter.group(1)
    rhs = _EQUALS.split(s)[-1].strip()  # "x = 5", "3 + 4 = 7" -> the value after the last =
    if rhs:
        s = rhs
    leading = _LEADING_NUMBER.match(s)
    if leading and not _is_number_with_unit(s):
        return normalize(leading.group(1))  # "42 apples, because ..." -> 42
    answer = normalize(s)
    if not _is_mathy(answer):
        numbers = _NUMBER.findall(s)  # "I think it is 5 in total" -> 5
        if numbers:
            return normalize(numbers[0])
    return answer


def _number_answer(text: str) -> str | None:
    boxed = last_boxed(text)
    for source in (boxed, _stated(text)):
        if source:
            numbers = _NUMBER.findall(_clean_stated(source))
            if numbers:
                return normalize(numbers[0])
    return _last_number(text)


def _choice_answer(text: str) -> str | None:
    boxed = last_boxed(text)
    for source in (boxed, _stated(text)):
        if source:
            letter = _LEADING_CHOICE.match(_clean_stated(source))
            if letter:
                return letter.group(1)
    choice = _last_choice(text)
    if choice:
        return choice
    last_line = text.strip().rsplit("\n", 1)[-1]
    letter = _CHOICE_ONLY.fullmatch(_clean_stated(last_line))
    if letter:
        return letter.group(1)
    marked = _PAREN_CHOICE.findall(text)  # "I think (B), since ..."
    return marked[-1] if marked else None


def _last_choice(text: str) -> str | None:
    matches = _CHOICE.findall(text)
    if not matches:
        return None
    return next(g for g in matches[-1] if g)


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return normalize(numbers[-1]) if numbers else None


# -- normalisation ----------------------------------------------------------------------------

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


# -- equivalence ------------------------------------------------------------------------------

class _QuietNoTimeout(logging.Filter):
    """math-verify warns once that its timeout is off; here the time is bounded otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


def _math_verify() -> Any:
    """The ``math_verify`` module, or None when it is not installed."""
    try:
        module = importlib.import_module("math_verify")
    except ImportError:
        return None
    for name in ("math_verify.parser", "math_verify.grader"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietNoTimeout) for f in logger.filters):
            logger.addFilter(_QuietNoTimeout())
    return module


def math_verify_available() -> bool:
    """True when math-verify is installed, so equivalence is mathematical, not textual."""
    return _math_verify() is not None


def _math_form(key: str) -> str | None:
    """``key`` when math-verify may safely see it (short, small exponents), else None."""
    if len(key) > MAX_MATH_CHARS or "**" in key or not _is_mathy(key):
        return None
    if not re.search(r"\d|\\(?:pi|sqrt|frac|infty)", key):
        return None
    if re.search(r"\d{16,}", key) or key.count("^") > 2:
        return None
    for m in re.finditer(r"\^", key):
        after = key[m.end():]
        exponent = after[1:after.find("}")] if after.startswith("{") else after[:1]
        if not re.fullmatch(r"-?(?:\d{1,2}|[a-zA-Z])", exponent):
            return None
    for m in re.finditer(r"!", key):
        if key[m.end():m.end() + 1] == "=" or not re.search(r"(?<!\d)\d{1,2}$", key[:m.start()]):
            return None
    return key


def _plain_number(key: str) -> bool:
    return re.fullmatch(r"-?\d+(?:\.\d+)?", key) is not None


def _timeout_kwargs(fn: Callable[..., Any], *names: str) -> dict[str, None]:
    """Switch off math-verify's signal-based timeout, whatever the installed version calls it."""
    params = inspect.signature(fn).parameters
    return {name: None for name in names if name in params}


#: Process-wide: one math-verify job at a time. A limit, not data: jobs cannot be cancelled,
#: so this also keeps abandoned ones from piling up.
_SYMPY_SLOT = threading.BoundedSemaphore(1)


def _run_bounded(job: Callable[[threading.Event], None], timeout: float) -> None:
    """Run ``job(stop)`` on a daemon thread; wait at most ``timeout`` seconds, then set ``stop``.

    Only one job runs at a time in the process (``_SYMPY_SLOT``); a caller that cannot get
    the slot within ``timeout`` does not run its job.
    """
    deadline = time.monotonic() + timeout
    if not _SYMPY_SLOT.acquire(timeout=max(0.0, timeout)):
        return
    stop = threading.Event()
    done = threading.Event()

    def work() -> None:
        try:
            job(stop)
        except Exception:  # noqa: BLE001 - best effort: what was found so far stands
            logging.getLogger(__name__).debug("math-verify equivalence failed", exc_info=True)
        finally:
            _SYMPY_SLOT.release()
            done.set()

    threading.Thread(target=work, name="optillm-math-verify", daemon=True).start()
    done.wait(max(0.0, deadline - time.monotonic()))
    stop.set()


def _equivalent_pairs(keys: Sequence[str], timeout: float) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, of distinct normalised answers that math-verify finds equal
    within ``timeout`` seconds (none without math-verify)."""
    eligible = [i for i, k in enumerate(keys) if _math_form(k) is not None][:MAX_MATH_GROUPS]
    if len(eligible) < 2 or all(_plain_number(keys[i]) for i in eligible) or timeout <= 0:
        return []
    mv = _math_verify()
    if mv is None:
        return []
    found: list[tuple[int, int]] = []

    def job(stop: threading.Event) -> None:
        config = [mv.LatexExtractionConfig()]
        parse_kw = _timeout_kwargs(mv.parse, "parsing_timeout", "timeout_seconds")
        verify_kw = _timeout_kwargs(mv.verify, "timeout_seconds")
        parsed: dict[int, Any] = {}
        for i in eligible:
            if stop.is_set():
                return
            parsed[i] = mv.parse(f"${keys[i]}$", extraction_config=config, **parse_kw)
        for x, i in enumerate(eligible):
            for j in eligible[x + 1:]:
                if stop.is_set():
                    return
                if not parsed[i] or not parsed[j] or (_plain_number(keys[i])
                                                      and _plain_number(keys[j])):
                    continue
                if mv.verify(parsed[i], parsed[j], **verify_kw):
                    found.append((i, j))

    _run_bounded(job, timeout)
    return list(found)


def equivalent(a: str, b: str, *, timeout: float = MATH_TIMEOUT) -> bool:
    """True when ``a`` and ``b`` are the same answer: equal once normalised, or (math-verify
    installed) mathematically equal, decided within ``timeout`` seconds (False when not)."""
    ka, kb = normalize(a), normalize(b)
    return ka == kb or bool(_equivalent_pairs([ka, kb], timeout))


def group_answers(answers: Sequence[str | None], *, math_equivalence: bool = True,
          timeout: float = MATH_TIMEOUT) -> list[int | None]:
    """For each answer, the index of the first answer equivalent to it (None for None).

    Answers are grouped by normalised text first; then, with ``math_equivalence`` and
    math-verify installed, the distinct groups (not every pair of answers) are compared within
    ``timeout`` seconds and equivalent groups merged (transitively). Example:
    ``group_answers(["1/2", None, "0.5", "3"]) == [0, None, 0, 3]``.
    """
    keys = [None if a is None else normalize(a) for a in answers]
    first: dict[str, int] = {}
    reps: list[int | None] = []
    for i, key in enumerate(keys):
        reps.append(None if key is None else first.setdefault(key, i))
    if not math_equivalence or len(first) < 2:
        return reps
    distinct = list(first.values())
    parent = list(range(len(distinct)))

    def root(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in _equivalent_pairs([keys[i] for i in distinct], timeout):
        rx, ry = root(x), root(y)
        parent[max(rx, ry)] = min(rx, ry)  # the earliest answer represents the group
    merged = {distinct[x]: distinct[root(x)] for x in range(len(distinct))}
    return [None if r is None else merged[r] for r in reps]


# -- voting -----------------------------------------------------------------------------------

def confidence_weight(logprobs: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None
                      ) -> float:
    """A sample's confidence for a ``confidence``-weighted vote: its mean token probability,
    ``exp(mean(logprob))``, in (0, 1].

    ``logprobs``: a choice's ``logprobs`` object (``{"content": [...]}``) or its ``content``
    list of ``{"token", "logprob", ...}`` entries. Returns 0.0 when there are none.
    """
    if isinstance(logprobs, Mapping):
        logprobs = logprobs.get("content")
    values = [float(e["logprob"]) for e in logprobs or ()
              if isinstance(e, Mapping) and isinstance(e.get("logprob"), (int, float))]
    return math.exp(sum(values) / len(values)) if values else 0.0


@dataclass(frozen=True)
class Vote:
    """The outcome of a vote over extracted answers.

    Attributes:
        answer: the winning answer (as given for its first member), or None when no member
            had one.
        index: the first member whose answer won (its text is the one to return), or -1.
        weight: the winner's total weight; share: that weight over all members' weight.
        tally: total weight per distinct answer (equivalent answers merged, keyed by the
            first member's answer).
        members: indices of the members whose answers won.
        groups: per member, the index of the first member with an equivalent answer (None
            for members without one).
    """

    answer: str | None
    index: int
    weight: float
    share: float
    tally: dict[str, float]
    members: tuple[int, ...] = ()
    groups: tuple[int | None, ...] = ()


def vote(answers: Sequence[str | None], weights: Sequence[float] | None = None, *,
         math_equivalence: bool = True, timeout: float = MATH_TIMEOUT) -> Vote:
    """Weighted majority vote over groups of equivalent answers (see ``group_answers``).

    ``answers``: one per member, usually ``extract_answer`` outputs; None (no answer) counts
    toward the total weight only. ``weights`` default to 1 each (plain majority, ``count``);
    pass ``confidence_weight(...)`` values (or any non-negative scores) for a
    confidence-weighted vote. Ties go to the answer reached first.

    Raises:
        ValueError: ``weights`` differs in length from ``answers``, or a weight is negative
            or NaN.
    """
    weights = [1.0] * len(answers) if weights is None else [float(w) for w in weights]
    if len(weights) != len(answers):
        raise ValueError("answers and weights differ in length")
    if any(math.isnan(w) or w < 0 for w in weights):
        raise ValueError("weights must be non-negative numbers")
    reps = group_answers(answers, math_equivalence=math_equivalence, timeout=timeout)
    totals: dict[int, float] = {}
    for r, w in zip(reps, weights, strict=True):
        if r is not None:
            totals[r] = totals.get(r, 0.0) + w
    if not totals:
        return Vote(None, -1, 0.0, 0.0, {}, (), tuple(reps))
    winner = max(totals, key=lambda r: (totals[r], -r))
    total = sum(weights)
    tally = {str(answers[r]): w for r, w in totals.items()}
    members = tuple(i for i, r in enumerate(reps) if r == winner)
    return Vote(answers[winner], winner, totals[winner],
                totals[winner] / total if total > 0 else 0.0, tally, members, tuple(reps))
