"""Answer equivalence: ``equivalent(a, b)`` and ``group_answers(answers)``.

Equality of normalised strings, then mathematical equivalence checked by math-verify (Hugging
Face, https://github.com/huggingface/Math-Verify), so ``1/2``, ``0.5`` and ``\\frac{1}{2}`` are
one answer. math-verify is optional (the ``full`` extra); without it, equivalence is equality
of normalised strings (``math_verify_available()`` says which).

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
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .normalization import _is_mathy, normalize

#: Seconds one equivalence check or one vote's equivalence pass may take (math-verify only).
MATH_TIMEOUT = 2.0
#: Longest normalised answer handed to math-verify; longer ones compare as strings.
MAX_MATH_CHARS = 80
#: Most distinct answers of one vote compared with math-verify (pairs grow quadratically).
MAX_MATH_GROUPS = 12


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
