"""``mcts``, ``rstar`` and ``pvg`` over a scripted upstream: call patterns per option, what
each call asks, concurrency, options from the body (and 400s), exact usage, malformed model
replies, the request budget, and per-request isolation."""

import pytest

from optillm.approaches import mcts, pvg, rstar
from optillm.approaches.mcts import parse_score
from optillm.upstream.base import NO_META

from ..conftest import chat
from ..fakes import FakeUpstream
from .test_streaming import events

QUESTION = "What is 6 times 7?"


def last(r) -> str:
    return r.messages[-1].text


@pytest.fixture
def fake():
    """A fake upstream that also keeps each call's usage (``fake.usages``), in call order."""
    return Recording()


class Recording(FakeUpstream):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.usages = []

    def complete(self, request, meta=NO_META):
        completion = super().complete(request, meta)
        with self._lock:
            self.usages.append(completion.usage)
        return completion


def assert_exact_usage(data, usages):
    """The response's usage is the exact sum of the given upstream calls' usage."""
    usage = data["usage"]
    assert usages and usage["prompt_tokens"] == sum(u.prompt_tokens for u in usages)
    assert usage["completion_tokens"] == sum(u.completion_tokens for u in usages)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("text, expected", [
    ("7", 0.7), ("Score: 9/10", 0.9), ("4 out of 5", 0.8), ("85%", 0.85), ("0.6", 0.6),
    ("12", 1.0), ("-3", 0.0), ("banana", None), ("", None), (None, None), ("10", 1.0)])
def test_parse_score_tolerates_garbage(text, expected):
    score = parse_score(text)
    assert score == (None if expected is None else pytest.approx(expected))


# -- mcts -------------------------------------------------------------------------------------

SCORES = {"r1": "3", "r2": "9/10", "r3": "banana", "s1": "5", "s2": "5", "s3": "5"}


def script_mcts(fake):
    fake.when(lambda r: last(r) == mcts.JUDGE_PROMPT,
              lambda r: SCORES.get(r.messages[-2].text, "5"))
    fake.when(lambda r: last(r) == mcts.FOLLOW_UP_PROMPT, "more?")
    fake.when(lambda r: last(r) == "more?", lambda r: [f"s{i}" for i in range(1, r.n + 1)])
    fake.when(lambda r: last(r) == QUESTION, lambda r: [f"r{i}" for i in range(1, r.n + 1)])


def test_mcts_default_search(client, fake):
    script_mcts(fake)
    r = chat(client, model="mcts-fake", content=QUESTION)
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    assert data["choices"][0]["message"]["content"] == "r2"
    h = fake.history
    # S * (1 + k(2d - 1)) + (S - 1) = 2 * 4 + 1
    assert len(h) == 9
    assert h[0].n == 3 and [m.text for m in h[0].messages] == [QUESTION]
    assert sorted(x.messages[-2].text for x in h[1:4]) == ["r1", "r2", "r3"]
    assert all(last(x) == mcts.JUDGE_PROMPT and x.params["max_tokens"] == 16 for x in h[1:4])
    # the second simulation expands r2 (best UCT): a user follow-up, then 3 replies to it
    assert last(h[4]) == mcts.FOLLOW_UP_PROMPT and h[4].messages[-2].text == "r2"
    assert h[5].n == 3 and [m.text for m in h[5].messages] == [QUESTION, "r2", "more?"]
    assert all(last(x) == mcts.JUDGE_PROMPT for x in h[6:9])
    meta = data["choices"][0]["optillm_mcts"]
    assert meta["simulations"] == 2 and meta["unreadable_scores"] == 1 and meta["chosen"] == 1
    assert [c["visits"] for c in meta["root_children"]] == [1, 4, 1]
    assert [c["value"] for c in meta["root_children"]] == [0.3, 0.6, 0.5]
    assert "optillm_budget" not in data["choices"][0]
    assert_exact_usage(data, fake.usages)


