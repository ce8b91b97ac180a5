"""MARS, a multi-agent reasoning system: diverse agents, aggregation, verification, repair.

After OptiLLM's ``mars``. Its parts: agents sampling at varied temperatures (self-consistency,
arXiv 2203.11171), recursive self-aggregation of solutions (RSA, arXiv 2509.26626),
verify-then-improve loops (Self-Refine, arXiv 2303.17651) and a final synthesis.

1. Agents (N calls, concurrent): agent i answers the conversation at temperature
   ``agent_temperatures[i]`` (the list is cycled to ``num_agents``).
2. Aggregation (``aggregation: "rsa"``, L x N calls, each loop concurrent; skipped with one
   agent): in each of ``aggregation_loops`` loops agent i combines ``aggregation_size``
   solutions of the population (its own and the next ones, cyclically) into an improved one.
3. Verification (V x N calls, concurrent): each solution is checked ``verification_passes``
   times; it is verified when every pass ends with ``VERDICT: PASS`` (``parse_verdict``; an
   unreadable verdict counts as a failure).
4. Improvement (up to R rounds): each failed solution is rewritten from its verifiers'
   feedback (concurrent), then verified again (V calls each); rounds stop once all pass.
5. Synthesis (1 call, ``final=True``): the final answer from the verified solutions (from all,
   best first, when none passed).

Upper bound (``max_calls(config)``): ``N + L*N + V*N + R*(N + V*N) + 1`` calls (L is 0 without
aggregation or with one agent) and ``max_calls * max_tokens`` completion tokens. Critical-path
depth: ``2 + L + 1 + 2R + 1`` calls at most. Sampling: every call sets its own temperature
(agent temperatures; ``verification_temperature`` for checks) and ``max_tokens``
(``mars_config.max_tokens``, else the client's, else 4096); other client parameters reach
every call. Bounded by the request budget: once spent, the best solution so far (verified
first, then most passes) is returned and ``optillm_budget.stopped_early`` is true.

Options (request body): ``mars_config``, a dict with the keys of ``MarsConfig`` (unknown keys
and bad values are a 400). The choice carries ``optillm_mars``; the reasoning trace (every
solution with its verdicts) is returned with ``return_full_response``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from ..toolkit.context import Answer, BudgetExhausted, RunContext

SLUG = "mars"
STREAMS = True

DEFAULT_MAX_TOKENS = 4096
AGGREGATIONS = ("rsa", "none")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class MarsConfig:
    """``mars_config``: the shape of one run (see the module docstring)."""

    num_agents: int = 3
    agent_temperatures: tuple[float, ...] = (0.3, 0.6, 1.0)
    aggregation: str = "rsa"
    aggregation_size: int = 2
    aggregation_loops: int = 1
    verification_passes: int = 2
    verification_temperature: float = 0.1
    improvement_rounds: int = 2
    max_tokens: int | None = None

    def __post_init__(self):
        checks = (("num_agents", 1, 8), ("aggregation_size", 1, 8), ("aggregation_loops", 0, 3),
                  ("verification_passes", 1, 5), ("improvement_rounds", 0, 5))
        for name, low, high in checks:
            value = getattr(self, name)
            if not _int(value) or not low <= value <= high:
                raise ValueError(f"mars_config.{name} must be an integer from {low} to {high}")
        temps = self.agent_temperatures
        if not isinstance(temps, (list, tuple)) or not temps or len(temps) > 8 or not all(
                _number(t) and 0 <= t <= 2 for t in temps):
            raise ValueError("mars_config.agent_temperatures must be a list of 1 to 8 numbers "
                             "between 0 and 2")
        object.__setattr__(self, "agent_temperatures", tuple(float(t) for t in temps))
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"mars_config.aggregation must be one of {', '.join(AGGREGATIONS)}")
        if not _number(self.verification_temperature) \
                or not 0 <= self.verification_temperature <= 2:
            raise ValueError("mars_config.verification_temperature must be between 0 and 2")
        if self.max_tokens is not None and (not _int(self.max_tokens)
                                            or not 1 <= self.max_tokens <= 1_000_000):
            raise ValueError("mars_config.max_tokens must be a positive integer")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarsConfig:
        """Raises: ValueError naming unknown keys or a bad value."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown mars_config keys: {', '.join(map(str, unknown))} "
                             f"(known: {', '.join(sorted(known))})")
        return cls(**data)

    @property
    def loops(self) -> int:
        """Aggregation loops that run (none with one agent or ``aggregation: "none"``)."""
        return self.aggregation_loops if self.aggregation == "rsa" and self.num_agents > 1 else 0

    def temperature(self, agent: int) -> float:
        return self.agent_temperatures[agent % len(self.agent_temperatures)]


