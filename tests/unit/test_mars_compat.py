"""``mars`` with OptiLLM 0.4.0's ``mars_config`` keys, over the scripted fake upstream: each key
checked for its effect (calls made, what the prompts carry, rounds run, checks per solution,
the answer's shape), OptiLLM's whole default configs accepted, unknown keys a 400 naming them."""

from __future__ import annotations

import json
import re

import pytest

from optillm.approaches._mars_strategies import extract_final, parse_strategy, peer_strategies
from optillm.approaches.mars import MarsConfig, Solution, max_calls, max_depth

from ..conftest import chat
from .test_leap_cepo_mars import AGENT, AGGREGATE, IMPROVE, SYNTH, VERIFY, Script, last, ok

STRATEGY, ENHANCE = "Describe the reasoning strategy", "Reasoning strategies other solvers"
SHARED_IN_IMPROVE = "Strategies other solvers used on this problem"

#: OptiLLM 0.4.0's ``DEFAULT_CONFIG`` and ``LIGHTWEIGHT_CONFIG`` (optillm/mars/mars.py).
OPTILLM_DEFAULT = {
    "num_agents": 3, "max_iterations": 5, "verification_passes_required": 2,
    "consensus_threshold": 2, "min_verified_solutions": 1, "max_tokens": 64000,
    "max_verification_attempts": 3, "early_termination": True, "use_reasoning_api": True,
    "enable_aggregation": True, "population_size": 6, "aggregation_size": 3,
    "aggregation_loops": 3, "enable_strategy_network": True,
    "strategy_extraction_enabled": True, "cross_agent_enhancement": True,
    "use_thinking_tags": True, "answer_extraction_mode": "auto"}
OPTILLM_LIGHTWEIGHT = {
    "num_agents": 2, "max_iterations": 2, "verification_passes_required": 1,
    "consensus_threshold": 1, "min_verified_solutions": 1, "max_tokens": 4000,
    "max_verification_attempts": 2, "early_termination": True, "use_reasoning_api": True,
    "enable_aggregation": False, "enable_strategy_network": False,
    "strategy_extraction_enabled": False, "cross_agent_enhancement": False,
    "use_thinking_tags": True, "answer_extraction_mode": "auto"}


def temp_of(text: str) -> str:
    """The temperature tag of the first scripted solution in ``text`` ("solution at 0.3")."""
    found = re.search(r"\b(?:solution|combined|enhanced|improved) at ([\d.]+)", text)
    return found.group(1) if found else "?"


def script(**overrides) -> Script:
    """Agents answer "solution at T"; strategies name their solution's T; enhancements and
    improvements keep the T of the solution they rewrite."""
    def strategy(r):
        return (f"**APPROACH:** trick-{temp_of(last(r).split('solution:')[1])}\n"
                f"2. KEY_INSIGHTS: insight-{temp_of(last(r).split('solution:')[1])}\n"
                f"TECHNIQUES: algebra\nPATTERN: reduce then solve")

    def rewrite(word):
        return lambda r: f"{word} at {r.params['temperature']}"

    rules = dict({AGENT: lambda r: f"solution at {r.params['temperature']}",
                  AGGREGATE: rewrite("combined"), VERIFY: "Looks right.\nVERDICT: PASS",
                  IMPROVE: rewrite("improved"), SYNTH: "the synthesis: \\boxed{5}",
                  STRATEGY: strategy, ENHANCE: rewrite("enhanced")}, **overrides)
    return Script(*rules.items())


def run(client, fake, config, sc=None, **body):
    sc = sc or script()
    fake.default = sc
    data = ok(chat(client, model="mars-fake", mars_config=config, **body))
    return sc, data, data["choices"][0]["optillm_mars"]


def failing(*temps):
    """A verdict that fails the solutions at these temperatures (by their text)."""
    def verdict(r):
        solution = last(r).split("Proposed solution:")[1]
        return "VERDICT: FAIL, a gap" if temp_of(solution) in temps else "VERDICT: PASS"
    return verdict


# -- the mapping -------------------------------------------------------------------------------

