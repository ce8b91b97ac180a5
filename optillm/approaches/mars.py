"""MARS, a multi-agent reasoning system: a population of solutions, aggregation, a strategy
network, verification, repair and a synthesis.

After OptiLLM's ``mars`` (codelion/optillm 0.4.0, ``optillm/mars/``). Its parts: agents
sampling at varied temperatures (self-consistency, arXiv 2203.11171), recursive
self-aggregation of a population (RSA, arXiv 2509.26626), cross-agent strategy sharing
(OptiLLM's strategy network), verify-then-improve loops (Self-Refine, arXiv 2303.17651) and a
final synthesis. N agents, population P (``population_size``, default N), K, L, V, A, R below
are the ``mars_config`` keys of ``MarsConfig`` (``_mars_config``).

1. Generation (one call per agent, concurrent): member j of the population is agent
   ``j % N``'s, sampled at ``agent_temperatures[j % N]`` (an agent with several members
   samples them in one call with ``n``).
2. Aggregation (``aggregation: "rsa"``, L x P calls, each loop concurrent; skipped with one
   member): in each loop member j combines K members (its own and the next ones,
   cyclically) into an improved one; the P results replace the population.
3. Strategy network (``enable_strategy_network``; P calls, concurrent): each solution's
   reasoning strategy is extracted (``strategy_extraction_enabled``; a reply without the
   labelled fields gives none). With ``cross_agent_enhancement`` (P more calls, concurrent)
   each member rewrites its solution with up to two strategies of *other* agents. Strategies
   also go into the improvement prompts of step 5.
4. Verification (at most A x P calls, in concurrent waves): a solution is verified by V
   consecutive ``VERDICT: PASS`` checks (``parse_verdict``; unreadable counts as a fail) within
   A checks (``max_verification_attempts``, default V); checks stop once V can't be reached.
5. Improvement (up to R rounds): each failed solution is rewritten from its failing checks'
   feedback (concurrent), then verified again. Rounds stop once every solution (or
   ``min_verified_solutions``) is verified, or, with ``early_termination``, once
   ``consensus_threshold`` are.
6. Synthesis (1 call, ``final=True``): the final answer from the verified solutions (from all
   when none passed), best first, at most N. With ``use_thinking_tags`` the answer is
   ``<think>\\n{synthesis}\\n</think>\\n\\n{final answer}`` (``answer_extraction_mode``).

Upper bound: ``max_calls(config)`` calls (``G + L*P + S + A*P + R*(P + A*P) + 1``, G = min(N,
P), S = P per strategy phase) and ``max_calls * max_tokens`` completion tokens; critical-path
depth ``max_depth(config)``. Sampling: every call sets its own temperature (agent temperatures;
``verification_temperature`` for checks; 0.3 for strategy extraction) and ``max_tokens``
(``mars_config.max_tokens``, else the client's, else 4096; a quarter, at least 256, for
strategy extraction); with ``use_reasoning_api`` each call also carries ``reasoning_effort``
for its phase unless the client sent one. Other client parameters reach every call. Bounded by
the request budget: once spent, the best solution so far (verified first, then most passes) is
returned and ``optillm_budget.stopped_early`` is true.

Options (request body): ``mars_config``, a dict of ``MarsConfig`` keys or OptiLLM's names for
them (unknown keys, disagreeing pairs and bad values are a 400). The choice carries
``optillm_mars``; the reasoning trace (every solution with its verdicts, the strategies) is
returned with ``return_full_response``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..toolkit.context import Answer, BudgetExhausted, RunContext
from ._mars_config import AGGREGATIONS, OPTILLM_ALIASES, MarsConfig, max_calls, max_depth
from ._mars_strategies import (
    THINK_OPEN,
    Strategy,
    effort,
    enhance_prompt,
    parse_strategy,
    peer_strategies,
    render_peers,
    strategy_prompt,
    with_thinking_tags,
)

__all__ = ["AGGREGATIONS", "OPTILLM_ALIASES", "MarsConfig", "Options", "Solution", "max_calls",
           "max_depth", "parse_verdict", "run"]

SLUG = "mars"
STREAMS = True

DEFAULT_MAX_TOKENS = 4096
STRATEGY_TEMPERATURE = 0.3
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    mars_config: dict | None = None

    def __post_init__(self):
        raw = self.mars_config
        if raw is not None and not isinstance(raw, (dict, MarsConfig)):
            raise ValueError("mars_config must be an object")
        if not isinstance(raw, MarsConfig):
            object.__setattr__(self, "mars_config", MarsConfig.from_dict(raw or {}))


@dataclass
class Solution:
    member: int
    agent: int
    text: str
    verdicts: list[bool | None] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)
    verified: bool = False
    improvements: int = 0
    enhanced: bool = False

    @property
    def passes(self) -> int:
        return sum(v is True for v in self.verdicts)

    @property
    def streak(self) -> int:
        """Passing checks at the end of ``verdicts``."""
        n = 0
        for v in reversed(self.verdicts):
            if v is not True:
                break
            n += 1
        return n

    @property
    def failures(self) -> list[str]:
        """The failing checks' replies (all replies when none failed)."""
        failed = [f for f, v in zip(self.feedback, self.verdicts, strict=True) if v is not True]
        return failed or list(self.feedback)


