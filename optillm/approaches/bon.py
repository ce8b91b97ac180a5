"""Best-of-N sampling: N candidate answers, each rated by the model, the best one returned.

After OptiLLM's ``bon``; the rating scheme is LLM-as-a-judge scoring (Zheng et al., arXiv
2306.05685). Candidates come from one call with ``n`` (emulated where the upstream lacks it);
the N ratings run concurrently, so the wall time is two calls deep whatever N is.

Options (request body): ``best_of_n`` (int, 1-32, default 3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..options import opt
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
    best = max(range(len(candidates)), key=lambda i: ratings[i])  # first of equal ratings
    return Answer(candidates[best], metadata={"optillm_votes": {"ratings": ratings,
                                                                  "chosen": best}})