def test_optillm_names_map_onto_ours():
    assert MarsConfig.from_dict({"max_iterations": 4, "verification_passes_required": 1,
                                 "enable_aggregation": False}) == MarsConfig(
        improvement_rounds=4, verification_passes=1, aggregation="none")
    assert MarsConfig.from_dict({"enable_aggregation": True}).aggregation == "rsa"
    # the same value under both names is fine; different values are refused
    assert MarsConfig.from_dict({"max_iterations": 2, "improvement_rounds": 2}).improvement_rounds \
        == 2
    with pytest.raises(ValueError, match="max_iterations.*disagree"):
        MarsConfig.from_dict({"max_iterations": 1, "improvement_rounds": 2})


@pytest.mark.parametrize("config", [OPTILLM_DEFAULT, OPTILLM_LIGHTWEIGHT])
def test_optillm_whole_default_configs_are_accepted(client, fake, config):
    sc, data, meta = run(client, fake, config)
    cfg = MarsConfig.from_dict(config)
    assert len(sc.calls) <= meta["max_calls"] == max_calls(cfg)
    assert len(meta["agents"]) == cfg.population
    content = data["choices"][0]["message"]["content"]
    assert content == "<think>\nthe synthesis: \\boxed{5}\n</think>\n\n" \
                      "The final answer is $\\boxed{5}$"
    assert all(r.params["max_tokens"] <= config["max_tokens"] for r, _ in sc.calls)
    assert all("reasoning_effort" in r.params for r, _ in sc.calls)


def test_optillm_default_config_runs_every_phase_in_order(client, fake):
    sc, _, meta = run(client, fake, OPTILLM_DEFAULT)
    # 3 agents sample the 6 members (n=2 each); 3 loops x 6 aggregations; 6 extractions and
    # 6 enhancements; 2 checks each (all pass, so no improvement round); the synthesis
    assert sorted(r.n for r in sc.asked(AGENT)) == [2, 2, 2]
    assert len(sc.asked(AGGREGATE)) == 18 and meta["aggregation_loops"] == 3
    assert len(sc.asked(STRATEGY)) == 6 and len(sc.asked(ENHANCE)) == 6
    assert len(sc.asked(VERIFY)) == 12 and not sc.asked(IMPROVE)
    assert len(sc.calls) == 3 + 18 + 12 + 12 + 1
    marks = [next(m for m in (AGENT, AGGREGATE, STRATEGY, ENHANCE, VERIFY, SYNTH)
                  if m in last(r)) for r, _ in sc.calls]
    order = [AGENT, AGGREGATE, STRATEGY, ENHANCE, VERIFY, SYNTH]
    assert [order.index(m) for m in marks] == sorted(order.index(m) for m in marks)
    assert max_calls(MarsConfig.from_dict(OPTILLM_DEFAULT)) == \
        3 + 3 * 6 + 6 + 6 + 3 * 6 + 5 * (6 + 3 * 6) + 1


def test_unknown_and_bad_keys_are_400s_naming_them(client, fake):
    fake.default = script()
    r = chat(client, model="mars-fake", mars_config={"low_effort_tokens": 8000, "num_agents": 2})
    assert r.status_code == 400
    message = r.get_json()["error"]["message"]
    assert "low_effort_tokens" in message and "max_iterations" in message  # names the known
    for bad in ({"enable_strategy_network": "yes"}, {"use_thinking_tags": 1},
                {"answer_extraction_mode": "latex"}, {"enable_aggregation": "rsa"},
                {"population_size": 0}, {"consensus_threshold": 0},
                {"verification_passes_required": 3, "max_verification_attempts": 2},
                {"max_iterations": 1, "improvement_rounds": 3}, {"max_iterations": -1}):
        r = chat(client, model="mars-fake", mars_config=bad)
        assert r.status_code == 400, bad
        assert next(iter(bad)).split("_required")[0] in r.get_json()["error"]["message"] \
            or "disagree" in r.get_json()["error"]["message"], bad
    assert not fake.history  # nothing was sent upstream


# -- iterations, verification, consensus -----------------------------------------------------

@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_max_iterations_bounds_the_improvement_rounds(client, fake, iterations):
    config = {"num_agents": 2, "enable_aggregation": False, "verification_passes_required": 1,
              "max_iterations": iterations}
    sc, _, meta = run(client, fake, config, script(**{VERIFY: failing("0.3")}))
    assert len(sc.asked(IMPROVE)) == iterations == meta["improvement_rounds"]
    assert all("a gap" in last(r) for r in sc.asked(IMPROVE))  # the failing check's feedback
    assert meta["agents"][0]["improvements"] == iterations


