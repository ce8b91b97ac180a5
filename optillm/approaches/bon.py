"""Best-of-N sampling: N candidate answers, each rated by the model, the best one returned.

After OptiLLM's ``bon``; the rating scheme is LLM-as-a-judge scoring (Zheng et al., arXiv
2306.05685). Candidates come from one call with ``n`` (emulated where the upstream lacks it);
the N ratings run concurrently, so the wall time is two calls deep whatever N is.

Ties: among the candidates with the top rating, the one whose final answer
(``answers.extract_answer``) the most candidates share wins (self-consistency, arXiv
2203.11171), then the first. A small judge often gives every candidate the same score
(Qwen2.5-Coder-0.5B rated all three 8/10 on easy arithmetic), and "the first of equal ratings"
then returned one temperature-1.0 sample, wrong more often than greedy decoding.

Options (request body): ``best_of_n`` (int, 1-32, default 3).

Metadata on the choice, ``optillm_votes``: ``ratings`` and ``answers`` (per candidate),
``chosen`` (its index), ``tie_break`` (``"agreement"`` when the ratings tied and the
answers decided, else None).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..options import opt
from ..toolkit import answers
from ..toolkit.context import Answer, RunContext
from ..types import Message

SLUG = "bon"

RATING_PROMPT = ("Rate the following response on a scale from 0 to 10, where 0 is poor and "
                 "10 is excellent. Consider factors such as relevance, coherence, and "
                 "helpfulness. Respond with only a number.")


@dataclass(frozen=True)
class Options:
    best_of_n: int = opt(3, ge=1, le=32)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_rating(text: str) -> float:
    """The first number in a rating reply, clamped to 0-10; 0 when there is none."""
    match = _NUMBER.search(text or "")
    if not match:
        return 0.0
    return max(0.0, min(10.0, float(match.group())))


def run(ctx: RunContext) -> Answer:
    n = ctx.options.best_of_n
    candidates = ctx.sample(n, temperature=ctx.sampling.get("temperature", 1.0))
    if len(candidates) == 1:
        return Answer(candidates[0])

    def rate(candidate: str) -> float:
        messages = ctx.conversation(Message("assistant", candidate),
                                    Message("user", RATING_PROMPT))
        reply = ctx.complete(messages, max_tokens=16, temperature=0.1)
        return parse_rating(reply.text)

    ratings = ctx.map(rate, candidates)
    extracted = [answers.extract_answer(c) for c in candidates]
    best, tie_break = choose(ratings, extracted)
    return Answer(candidates[best], metadata={"optillm_votes": {
        "ratings": ratings, "answers": extracted, "chosen": best, "tie_break": tie_break}})


def choose(ratings: list[float], extracted: list[str | None]) -> tuple[int, str | None]:
    """The index of the best candidate and how a tie was broken (see the module docstring):
    the top rating; among equals, the answer most candidates share; then the first."""
    top = max(ratings)
    tied = [i for i, r in enumerate(ratings) if r == top]
    if len(tied) == 1:
        return tied[0], None
    groups = answers.group_answers(extracted)  # per candidate: its group's first index
    support = {i: sum(1 for g in groups if g is not None and g == groups[i]) for i in tied}
    best = max(tied, key=lambda i: (support[i], -i))
    return best, ("agreement" if support[best] > support[tied[0]] else None)