def test_mcts_depth_and_options_from_body(client, fake):
    script_mcts(fake)
    fake.rules.insert(0, (lambda r: r.n == 1 and last(r) == "more?", "deeper"))
    r = chat(client, model="mcts-fake", content=QUESTION,
             optillm={"mcts_simulations": 1, "mcts_expansions": 2}, mcts_depth=2)
    assert r.status_code == 200, r.get_json()
    h = fake.history
    assert len(h) == 1 * (1 + 2 * 3)  # expansion, then per child: follow-up, reply, judge
    assert h[0].n == 2
    follow_ups = [x for x in h if last(x) == mcts.FOLLOW_UP_PROMPT]
    assert sorted(x.messages[-2].text for x in follow_ups) == ["r1", "r2"]
    judged = [x for x in h if last(x) == mcts.JUDGE_PROMPT]
    assert len(judged) == 2 and all(x.messages[-2].text == "deeper" for x in judged)
    assert all(x.messages[-3].text == "more?" for x in judged)


@pytest.mark.parametrize("sims, k, depth", [(1, 1, 1), (3, 2, 1), (2, 2, 2), (1, 3, 3)])
def test_mcts_call_count_formula(client, fake, sims, k, depth):
    fake.default = "6"
    r = chat(client, model="mcts-fake", mcts_simulations=sims, mcts_expansions=k,
             mcts_depth=depth)
    assert r.status_code == 200
    assert len(fake.history) == sims * (1 + k * (2 * depth - 1)) + (sims - 1)
    assert [x.n for x in fake.history].count(k) >= sims
    assert r.get_json()["choices"][0]["optillm_mcts"]["simulations"] == sims


