"""``majority_voting`` and ``genselect`` over the scripted upstream: call patterns, the winner,
per-request options, malformed selection replies, tournament structure and concurrency, and
exact usage (the sum of every upstream call's)."""

from __future__ import annotations

import time

import pytest

from optillm.approaches.genselect import parse_selection, selection_prompt
from optillm.types import ChatRequest, Choice, Completion, Message, Usage
from optillm.upstream.base import NO_META

from ..conftest import chat

#: Proxy option fields: none of them may reach the upstream.
OPTION_FIELDS = {"majority_voting_k", "k", "majority_voting_weighting", "answer_format",
                 "genselect_n", "genselect_mode", "genselect_votes",
                 "genselect_skip_unanimous"}


def record_usage(fake) -> list[Usage]:
    """Every usage the fake upstream reports, in call order."""
    seen: list[Usage] = []
    inner = fake.complete

    def complete(request: ChatRequest, meta=NO_META) -> Completion:
        completion = inner(request, meta)
        seen.append(completion.usage)
        return completion

    fake.complete = complete
    return seen


def assert_exact_usage(data: dict, seen: list[Usage]) -> None:
    assert data["usage"]["prompt_tokens"] == sum(u.prompt_tokens for u in seen)
    assert data["usage"]["completion_tokens"] == sum(u.completion_tokens for u in seen)
    assert data["usage"]["total_tokens"] == sum(u.total_tokens for u in seen)


def is_comparison(request: ChatRequest) -> bool:
    return "Judgment: N" in request.messages[-1].text


def votes_of(data: dict) -> dict:
    return data["choices"][0]["optillm_votes"]


# -- majority_voting --------------------------------------------------------------------------

SAMPLES = ["so it is 4", "#### 5", "The answer is 4.", "I get \\boxed{4}", "answer: 6", "7"]


def test_majority_voting_one_call_with_n_and_the_first_winning_sample(client, fake):
    fake.when(lambda r: r.n == 6, SAMPLES)
    seen = record_usage(fake)
    response = chat(client, model="majority_voting-fake", content="What is 2+2?")
    assert response.status_code == 200
    data = response.get_json()
    assert data["choices"][0]["message"]["content"] == "so it is 4"
    (call,) = fake.history
    assert call.n == 6 and call.params["temperature"] == 0.6
    assert call.messages[-1].content == "What is 2+2?"
    record = votes_of(data)
    assert record["answers"] == ["4", "5", "4", "4", "6", "7"]
    assert record["votes"] == {"4": 3, "5": 1, "6": 1, "7": 1}
    assert record["winner"] == "4" and record["chosen"] == 0 and record["k"] == 6
    assert record["agreement"] == pytest.approx(0.5) and record["weighting"] == "count"
    assert_exact_usage(data, seen)


def test_majority_voting_returns_the_winning_sample_unchanged(client, fake):
    fake.when(lambda r: r.n == 4, ["#### 5", "so 7", "It is 7.0 in total", "#### 5.00"])
    data = chat(client, model="majority_voting-fake", k=4).get_json()
    # 5 and 7 tie with two votes each: the answer reached first wins, its first sample returns
    assert data["choices"][0]["message"]["content"] == "#### 5"
    assert votes_of(data)["votes"] == {"5": 2, "7": 2}


def test_majority_voting_groups_equivalent_answers(client, fake):
    pytest.importorskip("math_verify")
    fake.when(lambda r: r.n == 5, ["\\boxed{\\frac{1}{2}}", "#### 3", "The answer is 0.5",
                                   "#### 3", "So it is 1/2"])
    data = chat(client, model="majority_voting-fake", majority_voting_k=5).get_json()
    record = votes_of(data)
    assert record["votes"] == {"\\frac{1}{2}": 3, "3": 2} and record["chosen"] == 0
    assert record["equivalence"] == "math"


def test_majority_voting_without_answers_returns_the_first_sample(client, fake):
    fake.when(lambda r: r.n == 3, ["no idea", "hmm", "who knows"])
    data = chat(client, model="majority_voting-fake", k=3).get_json()
    assert data["choices"][0]["message"]["content"] == "no idea"
    record = votes_of(data)
    assert record["winner"] is None and record["agreement"] == 0 and record["votes"] == {}