# -- prompts ----------------------------------------------------------------------------------

def agent_prompt(query: str) -> str:
    return f"{query}\n\nReason step by step, then state the final answer clearly at the end."


def aggregate_prompt(query: str, solutions: list[str]) -> str:
    body = "\n\n".join(f"Solution {i}:\n{s}" for i, s in enumerate(solutions, 1))
    return (f"{query}\n\nHere are candidate solutions:\n\n{body}\n\nSome may be wrong. Combine "
            f"their correct ideas into one improved, complete solution that ends with the "
            f"final answer.")


def verify_prompt(query: str, solution: str) -> str:
    return (f"Question:\n{query}\n\nProposed solution:\n{solution}\n\nCheck the solution "
            f"carefully, step by step, for errors. End with exactly one line: 'VERDICT: PASS' "
            f"if it is correct and complete, or 'VERDICT: FAIL' if not.")


def improve_prompt(query: str, solution: str, feedback: list[str],
                   peers: list[Strategy] | None = None) -> str:
    notes = "\n\n".join(f"Review {i}:\n{f}" for i, f in enumerate(feedback, 1))
    shared = (f"\n\nStrategies other solvers used on this problem:\n\n{render_peers(peers)}"
              if peers else "")
    return (f"{query}\n\nYour earlier solution:\n{solution}\n\nReviewers found problems:\n\n"
            f"{notes}{shared}\n\nWrite a corrected, complete solution that ends with the final "
            f"answer.")


def synthesis_prompt(query: str, solutions: list[Solution]) -> str:
    body = "\n\n".join(f"Solution {i} ({s.passes} of {len(s.verdicts)} checks passed):\n"
                       f"{s.text}" for i, s in enumerate(solutions, 1))
    return (f"{query}\n\nIndependent solvers produced these checked solutions:\n\n{body}\n\n"
            f"Write the single best final answer to the question, keeping what the solutions "
            f"show to be right. Answer directly; do not mention the solvers.")


_VERDICT = re.compile(r"verdict\s*[:\-]?\s*\**\s*(pass|fail|correct|incorrect)", re.IGNORECASE)
_NEGATIVE = re.compile(r"\b(incorrect|wrong|fail(?:s|ed)?|error|mistake|not correct)\b",
                       re.IGNORECASE)
