"""``mars_config``: the shape of one ``mars`` run, its bounds, and OptiLLM 0.4.0's key names.

Package-private (a leading ``_``: the loader registers no approach from it); ``mars`` re-exports
``MarsConfig`` and ``max_calls``. Every key of OptiLLM's ``DEFAULT_CONFIG`` and
``LIGHTWEIGHT_CONFIG`` (``optillm/mars/mars.py`` in codelion/optillm 0.4.0) is accepted: most
share our name and meaning; three are OptiLLM's names for one of ours (``OPTILLM_ALIASES``);
any other key is a 400 naming it. The key-by-key table is in ``docs/approaches.md`` ("mars").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..options import names_of, opt, spec

AGGREGATIONS = ("rsa", "none")
#: ``answer_extraction_mode`` values (what follows ``</think>`` with ``use_thinking_tags``).
EXTRACTION_MODES = ("auto", "code", "math", "none")
_MAX_TOKENS = 1_000_000

#: OptiLLM's names for two of our keys (also declared as ``opt`` aliases) and a third whose
#: value changes shape: ``enable_aggregation: true|false`` is ``aggregation: "rsa"|"none"``.
OPTILLM_ALIASES: dict[str, str] = {"max_iterations": "improvement_rounds",
                                   "verification_passes_required": "verification_passes",
                                   "enable_aggregation": "aggregation"}


def _check(f: dataclasses.Field, value: Any, name: str) -> None:
    """``value`` for field ``f``, sent as ``name``: its type (from the annotation), then its
    declared bounds. Raises: ValueError (type); BadRequestError (bounds)."""
    kind, label = str(f.type), f"mars_config.{name}"
    if value is None and "None" in kind:
        return
    if kind.startswith("tuple"):
        if not isinstance(value, (list, tuple)) or not value or len(value) > 8 or not all(
                _number(t) and 0 <= t <= 2 for t in value):
            raise ValueError(f"{label} must be a list of 1 to 8 numbers between 0 and 2")
        return
    if kind.startswith("bool"):
        ok, what = isinstance(value, bool), "true or false"
    elif kind.startswith("int"):
        ok, what = _int(value), "an integer"
    elif kind.startswith("float"):
        ok, what = _number(value), "a number"
    else:
        ok, what = isinstance(value, str), "a string"
    if not ok:
        raise ValueError(f"{label} must be {what}, got {value!r}")
    found = spec(f)
    if found is not None:
        found.check(label, value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class MarsConfig:
    """One run's shape (the phases are described in ``optillm.approaches.mars``).

    Attributes (defaults keep the original ``mars``; OptiLLM's defaults differ, see the docs):
        num_agents: agents N; agent i samples at ``agent_temperatures[i]`` (cycled).
        agent_temperatures: 1 to 8 temperatures in [0, 2].
        population_size: solutions P kept by the RSA population (None: one per agent); member
            j is agent ``j % N``'s.
        aggregation: ``"rsa"`` (recursive self-aggregation) or ``"none"``.
        aggregation_size: K solutions combined per aggregation call.
        aggregation_loops: L aggregation rounds (each replaces the population).
        enable_strategy_network: extract each solution's reasoning strategy and share it.
        strategy_extraction_enabled: the extraction calls (off: the network has nothing).
        cross_agent_enhancement: each solution is rewritten with its peers' strategies.
        verification_passes: V consecutive ``PASS`` verdicts that verify a solution.
        max_verification_attempts: A checks at most per solution (None: V).
        verification_temperature: temperature of the checks.
        improvement_rounds: R rounds of rewriting failed solutions from their feedback.
        min_verified_solutions: rounds go on while fewer are verified (None: all of them).
        consensus_threshold: with ``early_termination``, rounds stop once this many are
            verified (None: no such stop).
        early_termination: whether ``consensus_threshold`` stops the rounds.
        max_tokens: every call's ``max_tokens`` (None: the client's, else 4096).
        use_thinking_tags: answer ``<think>synthesis</think>`` + the extracted final answer.
        answer_extraction_mode: how that final answer is taken (``EXTRACTION_MODES``).
        use_reasoning_api: every call carries a ``reasoning_effort`` for its phase.

    Bounds and choices are ``optillm.options.opt`` declarations.

    Raises: BadRequestError (400, ``param`` = ``mars_config.<key>``) for a value outside its
    bounds; ValueError naming the key for a wrong type or an inconsistent pair.
    """

    num_agents: int = opt(3, ge=1, le=8)
    agent_temperatures: tuple[float, ...] = (0.3, 0.6, 1.0)
    population_size: int | None = opt(None, ge=1, le=16)
    aggregation: str = opt("rsa", choices=AGGREGATIONS)
    aggregation_size: int = opt(2, ge=1, le=8)
    aggregation_loops: int = opt(1, ge=0, le=5)
    enable_strategy_network: bool = False
    strategy_extraction_enabled: bool = True
    cross_agent_enhancement: bool = True
    verification_passes: int = opt(2, ge=1, le=5, aliases=("verification_passes_required",))
    max_verification_attempts: int | None = opt(None, ge=1, le=10)
    verification_temperature: float = opt(0.1, ge=0, le=2)
    improvement_rounds: int = opt(2, ge=0, le=8, aliases=("max_iterations",))
    min_verified_solutions: int | None = opt(None, ge=1, le=16)
    consensus_threshold: int | None = opt(None, ge=1, le=16)
    early_termination: bool = True
    max_tokens: int | None = opt(None, ge=1, le=_MAX_TOKENS, unit="tokens")
    use_thinking_tags: bool = False
    answer_extraction_mode: str = opt("auto", choices=EXTRACTION_MODES)
    use_reasoning_api: bool = False

    def __post_init__(self):
        for f in dataclasses.fields(self):
            _check(f, getattr(self, f.name), f.name)
        object.__setattr__(self, "agent_temperatures",
                           tuple(float(t) for t in self.agent_temperatures))
        if self.max_verification_attempts is not None \
                and self.max_verification_attempts < self.verification_passes:
            raise ValueError("mars_config.max_verification_attempts must be at least "
                             f"verification_passes ({self.verification_passes})")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarsConfig:
        """Our keys and OptiLLM's (``OPTILLM_ALIASES``); an error names the key as sent.

        Raises: ValueError naming unknown keys, two names of one key that disagree, or a
        wrongly typed value; BadRequestError for a value outside its bounds.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        data = dict(data)
        if "enable_aggregation" in data:
            on = data.pop("enable_aggregation")
            if not isinstance(on, bool):
                raise ValueError("mars_config.enable_aggregation must be true or false")
            data["enable_aggregation"] = "rsa" if on else "none"
        names = {n: f for f in fields.values() for n in names_of(f)}
        names["enable_aggregation"] = fields["aggregation"]
        unknown = sorted(set(map(str, data)) - set(names))
        if unknown:
            raise ValueError(f"unknown mars_config keys: {', '.join(unknown)} (known: "
                             f"{', '.join(sorted(names))})")
        values: dict[str, Any] = {}
        sent: dict[str, str] = {}
        for name, value in data.items():
            f = names[name]
            if f.name in values and values[f.name] != value:
                raise ValueError(f"mars_config.{name} and mars_config.{sent[f.name]} (both "
                                 f"{f.name}) disagree")
            _check(f, value, name)
            values[f.name], sent[f.name] = value, name
        return cls(**values)

    # -- derived shapes ------------------------------------------------------------------

    @property
    def population(self) -> int:
        """P, the solutions in the population (``population_size``, else ``num_agents``)."""
        return self.population_size or self.num_agents

    @property
    def loops(self) -> int:
        """Aggregation loops that run (none with one solution or ``aggregation: "none"``)."""
        return self.aggregation_loops if self.aggregation == "rsa" and self.population > 1 \
            else 0

    @property
    def attempts(self) -> int:
        """A, the most checks one solution gets in one verification."""
        return self.max_verification_attempts or self.verification_passes

    @property
    def extracts(self) -> bool:
        """Whether strategy extraction runs."""
        return self.enable_strategy_network and self.strategy_extraction_enabled

    @property
    def enhances(self) -> bool:
        """Whether the cross-agent enhancement round runs (it needs peers: two agents)."""
        return self.extracts and self.cross_agent_enhancement \
            and min(self.num_agents, self.population) > 1

    def agent(self, member: int) -> int:
        """The agent that owns population member ``member``."""
        return member % self.num_agents

    def temperature(self, agent: int) -> float:
        return self.agent_temperatures[agent % len(self.agent_temperatures)]


def max_calls(config: MarsConfig) -> int:
    """The most upstream calls one run makes: ``G + L*P + S + A*P + R*(P + A*P) + 1`` with G
    generation calls (one per agent that owns a member, sampling its members with ``n``),
    S = P extraction calls (+ P enhancement calls)."""
    p, a = config.population, config.attempts
    generation = min(config.num_agents, p)
    strategies = p * (int(config.extracts) + int(config.enhances))
    return generation + config.loops * p + strategies + a * p \
        + config.improvement_rounds * (p + a * p) + 1


def max_depth(config: MarsConfig) -> int:
    """The most calls on the critical path: generation, L loops, the strategy phases, the
    verification waves (at most ``1 + A - V``), R rounds of improvement + verification, the
    synthesis."""
    waves = 1 + config.attempts - config.verification_passes
    strategies = int(config.extracts) + int(config.enhances)
    return 1 + config.loops + strategies + waves + config.improvement_rounds * (1 + waves) + 1
