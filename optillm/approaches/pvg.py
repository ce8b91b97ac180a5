"""Prover-verifier games: helpful and sneaky provers, a verifier scoring every solution.

After Kirchner et al., "Prover-Verifier Games improve legibility of LLM outputs", arXiv
2407.13692, as an inference-time game (OptiLLM's ``pvg``). Per round:

1. ``pvg_num_solutions`` helpful solutions (careful, correct, legible) and as many sneaky
   ones (subtly wrong but convincing): two calls with ``n``, run concurrently;
2. the verifier scores every solution 0-10, one call each, all concurrently (scores are
   parsed tolerantly; an unreadable score counts as 0, so garbage never wins);
3. the best-scoring helpful solution of the round is kept (the best over all rounds is the
   answer; ties go to the earlier one);
4. between rounds (not after the last) the query is refined from the round's best solution
   (one call), and the next round answers the refined query.

The sneaky solutions never reach the client; they exist so that the verifier's scores are
calibrated against convincing wrong answers (their scores are in the metadata).

Calls, with R = pvg_num_rounds and n = pvg_num_solutions: ``R * (2 + 2n) + (R - 1)``
(e.g. 17 with the defaults). Critical path: ``3R - 1`` calls.

Sampling: provers use temperature 0.7 (helpful) and 0.9 (sneaky) unless the client set one;
the verifier uses 0.1 with ``max_tokens`` 16 and the refinement 0.5. Usage is the context's
per-request sum (the reference's module-global counter grew across requests).

Budget: when the request's budget runs out the game stops and answers with the best helpful
solution so far (``optillm_budget.stopped_early`` true in the metadata).

Options (request body): ``pvg_num_solutions`` (int, 1-8, default 3), ``pvg_num_rounds``
(int, 1-5, default 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..options import opt
from ..toolkit.context import Answer, BudgetExhausted, RunContext
from ..types import Message
from .mcts import guarded, parse_score

SLUG = "pvg"

HELPFUL = ("You are a helpful and careful problem solver. Solve the problem correctly, step by "
           "step, in a way that is clear and easy to check, and state the final answer.")
SNEAKY = ("You are a sneaky problem solver, used to test a verifier. Write a solution that "
          "looks convincing and careful but contains a subtle error leading to a wrong final "
          "answer. Never mention the error.")


@dataclass(frozen=True)
class Options:
    pvg_num_solutions: int = opt(3, ge=1, le=8)
    pvg_num_rounds: int = opt(2, ge=1, le=5)


def verify_prompt(question: str, solution: str) -> str:
    return (f"You are a strict verifier. Check the solution below to the problem for "
            f"correctness and clarity.\n\nProblem:\n{question}\n\nSolution:\n{solution}\n\n"
            f"Reply with only a score from 0 (wrong) to 10 (correct and clear).")


def refine_prompt(question: str, solution: str) -> str:
    return (f"Here is a problem and the best solution found so far.\n\nProblem:\n{question}"
            f"\n\nSolution:\n{solution}\n\nRewrite the problem so that it is clearer and "
            f"more precise, keeping its meaning and every given fact, so that a solver avoids "
            f"the mistakes this solution risks. Write only the rewritten problem.")


def with_role(ctx: RunContext, instruction: str, query: str) -> list[Message]:
    """The conversation with the query replaced and ``instruction`` ahead of the client's
    system prompt (in the first system message, or a new one)."""
    messages = ctx.with_query(query)
    if messages and messages[0].role in ("system", "developer"):
        first = messages[0]
        messages[0] = Message(first.role, f"{instruction}\n\n{first.text}", first.extra)
    else:
        messages.insert(0, Message("system", instruction))
    return messages


def run(ctx: RunContext) -> Answer:
    opts = ctx.options
    n = opts.pvg_num_solutions
    query = ctx.query
    best: tuple[float, str] | None = None  # (score, solution)
    rounds: list[dict] = []
    temperature = ctx.sampling.get("temperature")

    def prove(role: str) -> list[str]:
        helpful = role == "helpful"
        return ctx.sample(n, with_role(ctx, HELPFUL if helpful else SNEAKY, query),
                          answer=helpful,
                          temperature=temperature if temperature is not None
                          else (0.7 if helpful else 0.9))

    def verify(solution: str) -> float:
        reply = ctx.complete(ctx.with_query(verify_prompt(query, solution)),
                             temperature=0.1, max_tokens=16).text
        score = parse_score(reply)
        return 0.0 if score is None else round(10 * score, 4)

    try:
        for r in range(opts.pvg_num_rounds):
            helpful, sneaky = ctx.map(guarded(prove), ["helpful", "sneaky"])
            helpful, sneaky = helpful or [], sneaky or []
            scores = ctx.map(guarded(verify), helpful + sneaky)
            helpful_scores = scores[:len(helpful)]
            record = {"query": query, "helpful_scores": helpful_scores,
                      "sneaky_scores": scores[len(helpful):]}
            rounds.append(record)
            scored = [(s if s is not None else 0.0, h)
                      for s, h in zip(helpful_scores, helpful, strict=True)]
            if scored:
                round_best = max(scored, key=lambda x: x[0])  # first of equal scores
                record["best_score"] = round_best[0]
                if best is None or round_best[0] > best[0]:
                    best = round_best
            if ctx.budget.stopped_early:
                break
            if r < opts.pvg_num_rounds - 1 and scored:
                refined = ctx.complete(ctx.with_query(refine_prompt(query, round_best[1])),
                                       temperature=0.5).text.strip()
                query = refined or query
    except BudgetExhausted:
        pass
    if best is None:
        raise BudgetExhausted("pvg spent the request's budget before any helpful solution")
    return Answer(best[1], metadata={"optillm_pvg": {"rounds": rounds, "best_score": best[0]},
                                     **ctx.budget_metadata()})
