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

AGGREGATIONS = ("rsa", "none")
#: ``answer_extraction_mode`` values (what follows ``</think>`` with ``use_thinking_tags``).
EXTRACTION_MODES = ("auto", "code", "math", "none")

#: OptiLLM's key -> (our key, how its value becomes ours).
OPTILLM_ALIASES: dict[str, tuple[str, Any]] = {
    "max_iterations": ("improvement_rounds", None),
    "verification_passes_required": ("verification_passes", None),
    "enable_aggregation": ("aggregation", lambda v: ("rsa" if v else "none")
                           if isinstance(v, bool) else v),
}

#: Integer keys: (low, high), inclusive. None is allowed where the default is None.
_INT_BOUNDS = {
    "num_agents": (1, 8), "population_size": (1, 16), "aggregation_size": (1, 8),
    "aggregation_loops": (0, 5), "verification_passes": (1, 5),
    "max_verification_attempts": (1, 10), "improvement_rounds": (0, 8),
    "min_verified_solutions": (1, 16), "consensus_threshold": (1, 16),
    "max_tokens": (1, 1_000_000)}
_BOOLS = ("enable_strategy_network", "strategy_extraction_enabled", "cross_agent_enhancement",
          "early_termination", "use_thinking_tags", "use_reasoning_api")


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

    Raises: ValueError naming the key and its allowed values.
    """

    num_agents: int = 3
    agent_temperatures: tuple[float, ...] = (0.3, 0.6, 1.0)
    population_size: int | None = None
    aggregation: str = "rsa"
    aggregation_size: int = 2
    aggregation_loops: int = 1
    enable_strategy_network: bool = False
    strategy_extraction_enabled: bool = True
    cross_agent_enhancement: bool = True
    verification_passes: int = 2
    max_verification_attempts: int | None = None
    verification_temperature: float = 0.1
    improvement_rounds: int = 2
    min_verified_solutions: int | None = None
    consensus_threshold: int | None = None
    early_termination: bool = True
    max_tokens: int | None = None
    use_thinking_tags: bool = False
    answer_extraction_mode: str = "auto"
    use_reasoning_api: bool = False

    def __post_init__(self):
        nullable = {f.name for f in dataclasses.fields(self) if f.default is None}
        for name, (low, high) in _INT_BOUNDS.items():
            value = getattr(self, name)
            if value is None and name in nullable:
                continue
            if not _int(value) or not low <= value <= high:
                raise ValueError(f"mars_config.{name} must be an integer from {low} to {high}"
                                 f", got {value!r}")
        for name in _BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"mars_config.{name} must be true or false")
        temps = self.agent_temperatures
        if not isinstance(temps, (list, tuple)) or not temps or len(temps) > 8 or not all(
                _number(t) and 0 <= t <= 2 for t in temps):
            raise ValueError("mars_config.agent_temperatures must be a list of 1 to 8 numbers "
                             "between 0 and 2")
        object.__setattr__(self, "agent_temperatures", tuple(float(t) for t in temps))
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"mars_config.aggregation must be one of {', '.join(AGGREGATIONS)}"
                             f" (enable_aggregation: true or false)")
        if self.answer_extraction_mode not in EXTRACTION_MODES:
            raise ValueError("mars_config.answer_extraction_mode must be one of "
                             f"{', '.join(EXTRACTION_MODES)}")
        if not _number(self.verification_temperature) \
                or not 0 <= self.verification_temperature <= 2:
            raise ValueError("mars_config.verification_temperature must be between 0 and 2")
        if self.max_verification_attempts is not None \
                and self.max_verification_attempts < self.verification_passes:
            raise ValueError("mars_config.max_verification_attempts must be at least "
                             f"verification_passes ({self.verification_passes})")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarsConfig:
        """Our keys and OptiLLM's (``OPTILLM_ALIASES`` translated).

        Raises: ValueError naming unknown keys, an OptiLLM key and ours that disagree, or a
        bad value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(map(str, data)) - known - set(OPTILLM_ALIASES))
        if unknown:
            raise ValueError(f"unknown mars_config keys: {', '.join(unknown)} (known: "
                             f"{', '.join(sorted(known | set(OPTILLM_ALIASES)))})")
        values = {k: v for k, v in data.items() if k in known}
        for alias, (ours, translate) in OPTILLM_ALIASES.items():
            if alias not in data:
                continue
            value = translate(data[alias]) if translate else data[alias]
            if alias == "enable_aggregation" and not isinstance(data[alias], bool):
                raise ValueError("mars_config.enable_aggregation must be true or false")
            if ours in values and values[ours] != value:
                raise ValueError(f"mars_config.{alias} (OptiLLM's name for {ours}) and "
                                 f"mars_config.{ours} disagree")
            values[ours] = value
        try:
            return cls(**values)
        except ValueError as exc:
            message = str(exc)
            for alias, (ours, _) in OPTILLM_ALIASES.items():
                if alias in data:  # name the key the client sent
                    message = message.replace(f"mars_config.{ours} ",
                                              f"mars_config.{alias} ({ours}) ")
            raise ValueError(message) from None

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
