"""CePO (Cerebras planning and optimization): best-of-n over plan / execute / refine attempts.

After Cerebras' CePO as shipped in OptiLLM ("CePO: Empowering Llama with Reasoning using
Test-Time Compute", Cerebras blog, 2024); it combines planning (Plan-and-Solve, arXiv
2305.04091), self-refinement and best-of-n with an LLM judge (arXiv 2306.05685).

One attempt:

0. (``cepo_use_plan_diversity``, 1 call) the model lists ``planning_n`` different approaches;
   plan try i is asked to follow approach i.
1. Plan tries, in waves of concurrent tries: step 1 writes a step-by-step plan, step 2 carries
   it out (2 calls per try). An execution is accepted when it is not empty and was not cut off
   (finish reason ``length``). Waves go on until ``planning_n`` executions are accepted or
   ``T = max(planning_n, planning_m)`` tries were made.
2. With an accepted execution: step 3 compares them, finds their inconsistencies and writes
   one refined solution; step 4 writes the final answer from it (2 calls). With none: one
   direct answer (``direct_resp``) instead.

``cepo_bestofn_n`` attempts run concurrently and are rated with ``cepo_bestofn_rating_type``:
``absolute`` scores each 0-10 (n calls, concurrent), ``pairwise`` compares every pair
(n(n-1)/2 calls, concurrent, most wins), ``majority`` votes on the extracted final answers
(no call). One complete attempt is returned without rating.

Calls: ``bestofn_n * (D + 2t + 2) + R`` with D = 1 if plan diversity is on, planning_n <= t <=
T the tries made (``2`` becomes ``1`` for an attempt with no accepted execution) and R the
rating calls; each failed upstream call may be retried ``cepo_num_of_retries`` times more.
Critical-path depth: ``D + 2w + 3`` with w the waves (1 when the first wave is accepted).

Sampling: every step sets its own temperature (``cepo_planning_temperature_*``,
``cepo_bestofn_temperature``) and max_tokens (``cepo_*_max_tokens*``, capped by the client's
``max_tokens``); other client sampling parameters reach every call. With
``cepo_use_reasoning_fallback`` a retried call lowers the client's ``reasoning_effort`` one
step (high -> medium -> low).

Options (request body, or server defaults from ``--cepo-config FILE.yaml``): the ``cepo_*``
fields of ``Options`` (OptiLLM's ``cepo_config.yaml`` names with the ``cepo_`` prefix; the
unprefixed ``cepo_config.yaml`` names, e.g. ``bestofn_n``, are accepted as aliases).
Bounded by the request budget: once spent, the best answer so far is returned with
``optillm_budget`` in the metadata. The choice carries ``optillm_cepo``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from ..errors import UpstreamError, UpstreamTimeoutError
from ..options import opt
from ..toolkit.answers import extract_answer, vote
from ..toolkit.context import Answer, BudgetExhausted, RunContext
from ..types import Completion, Message

SLUG = "cepo"

log = logging.getLogger(__name__)

RATING_TYPES = ("absolute", "pairwise", "majority")
_MAX_TOKENS = 1_000_000
EFFORT_STEPS = {"high": "medium", "medium": "low", "low": "minimal"}


@dataclass(frozen=True)
class Options:
    cepo_bestofn_n: int = opt(3, ge=1, le=16, aliases=("bestofn_n",))
    cepo_bestofn_temperature: float = opt(0.1, ge=0, le=2, aliases=("bestofn_temperature",))
    cepo_bestofn_max_tokens: int = opt(4096, ge=1, le=_MAX_TOKENS, unit="tokens",
                                       aliases=("bestofn_max_tokens",))
    cepo_bestofn_rating_type: str = opt("absolute", choices=RATING_TYPES,
                                        aliases=("bestofn_rating_type",))
    cepo_planning_n: int = opt(3, ge=1, le=16, aliases=("planning_n",))
    cepo_planning_m: int = opt(6, ge=1, le=64, aliases=("planning_m",))
    cepo_planning_temperature_step1: float = opt(0.55, ge=0, le=2,
                                                 aliases=("planning_temperature_step1",))
    cepo_planning_temperature_step2: float = opt(0.25, ge=0, le=2,
                                                 aliases=("planning_temperature_step2",))
    cepo_planning_temperature_direct_resp: float = opt(
        0.1, ge=0, le=2, aliases=("planning_temperature_direct_resp",))
    cepo_planning_temperature_step3: float = opt(0.1, ge=0, le=2,
                                                 aliases=("planning_temperature_step3",))
    cepo_planning_temperature_step4: float = opt(0.0, ge=0, le=2,
                                                 aliases=("planning_temperature_step4",))
    cepo_planning_max_tokens_step1: int = opt(4096, ge=1, le=_MAX_TOKENS, unit="tokens",
                                              aliases=("planning_max_tokens_step1",))
    cepo_planning_max_tokens_step2: int = opt(4096, ge=1, le=_MAX_TOKENS, unit="tokens",
                                              aliases=("planning_max_tokens_step2",))
    cepo_planning_max_tokens_direct_resp: int = opt(4096, ge=1, le=_MAX_TOKENS, unit="tokens",
                                                    aliases=("planning_max_tokens_direct_resp",))
    cepo_planning_max_tokens_step3: int = opt(4096, ge=1, le=_MAX_TOKENS, unit="tokens",
                                              aliases=("planning_max_tokens_step3",))
    cepo_planning_max_tokens_step4: int = opt(4096, ge=1, le=_MAX_TOKENS, unit="tokens",
                                              aliases=("planning_max_tokens_step4",))
    cepo_use_plan_diversity: bool = opt(False, aliases=("use_plan_diversity",))
    cepo_rating_model: str | None = opt(None, aliases=("rating_model",))
    cepo_use_reasoning_fallback: bool = opt(False, aliases=("use_reasoning_fallback",))
    cepo_num_of_retries: int = opt(0, ge=0, le=5, aliases=("num_of_retries",))
    cepo_print_output: bool = opt(False, aliases=("print_output",))

    def __post_init__(self):
        model = self.cepo_rating_model
        if isinstance(model, str) and model.strip().lower() in ("", "none", "null"):
            object.__setattr__(self, "cepo_rating_model", None)  # YAML files write None

    @property
    def planning_tries(self) -> int:
        return max(self.cepo_planning_n, self.cepo_planning_m)


@dataclass
class Attempt:
    """One plan/execute/refine attempt; ``text`` is its best answer so far."""

    executions: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    tries: int = 0
    refined: str = ""
    text: str = ""
    complete: bool = False
    stopped: bool = False


# -- prompts ----------------------------------------------------------------------------------

def approaches_prompt(query: str, n: int) -> str:
    return (f"{query}\n\nDo not solve this yet. List {n} clearly different high-level "
            f"approaches to solving it, as a numbered list with one short line each.")


def plan_prompt(query: str, approach: str | None) -> str:
    hint = f" Use this approach: {approach}." if approach else ""
    return (f"{query}\n\nDo not solve the problem yet. Write a clear, step-by-step plan for "
            f"solving it.{hint} Output only the plan.")


def execute_prompt(query: str, plan: str) -> str:
    return (f"{query}\n\nHere is a plan for solving this:\n{plan}\n\nCarry out the plan step "
            f"by step, showing your work, and state the final answer at the end.")


def refine_prompt(query: str, executions: list[str]) -> str:
    body = "\n\n".join(f"Solution {i}:\n{e}" for i, e in enumerate(executions, 1))
    return (f"{query}\n\nHere are candidate solutions:\n\n{body}\n\nCompare them carefully "
            f"and list any inconsistencies or errors between them. Then write one corrected, "
            f"complete solution that keeps what is right.")


def final_prompt(query: str, refined: str) -> str:
    return (f"{query}\n\nA carefully checked solution:\n{refined}\n\nUsing it, give your final "
            f"answer to the question: a clear, complete response that ends with the final "
            f"answer.")


RATING_PROMPT = ("Rate the response above as an answer to the question: is it correct, "
                 "complete and clear? Give a short justification, then end with your rating "
                 "from 0 to 10 in exactly this format: Rating: [[N]]")


def pairwise_prompt(query: str, first: str, second: str) -> str:
    return (f"Question:\n{query}\n\nResponse 1:\n{first}\n\nResponse 2:\n{second}\n\nWhich "
            f"response answers the question better (correct, complete, clear)? Explain "
            f"briefly, then end with exactly [[1]] or [[2]].")


# -- parsing model output -----------------------------------------------------------------------

_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*])\s+(.+?)\s*$", re.MULTILINE)
_BRACKETED = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]")
_RATING = re.compile(r"rating\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_SCORE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:/\s*10|out of 10)", re.IGNORECASE)
_CHOICE = re.compile(r"\bresponse\s*([12])\b", re.IGNORECASE)


def parse_approaches(text: str, n: int) -> list[str]:
    """Up to ``n`` list items (numbered or bulleted lines); [] when there are none."""
    return [m.group(1) for m in _NUMBERED.finditer(text or "")][:n]


def parse_rating(text: str) -> float | None:
    """A 0-10 rating: ``[[N]]``, else ``Rating: N``, else ``N/10``; None when there is none
    or it is out of range."""
    text = text or ""
    for pattern in (_BRACKETED, _RATING, _SCORE):
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            return value if 0.0 <= value <= 10.0 else None
    return None


def parse_preference(text: str) -> int | None:
    """0 (Response 1) or 1 (Response 2): ``[[1]]``/``[[2]]``, else the last "Response 1/2"
    mentioned, else a reply that is only "1" or "2"; None otherwise."""
    text = text or ""
    found = [v for v in _BRACKETED.findall(text) if v in ("1", "2")]
    if not found:
        found = _CHOICE.findall(text)
    if not found and text.strip().strip(".*[]()") in ("1", "2"):
        found = [text.strip().strip(".*[]()")]
    return int(found[-1]) - 1 if found else None


# -- the run ---------------------------------------------------------------------------------

class _Cepo:
    """One request's run (its state is per request, never shared)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.o: Options = ctx.options
        self.cap = ctx.sampling.get("max_tokens") or ctx.sampling.get("max_completion_tokens")

    def call(self, messages: list[Message], temperature: float, max_tokens: int,
             model: str | None = None, label: str = "") -> Completion:
        """One step's call, retried ``cepo_num_of_retries`` times on upstream failures."""
        effort = self.ctx.sampling.get("reasoning_effort")
        if self.cap:
            max_tokens = min(max_tokens, self.cap)
        for attempt in range(self.o.cepo_num_of_retries + 1):
            try:
                result = self.ctx.complete(messages, model=model, temperature=temperature,
                                           max_tokens=max_tokens, max_completion_tokens=None,
                                           reasoning_effort=effort)
                break
            except (UpstreamError, UpstreamTimeoutError):
                if attempt == self.o.cepo_num_of_retries:
                    raise
                if self.o.cepo_use_reasoning_fallback and effort in EFFORT_STEPS:
                    effort = EFFORT_STEPS[effort]
        if self.o.cepo_print_output:
            log.info("cepo %s: %s", label, result.text)
        return result

    def attempt(self, _index: int) -> Attempt:
        o, ctx, query = self.o, self.ctx, self.ctx.query
        state = Attempt()
        try:
            approaches: list[str] = []
            if o.cepo_use_plan_diversity:
                reply = self.call(ctx.with_query(approaches_prompt(query, o.cepo_planning_n)),
                                  o.cepo_planning_temperature_step1,
                                  o.cepo_planning_max_tokens_step1, label="approaches")
                approaches = parse_approaches(reply.text, o.cepo_planning_n)

            def plan_and_execute(i: int) -> tuple[str, bool]:
                approach = approaches[i % len(approaches)] if approaches else None
                plan = self.call(ctx.with_query(plan_prompt(query, approach)),
                                 o.cepo_planning_temperature_step1,
                                 o.cepo_planning_max_tokens_step1, label="plan").text
                done = self.call(ctx.with_query(execute_prompt(query, plan)),
                                 o.cepo_planning_temperature_step2,
                                 o.cepo_planning_max_tokens_step2, label="execution")
                finish = done.choices[0].finish_reason if done.choices else None
                return done.text, bool(done.text.strip()) and finish != "length"

            while len(state.accepted) < o.cepo_planning_n and state.tries < o.planning_tries:
                wave = min(o.cepo_planning_n - len(state.accepted),
                           o.planning_tries - state.tries)
                results = ctx.map(plan_and_execute, range(state.tries, state.tries + wave))
                state.tries += wave
                for text, ok in results:
                    state.executions.append(text)
                    if ok:
                        state.accepted.append(text)
                state.text = (state.accepted or state.executions or [""])[0]

            if state.accepted:
                state.refined = self.call(ctx.with_query(refine_prompt(query, state.accepted)),
                                          o.cepo_planning_temperature_step3,
                                          o.cepo_planning_max_tokens_step3, label="refined").text
                state.text = state.refined or state.text
                state.text = self.call(ctx.with_query(final_prompt(query, state.refined)),
                                       o.cepo_planning_temperature_step4,
                                       o.cepo_planning_max_tokens_step4, label="final").text
            else:  # no plan could be carried out within the tries: answer directly
                state.text = self.call(ctx.conversation(),
                                       o.cepo_planning_temperature_direct_resp,
                                       o.cepo_planning_max_tokens_direct_resp,
                                       label="direct").text
            state.complete = True
        except BudgetExhausted:
            state.stopped = True
        return state

    def rate(self, texts: list[str]) -> tuple[int, dict]:
        """Index of the best of ``texts`` and the rating record; unrated on a spent budget."""
        o, ctx = self.o, self.ctx
        kind = o.cepo_bestofn_rating_type
        if kind == "majority":
            result = vote([extract_answer(t) for t in texts])
            return max(result.index, 0), {"answers_tally": result.tally}

        def judge(messages: list[Message]) -> str:
            try:
                return self.call(messages, o.cepo_bestofn_temperature,
                                 o.cepo_bestofn_max_tokens, model=o.cepo_rating_model,
                                 label="rating").text
            except BudgetExhausted:
                return ""

        if kind == "absolute":
            replies = ctx.map(lambda t: judge(ctx.conversation(
                Message("assistant", t), Message("user", RATING_PROMPT))), texts)
            ratings = [parse_rating(r) for r in replies]
            best = max(range(len(texts)), key=lambda i: (ratings[i] is not None,
                                                         ratings[i] or 0.0, -i))
            return best, {"ratings": ratings}
        pairs = [(i, j) for i in range(len(texts)) for j in range(i + 1, len(texts))]
        replies = ctx.map(lambda p: judge(ctx.with_query(
            pairwise_prompt(ctx.query, texts[p[0]], texts[p[1]]))), pairs)
        wins = [0] * len(texts)
        for (i, j), reply in zip(pairs, replies, strict=True):
            pick = parse_preference(reply)
            if pick is not None:
                wins[(i, j)[pick]] += 1
        best = max(range(len(texts)), key=lambda i: (wins[i], -i))
        return best, {"wins": wins}


