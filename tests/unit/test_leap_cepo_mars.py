"""``leap``, ``cepo`` and ``mars`` over a scripted upstream: call patterns per option, what each
call asks, concurrency, options and 400s, exact usage, malformed replies, budget stops and the
``--cepo-config`` layering."""

from __future__ import annotations

import threading

import pytest

from optillm.approaches.cepo import parse_preference, parse_rating
from optillm.approaches.leap import Example, parse_examples
from optillm.approaches.mars import MarsConfig, max_calls, parse_verdict
from optillm.errors import UpstreamError
from optillm.types import Choice, Completion, Message, Usage

from ..conftest import chat
from ..fakes import words


def last(request) -> str:
    return request.messages[-1].text


class Script:
    """A fake's default reply: the first rule whose marker is in the last message answers;
    every (request, reply text) is recorded, so usage can be recomputed exactly."""

    def __init__(self, *rules, default="ok"):
        self.rules = list(rules)
        self.default = default
        self.calls: list[tuple] = []
        self._lock = threading.Lock()

    def __call__(self, request):
        reply = self.default
        for marker, value in self.rules:
            if marker in last(request):
                reply = value
                break
        if callable(reply):
            reply = reply(request)
        text = reply.text if isinstance(reply, Completion) else reply
        with self._lock:
            self.calls.append((request, text))
        return reply

    def asked(self, marker: str) -> list:
        return [r for r, _ in self.calls if marker in last(r)]

    def usage(self) -> dict:
        prompt = sum(sum(words(m.text) for m in r.messages) for r, _ in self.calls)
        completion = sum(words(t) for _, t in self.calls)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "completion_tokens_details": {"reasoning_tokens": 0}}


def truncated(request, text: str) -> Completion:
    """A reply cut off at max_tokens, counted as the fake counts."""
    prompt = sum(words(m.text) for m in request.messages)
    return Completion((Choice(0, Message("assistant", text), "length"),),
                      Usage(prompt, words(text)), model="fake")


def ok(response) -> dict:
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# -- leap -------------------------------------------------------------------------------------

FEW_SHOT = ("Q: What is 2+3?\nA: 5\n\nQ: What is 10-4?\nA: 6\n\nQ: What is 7*6?")
EXAMPLES_JSON = '[{"question": "What is 2+3?", "answer": "5"}, ' \
                '{"question": "What is 10-4?", "answer": "6"}]'


def leap_script(extraction=EXAMPLES_JSON):
    return Script(("list the worked examples", extraction),
                  ("What is 2+3?\n\nThink step by step", "2+3 = 5. Final answer: 5"),
                  ("What is 10-4?\n\nThink step by step", "10-4 = 7. Final answer: 7"),
                  ("The attempt is wrong", "- Subtract carefully."),
                  ("Merge them", "1. Check subtraction twice."),
                  default="42")


def test_leap_learns_principles_from_the_one_mistake(make_app, fake, openapi):
    script = leap_script()
    fake.default = script
    client = make_app().test_client()
    payload = {"model": "leap-fake", "temperature": 0.9, "return_full_response": True,
               "messages": [{"role": "system", "content": "You are a calculator."},
                            {"role": "user", "content": FEW_SHOT}]}
    data = ok(client.post("/v1/chat/completions", json=payload))
    openapi(data, "CreateChatCompletionResponse")
    # 1 extraction + 2 zero-shot + 1 principle (one mistake) + 1 consolidation + 1 final
    assert len(script.calls) == 6
    (extraction,) = script.asked("list the worked examples")
    assert extraction.messages[0].text == "You are a calculator."  # the whole conversation
    assert extraction.messages[1].text == FEW_SHOT and extraction.params["temperature"] == 0.3
    (principle,) = script.asked("The attempt is wrong")
    assert "What is 10-4?" in last(principle) and "The correct answer is: 6" in last(principle)
    assert "10-4 = 7" in last(principle)
    (merge,) = script.asked("Merge them")
    assert "Subtract carefully" in last(merge)
    final = fake.history[-1]
    assert last(final).startswith(FEW_SHOT) and "Check subtraction twice" in last(final)
    assert final.messages[0].text == "You are a calculator."
    assert final.params["temperature"] == 0.9  # the client's sampling on the answer
    for zero_shot in script.asked("Think step by step"):
        assert zero_shot.params["temperature"] == 0.9
    choice = data["choices"][0]
    assert "Mistakes: 1" in choice["message"]["content"]  # the full trace was asked for
    meta = choice["optillm_leap"]
    assert [e["answer"] for e in meta["examples"]] == ["5", "6"]
    assert [m["question"] for m in meta["mistakes"]] == ["What is 10-4?"]
    assert meta["principles"] == "1. Check subtraction twice."
    assert data["usage"] == script.usage()


