"""Answer extraction: turn a free-text completion into a comparable final answer.

Used wherever answers are voted on or compared (self-consistency now; the test-time scaling
strategies build on it). Recognised, in order: the last ``\\boxed{...}`` (nested braces kept),
"the (final) answer is X", GSM8K's ``#### X``, a multiple-choice letter stated as the answer,
then the last number in the text. Numbers are normalised (thousands separators, a trailing
``.0``, a leading ``$``, a trailing ``%`` or unit word) so "1,000.0 dollars" equals "1000".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_ANSWER_IS = re.compile(r"(?:final\s+answer|the\s+answer)\s*(?:is|:)\s*[:\s]*([^\n]+)",
                        re.IGNORECASE)
_HASHES = re.compile(r"####\s*([^\n]+)")
_CHOICE = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-E])\)?(?:\W|$)",
                     re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
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


def normalize(answer: str) -> str:
    """Canonical text of an answer for equality: numbers lose separators, units, ``.0``."""
    a = answer.strip().strip(".").strip()
    a = re.sub(r"^\\text\{(.*)\}$", r"\1", a)
    number = re.fullmatch(r"\$?\s*(-?[\d,]*\.?\d+)\s*(%|[a-zA-Z ]{0,20})?", a)
    if number:
        digits = number.group(1).replace(",", "")
        try:
            value = float(digits)
        except ValueError:
            return a.lower()
        return str(int(value)) if value.is_integer() else repr(value)
    return re.sub(r"\s+", " ", a).lower()


def extract_answer(text: str) -> str | None:
    """The final answer stated in ``text``, normalised; None when nothing answer-like is found."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return normalize(boxed)
    for pattern in (_HASHES, _ANSWER_IS):
        matches = pattern.findall(text)
        if matches:
            stated = matches[-1].strip()
            inner = _NUMBER.findall(stated)
            if inner and len(stated) > len(inner[0]) + 2:
                return normalize(inner[0])
            return normalize(stated)
    choice = _CHOICE.findall(text)
    if choice:
        return choice[-1].upper()
    numbers = _NUMBER.findall(text)
    if numbers:
        return normalize(numbers[-1])
    return None


@dataclass(frozen=True)
class Vote:
    """The outcome of a vote over extracted answers.

    Attributes:
        answer: the winning answer (normalised), or None when no member had one.
        index: the first member whose answer won (its text is the one to return), or -1.
        weight: the winner's total weight; share: that weight over all members' weight.
        tally: total weight per distinct answer.
    """

    answer: str | None
    index: int
    weight: float
    share: float
    tally: dict[str, float]


def vote(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> Vote:
    """Weighted majority vote; members with no answer (None) count toward the total only.

    ``weights`` default to 1 each (plain majority); pass confidences for a confidence-weighted
    vote. Ties go to the answer reached first.
    """
    weights = [1.0] * len(answers) if weights is None else [float(w) for w in weights]
    if len(weights) != len(answers):
        raise ValueError("answers and weights differ in length")
    tally: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, (a, w) in enumerate(zip(answers, weights, strict=True)):
        if a is None:
            continue
        tally[a] = tally.get(a, 0.0) + w
        first.setdefault(a, i)
    total = sum(weights)
    if not tally:
        return Vote(None, -1, 0.0, 0.0, {})
    winner = max(tally, key=lambda a: (tally[a], -first[a]))
    return Vote(winner, first[winner], tally[winner],
                tally[winner] / total if total > 0 else 0.0, tally)
