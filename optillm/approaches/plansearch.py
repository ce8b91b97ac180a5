"""PlanSearch: observations, derived observations, then natural-language plans and code.

Wang et al., "Planning In Natural Language Improves LLM Search For Code Generation", arXiv
2409.03733, as adapted by OptiLLM's ``plansearch``:

1. Observations: the model lists useful, non-obvious observations about the problem.
2. Derived observations: the model combines those into new, second-order observations.
3. Per solution (``plansearch_n`` of them, concurrently with ``ctx.map``): a natural-language
   plan built on a different focus of observations (solution ``i`` takes the ``i``-th of the
   single observations and pairs, ``focus``), then code written from that plan.

Lists are parsed by ``parse_observations``, which reads numbered and bulleted lines and falls
back to paragraphs, so a malformed reply still gives something (or nothing, and the plans are
written from the problem alone).

Calls: 2 + 2 x ``plansearch_n`` (observations 1, derived 1, per solution a plan and its code).
Critical path: 4 calls deep whatever ``plansearch_n`` is. Every call uses the client's
sampling parameters (the algorithm sets none). The answer is the first solution's code reply,
made with ``final=True`` so it streams; all solutions go in the metadata.

The reasoning trace (``return_full_response``) is the observations, then the first
solution's plan and code; the choice carries ``optillm_plansearch``: ``observations``,
``derived_observations`` and ``solutions`` (``focus``, ``plan``, ``code``, ``answer`` each).

Options (request body): ``plansearch_n`` (int, 1-8, default 1; the request's own ``n`` runs
the whole search that many times).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from ..options import opt
from ..toolkit.answers import last_code_block
from ..toolkit.context import Answer, RunContext

SLUG = "plansearch"
STREAMS = True

#: Most observations kept from one list reply.
MAX_OBSERVATIONS = 8

OBSERVATIONS_PROMPT = (
    "Here is a programming problem:\n\n{query}\n\nDo not solve it yet. List several useful, "
    "non-obvious observations about the problem that could help solve it (properties, "
    "special cases, useful techniques), as a numbered list, one observation per line.")

DERIVED_PROMPT = (
    "Here is a programming problem:\n\n{query}\n\nObservations about it:\n{observations}\n\n"
    "Combine these observations to derive new, deeper observations that follow from them. "
    "Give the new observations as a numbered list, one per line.")

PLAN_PROMPT = (
    "Here is a programming problem:\n\n{query}\n\nObservations about it:\n{observations}\n\n"
    "{focus}Using these observations, describe in natural language a step-by-step plan for "
    "solving the problem. Do not write code yet.")

CODE_PROMPT = (
    "Here is a programming problem:\n\n{query}\n\nA plan for solving it:\n{plan}\n\n"
    "Implement this plan. Give the complete code in one fenced code block.")

@dataclass(frozen=True)
class Options:
    plansearch_n: int = opt(1, ge=1, le=8)


_ITEM = re.compile(r"^\s*(?:[-*\u2022+]|\(?\d{1,2}\s*[.):]|(?:observation|step)\s*\d+\s*[.):-]?)"
                   r"\s*(.+)$", re.IGNORECASE)
_MARKUP = re.compile(r"^[*_#\s]+|[*_\s]+$")


def parse_observations(text: str, limit: int = MAX_OBSERVATIONS) -> list[str]:
    """The items of a numbered (``1.``, ``2)``, ``(3)``, ``Observation 4:``) or bulleted
    (``-``, ``*``, ``•``) list in ``text``, markdown emphasis removed, duplicates dropped, at
    most ``limit``. Without list lines: the text's paragraphs (short ones dropped). [] for
    blank text."""
    items: list[str] = []
    for line in (text or "").splitlines():
        m = _ITEM.match(line)
        if m:
            item = _MARKUP.sub("", m.group(1)).strip()
            if item and any(ch.isalnum() for ch in item):
                items.append(item)
    if not items:
        items = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text or "")
                 if len(p.strip()) >= 12]
    seen: list[str] = []
    for item in items:
        if item.lower() not in (s.lower() for s in seen):
            seen.append(item)
    return seen[:limit]


def focus(observations: list[str], i: int) -> list[str]:
    """The observations solution ``i`` is asked to build on: the single observations, then
    the pairs, in order, cycling when there are fewer than ``i + 1``; [] without any."""
    if not observations:
        return []
    options = [[o] for o in observations]
    options += [list(p) for p in itertools.combinations(observations, 2)]
    return options[i % len(options)]


def _numbered(items: list[str]) -> str:
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1)) or "(none)"


def run(ctx: RunContext) -> Answer:
    query = ctx.query
    first_text = ctx.complete(ctx.with_query(OBSERVATIONS_PROMPT.format(query=query))).text
    first = parse_observations(first_text)
    derived_text = ctx.complete(ctx.with_query(DERIVED_PROMPT.format(
        query=query, observations=_numbered(first)))).text
    derived = [d for d in parse_observations(derived_text)
               if d.lower() not in (o.lower() for o in first)]
    everything = first + derived

    def solve(i: int) -> dict:
        chosen = focus(everything, i)
        hint = (f"Build your plan mainly on: {'; '.join(chosen)}\n\n" if chosen else "")
        plan = ctx.complete(ctx.with_query(PLAN_PROMPT.format(
            query=query, observations=_numbered(everything), focus=hint))).text.strip()
        code_prompt = CODE_PROMPT.format(query=query, plan=plan)
        # the first solution is the answer: its call streams to the client
        reply = ctx.complete(ctx.with_query(code_prompt), answer=True, final=i == 0)
        block = last_code_block(reply.text)
        return {"focus": chosen, "plan": plan, "answer": reply.text,
                "code": block.strip() if block else None,
                "finish_reason": (reply.choices[0].finish_reason if reply.choices else None)}

    solutions = ctx.map(solve, range(ctx.options.plansearch_n))
    best = solutions[0]
    trace = (f"Observations:\n{_numbered(first)}\n\nDerived observations:\n"
             f"{_numbered(derived)}\n\nPlan:\n{best['plan']}\n\n{best['answer']}")
    metadata = {"optillm_plansearch": {
        "observations": first, "derived_observations": derived,
        "solutions": [{k: s[k] for k in ("focus", "plan", "code", "answer")}
                      for s in solutions]}, **ctx.budget_metadata()}
    return Answer(best["answer"], finish_reason=best["finish_reason"] or "stop",
                  reasoning=trace, metadata=metadata)