def max_calls(config: MarsConfig) -> int:
    """The most upstream calls one run makes (see the module docstring)."""
    n, v = config.num_agents, config.verification_passes
    return n + config.loops * n + v * n + config.improvement_rounds * (n + v * n) + 1


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
    agent: int
    text: str
    verdicts: list[bool | None] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)
    improvements: int = 0

    @property
    def verified(self) -> bool:
        return bool(self.verdicts) and all(v is True for v in self.verdicts)

    @property
    def passes(self) -> int:
        return sum(v is True for v in self.verdicts)


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


def improve_prompt(query: str, solution: str, feedback: list[str]) -> str:
    notes = "\n\n".join(f"Review {i}:\n{f}" for i, f in enumerate(feedback, 1))
    return (f"{query}\n\nYour earlier solution:\n{solution}\n\nReviewers found problems:\n\n"
            f"{notes}\n\nWrite a corrected, complete solution that ends with the final answer.")


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
    return sorted(solutions, key=lambda s: (not s.verified, -s.passes, s.agent))


def run(ctx: RunContext) -> Answer:
    cfg: MarsConfig = ctx.options.mars_config
    query = ctx.query
    tokens = cfg.max_tokens or ctx.sampling.get("max_tokens") \
        or ctx.sampling.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
    limits = {"max_tokens": tokens, "max_completion_tokens": None}
    solutions: list[Solution] = []
    trace: list[str] = []
    rounds = 0

    def ask(prompt: str, temperature: float, **extra: Any) -> str:
        return ctx.complete(ctx.with_query(prompt), temperature=temperature, **limits,
                            **extra).text

    def verify(batch: list[Solution]) -> None:
        jobs = [(s, p) for s in batch for p in range(cfg.verification_passes)]
        replies = ctx.map(lambda job: ask(verify_prompt(query, job[0].text),
                                          cfg.verification_temperature), jobs)
        for s in batch:
            s.verdicts, s.feedback = [], []
        for (s, _), reply in zip(jobs, replies, strict=True):
            s.verdicts.append(parse_verdict(reply))
            s.feedback.append(reply)

    try:
        texts = ctx.map(lambda i: ask(agent_prompt(query), cfg.temperature(i), answer=True),
                        range(cfg.num_agents))
        solutions = [Solution(i, t) for i, t in enumerate(texts)]
        for _ in range(cfg.loops):
            size = min(cfg.aggregation_size, len(solutions))
            groups = [[solutions[(i + j) % len(solutions)].text for j in range(size)]
                      for i in range(len(solutions))]
            texts = ctx.map(lambda group: ask(aggregate_prompt(query, group[1]),
                                              cfg.temperature(group[0])), enumerate(groups))
            solutions = [Solution(i, t) for i, t in enumerate(texts)]
        verify(solutions)
        for _ in range(cfg.improvement_rounds):
            failed = [s for s in solutions if not s.verified]
            if not failed:
                break
            rounds += 1
            texts = ctx.map(lambda s: ask(improve_prompt(query, s.text, s.feedback),
                                          cfg.temperature(s.agent)), failed)
            for s, t in zip(failed, texts, strict=True):
                s.text, s.improvements, s.verdicts = t, s.improvements + 1, []
            verify(failed)
    except BudgetExhausted:
        if not solutions:
            raise  # nothing to answer with
    ranked = _ranked(solutions)
    for s in solutions:
        trace.append(f"Agent {s.agent} (temperature {cfg.temperature(s.agent)}, "
                     f"{s.passes}/{len(s.verdicts)} checks passed):\n{s.text}")
    stopped = ctx.budget.stopped_early
    finish = "stop"
    if stopped:
        text = ranked[0].text
    else:
        chosen = [s for s in ranked if s.verified] or ranked
        try:
            final = ctx.complete(ctx.with_query(synthesis_prompt(query, chosen)), final=True,
                                 temperature=cfg.temperature(0), **limits)
            text = final.text
            finish = (final.choices[0].finish_reason if final.choices else None) or "stop"
        except BudgetExhausted:
            stopped, text = True, ranked[0].text
    metadata = {"optillm_mars": {
        "agents": [{"agent": s.agent, "temperature": cfg.temperature(s.agent),
                    "verified": s.verified, "passes": s.passes, "checks": len(s.verdicts),
                    "improvements": s.improvements} for s in solutions],
        "improvement_rounds": rounds, "max_calls": max_calls(cfg),
        "max_completion_tokens": max_calls(cfg) * tokens, "calls": ctx.calls,
        "stopped_early": stopped}, **ctx.budget_metadata()}
    reasoning = "\n\n".join(trace + [f"Answer:\n{text}"])
    return Answer(text, finish_reason=finish, reasoning=reasoning, metadata=metadata)
