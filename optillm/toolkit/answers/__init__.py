"""Answers: turn a completion into a comparable final answer, compare answers, vote on them.

Every strategy that compares answers uses this package (``self_consistency``,
``majority_voting``, ``genselect``, the test-time scaling strategies), through this façade:
``from optillm.toolkit import answers``.

- ``extraction``: ``extract_answer(text, answer_format="auto") -> str | None``, the final
  answer a completion states, normalised (formats: ``ANSWER_FORMATS``); ``last_boxed``,
  ``last_code_block``.
- ``normalization``: ``normalize(answer) -> str``, canonical text for equality
  (``"$1,234.50"`` -> ``"1234.5"``).
- ``equivalence``: ``equivalent(a, b) -> bool`` and ``group_answers(answers)``: equal once
  normalised, or mathematically equal by math-verify (optional; ``math_verify_available()``),
  bounded in time.
- ``voting``: ``vote(answers, weights=None) -> Vote``, a weighted vote over groups of
  equivalent answers; weights 1 each (``count``) or ``confidence_weight(logprobs)``.
"""

from __future__ import annotations

from .equivalence import (
    MATH_TIMEOUT,
    MAX_MATH_CHARS,
    MAX_MATH_GROUPS,
    equivalent,
    group_answers,
    math_verify_available,
)
from .extraction import (
    ANSWER_FORMATS,
    MAX_STATED_PROSE,
    extract_answer,
    last_boxed,
    last_code_block,
)
from .normalization import normalize
from .voting import WEIGHTINGS, Vote, confidence_weight, vote

__all__ = [
    "ANSWER_FORMATS", "MATH_TIMEOUT", "MAX_MATH_CHARS", "MAX_MATH_GROUPS", "MAX_STATED_PROSE",
    "WEIGHTINGS", "Vote", "confidence_weight", "equivalent", "extract_answer", "group_answers",
    "last_boxed", "last_code_block", "math_verify_available", "normalize", "vote",
]
