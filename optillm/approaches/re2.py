"""ReRead (RE2): the question is stated twice before the model answers.

Xu et al., "Re-Reading Improves Reasoning in Large Language Models", arXiv 2309.06275.
One upstream call; the answer streams as it is generated.
"""

from __future__ import annotations

from ..toolkit.context import RunContext
from ..types import Completion

SLUG = "re2"
STREAMS = True


def reread_prompt(query: str) -> str:
    return f"{query}\nRead the question again: {query}"


def run(ctx: RunContext) -> Completion:
    return ctx.complete(ctx.with_query(reread_prompt(ctx.query)), final=True)
