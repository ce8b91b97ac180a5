"""Mixture-of-agents: several candidate answers, a critique of them, then a synthesis.

Wang et al., "Mixture-of-Agents Enhances Large Language Model Capabilities", arXiv 2406.04692,
in OptiLLM's single-model form: candidates at a high temperature (one call with ``n``), one
critique call over all candidates, one synthesis call that sees candidates and critique. The
synthesis is the final call and streams. Three calls deep whatever the number of candidates.

Options (request body): ``moa_candidates`` (int, 1-16, default 3).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..context import RunContext
from ..types import Completion

SLUG = "moa"
STREAMS = True


@dataclass(frozen=True)
class Options:
    moa_candidates: int = 3

    def __post_init__(self):
        if not 1 <= self.moa_candidates <= 16:
            raise ValueError("moa_candidates must be between 1 and 16")


def _listing(candidates: list[str]) -> str:
    return "\n\n".join(f"Candidate {i}:\n{c}" for i, c in enumerate(candidates, 1))


def critique_prompt(query: str, candidates: list[str]) -> str:
    return (f"Original query: {query}\n\nHere are {len(candidates)} candidate responses to "
            f"the original query. Analyse and critique each one separately: what it gets "
            f"right, what it gets wrong, and what it misses.\n\n{_listing(candidates)}\n\n"
            f"Your critique of each candidate:")


def synthesis_prompt(query: str, candidates: list[str], critique: str) -> str:
    return (f"Original query: {query}\n\nBased on the candidate responses below and the "
            f"critique of them, write the best possible final response to the original "
            f"query. Keep what is correct, fix what is wrong.\n\n{_listing(candidates)}\n\n"
            f"Critique of the candidates:\n{critique}\n\nFinal response to the original "
            f"query:")


def run(ctx: RunContext) -> Completion:
    candidates = ctx.sample(ctx.options.moa_candidates, temperature=1.0)
    critique = ctx.complete(ctx.with_query(critique_prompt(ctx.query, candidates)),
                            temperature=0.1).text
    messages = ctx.with_query(synthesis_prompt(ctx.query, candidates, critique))
    return ctx.complete(messages, final=True, temperature=ctx.sampling.get("temperature", 0.1))
