"""Voting over extracted answers: ``vote(answers, weights=None) -> Vote``, a weighted vote over
groups of equivalent answers (``equivalence.group_answers``). Weights are pluggable: 1 each
(``count``) or per-sample ``confidence_weight(logprobs)`` (``confidence``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .equivalence import MATH_TIMEOUT, group_answers

WEIGHTINGS = ("count", "confidence")


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