@pytest.mark.parametrize("required,attempts,checks", [(2, None, 2), (2, 3, 2), (2, 4, 4),
                                                      (1, 3, 3), (3, 5, 3), (3, 6, 6)])
def test_verification_passes_and_attempts_for_a_failing_solution(client, fake, required,
                                                                  attempts, checks):
    """A always-failing solution gets checks until ``required`` consecutive passes can no
    longer fit in ``attempts``; a passing one stops at ``required``."""
    config = {"num_agents": 2, "enable_aggregation": False, "max_iterations": 0,
              "verification_passes_required": required, "max_verification_attempts": attempts}
    sc, _, meta = run(client, fake, config, script(**{VERIFY: failing("0.3")}))
    bad, good = meta["agents"]
    assert bad["checks"] == checks and not bad["verified"] and bad["passes"] == 0
    assert good["checks"] == required and good["verified"]
    assert len(sc.asked(VERIFY)) == checks + required
    waves = 1 + (attempts or required) - required
    assert max_depth(MarsConfig.from_dict(config)) == 1 + waves + 1


def test_verified_needs_consecutive_passes_at_the_end():
    s = Solution(0, 0, "x", verdicts=[True, False, True, True])
    assert s.streak == 2 and s.passes == 3
    s.verdicts.append(None)
    assert s.streak == 0


def test_consensus_threshold_stops_the_rounds_with_early_termination(client, fake):
    base = {"enable_aggregation": False, "verification_passes_required": 1,
            "max_iterations": 2, "consensus_threshold": 2}
    verdict = failing("0.3")
    sc, _, meta = run(client, fake, base, script(**{VERIFY: verdict}))
    assert not sc.asked(IMPROVE) and meta["consensus"] and meta["verified"] == 2
    sc, _, meta = run(client, fake, {**base, "early_termination": False},
                      script(**{VERIFY: verdict}))
    assert len(sc.asked(IMPROVE)) == 2 and meta["improvement_rounds"] == 2
    sc, _, meta = run(client, fake, {**base, "consensus_threshold": 3},
                      script(**{VERIFY: verdict}))
    assert len(sc.asked(IMPROVE)) == 2 and not meta["consensus"]


def test_min_verified_solutions_stops_the_rounds(client, fake):
    base = {"enable_aggregation": False, "verification_passes_required": 1,
            "max_iterations": 1}
    verdict = failing("0.3")
    sc, _, _ = run(client, fake, {**base, "min_verified_solutions": 2},
                   script(**{VERIFY: verdict}))
    assert not sc.asked(IMPROVE)
    sc, _, _ = run(client, fake, {**base, "min_verified_solutions": 3},
                   script(**{VERIFY: verdict}))
    assert len(sc.asked(IMPROVE)) == 1


# -- population and aggregation ---------------------------------------------------------------

def test_population_size_and_aggregation_size(client, fake):
    config = {"num_agents": 2, "agent_temperatures": [0.3, 0.9], "population_size": 5,
              "aggregation_size": 3, "aggregation_loops": 2, "verification_passes_required": 1}
    sc, _, meta = run(client, fake, config)
    gen = sorted((r.params["temperature"], r.n) for r in sc.asked(AGENT))
    assert gen == [(0.3, 3), (0.9, 2)]  # members 0, 2, 4 are agent 0's; 1, 3 agent 1's
    rounds = sc.asked(AGGREGATE)
    assert len(rounds) == 2 * 5 and meta["aggregation_loops"] == 2
    assert all(last(r).count("Solution ") == 3 for r in rounds)
    assert all("solution at" in last(r) for r in rounds[:5])  # loop 1 combines the agents'
    assert all("combined at" in last(r) and "solution at" not in last(r) for r in rounds[5:])
    assert len(sc.asked(VERIFY)) == 5 and len(meta["agents"]) == meta["population"] == 5
    assert [a["agent"] for a in meta["agents"]] == [0, 1, 0, 1, 0]
    assert last(sc.asked(SYNTH)[0]).count("Solution ") == 2  # at most one per agent
    assert len(sc.calls) == max_calls(MarsConfig.from_dict(config)) - 2 * (5 + 5)


