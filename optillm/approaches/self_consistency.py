"""Self-consistency: sample several reasoning paths and return the most consistent answer.

Wang et al., "Self-Consistency Improves Chain of Thought Reasoning in Language Models", arXiv
2203.11171. Samples come from one call with ``n`` (emulated where the upstream lacks it). Each
sample's final answer is extracted (``optillm.toolkit.answers``) and the majority answer wins; the
returned text is the first sample that reached it. Samples with no recognisable answer fall
back to OptiLLM's clustering by text similarity (difflib ratio at least the threshold), so
free-form questions still get the most typical reply.

Options (request body): ``self_consistency_samples`` (int, 1-64, default 5),
``self_consistency_threshold`` (float, 0-1, default 0.8).
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass

from ..options import opt
from ..toolkit.answers import extract_answer
from ..toolkit.context import Answer, RunContext

SLUG = "self_consistency"


@dataclass(frozen=True)
class Options:
    self_consistency_samples: int = opt(5, ge=1, le=64)
    self_consistency_threshold: float = opt(0.8, ge=0, le=1)


def cluster(texts: list[str], threshold: float) -> list[list[int]]:
    """Greedy clusters of indices whose texts are at least ``threshold`` similar to the
    cluster's first member; largest first (ties: earliest first)."""
    clusters: list[list[int]] = []
    for i, text in enumerate(texts):
        for c in clusters:
            if difflib.SequenceMatcher(None, texts[c[0]], text).ratio() >= threshold:
                c.append(i)
                break
        else:
            clusters.append([i])
    return sorted(clusters, key=lambda c: (-len(c), c[0]))


def select(samples: list[str], threshold: float) -> tuple[int, dict]:
    """Index of the chosen sample and the vote record."""
    answers = [extract_answer(s) for s in samples]
    votes = Counter(a for a in answers if a is not None)
    if votes:
        top = max(votes.values())
        winner = next(a for a in answers if a is not None and votes[a] == top)
        if top > 1 or len(votes) == len(samples):
            return answers.index(winner), {"method": "answer", "votes": dict(votes),
                                           "agreement": top / len(samples)}
    groups = cluster(samples, threshold)
    return groups[0][0], {"method": "similarity", "cluster_sizes": [len(g) for g in groups],
                          "agreement": len(groups[0]) / len(samples)}


def run(ctx: RunContext) -> Answer:
    samples = ctx.sample(ctx.options.self_consistency_samples,
                         temperature=ctx.sampling.get("temperature", 1.0))
    chosen, record = select(samples, ctx.options.self_consistency_threshold)
    return Answer(samples[chosen], metadata={"optillm_votes": record})