def run(ctx: RunContext) -> Answer:
    cepo = _Cepo(ctx)
    o = cepo.o
    attempts = ctx.map(cepo.attempt, range(o.cepo_bestofn_n))
    complete = [i for i, a in enumerate(attempts) if a.complete and a.text.strip()]
    partial = [i for i, a in enumerate(attempts) if a.text.strip()]
    record: dict = {}
    if not partial:
        if any(a.stopped for a in attempts):
            ctx.budget.check(ctx.slug)  # nothing to answer with: the budget error stands
        chosen = 0
    elif len(complete) > 1 and not ctx.budget.exhausted:
        best, record = cepo.rate([attempts[i].text for i in complete])
        chosen = complete[best]
    else:
        if len(complete) > 1:  # the budget is spent: no rating, the first complete one
            ctx.budget.stopped_early = True
        chosen = (complete or partial)[0]
    best = attempts[chosen]
    metadata = {"optillm_cepo": {
        "rating_type": o.cepo_bestofn_rating_type, "chosen": chosen, **record,
        "attempts": [{"plan_tries": a.tries, "accepted": len(a.accepted),
                      "complete": a.complete} for a in attempts]},
        **ctx.budget_metadata()}
    reasoning = "\n\n".join(
        [f"Execution {i}:\n{e}" for i, e in enumerate(best.accepted or best.executions, 1)]
        + ([f"Refined solution:\n{best.refined}"] if best.refined else [])
        + [f"Answer:\n{best.text}"])
    return Answer(best.text, reasoning=reasoning, metadata=metadata)