def test_majority_voting_options_per_request_and_never_upstream(client, fake):
    chat(client, model="majority_voting-fake", majority_voting_k=3, temperature=0.2)
    chat(client, model="majority_voting-fake", k=4)
    chat(client, model="majority_voting-fake", majority_voting_k=2, k=9)  # the specific wins
    chat(client, model="majority_voting-fake", optillm={"majority_voting_k": 5})
    chat(client, model="majority_voting-fake")  # nothing leaks from the requests before
    assert [r.n for r in fake.history] == [3, 4, 2, 5, 6]
    assert [r.params["temperature"] for r in fake.history] == [0.2, 0.6, 0.6, 0.6, 0.6]
    assert all(not OPTION_FIELDS & set(r.params) for r in fake.history)


def test_majority_voting_answer_format_per_request(client, fake):
    fake.when(lambda r: r.n == 3, ["I think (B), since 3 > 2", "Answer: C, with 3 cases",
                                   "Option (B) it is, 12"])
    data = chat(client, model="majority_voting-fake", k=3, answer_format="choice").get_json()
    assert votes_of(data)["answers"] == ["B", "C", "B"]
    data = chat(client, model="majority_voting-fake", k=3, answer_format="number").get_json()
    assert votes_of(data)["answers"] == ["2", "3", "12"]


def _completion_with_logprobs(request: ChatRequest, texts: list[str],
                              logprobs: list[float | None]) -> Completion:
    choices = []
    for i, (text, lp) in enumerate(zip(texts, logprobs, strict=True)):
        content = None if lp is None else {"content": [{"token": w, "logprob": lp, "bytes": None,
                                                        "top_logprobs": []}
                                                       for w in text.split()],
                                           "refusal": None}
        choices.append(Choice(i, Message("assistant", text), "stop", content))
    return Completion(tuple(choices), Usage(7, sum(len(t.split()) for t in texts)),
                      model=request.model)


def test_majority_voting_confidence_weighting(client, fake):
    texts = ["#### 4", "#### 5", "#### 4", "#### 5", "#### 5"]
    fake.when(lambda r: r.n == 5,
              lambda r: _completion_with_logprobs(r, texts, [-0.05, -3.0, -0.1, -2.5, -2.0]))
    data = chat(client, model="majority_voting-fake", k=5,
                majority_voting_weighting="confidence").get_json()
    record = votes_of(data)
    assert fake.history[0].params["logprobs"] is True
    assert record["winner"] == "4" and data["choices"][0]["message"]["content"] == "#### 4"
    assert record["weights"][0] == pytest.approx(0.951, abs=1e-3)
    assert data["choices"][0]["logprobs"] is None  # the client did not ask for them
    count = chat(client, model="majority_voting-fake", k=5).get_json()
    assert votes_of(count)["winner"] == "5"  # the plain count says otherwise


def test_majority_voting_confidence_needs_logprobs(client, fake):
    fake.when(lambda r: r.n == 3,
              lambda r: _completion_with_logprobs(r, ["#### 1", "#### 2", "#### 1"],
                                                  [None, None, None]))
    response = chat(client, model="majority_voting-fake", k=3,
                    majority_voting_weighting="confidence")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "unsupported_capability" and "logprobs" in error["message"]


def test_majority_voting_n_is_emulated_where_the_upstream_lacks_it(make_app, fake):
    fake.supports_n = False
    fake.default = "#### 3"
    seen = record_usage(fake)
    data = chat(make_app().test_client(), model="majority_voting-fake", k=4).get_json()
    assert len(fake.history) == 4 and votes_of(data)["votes"] == {"3": 4}
    assert_exact_usage(data, seen)


# -- genselect: parsing -----------------------------------------------------------------------

@pytest.mark.parametrize("reply, expected", [
    ("Solution 2 is cleaner.\nJudgment: 2", 1),
    ("**Judgment:** [3]", 2),
    ("Judgement: Solution 4", 3),
    ("Judgment: 1\nOn second thought...\nJudgment: 3", 2),  # the last valid mention
    ("Judgment: 9\nSolution 2 is the best one.", 1),  # out of range: the next pattern
    ("The best solution is Solution 1.", 0),
    ("Candidate 3 is the most likely to be correct", 2),
    ("I would select solution 2 because it checks its work.", 1),
    ("\\boxed{4}", 3),
    ("2", 1),
    (" Solution 3. ", 2),
    ("Judgment: 0", None),
    ("Both solutions look fine to me.", None),
    ("The answer is 4.", None),
    ("", None),
    (None, None),
])
def test_parse_selection(reply, expected):
    assert parse_selection(reply, 4) == expected