def test_leap_without_examples_answers_plainly(client, fake):
    script = leap_script(extraction="[]")
    fake.default = script
    data = ok(chat(client, model="leap-fake", content="Tell me a joke."))
    assert len(script.calls) == 2  # extraction, then the plain answer
    assert last(fake.history[-1]) == "Tell me a joke."
    assert data["choices"][0]["message"]["content"] == "42"
    assert data["choices"][0]["optillm_leap"]["examples"] == []
    assert data["usage"] == script.usage()


@pytest.mark.parametrize("reply", [
    "Sure! Here they are:\n```json\n" + EXAMPLES_JSON + "\n```\nHope that helps.",
    "The examples are " + EXAMPLES_JSON + " as requested.",
    '{"examples": ' + EXAMPLES_JSON + "}",
    "[{'question': broken json",  # falls back to the Q:/A: pairs of the prompt
])
def test_leap_tolerates_malformed_extraction(client, fake, reply):
    script = leap_script(extraction=reply)
    fake.default = script
    data = ok(chat(client, model="leap-fake", content=FEW_SHOT))
    examples = data["choices"][0]["optillm_leap"]["examples"]
    assert [e["question"] for e in examples][:2] == ["What is 2+3?", "What is 10-4?"]
    assert len(script.asked("Think step by step")) == len(examples)


def test_parse_examples_fallbacks():
    assert parse_examples("no examples here, sorry", "plain question") == []
    assert parse_examples("", "") == []
    assert parse_examples('[{"question": 1}, "x", {"question": "q", "answer": 3}]') == \
        [Example("q", "3")]
    assert parse_examples("Question: a?\nAnswer: b") == [Example("a?", "b")]
    assert parse_examples("{not json") == []