_POSITIVE = re.compile(r"\b(correct|pass(?:es|ed)?|valid|verified)\b", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """True (pass), False (fail) or None (unreadable): the last ``VERDICT: PASS|FAIL``, else
    the words of the reply's last line (negative words win)."""
    text = text or ""
    found = _VERDICT.findall(text)
    if found:
        return found[-1].lower() in ("pass", "correct")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if _NEGATIVE.search(last):
        return False
    if _POSITIVE.search(last):
        return True
    return None


# -- the run ---------------------------------------------------------------------------------

def _ranked(solutions: list[Solution]) -> list[Solution]:
    return sorted(solutions, key=lambda s: (not s.verified, -s.passes, s.member))


class _Run:
    """One request's phases over ``ctx`` (the state the phases share)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.cfg: MarsConfig = ctx.options.mars_config
        self.query = ctx.query
        self.tokens = self.cfg.max_tokens or ctx.sampling.get("max_tokens") \
            or ctx.sampling.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
        self.solutions: list[Solution] = []
        self.strategies: list[Strategy] = []
        self.loops = 0
        self.rounds = 0
        self._stop: BudgetExhausted | None = None

    # -- calls ----------------------------------------------------------------------------

    def params(self, phase: str, temperature: float, tokens: int | None = None) -> dict:
        out = {"temperature": temperature, "max_tokens": tokens or self.tokens,
               "max_completion_tokens": None}
        if self.cfg.use_reasoning_api and "reasoning_effort" not in self.ctx.sampling:
            out["reasoning_effort"] = effort(phase, temperature)
        return out

    def ask(self, prompt: str, phase: str, temperature: float, **extra: Any) -> str:
        return self.ctx.complete(self.ctx.with_query(prompt), **self.params(
            phase, temperature, extra.pop("tokens", None)), **extra).text

    def fan(self, fn: Callable[[T], Any], items: Iterable[T]) -> list[Any]:
        """``ctx.map`` that keeps what finished when the budget runs out mid-phase: the
        stopped items give None; the caller records the rest, then ``settle`` raises."""
        stops: list[BudgetExhausted] = []

        def job(item: T) -> Any:
            try:
                return fn(item)
            except BudgetExhausted as exc:
                stops.append(exc)
                return None

        out = self.ctx.map(job, items)
        self._stop = stops[0] if stops else None
        return out

    def settle(self) -> None:
        if self._stop is not None:
            raise self._stop

    # -- phases ---------------------------------------------------------------------------

    def generate(self) -> None:
        cfg = self.cfg
        owners = list(range(min(cfg.num_agents, cfg.population)))
        counts = [len(range(a, cfg.population, cfg.num_agents)) for a in owners]
        texts = self.fan(lambda a: self.ctx.sample(
            counts[a], self.ctx.with_query(agent_prompt(self.query)), answer=True,
            **self.params("agent", cfg.temperature(a))), owners)
        for member in range(cfg.population):
            got = texts[cfg.agent(member)]
            if got is not None:
                index = member // cfg.num_agents
                text = got[index] if index < len(got) else ""
                self.solutions.append(Solution(member, cfg.agent(member), text or ""))
        self.settle()

    def aggregate(self) -> None:
        cfg = self.cfg
        for _ in range(cfg.loops):
            pop = self.solutions
            size = min(cfg.aggregation_size, len(pop))
            jobs = [(aggregate_prompt(self.query, [pop[(i + j) % len(pop)].text
                                                   for j in range(size)]),
                     cfg.temperature(s.agent)) for i, s in enumerate(pop)]
            texts = self.fan(lambda job: self.ask(job[0], "rsa", job[1]), jobs)
            self.solutions = [Solution(s.member, s.agent, t if t and t.strip() else s.text)
                              for s, t in zip(pop, texts, strict=True)]
            self.settle()
            self.loops += 1

    def share_strategies(self) -> None:
        cfg = self.cfg
        if not cfg.extracts:
            return
        tokens = max(min(self.tokens, 256), self.tokens // 4)
        replies = self.fan(lambda s: self.ask(strategy_prompt(self.query, s.text), "strategy",
                                              STRATEGY_TEMPERATURE, tokens=tokens),
                           self.solutions)
        for s, reply in zip(self.solutions, replies, strict=True):
            found = parse_strategy(reply, s.member, s.agent) if reply is not None else None
            if found is not None:
                self.strategies.append(found)
        self.settle()
        if not cfg.enhances or not self.strategies:
            return
        jobs = [(s, peers) for s in self.solutions if (peers := self.peers(s))]
        texts = self.fan(lambda job: self.ask(enhance_prompt(self.query, job[0].agent,
                                                             job[0].text, job[1]),
                                              "enhance", cfg.temperature(job[0].agent)), jobs)
        for (s, _), text in zip(jobs, texts, strict=True):
            if text and text.strip():
                s.text, s.enhanced = text, True
        self.settle()

    def peers(self, s: Solution) -> list[Strategy]:
        return peer_strategies(s.member, s.agent, self.strategies, self.cfg.population)

    def verify(self, batch: list[Solution]) -> None:
        cfg = self.cfg
        need, attempts = cfg.verification_passes, cfg.attempts
        for s in batch:
            s.verdicts, s.feedback, s.verified = [], [], False
        pending = list(batch)
        while pending:
            jobs = [s for s in pending
                    for _ in range(min(need - s.streak, attempts - len(s.verdicts)))]
            replies = self.fan(lambda s: self.ask(verify_prompt(self.query, s.text), "verify",
                                                  cfg.verification_temperature), jobs)
            for s, reply in zip(jobs, replies, strict=True):
                if reply is not None:
                    s.verdicts.append(parse_verdict(reply))
                    s.feedback.append(reply)
            for s in pending:
                s.verified = s.streak >= need
            self.settle()
            pending = [s for s in pending if not s.verified
                       and attempts - len(s.verdicts) >= need - s.streak]

    def enough(self) -> bool:
        """Whether the improvement rounds stop (see the module docstring, step 5)."""
        cfg = self.cfg
        verified = sum(s.verified for s in self.solutions)
        if verified == len(self.solutions) or verified >= (cfg.min_verified_solutions
                                                          or len(self.solutions)):
            return True
        return cfg.early_termination and cfg.consensus_threshold is not None \
            and verified >= cfg.consensus_threshold

    def improve(self) -> None:
        cfg = self.cfg
        for _ in range(cfg.improvement_rounds):
            if self.enough():
                break
            self.rounds += 1
            failed = [s for s in self.solutions if not s.verified]
            texts = self.fan(lambda s: self.ask(
                improve_prompt(self.query, s.text, s.failures, self.peers(s)), "improve",
                cfg.temperature(s.agent)), failed)
            improved = []
            for s, text in zip(failed, texts, strict=True):
                if text and text.strip():
                    s.text, s.improvements = text, s.improvements + 1
                    improved.append(s)
            self.settle()
            self.verify(improved)

    def synthesize(self) -> tuple[str, str, bool]:
        """(text, finish_reason, stopped early)."""
        cfg, ctx = self.cfg, self.ctx
        ranked = _ranked(self.solutions)
        if ctx.budget.stopped_early:
            return ranked[0].text, "stop", True
        chosen = ([s for s in ranked if s.verified] or ranked)[:cfg.num_agents]
        if cfg.use_thinking_tags:
            ctx.emit(THINK_OPEN)
        try:
            final = ctx.complete(ctx.with_query(synthesis_prompt(self.query, chosen)),
                                 final=True, **self.params("synthesis", cfg.temperature(0)))
        except BudgetExhausted:
            return ranked[0].text, "stop", True
        finish = (final.choices[0].finish_reason if final.choices else None) or "stop"
        return final.text, finish, False

    def metadata(self, stopped: bool) -> dict:
        cfg = self.cfg
        verified = sum(s.verified for s in self.solutions)
        return {"optillm_mars": {
            "agents": [{"agent": s.agent, "member": s.member,
                        "temperature": cfg.temperature(s.agent), "verified": s.verified,
                        "passes": s.passes, "checks": len(s.verdicts),
                        "improvements": s.improvements, "enhanced": s.enhanced}
                       for s in self.solutions],
            "population": cfg.population, "aggregation_loops": self.loops,
            "strategies": [s.to_dict() for s in self.strategies],
            "verified": verified,
            "consensus": cfg.consensus_threshold is not None
            and verified >= cfg.consensus_threshold,
            "improvement_rounds": self.rounds, "max_calls": max_calls(cfg),
            "max_completion_tokens": max_calls(cfg) * self.tokens, "calls": self.ctx.calls,
            "stopped_early": stopped}, **self.ctx.budget_metadata()}

    def trace(self, text: str) -> str:
        cfg = self.cfg
        parts = [f"Agent {s.agent}, solution {s.member} (temperature "
                 f"{cfg.temperature(s.agent)}, {s.passes}/{len(s.verdicts)} checks passed):\n"
                 f"{s.text}" for s in self.solutions]
        parts += [f"Strategy of solution {s.member} (agent {s.agent}):\n{s.render()}"
                  for s in self.strategies]
        return "\n\n".join(parts + [f"Answer:\n{text}"])


def run(ctx: RunContext) -> Answer:
    state = _Run(ctx)
    try:
        state.generate()
        state.aggregate()
        state.share_strategies()
        state.verify(state.solutions)
        state.improve()
    except BudgetExhausted:
        if not state.solutions:
            raise  # nothing to answer with
    text, finish, stopped = state.synthesize()
    if state.cfg.use_thinking_tags:
        text = with_thinking_tags(text, state.cfg.answer_extraction_mode)
    return Answer(text, finish_reason=finish, reasoning=state.trace(text),
                  metadata=state.metadata(stopped))