def test_enable_aggregation_false_skips_it(client, fake):
    sc, _, meta = run(client, fake, {"enable_aggregation": False, "population_size": 4})
    assert not sc.asked(AGGREGATE) and meta["aggregation_loops"] == 0
    assert all("solution at" in last(r) for r in sc.asked(VERIFY))


# -- the strategy network --------------------------------------------------------------------

def test_strategies_are_shared_with_the_other_agents(client, fake):
    config = {"enable_aggregation": False, "enable_strategy_network": True,
              "verification_passes_required": 1}
    sc, data, meta = run(client, fake, config, return_full_response=True)
    assert len(sc.asked(STRATEGY)) == 3 and len(sc.asked(ENHANCE)) == 3
    assert [s["approach"] for s in meta["strategies"]] == ["trick-0.3", "trick-0.6",
                                                            "trick-1.0"]
    for r in sc.asked(ENHANCE):
        own = temp_of(last(r).split("Your current solution:")[1])
        shown = last(r).split("Reasoning strategies")[1]
        assert f"trick-{own}" not in shown and shown.count("trick-") == 2
        assert r.params["temperature"] == float(own)
    # the enhanced solutions are what gets verified and synthesised
    assert all("enhanced at" in last(r) for r in sc.asked(VERIFY))
    assert all(a["enhanced"] for a in meta["agents"])
    assert "Strategy of solution 0 (agent 0)" in data["choices"][0]["message"]["content"]


def test_extraction_alone_shares_strategies_into_improvement_prompts(client, fake):
    config = {"num_agents": 2, "enable_aggregation": False, "enable_strategy_network": True,
              "cross_agent_enhancement": False, "verification_passes_required": 1,
              "max_iterations": 1}
    sc, _, meta = run(client, fake, config, script(**{VERIFY: failing("0.3")}))
    assert len(sc.asked(STRATEGY)) == 2 and not sc.asked(ENHANCE)
    (improve,) = sc.asked(IMPROVE)
    shared = last(improve).split(SHARED_IN_IMPROVE)[1]
    assert "trick-0.6" in shared and "trick-0.3" not in shared
    assert len(meta["strategies"]) == 2


@pytest.mark.parametrize("config", [{"enable_strategy_network": False},
                                    {"enable_strategy_network": True,
                                     "strategy_extraction_enabled": False}])
def test_strategy_switches_off(client, fake, config):
    sc, _, meta = run(client, fake, {"enable_aggregation": False, **config})
    assert not sc.asked(STRATEGY) and not sc.asked(ENHANCE) and meta["strategies"] == []


def test_malformed_strategies_share_nothing(client, fake):
    config = {"enable_aggregation": False, "enable_strategy_network": True}
    sc, data, meta = run(client, fake, config, script(**{STRATEGY: "%%% ??? lorem"}))
    assert len(sc.asked(STRATEGY)) == 3 and not sc.asked(ENHANCE) and meta["strategies"] == []
    assert data["choices"][0]["message"]["content"] == "the synthesis: \\boxed{5}"


def test_one_agent_has_no_peers_to_learn_from(client, fake):
    sc, _, _ = run(client, fake, {"num_agents": 1, "population_size": 2,
                                  "enable_strategy_network": True})
    assert len(sc.asked(STRATEGY)) == 2 and not sc.asked(ENHANCE)


def test_budget_stop_during_enhancement_answers_with_the_best(client, fake):
    config = {"enable_aggregation": False, "enable_strategy_network": True}
    sc, data, meta = run(client, fake, config, max_upstream_calls=6)
    assert len(sc.calls) == 6 and not sc.asked(ENHANCE) and not sc.asked(VERIFY)
    choice = data["choices"][0]
    assert choice["optillm_budget"]["stopped_early"] is True and meta["stopped_early"]
    assert len(meta["strategies"]) == 3
    assert choice["message"]["content"] in {t for _, t in sc.calls}