def test_mcts_keeps_the_conversation_and_client_params(client, fake):
    script_mcts(fake)
    body = {"model": "mcts-fake", "temperature": 0.3, "mcts_simulations": 1, "messages": [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": QUESTION}]}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    first = fake.history[0]
    assert [m.text for m in first.messages] == ["Be terse.", "hi", "hello", QUESTION]
    assert first.params["temperature"] == 0.3
    assert all(x.messages[0].text == "Be terse." for x in fake.history)


def test_mcts_evaluations_run_concurrently(make_app):
    slow = FakeUpstream(default="5", delay=0.1)
    client = make_app(upstream=slow).test_client()
    r = chat(client, model="mcts-fake", mcts_simulations=1, mcts_expansions=4)
    assert r.status_code == 200 and len(slow.history) == 5
    assert slow.max_active == 4


def test_mcts_budget_stops_early_with_an_answer(client, fake):
    script_mcts(fake)
    r = chat(client, model="mcts-fake", content=QUESTION, max_upstream_calls=4)
    assert r.status_code == 200, r.get_json()
    choice = r.get_json()["choices"][0]
    assert len(fake.history) == 4  # the first simulation; the follow-up of the second stops
    assert choice["message"]["content"] == "r2"
    assert choice["optillm_budget"]["stopped_early"] is True
    assert choice["optillm_mcts"]["simulations"] == 1


def test_mcts_token_budget_spent_by_the_first_call(client, fake):
    script_mcts(fake)
    r = chat(client, model="mcts-fake", content=QUESTION, max_total_tokens=5)
    assert r.status_code == 200, r.get_json()
    choice = r.get_json()["choices"][0]
    assert len(fake.history) == 1 and choice["message"]["content"] == "r1"
    assert choice["optillm_budget"]["stopped_early"] is True
    assert choice["optillm_mcts"]["root_children"][0]["visits"] == 0


def test_mcts_options_never_leak_between_requests(client, fake):
    script_mcts(fake)
    assert chat(client, model="mcts-fake", content=QUESTION,
                mcts_simulations=1, mcts_expansions=2).status_code == 200
    assert len(fake.history) == 3
    assert chat(client, model="mcts-fake", content=QUESTION).status_code == 200
    assert len(fake.history) == 3 + 9 and fake.history[3].n == 3


@pytest.mark.parametrize("model, extra", [("mcts-fake", {"mcts_simulations": 1}),
                                          ("rstar-fake", {"rstar_num_rollouts": 2}),
                                          ("pvg-fake", {"pvg_num_rounds": 1})])
def test_streamed_answer_and_usage(client, fake, model, extra):
    script_mcts(fake)
    script_rstar(fake)
    script_pvg(fake, {})
    plain = chat(client, model=model, content=QUESTION, **extra).get_json()
    r = chat(client, model=model, content=QUESTION, stream=True,
             stream_options={"include_usage": True}, **extra)
    assert r.status_code == 200
    _, data, done = events(r.data)
    assert done and data[-1]["choices"] == []
    text = "".join(ch["delta"].get("content") or "" for c in data for ch in c["choices"])
    assert text == plain["choices"][0]["message"]["content"] and text
    assert data[-1]["usage"] == plain["usage"]


# -- pvg --------------------------------------------------------------------------------------

def is_helpful(r):
    return r.messages[0].text.startswith(pvg.HELPFUL)


def is_sneaky(r):
    return r.messages[0].text.startswith(pvg.SNEAKY)


def script_pvg(fake, scores):
    def prover(prefix):
        return lambda r: [f"{prefix}{'R' if 'refined' in last(r) else ''}{i}"
                          for i in range(1, r.n + 1)]
    fake.when(is_helpful, prover("h"))
    fake.when(is_sneaky, prover("s"))
    fake.when(lambda r: "strict verifier" in last(r),
              lambda r: scores.get(last(r).split("Solution:\n")[1].split("\n")[0], "2"))
    fake.when(lambda r: "Rewrite the problem" in last(r), "refined")


def test_pvg_two_rounds(client, fake):
    script_pvg(fake, {"h2": "8", "h3": "banana", "s1": "10", "hR1": "9", "hR2": ""})
    r = chat(client, model="pvg-fake", content=QUESTION)
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    assert data["choices"][0]["message"]["content"] == "hR1"
    h = fake.history
    assert len(h) == 2 * (2 + 6) + 1
    provers = [x for x in h if is_helpful(x) or is_sneaky(x)]
    assert len(provers) == 4 and all(x.n == 3 for x in provers)
    assert sorted(x.params["temperature"] for x in provers) == [0.7, 0.7, 0.9, 0.9]
    (refine,) = [x for x in h if "Rewrite the problem" in last(x)]
    assert "Solution:\nh2" in last(refine) and QUESTION in last(refine)
    round_two = [x for x in provers if last(x) == "refined"]
    assert len(round_two) == 2 and h.index(refine) < min(h.index(x) for x in round_two)
    verifiers = [x for x in h if "strict verifier" in last(x)]
    assert len(verifiers) == 12
    assert all(x.params["max_tokens"] == 16 and x.params["temperature"] == 0.1
               for x in verifiers)
    meta = data["choices"][0]["optillm_pvg"]
    assert meta["rounds"][0]["helpful_scores"] == [2.0, 8.0, 0.0]
    assert meta["rounds"][0]["sneaky_scores"] == [10.0, 2.0, 2.0]
    assert meta["rounds"][1]["query"] == "refined" and meta["best_score"] == 9.0
    assert_exact_usage(data, fake.usages)


@pytest.mark.parametrize("rounds, n", [(1, 1), (2, 2), (3, 1)])
def test_pvg_call_count_formula(client, fake, rounds, n):
    script_pvg(fake, {})
    r = chat(client, model="pvg-fake", content=QUESTION, pvg_num_rounds=rounds,
             pvg_num_solutions=n)
    assert r.status_code == 200
    assert len(fake.history) == rounds * (2 + 2 * n) + (rounds - 1)
    assert len(r.get_json()["choices"][0]["optillm_pvg"]["rounds"]) == rounds


def test_pvg_keeps_system_prompt_and_conversation(client, fake):
    script_pvg(fake, {})
    body = {"model": "pvg-fake", "pvg_num_rounds": 1, "pvg_num_solutions": 1, "messages": [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": QUESTION}]}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert len(fake.history) == 4
    (helpful,) = [x for x in fake.history if is_helpful(x)]
    assert helpful.messages[0].role == "system" and "Be terse." in helpful.messages[0].text
    assert [m.text for m in helpful.messages[1:]] == ["hi", "hello", QUESTION]


def test_pvg_usage_is_per_request(client, fake):
    script_pvg(fake, {})
    first = chat(client, model="pvg-fake", content=QUESTION, pvg_num_rounds=1).get_json()
    n_first = len(fake.history)
    second = chat(client, model="pvg-fake", content=QUESTION).get_json()
    assert n_first == 8 and len(fake.history) == 8 + 17  # options did not leak either
    assert_exact_usage(first, fake.usages[:n_first])
    assert_exact_usage(second, fake.usages[n_first:])
    assert second["usage"]["total_tokens"] > first["usage"]["total_tokens"]


def test_pvg_garbage_scores_keep_the_first_helpful(client, fake):
    script_pvg(fake, {})
    fake.rules.insert(0, (lambda r: "strict verifier" in last(r),
                          lambda r: "banana" if "h" in last(r) else ""))
    data = chat(client, model="pvg-fake", content=QUESTION, pvg_num_rounds=1).get_json()
    assert data["choices"][0]["message"]["content"] == "h1"
    assert data["choices"][0]["optillm_pvg"]["rounds"][0]["helpful_scores"] == [0.0] * 3


def test_pvg_runs_provers_and_verifiers_concurrently(make_app):
    slow = FakeUpstream(default="7", delay=0.1)
    client = make_app(upstream=slow).test_client()
    r = chat(client, model="pvg-fake", pvg_num_rounds=1, pvg_num_solutions=3)
    assert r.status_code == 200 and len(slow.history) == 8
    assert slow.max_active == 6


def test_pvg_budget_stops_early_with_an_answer(make_app):
    slow = FakeUpstream(delay=0.2)  # both provers pass the budget check before either ends
    script_pvg(slow, {})
    client = make_app(upstream=slow).test_client()
    r = chat(client, model="pvg-fake", content=QUESTION, max_total_tokens=10)
    assert r.status_code == 200, r.get_json()
    choice = r.get_json()["choices"][0]
    assert choice["message"]["content"] == "h1" and len(slow.history) == 2
    assert choice["optillm_budget"]["stopped_early"] is True


# -- rstar ------------------------------------------------------------------------------------

DISCRIMINATE = "Here is the beginning of a solution"


def script_rstar(fake):
    fake.when_contains(DISCRIMINATE, "so The answer is 42.")
    fake.when(lambda r: rstar.INSTRUCTIONS["A2"] in last(r),
              lambda r: "Subtract: The answer is 41." if "Problem: Restated" in last(r)
              else "Multiply: The answer is 42.")
    fake.when_contains(rstar.INSTRUCTIONS["A1"], "Six-sevens.")
    fake.when_contains("Ask the next sub-question", "Sub-question: 6*7? Answer: 42")
    fake.when_contains(rstar.INSTRUCTIONS["A5"], "Restated six times seven")


def test_rstar_actions_rollouts_and_discriminator(client, fake):
    script_rstar(fake)
    r = chat(client, model="rstar-fake", content=QUESTION, rstar_batch_size=1,
             return_full_response=True)
    assert r.status_code == 200, r.get_json()
    choice = r.get_json()["choices"][0]
    h = fake.history
    prompts = [last(x) for x in h]
    kinds = ["D" if DISCRIMINATE in p else next(a for a in ("A1", "A2", "A5", "A3")
                                                if rstar.INSTRUCTIONS[a][:30] in p)
             for p in prompts]
    # rollouts: A2 | A1 A2 | A3 A2 | A5 A2 | (revisits the terminal A2 child) ; 4 checks
    assert kinds == ["A2", "A1", "A2", "A3", "A2", "A5", "A2", "D", "D", "D", "D"]
    assert "Solution so far:\nSix-sevens." in prompts[2]
    assert prompts[6].startswith("Problem: Restated six times seven")
    meta = choice["optillm_rstar"]
    assert meta["rollouts"] == 5 and meta["candidates"] == 4
    assert meta["answers"] == ["42", "42", "42", "41"]
    assert meta["consistent"] == [True, True, True, False]
    assert meta["method"] == "mutual_consistency" and meta["chosen"] == 1
    assert meta["actions"] == ["A1", "A2"]
    # the second candidate's check sees its first step only (the rest is masked)
    check = next(p for p in prompts[7:] if "Six-sevens." in p)
    assert "Multiply" not in check
    # full response: the labelled trace
    assert choice["message"]["content"] == ("Step 1 (A1, one step): Six-sevens.\n\n"
                                            "Step 2 (A2, remaining steps): Multiply: The "
                                            "answer is 42.")
    data = chat(client, model="rstar-fake", content=QUESTION, rstar_batch_size=1).get_json()
    assert data["choices"][0]["message"]["content"] == ("Six-sevens.\n\nMultiply: The answer "
                                                        "is 42.")
    assert_exact_usage(data, fake.usages[11:])


def test_rstar_depth_one_only_finishes(client, fake):
    script_rstar(fake)
    r = chat(client, model="rstar-fake", content=QUESTION, rstar_max_depth=1,
             rstar_num_rollouts=3, rstar_batch_size=1)
    assert r.status_code == 200
    assert [DISCRIMINATE in last(x) for x in fake.history] == [False, True]
    assert rstar.INSTRUCTIONS["A2"] in last(fake.history[0])
    assert r.get_json()["choices"][0]["optillm_rstar"]["rollouts"] == 3
    # the next request on the same app has the defaults again
    assert chat(client, model="rstar-fake", content=QUESTION,
                rstar_batch_size=1).status_code == 200
    assert len(fake.history) == 2 + 11


def test_rstar_majority_when_nothing_is_consistent(client, fake):
    script_rstar(fake)
    fake.rules.insert(0, (lambda r: DISCRIMINATE in last(r), "banana"))
    data = chat(client, model="rstar-fake", content=QUESTION, rstar_batch_size=1).get_json()
    meta = data["choices"][0]["optillm_rstar"]
    assert meta["consistent"] == [False] * 4 and meta["method"] == "majority"
    assert meta["answer"] == "42"


@pytest.mark.parametrize("reply", ["banana", ""])
def test_rstar_malformed_replies_still_answer(client, fake, reply):
    fake.default = reply
    r = chat(client, model="rstar-fake", content=QUESTION)
    assert r.status_code == 200, r.get_json()
    meta = r.get_json()["choices"][0]["optillm_rstar"]
    assert meta["method"] == "fallback" and meta["candidates"] == 0
    assert not any(DISCRIMINATE in last(x) for x in fake.history)


def test_rstar_rollouts_run_concurrently(make_app):
    slow = FakeUpstream(default="The answer is 1.", delay=0.1)
    client = make_app(upstream=slow).test_client()
    r = chat(client, model="rstar-fake", rstar_num_rollouts=4, rstar_batch_size=4)
    assert r.status_code == 200
    assert slow.max_active == 4  # four rollouts expand four different root actions at once
    first = {next(a for a in ("A1", "A2", "A3", "A5") if rstar.INSTRUCTIONS[a][:30] in last(x))
             for x in slow.history[:4]}
    assert first == {"A1", "A2", "A3", "A5"}


def test_rstar_budget_stops_early_with_an_answer(client, fake):
    script_rstar(fake)
    r = chat(client, model="rstar-fake", content=QUESTION, rstar_batch_size=1,
             max_total_tokens=20)
    assert r.status_code == 200, r.get_json()
    choice = r.get_json()["choices"][0]
    assert len(fake.history) == 1
    assert choice["message"]["content"] == "Multiply: The answer is 42."
    assert choice["optillm_budget"]["stopped_early"] is True
    assert choice["optillm_rstar"]["rollouts"] == 1