def test_selection_prompt_numbers_candidates_from_one():
    prompt = selection_prompt("What is 2+2?", ["four", " 4 "])
    assert "Problem:\nWhat is 2+2?" in prompt and "Solution 1:\nfour" in prompt
    assert "Solution 2:\n4\n" in prompt and "Judgment: N" in prompt and "(1 to 2)" in prompt


# -- genselect: batch -------------------------------------------------------------------------

CANDIDATES = ["so it is 4", "#### 5", "the answer is 4", "I get 6"]


def test_genselect_batch_call_pattern_and_selection(client, fake):
    fake.when(is_comparison, ["Solution 3 checks out.\nJudgment: 3", "garbage",
                              "Judgment: 2"])
    fake.when(lambda r: r.n == 4, CANDIDATES)
    seen = record_usage(fake)
    data = chat(client, model="genselect-fake", content="What is 2+2?").get_json()
    candidates, comparison = fake.history
    assert candidates.n == 4 and candidates.params["temperature"] == 0.7
    assert comparison.n == 3 and comparison.params["temperature"] == 0.6
    assert comparison.params["max_tokens"] == 2048
    assert comparison.messages[0].role == "system"
    prompt = comparison.messages[-1].content
    assert all(f"Solution {i}:\n{c}" in prompt for i, c in enumerate(CANDIDATES, 1))
    record = votes_of(data)
    assert record["picks"] == [2, None, 1] and record["votes"] == {"4": 1, "5": 1}
    assert record["chosen"] == 2 and record["answers"] == ["4", "5", "4", "6"]
    assert data["choices"][0]["message"]["content"] == "the answer is 4"
    assert_exact_usage(data, seen)


def test_genselect_batch_picks_vote_by_answer(client, fake):
    # picks: candidates 0, 1 and 2; candidates 0 and 2 both say 4, so 4 wins 2-1
    fake.when(is_comparison, ["Judgment: 1", "Judgment: 2", "Judgment: 3"])
    fake.when(lambda r: r.n == 4, CANDIDATES)
    data = chat(client, model="genselect-fake").get_json()
    record = votes_of(data)
    assert record["votes"] == {"4": 2, "5": 1} and record["chosen"] == 0


def test_genselect_batch_malformed_replies_fall_back_to_the_majority(client, fake):
    fake.when(is_comparison, ["I cannot decide.", "Judgment: 17", ""])
    fake.when(lambda r: r.n == 4, ["I get 6", "#### 5", "so it is 4", "the answer is 4"])
    data = chat(client, model="genselect-fake").get_json()
    record = votes_of(data)
    assert record["picks"] == [None, None, None] and record["fallback"] == "majority"
    assert record["chosen"] == 2


def test_genselect_unanimous_candidates_need_no_comparison(client, fake):
    fake.when(lambda r: r.n == 4, ["#### 4", "so 4", "the answer is 4.0", "\\boxed{4}"])
    data = chat(client, model="genselect-fake").get_json()
    assert len(fake.history) == 1 and votes_of(data)["unanimous"] is True
    assert data["choices"][0]["message"]["content"] == "#### 4"
    fake.history.clear()
    fake.when(is_comparison, "Judgment: 2")
    data = chat(client, model="genselect-fake", genselect_skip_unanimous=False).get_json()
    assert len(fake.history) == 2 and votes_of(data)["chosen"] == 1


def test_genselect_options_per_request_and_never_upstream(client, fake):
    fake.when(is_comparison, "Judgment: 1")
    fake.when(lambda r: not is_comparison(r), lambda r: [f"#### {i}" for i in range(r.n)])
    chat(client, model="genselect-fake", genselect_n=3, genselect_votes=1, max_tokens=50,
         temperature=0.3)
    first = list(fake.history)
    fake.history.clear()
    chat(client, model="genselect-fake")
    assert [(r.n, r.params["temperature"], r.params["max_tokens"]) for r in first] == \
        [(3, 0.3, 50), (1, 0.6, 50)]
    assert [r.n for r in fake.history] == [4, 3]
    assert all(not OPTION_FIELDS & set(r.params) for r in first + fake.history)