def test_strategy_parsing_and_peers():
    s = parse_strategy("1. **Approach**: casework\n- key insights - parity\nnoise", 0, 0)
    assert (s.approach, s.insights, s.techniques) == ("casework", "parity", "")
    assert parse_strategy("nothing labelled here", 0, 0) is None
    assert parse_strategy(None, 0, 0) is None
    pool = [parse_strategy(f"APPROACH: a{m}", m, m % 3) for m in range(6)]
    assert [p.member for p in peer_strategies(1, 1, pool, 6)] == [2, 3]
    assert [p.member for p in peer_strategies(5, 2, pool, 6)] == [0, 1]


# -- the answer's shape --------------------------------------------------------------------------

@pytest.mark.parametrize("mode,synthesis,answer", [
    ("auto", "work\n\\boxed{7}", "The final answer is $\\boxed{7}$"),
    ("auto", "plan\n```python\nprint(1)\n```", "```\nprint(1)\n```"),
    ("math", "so the answer is 12", "12"),
    ("auto", "first part\n\nlast part", "last part"),
    ("none", "all of it\n\\boxed{1}", "all of it\n\\boxed{1}")])
def test_use_thinking_tags_and_answer_extraction_mode(client, fake, mode, synthesis, answer):
    config = {"num_agents": 1, "use_thinking_tags": True, "answer_extraction_mode": mode}
    _, data, _ = run(client, fake, config, script(**{SYNTH: synthesis}))
    assert data["choices"][0]["message"]["content"] == \
        f"<think>\n{synthesis}\n</think>\n\n{answer}"
    assert extract_final(synthesis, mode) == answer


def test_thinking_tags_off_by_default_and_when_false(client, fake):
    for config in ({"num_agents": 1}, {"num_agents": 1, "use_thinking_tags": False}):
        _, data, _ = run(client, fake, config)
        assert data["choices"][0]["message"]["content"] == "the synthesis: \\boxed{5}"


def test_thinking_tags_when_streaming(client, fake):
    fake.default = script()
    r = chat(client, model="mars-fake", stream=True,
             mars_config={"num_agents": 1, "use_thinking_tags": True})
    assert r.status_code == 200
    pieces = []
    for block in r.get_data().decode().split("\n\n"):
        if block.startswith("data: {"):
            for c in json.loads(block[6:])["choices"]:
                pieces.append(c["delta"].get("content") or "")
    assert "".join(pieces) == "<think>\nthe synthesis: \\boxed{5}\n</think>\n\n" \
                              "The final answer is $\\boxed{5}$"
    assert "<think>\n" in pieces  # sent on its own, before the streamed synthesis


def test_use_reasoning_api_sets_each_phase_effort(client, fake):
    config = {"enable_aggregation": False, "verification_passes_required": 1,
              "use_reasoning_api": True, "enable_strategy_network": True}
    sc, _, _ = run(client, fake, config)
    assert sorted((r.params["temperature"], r.params["reasoning_effort"])
                  for r in sc.asked(AGENT)) == [(0.3, "low"), (0.6, "medium"), (1.0, "high")]
    assert {r.params["reasoning_effort"] for r in sc.asked(VERIFY)} == {"low"}
    assert {r.params["reasoning_effort"] for r in sc.asked(STRATEGY)} == {"medium"}
    assert {r.params["reasoning_effort"] for r in sc.asked(ENHANCE) + sc.asked(SYNTH)} == \
        {"high"}
    sc, _, _ = run(client, fake, config, reasoning_effort="minimal")  # the client's wins
    assert {r.params["reasoning_effort"] for r, _ in sc.calls} == {"minimal"}
    sc, _, _ = run(client, fake, {**config, "use_reasoning_api": False})
    assert not any("reasoning_effort" in r.params for r, _ in sc.calls)


def test_max_tokens_reaches_every_call(client, fake):
    config = {"enable_strategy_network": True, "max_tokens": 64, "max_iterations": 0}
    sc, _, meta = run(client, fake, config, max_tokens=999)
    assert {r.params["max_tokens"] for r, _ in sc.calls} == {64}
    assert meta["max_completion_tokens"] == meta["max_calls"] * 64
    sc, _, _ = run(client, fake, {"enable_strategy_network": True, "max_iterations": 0},
                   max_tokens=2000)
    assert {r.params["max_tokens"] for r in sc.asked(STRATEGY)} == {500}
