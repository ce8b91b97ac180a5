"""``longcepo``: long-context planning and map-reduce (after Cerebras' LongCePO, the long-context
variant of CePO; written fresh here).

The last user message is read as context plus a question (its last non-empty line, as in
``memory``). Steps:

1. **plan** (1 call): the question is broken into at most ``longcepo_subquestions``
   sub-questions, one per line (garbage falls back to the question alone);
2. **map** (one call per chunk, concurrent): each chunk of about ``longcepo_chunk_chars``
   characters (at most ``longcepo_max_chunks``) is read for the sub-questions; chunks that say
   ``NONE`` are dropped;
3. **collapse** (concurrent calls per level, at most ``longcepo_collapse_levels`` levels):
   while the mapped notes exceed ``longcepo_collapse_chars`` they are grouped into pieces of
   that size and each group is merged into one shorter note;
4. **reduce** (1 call, final, streamed): the answer from the plan and the notes, with the
   rest of the conversation (system prompt, earlier turns) as it was.

A message without context is answered directly (1 call).

Calls: ``1 + chunks + collapses + 1`` where ``chunks = min(ceil(len(context) /
longcepo_chunk_chars), longcepo_max_chunks)`` and ``collapses`` is the number of groups over
all collapse levels (0 when the notes fit). Critical path: ``3 + levels`` calls. Plan, map and
collapse calls set ``temperature=0``; the final call keeps the client's parameters.

Options (request body): ``longcepo_chunk_chars`` (int, 200-100000, default 4000),
``longcepo_max_chunks`` (int, 1-256, default 32), ``longcepo_subquestions`` (int, 1-10,
default 3), ``longcepo_collapse_chars`` (int, 500-200000, default 8000),
``longcepo_collapse_levels`` (int, 0-5, default 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import opt
from ..toolkit.context import Answer, BudgetExhausted, RunContext
from ..types import Completion
from .memory import chunk_text, parse_notes, split_query

SLUG = "longcepo"
STREAMS = True


@dataclass(frozen=True)
class Options:
    longcepo_chunk_chars: int = opt(4000, ge=200, le=100_000, unit="characters")
    longcepo_max_chunks: int = opt(32, ge=1, le=256)
    longcepo_subquestions: int = opt(3, ge=1, le=10)
    longcepo_collapse_chars: int = opt(8000, ge=500, le=200_000, unit="characters")
    longcepo_collapse_levels: int = opt(2, ge=0, le=5)


def plan_prompt(question: str, k: int) -> str:
    return (f"Break the question below into at most {k} short sub-questions that, answered "
            f"together, answer it. Write one sub-question per line and nothing else.\n\n"
            f"Question: {question}")


def parse_plan(reply: str, question: str, k: int) -> list[str]:
    """Up to ``k`` sub-questions from a reply; ``[question]`` when it has none."""
    subs = [s for s in parse_notes(reply) if len(s) > 3][:k]
    return subs or [question]


def map_prompt(chunk: str, question: str, subs: list[str]) -> str:
    listing = "\n".join(f"- {s}" for s in subs)
    return (f"Read the text below. Write down what it says that answers the question or any "
            f"of its sub-questions, as short notes. If the text has nothing relevant, write "
            f"NONE.\n\nQuestion: {question}\nSub-questions:\n{listing}\n\nText:\n{chunk}\n\n"
            f"Notes:")


def collapse_prompt(notes: str, question: str) -> str:
    return (f"Merge the notes below into shorter notes, keeping every fact that helps answer "
            f"the question and dropping repetition.\n\nQuestion: {question}\n\nNotes:\n{notes}"
            f"\n\nMerged notes:")


def group(texts: list[str], size: int) -> list[str]:
    """``texts`` joined into groups of at most about ``size`` characters (each text whole)."""
    groups: list[str] = []
    for t in texts:
        if groups and len(groups[-1]) + len(t) + 2 <= size:
            groups[-1] += "\n\n" + t
        else:
            groups.append(t)
    return groups


def _is_empty(reply: str) -> bool:
    return not parse_notes(reply)


def run(ctx: RunContext) -> Answer | Completion:
    opts = ctx.options
    context, question = split_query(ctx.query)
    if not context:
        return ctx.complete(final=True)
    plan = ctx.complete(ctx.with_query(plan_prompt(question, opts.longcepo_subquestions)),
                        temperature=0).text
    subs = parse_plan(plan, question, opts.longcepo_subquestions)
    chunks = chunk_text(context, opts.longcepo_chunk_chars, opts.longcepo_max_chunks)
    mapped = ctx.map(lambda c: ctx.complete(ctx.with_query(map_prompt(c, question, subs)),
                                            temperature=0).text.strip(), chunks)
    notes = [m for m in mapped if not _is_empty(m)]
    levels = collapses = 0
    stopped = False
    while (len("\n\n".join(notes)) > opts.longcepo_collapse_chars
           and levels < opts.longcepo_collapse_levels and len(notes) > 1):
        groups = group(notes, opts.longcepo_collapse_chars)
        if len(groups) >= len(notes):
            break  # every note alone is too big to merge with another; stop collapsing
        try:
            notes = ctx.map(lambda g: ctx.complete(ctx.with_query(collapse_prompt(g, question)),
                                                   temperature=0).text.strip(), groups)
        except BudgetExhausted:
            stopped = True  # answer from the uncollapsed notes (cut to size)
            break
        levels += 1
        collapses += len(groups)
    joined = "\n\n".join(notes)[: opts.longcepo_collapse_chars * 2] or "(nothing relevant)"
    listing = "\n".join(f"- {s}" for s in subs)
    final = ctx.complete(ctx.with_query(
        f"Notes gathered from a long document:\n{joined}\n\nSub-questions considered:\n"
        f"{listing}\n\nUsing the notes, answer the question.\n\nQuestion: {question}"),
        final=True)
    meta = {"subquestions": subs, "chunks": len(chunks), "relevant_chunks":
            sum(not _is_empty(m) for m in mapped), "collapse_levels": levels,
            "collapse_calls": collapses, "stopped_early": stopped}
    return Answer(final.text, finish_reason=final.choices[0].finish_reason or "stop",
                  reasoning=f"Plan:\n{listing}\n\nNotes:\n{joined}\n\nAnswer:\n{final.text}",
                  metadata={"optillm_longcepo": meta, **ctx.budget_metadata()})