@pytest.mark.parametrize("body", [{"genselect_skip_unanimous": "no"}])
def test_genselect_rejects_bad_options(client, fake, body):
    assert chat(client, model="genselect-fake", **body).status_code == 400
    assert fake.history == []


# -- genselect: tournament --------------------------------------------------------------------

def pairwise_judge(prefer: str):
    """A comparison reply that picks the candidate containing ``prefer``, else Solution 1."""
    def reply(request: ChatRequest) -> str:
        prompt = request.messages[-1].text
        second = prompt.split("Solution 2:\n", 1)[1]
        return "Judgment: 2" if prefer in second.split("\n\nCompare", 1)[0] else "Judgment: 1"
    return reply


def test_genselect_tournament_structure(client, fake):
    fake.when(is_comparison, pairwise_judge("#### 4"))
    fake.when(lambda r: r.n == 5, ["#### 1", "#### 2", "#### 3", "#### 4", "#### 5"])
    seen = record_usage(fake)
    data = chat(client, model="genselect-fake", genselect_n=5, genselect_mode="tournament",
                genselect_votes=1).get_json()
    record = votes_of(data)
    rounds = [[(m["pair"], m["winner"]) for m in r] for r in record["rounds"]]
    # round 1: (0,1) (2,3), 4 has a bye; round 2: (0,3), 4 has a bye; final: (3,4)
    assert rounds == [[([0, 1], 0), ([2, 3], 3)], [([0, 3], 3)], [([3, 4], 3)]]
    assert record["chosen"] == 3 and data["choices"][0]["message"]["content"] == "#### 4"
    comparisons = [r for r in fake.history if is_comparison(r)]
    assert len(comparisons) == 4 and all(r.n == 1 for r in comparisons)  # N-1 matches
    assert all("Solution 3" not in r.messages[-1].text for r in comparisons)  # pairwise
    assert_exact_usage(data, seen)


def test_genselect_tournament_matches_of_a_round_run_concurrently(make_app, fake):
    fake.delay = 0.3
    fake.when(is_comparison, "Judgment: 1")
    fake.when(lambda r: r.n == 8, [f"#### {i}" for i in range(8)])
    client = make_app().test_client()
    start = time.monotonic()
    data = chat(client, model="genselect-fake", genselect_n=8, genselect_mode="tournament",
                genselect_votes=2).get_json()
    elapsed = time.monotonic() - start
    assert [len(r) for r in votes_of(data)["rounds"]] == [4, 2, 1]
    assert fake.max_active >= 4  # the four first-round matches at once
    assert elapsed < 0.3 * 8 * 0.75  # 1 + 3 rounds deep, not 1 + 7 calls


def test_genselect_tournament_same_answers_and_draws(client, fake):
    fake.when(is_comparison, ["Both are fine.", "No idea."])
    fake.when(lambda r: r.n == 4, ["#### 7", "so 7", "#### 9", "the answer is 9. also 9"])
    data = chat(client, model="genselect-fake", genselect_mode="tournament",
                genselect_votes=2).get_json()
    matches = [m for r in votes_of(data)["rounds"] for m in r]
    assert [m["decided_by"] for m in matches] == ["same_answer", "same_answer", "draw"]
    assert matches[-1]["picks"] == [None, None] and matches[-1]["winner"] == 0
    assert len([r for r in fake.history if is_comparison(r)]) == 1


def test_genselect_tournament_draw_goes_to_the_more_common_answer(client, fake):
    fake.when(is_comparison, "Both are fine.")
    fake.when(lambda r: r.n == 3, ["#### 1", "#### 2", "so 2"])
    data = chat(client, model="genselect-fake", genselect_n=3, genselect_mode="tournament",
                genselect_votes=1).get_json()
    first, final = (r[0] for r in votes_of(data)["rounds"])
    assert first["pair"] == [0, 1] and first["winner"] == 1 and first["decided_by"] == "draw"
    assert final["pair"] == [1, 2] and final["decided_by"] == "same_answer"
    assert votes_of(data)["chosen"] == 1
