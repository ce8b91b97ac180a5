"""Scoring a model's reply against a problem's reference answer.

``score(problem, text) -> Score(predicted, correct, error)``, by the problem's answer format:

- ``number`` (GSM8K, ASDiv): ``extract_answer(text, "number")``, equal to the gold number once
  normalised (``"1,234"`` == ``"1234"``, ``"$18.00"`` == ``"18"``) or mathematically equal.
- ``choice`` (ARC): ``extract_answer(text, "choice")``, the same letter as the gold one.
- ``math`` (MATH-500, AIME): the last ``\\boxed{}`` (else the ``auto`` extraction), equivalent
  to the gold answer by ``optillm.toolkit.answers.equivalent`` (math-verify:
  ``\\frac12`` == ``0.5``).
- ``code`` (HumanEval): the last fenced code block (else the whole reply) is run with the
  problem's tests in ``optillm.toolkit.sandbox.run_python`` (a separate process with time and
  memory limits, no network); correct when the process exits with status 0.

Malformed replies never raise: no answer found scores as wrong with ``predicted=None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..toolkit.answers import equivalent, extract_answer, last_code_block, normalize
from .datasets import Problem

#: Seconds and megabytes one HumanEval program may use.
CODE_TIMEOUT = 10.0
CODE_MEMORY_MB = 512
#: Longest predicted code kept in a result record.
MAX_PREDICTED_CHARS = 4000


@dataclass(frozen=True)
class Score:
    """``predicted``: the extracted answer (None when there was none); ``correct``;
    ``error``: why code failed (the sandbox's one-line reason or stderr tail), else None."""

    predicted: str | None
    correct: bool
    error: str | None = None


def score(problem: Problem, text: str | None) -> Score:
    """Score the reply ``text`` (None or blank: wrong) for ``problem``.

    Raises: ValueError for an unknown answer format (a programming error, not model output).
    """
    text = text or ""
    fmt = problem.answer_format
    if fmt == "code":
        return score_code(problem, text)
    if fmt == "number":
        predicted = extract_answer(text, "number")
    elif fmt == "choice":
        predicted = extract_answer(text, "choice")
        return Score(predicted, predicted is not None and predicted == problem.gold.strip())
    elif fmt == "math":
        predicted = extract_answer(text, "boxed") or extract_answer(text, "auto")
    else:
        raise ValueError(f"unknown answer format {fmt!r}")
    return Score(predicted, predicted is not None and same_answer(predicted, problem.gold))


def same_answer(predicted: str, gold: str) -> bool:
    """Equal once normalised, or mathematically equivalent (bounded time; see answers)."""
    if normalize(predicted) == normalize(gold):
        return True
    try:
        return equivalent(predicted, gold)
    except Exception:  # noqa: BLE001 - a parser failure on model output is a wrong answer
        return False


def program_for(problem: Problem, code: str) -> str:
    """The program that tests ``code`` for a HumanEval problem.

    A completion that defines the entry point is appended after the prompt (so the prompt's
    imports and helper functions stay defined and the new definition wins); one that does
    not is taken as the function's body and appended to the prompt directly.
    """
    prompt, entry = problem.extra["prompt"], problem.extra["entry_point"]
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        body = f"{prompt}\n    pass\n\n{code}"
    else:
        body = prompt + code
    return f"{body}\n\n{problem.extra['test']}\n\ncheck({entry})\n"


def score_code(problem: Problem, text: str) -> Score:
    from ..toolkit.sandbox import run_python  # imported here: only HumanEval runs code

    block = last_code_block(text)
    code = block if block and block.strip() else text
    if not code.strip():
        return Score(None, False, "no code in the reply")
    result = run_python(program_for(problem, code), timeout=CODE_TIMEOUT,
                        memory_mb=CODE_MEMORY_MB)
    predicted = code[:MAX_PREDICTED_CHARS]
    if result.ok:
        return Score(predicted, True)
    reason = result.error or (result.stderr.strip().splitlines() or ["failed"])[-1]
    return Score(predicted, False, reason[:300])
