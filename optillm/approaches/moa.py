"""Mixture-of-agents: several candidate answers, a critique of them, then a synthesis.

Wang et al., "Mixture-of-Agents Enhances Large Language Model Capabilities", arXiv 2406.04692,
in OptiLLM's single-model form: candidates at a high temperature (one call with ``n``), one
critique call over all candidates, one synthesis call that sees candidates and critique. The
synthesis is the final call and streams. Three calls deep whatever the number of candidates.

The topology may span models, as in the paper (and Composite LLM's MoA profiles):
``moa_proposers`` names the models that propose (one candidate each, concurrently, instead of
``moa_candidates`` samples of the base model) and ``moa_aggregator`` the model that critiques
and synthesises (default: the base model).

Options (request body): ``moa_candidates`` (int, 1-16, default 3), ``moa_proposers`` (list of
1-16 model names), ``moa_aggregator`` (model name).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import opt
from ..toolkit.context import RunContext
from ..types import Completion

SLUG = "moa"
STREAMS = True


MAX_CANDIDATES = 16


@dataclass(frozen=True)
class Options:
    moa_candidates: int = opt(3, ge=1, le=MAX_CANDIDATES)
    moa_proposers: list[str] | None = None
    moa_aggregator: str | None = None

    def __post_init__(self):
        proposers = self.moa_proposers
        if proposers is not None:
            if not 1 <= len(proposers) <= MAX_CANDIDATES:
                raise ValueError(f"moa_proposers must name 1 to {MAX_CANDIDATES} models")
            if not all(isinstance(m, str) and m.strip() for m in proposers):
                raise ValueError("moa_proposers must be non-empty model names")
            object.__setattr__(self, "moa_proposers", tuple(proposers))
        if self.moa_aggregator is not None and not self.moa_aggregator.strip():
            raise ValueError("moa_aggregator must be a non-empty model name")


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


def propose(ctx: RunContext) -> list[str]:
    """The candidates: one from each of ``moa_proposers`` (concurrently), else
    ``moa_candidates`` samples of the base model (one call with ``n``); temperature 1.0."""
    proposers = ctx.options.moa_proposers
    if not proposers:
        return ctx.sample(ctx.options.moa_candidates, temperature=1.0)
    return ctx.map(lambda model: ctx.complete(model=model, answer=True, temperature=1.0).text,
                   proposers)


def run(ctx: RunContext) -> Completion:
    candidates = propose(ctx)
    aggregator = ctx.options.moa_aggregator  # None: the base model
    critique = ctx.complete(ctx.with_query(critique_prompt(ctx.query, candidates)),
                            model=aggregator, temperature=0.1).text
    messages = ctx.with_query(synthesis_prompt(ctx.query, candidates, critique))
    return ctx.complete(messages, final=True, model=aggregator,
                        temperature=ctx.sampling.get("temperature", 0.1))