def test_leap_reads_chat_style_few_shot_turns(client, fake):
    fake.default = Script(("list the worked examples", "garbage"), default="Final answer: 9")
    payload = {"model": "leap-fake", "messages": [
        {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"},
        {"role": "user", "content": "4+5?"}]}
    data = ok(client.post("/v1/chat/completions", json=payload))
    assert data["choices"][0]["optillm_leap"]["examples"] == [{"question": "3+3?",
                                                                "answer": "6"}]


def test_leap_zero_shot_and_principles_run_concurrently(make_app):
    from ..fakes import FakeUpstream

    fake = FakeUpstream(delay=0.05)
    many = ", ".join(f'{{"question": "Q{i}?", "answer": "{i}"}}' for i in range(4))
    script = Script(("list the worked examples", f"[{many}]"),
                    ("Think step by step", "Final answer: 99"), default="principle")
    fake.default = script
    client = make_app(upstream=fake).test_client()
    data = ok(chat(client, model="leap-fake", content="Q?", leap_max_examples=3))
    assert len(data["choices"][0]["optillm_leap"]["examples"]) == 3  # capped
    assert len(script.calls) == 1 + 3 + 3 + 1 + 1
    assert fake.max_active >= 3


def test_leap_options(client, fake):
    script = leap_script()
    fake.default = script
    ok(chat(client, model="leap-fake", content=FEW_SHOT, leap_max_examples=0))
    assert len(script.calls) == 1  # no learning at all


# -- cepo -------------------------------------------------------------------------------------

PLAN, EXECUTE, REFINE, FINAL = ("Write a clear, step-by-step plan", "Carry out the plan",
                                "Compare them carefully", "A carefully checked solution")
RATE, PAIR = "Rating: [[N]]", "end with exactly [[1]] or [[2]]"


def cepo_script(**overrides):
    rules = dict({PLAN: "the plan", EXECUTE: "executed", REFINE: "refined",
                  FINAL: lambda r: f"final {r.params['temperature']}", RATE: "Rating: [[5]]",
                  PAIR: "[[1]]"}, **overrides)
    return Script(*rules.items(), default="direct answer")


def test_cepo_call_pattern_and_step_parameters(client, fake, openapi):
    answers = iter(["final A", "final B"])
    lock = threading.Lock()

    def final(_):
        with lock:
            return next(answers)

    script = cepo_script(**{FINAL: final,
                            RATE: lambda r: "Rating: [[9]]" if "final B" in r.messages[-2].text
                            else "Rating: [[3]]"})
    fake.default = script
    data = ok(chat(client, model="cepo-fake", cepo_bestofn_n=2, cepo_planning_n=2,
                   cepo_planning_m=2, max_tokens=1000, top_p=0.5))
    openapi(data, "CreateChatCompletionResponse")
    # per attempt: 2 plans + 2 executions + refine + final; then 2 absolute ratings
    assert len(script.calls) == 2 * (2 + 2 + 1 + 1) + 2
    temps = {PLAN: 0.55, EXECUTE: 0.25, REFINE: 0.1, FINAL: 0.0, RATE: 0.1}
    for marker, temp in temps.items():
        asked = script.asked(marker)
        assert asked and all(r.params["temperature"] == temp for r in asked), marker
        assert all(r.params["max_tokens"] == 1000 for r in asked)  # the client's cap
        assert all(r.params["top_p"] == 0.5 for r in asked)  # other sampling passes
    refine = script.asked(REFINE)[0]
    assert "Solution 1:\nexecuted" in last(refine) and "Solution 2:\nexecuted" in last(refine)
    choice = data["choices"][0]
    assert choice["message"]["content"] == "final B"
    meta = choice["optillm_cepo"]
    assert sorted(meta["ratings"]) == [3.0, 9.0]  # attempts finish in either order
    assert meta["ratings"][meta["chosen"]] == 9.0
    assert meta["attempts"] == [{"plan_tries": 2, "accepted": 2, "complete": True}] * 2
    assert "optillm_budget" not in choice
    assert data["usage"] == script.usage()


def test_cepo_retries_cut_off_plans_then_answers_directly(client, fake):
    executions = iter([True, True, False])
    script = cepo_script(**{EXECUTE: lambda r: truncated(r, "cut") if next(executions)
                            else "done"})
    fake.default = script
    body = dict(cepo_bestofn_n=1, cepo_planning_n=1, cepo_planning_m=3)
    data = ok(chat(client, model="cepo-fake", **body))
    assert len(script.asked(PLAN)) == 3 and len(script.asked(EXECUTE)) == 3
    assert len(script.calls) == 3 * 2 + 2  # accepted on the third try; no rating for one
    assert data["choices"][0]["optillm_cepo"]["attempts"][0]["accepted"] == 1

    script = cepo_script(**{EXECUTE: lambda r: truncated(r, "cut")})
    fake.default = script
    data = ok(chat(client, model="cepo-fake", **body))
    assert len(script.calls) == 3 * 2 + 1  # never accepted: one direct answer
    assert data["choices"][0]["message"]["content"] == "direct answer"
    assert script.calls[-1][0].params["temperature"] == 0.1
    assert data["usage"] == script.usage()


def test_cepo_pairwise_and_majority_ratings(client, fake):
    counter = iter(range(100))
    lock = threading.Lock()

    def final(_):
        with lock:
            return f"The answer is {[7, 8, 8][next(counter) % 3]}"

    # garbage, then preferences for the second response
    script = cepo_script(**{FINAL: final, PAIR: lambda r: "Response 2 is better"
                            if "Response 2:\nThe answer is 8" in last(r) else "hmm"})
    fake.default = script
    data = ok(chat(client, model="cepo-fake", cepo_bestofn_n=3, cepo_planning_n=1,
                   cepo_planning_m=1, cepo_bestofn_rating_type="pairwise"))
    assert len(script.asked(PAIR)) == 3  # every pair once
    meta = data["choices"][0]["optillm_cepo"]
    assert sum(meta["wins"]) <= 3 and meta["rating_type"] == "pairwise"
    assert data["usage"] == script.usage()

    counter = iter(range(100))
    script = cepo_script(**{FINAL: final})
    fake.default = script
    data = ok(chat(client, model="cepo-fake", cepo_bestofn_n=3, cepo_planning_n=1,
                   cepo_planning_m=1, cepo_bestofn_rating_type="majority"))
    assert not script.asked(PAIR) and not script.asked(RATE)  # a vote needs no call
    assert len(script.calls) == 3 * 4
    assert data["choices"][0]["message"]["content"] == "The answer is 8"


def test_cepo_garbage_ratings_fall_back_to_the_first(client, fake):
    script = cepo_script(**{RATE: "I cannot rate this, it is lovely!!"})
    fake.default = script
    data = ok(chat(client, model="cepo-fake", cepo_bestofn_n=2, cepo_planning_n=1,
                   cepo_planning_m=1))
    meta = data["choices"][0]["optillm_cepo"]
    assert meta["ratings"] == [None, None] and meta["chosen"] == 0


def test_cepo_parsers():
    assert parse_rating("Good. Rating: [[8]]") == 8.0
    assert parse_rating("rating: 7") == 7.0 and parse_rating("I give it 6/10") == 6.0
    assert parse_rating("[[42]]") is None and parse_rating("") is None
    assert parse_rating(None) is None and parse_rating("no number") is None
    assert parse_preference("[[2]]") == 1 and parse_preference("Response 1 wins") == 0
    assert parse_preference(" 2. ") == 1 and parse_preference("both bad [[3]]") is None


def test_cepo_concurrency(make_app):
    from ..fakes import FakeUpstream

    fake = FakeUpstream(delay=0.05)
    fake.default = cepo_script()
    client = make_app(upstream=fake).test_client()
    ok(chat(client, model="cepo-fake", cepo_bestofn_n=2, cepo_planning_n=3, cepo_planning_m=3))
    assert fake.max_active >= 6  # 2 attempts x 3 plans at once


def test_cepo_config_file_layers_under_the_body(make_app, fake, tmp_path):
    path = tmp_path / "cepo.yaml"
    path.write_text("bestofn_n: 1\nplanning_n: 1\ncepo_planning_m: 1\n"
                    "planning_temperature_step1: 0.9\nrating_model: None\n")
    script = cepo_script()
    fake.default = script
    client = make_app(cepo_config=str(path)).test_client()
    ok(chat(client, model="cepo-fake"))
    assert len(script.calls) == 4  # the file's bestofn_n / planning_n / planning_m
    assert script.asked(PLAN)[0].params["temperature"] == 0.9
    script.calls.clear()
    ok(chat(client, model="cepo-fake", cepo_bestofn_n=2,
            cepo_planning_temperature_step1=0.2))
    assert len(script.calls) == 2 * 4 + 2  # the body wins; the rest stays the file's
    assert {r.params["temperature"] for r in script.asked(PLAN)} == {0.2}
    assert all(r.model == "fake" for r, _ in script.calls)  # rating_model None: base model


def test_cepo_budget_stop_answers_with_the_best_so_far(client, fake):
    script = cepo_script()
    fake.default = script
    data = ok(chat(client, model="cepo-fake", cepo_bestofn_n=1, cepo_planning_n=2,
                   cepo_planning_m=2, max_upstream_calls=5))
    assert len(script.calls) == 5  # plans, executions and the refinement; final refused
    choice = data["choices"][0]
    assert choice["message"]["content"] == "refined"
    assert choice["optillm_budget"]["stopped_early"] is True
    assert choice["optillm_budget"]["calls"] == 5
    assert choice["optillm_cepo"]["attempts"][0]["complete"] is False
    assert data["usage"] == script.usage()


def test_cepo_retries_upstream_errors_with_lower_reasoning_effort(client, fake):
    failures = iter([True, False])
    lock = threading.Lock()

    def flaky_plan(request):
        with lock:
            fail = next(failures, False)
        return UpstreamError("boom") if fail else "the plan"

    script = cepo_script(**{PLAN: flaky_plan})
    fake.default = script
    ok(chat(client, model="cepo-fake", cepo_bestofn_n=1, cepo_planning_n=1, cepo_planning_m=1,
            cepo_num_of_retries=1, cepo_use_reasoning_fallback=True, reasoning_effort="high"))
    plans = script.asked(PLAN)
    assert [r.params["reasoning_effort"] for r in plans] == ["high", "medium"]
    assert len(script.calls) == 5
    fake.default = cepo_script(**{PLAN: UpstreamError("down")})
    assert chat(client, model="cepo-fake", cepo_bestofn_n=1, cepo_planning_n=1,
                cepo_planning_m=1).status_code == 502  # no retries by default


# -- mars -------------------------------------------------------------------------------------

AGENT, AGGREGATE, VERIFY, IMPROVE, SYNTH = ("Reason step by step", "Combine their correct",
                                            "VERDICT: PASS", "Reviewers found problems",
                                            "Independent solvers")


def mars_script(**overrides):
    rules = dict({AGENT: lambda r: f"solution at {r.params['temperature']}",
                  AGGREGATE: lambda r: f"combined at {r.params['temperature']}",
                  VERIFY: "Looks right.\nVERDICT: PASS", IMPROVE: "improved",
                  SYNTH: "the synthesis"}, **overrides)
    return Script(*rules.items())


def test_mars_default_pattern(client, fake, openapi):
    script = mars_script()
    fake.default = script
    data = ok(chat(client, model="mars-fake", max_tokens=200))
    openapi(data, "CreateChatCompletionResponse")
    assert len(script.calls) == 3 + 3 + 6 + 1  # agents, aggregation, 2 checks each, synthesis
    assert sorted(r.params["temperature"] for r in script.asked(AGENT)) == [0.3, 0.6, 1.0]
    for r in script.asked(AGGREGATE):  # each combines 2 solutions of the population
        assert last(r).count("Solution ") == 2 and "solution at" in last(r)
    assert {r.params["temperature"] for r in script.asked(VERIFY)} == {0.1}
    assert all("combined at" in last(r) for r in script.asked(VERIFY))
    assert all(r.params["max_tokens"] == 200 for r, _ in script.calls)
    assert fake.history[-1] is script.asked(SYNTH)[0]
    assert data["choices"][0]["message"]["content"] == "the synthesis"
    meta = data["choices"][0]["optillm_mars"]
    assert all(a["verified"] and a["checks"] == 2 for a in meta["agents"])
    assert meta["max_calls"] == max_calls(MarsConfig()) == 3 + 3 + 6 + 2 * (3 + 6) + 1
    assert meta["max_completion_tokens"] == meta["max_calls"] * 200
    assert meta["stopped_early"] is False and "optillm_budget" not in data["choices"][0]
    assert data["usage"] == script.usage()


def test_mars_improves_failed_solutions(client, fake):
    def verdict(r):
        return "VERDICT: FAIL, wrong sum" if "solution at 0.3" in last(r) else "VERDICT: PASS"

    script = mars_script(**{VERIFY: verdict})
    fake.default = script
    config = {"num_agents": 2, "agent_temperatures": [0.3, 0.9], "aggregation": "none",
              "verification_passes": 1, "improvement_rounds": 3}
    data = ok(chat(client, model="mars-fake", mars_config=config))
    (improve,) = script.asked(IMPROVE)  # one failed solution, fixed in one round
    assert "solution at 0.3" in last(improve) and "wrong sum" in last(improve)
    assert improve.params["temperature"] == 0.3
    assert len(script.calls) == 2 + 2 + 1 + 1 + 1
    meta = data["choices"][0]["optillm_mars"]
    assert meta["improvement_rounds"] == 1 and meta["agents"][0]["improvements"] == 1
    synth = last(script.asked(SYNTH)[0])
    assert "improved" in synth and "solution at 0.9" in synth


def test_mars_garbage_verdicts_stay_within_max_calls(make_app):
    from ..fakes import FakeUpstream

    fake = FakeUpstream(delay=0.05)
    script = mars_script(**{VERIFY: "%%% ??? lorem"})
    fake.default = script
    client = make_app(upstream=fake).test_client()
    config = {"num_agents": 3, "aggregation": "none", "verification_passes": 1,
              "improvement_rounds": 2}
    data = ok(chat(client, model="mars-fake", mars_config=config))
    assert len(script.calls) == max_calls(MarsConfig(**config)) == 3 + 3 + 2 * 6 + 1
    assert fake.max_active >= 3  # agents, checks and improvements fan out
    # none verified: the synthesis sees all solutions
    assert last(script.asked(SYNTH)[0]).count("0 of 1 checks passed") == 3
    assert data["usage"] == script.usage()


def test_mars_budget_stop_returns_the_verified_solution(client, fake):
    def verdict(r):
        return "VERDICT: PASS" if "solution at 0.9" in last(r) else "VERDICT: FAIL"

    script = mars_script(**{VERIFY: verdict})
    fake.default = script
    config = {"num_agents": 2, "agent_temperatures": [0.3, 0.9], "aggregation": "none",
              "verification_passes": 1}
    data = ok(chat(client, model="mars-fake", mars_config=config, max_upstream_calls=4))
    assert len(script.calls) == 4 and not script.asked(IMPROVE) and not script.asked(SYNTH)
    choice = data["choices"][0]
    assert choice["message"]["content"] == "solution at 0.9"
    assert choice["optillm_mars"]["stopped_early"] is True
    assert choice["optillm_budget"]["stopped_early"] is True
    assert data["usage"] == script.usage()


def test_mars_config_validation(client, fake):
    fake.default = mars_script()
    for bad in ({"num_agents": 0}, {"bogus_key": 1}, {"agent_temperatures": [5]},
                {"agent_temperatures": []}, {"aggregation": "vote"},
                {"verification_passes": "two"}, {"max_tokens": -1}, {"num_agents": True}):
        r = chat(client, model="mars-fake", mars_config=bad)
        assert r.status_code == 400, bad
    assert "bogus_key" in chat(client, model="mars-fake", mars_config={"bogus_key": 1}
                               ).get_json()["error"]["message"]
    assert chat(client, model="mars-fake", mars_config=[1]).status_code == 400


def test_mars_single_agent_skips_aggregation(client, fake):
    script = mars_script()
    fake.default = script
    ok(chat(client, model="mars-fake",
            mars_config={"num_agents": 1, "verification_passes": 1, "max_tokens": 30}))
    assert len(script.calls) == 1 + 1 + 1 and not script.asked(AGGREGATE)
    assert all(r.params["max_tokens"] == 30 for r, _ in script.calls)


def test_parse_verdict():
    assert parse_verdict("blah\nVERDICT: PASS") is True
    assert parse_verdict("VERDICT: **FAIL**") is False
    assert parse_verdict("The solution is incorrect.") is False
    assert parse_verdict("It is correct.") is True
    assert parse_verdict("") is None and parse_verdict(None) is None
    assert parse_verdict("%%%") is None
