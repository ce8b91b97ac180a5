"""``deepthink``: a SELF-DISCOVER reasoning structure, then uncertainty-routed chain of thought.

SELF-DISCOVER (Zhou et al., "Self-Discover: Large Language Models Self-Compose Reasoning
Structures", arXiv 2402.03620): three calls compose a reasoning structure for the task from
``REASONING_MODULES`` — SELECT the useful modules (numbers parsed tolerantly; garbage falls
back to the first ``deepthink_modules``), ADAPT them to the task, IMPLEMENT them as a
step-by-step plan. Uncertainty-routed CoT (Gemini report, arXiv 2312.11805): ``deepthink_samples``
chain-of-thought samples that follow the plan (one call with ``n``, temperature
``deepthink_temperature``); their final answers are extracted (``optillm.toolkit.answers``) and
voted;
if the majority's share is at least ``deepthink_threshold`` its first sample is the answer,
else one greedy (temperature 0) answer call decides (final, streamed).

Calls: ``3 + 1`` when the samples agree, ``3 + 2`` when they do not (``1``/``2`` with
``deepthink_self_discover=false``). Critical path: the same (all sequential). The full trace
(plan and chosen sample) is the ``reasoning``; ``optillm_deepthink`` has the modules, the
votes, the agreement and the route (``"majority"`` / ``"greedy"``).

Options (request body): ``deepthink_samples`` (int, 1-16, default 3), ``deepthink_threshold``
(float, 0-1, default 0.6), ``deepthink_temperature`` (float, 0-2, default: the request's
``temperature``, else 0.7), ``deepthink_modules`` (int, 1-10, default 3),
``deepthink_self_discover`` (bool, default true). OptiLLM's names are aliases:
``confidence_threshold``, ``reasoning_modules_limit``, ``enable_self_discover``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..options import opt
from ..toolkit.answers import extract_answer, vote
from ..toolkit.context import Answer, RunContext

SLUG = "deepthink"

#: A subset of the paper's 39 seed reasoning modules (its Table 2), reworded.
#: The samples' temperature when neither ``deepthink_temperature`` nor the request sets one.
SAMPLE_TEMPERATURE = 0.7

REASONING_MODULES = (
    "Break the problem into smaller sub-problems and solve them in order.",
    "Think step by step, writing each intermediate result.",
    "Identify the key assumptions and check whether they hold.",
    "Work backwards from what the answer must satisfy.",
    "Consider simple special cases or examples first.",
    "Look for a known formula, rule or analogous problem.",
    "List the given facts and the unknowns explicitly.",
    "Check the result by substituting it back or estimating it.",
    "Consider alternative interpretations of the question.",
    "Think critically: look for flaws in the first idea.",
)


@dataclass(frozen=True)
class Options:
    deepthink_samples: int = opt(3, ge=1, le=16)
    deepthink_threshold: float = opt(0.6, ge=0, le=1, aliases=("confidence_threshold",))
    deepthink_temperature: float | None = opt(None, ge=0, le=2)
    deepthink_modules: int = opt(3, ge=1, le=len(REASONING_MODULES),
                                 aliases=("reasoning_modules_limit",))
    deepthink_self_discover: bool = opt(True, aliases=("enable_self_discover",))


def _modules_listing() -> str:
    return "\n".join(f"{i}. {m}" for i, m in enumerate(REASONING_MODULES, 1))


def parse_selection(reply: str, k: int) -> list[int]:
    """0-based module indices named in ``reply`` (numbers 1..N, first ``k`` distinct); the
    first ``k`` modules when it names none."""
    picked: list[int] = []
    for m in re.finditer(r"\b(\d{1,2})\b", reply or ""):
        i = int(m.group(1)) - 1
        if 0 <= i < len(REASONING_MODULES) and i not in picked:
            picked.append(i)
        if len(picked) == k:
            break
    return picked or list(range(k))


def discover(ctx: RunContext) -> tuple[list[int], str]:
    """SELECT, ADAPT, IMPLEMENT: ``(module indices, reasoning plan)``; 3 calls."""
    k = ctx.options.deepthink_modules
    task = ctx.query
    select = ctx.complete(ctx.with_query(
        f"Task: {task}\n\nWhich of these reasoning modules help solve the task? Reply with "
        f"the numbers of the {k} most useful ones.\n\n{_modules_listing()}"), temperature=0)
    chosen = parse_selection(select.text, k)
    listing = "\n".join(f"- {REASONING_MODULES[i]}" for i in chosen)
    adapted = ctx.complete(ctx.with_query(
        f"Task: {task}\n\nRephrase each of these reasoning modules so it is specific to the "
        f"task:\n{listing}"), temperature=0).text.strip() or listing
    plan = ctx.complete(ctx.with_query(
        f"Task: {task}\n\nTurn these task-specific reasoning steps into a numbered, "
        f"step-by-step plan for solving the task. Do not solve it yet.\n\n{adapted}"),
        temperature=0).text.strip() or adapted
    return chosen, plan


def solve_prompt(task: str, plan: str | None) -> str:
    guide = f"Follow this reasoning plan:\n{plan}\n\n" if plan else ""
    return (f"{guide}Solve the task step by step, then end with 'The answer is X'.\n\n"
            f"Task: {task}")


def run(ctx: RunContext) -> Answer:
    opts = ctx.options
    modules, plan = discover(ctx) if opts.deepthink_self_discover else ([], None)
    messages = ctx.with_query(solve_prompt(ctx.query, plan))
    temperature = opts.deepthink_temperature
    if temperature is None:  # as OptiLLM: the request's own temperature, else the default
        temperature = ctx.sampling.get("temperature", SAMPLE_TEMPERATURE)
    samples = ctx.sample(opts.deepthink_samples, messages, answer=True,
                         temperature=temperature)
    answers = [extract_answer(s) for s in samples]
    result = vote(answers)
    record = {"modules": [REASONING_MODULES[i] for i in modules], "answers": answers,
              "votes": result.tally, "agreement": result.share}
    if result.answer is not None and result.share >= opts.deepthink_threshold:
        text = samples[result.index]
        record["route"] = "majority"
        finish = "stop"
    else:
        final = ctx.complete(messages, final=True, temperature=0)
        text = final.text
        finish = final.choices[0].finish_reason or "stop"
        record["route"] = "greedy"
    trace = f"Reasoning plan:\n{plan}\n\n{text}" if plan else text
    return Answer(text, finish_reason=finish, reasoning=trace,
                  metadata={"optillm_deepthink": record})
