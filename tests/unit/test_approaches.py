"""Each first approach's call pattern, answer and exact usage, over a scripted upstream."""

import pytest

from optillm.approaches.bon import parse_rating
from optillm.approaches.cot_reflection import extract_output
from optillm.approaches.self_consistency import cluster, select

from ..conftest import chat


def test_re2_states_the_question_twice(client, fake):
    fake.default = "four"
    data = chat(client, model="re2-fake", content="What is 2+2?").get_json()
    assert data["choices"][0]["message"]["content"] == "four"
    (call,) = fake.history
    assert call.messages[-1].content == "What is 2+2?\nRead the question again: What is 2+2?"
    assert call.model == "fake"


def test_cot_reflection_returns_output_or_full_trace(make_app, fake):
    reply = "<thinking>2 and 2\n<reflection>fine</reflection></thinking><output>4</output>"
    fake.default = reply
    client = make_app().test_client()
    data = chat(client, model="cot_reflection-fake").get_json()
    assert data["choices"][0]["message"]["content"] == "4"
    assert "<thinking>" in fake.history[0].messages[0].content  # the CoT system prompt
    full = chat(client, model="cot_reflection-fake", return_full_response=True).get_json()
    assert full["choices"][0]["message"]["content"] == reply


def test_cot_reflection_keeps_conversation_and_system_prompt(client, fake):
    client.post("/v1/chat/completions", json={"model": "cot_reflection-fake", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second"}]})
    msgs = fake.history[0].messages
    assert msgs[0].role == "system" and msgs[0].content.startswith("You are terse.")
    assert [m.content for m in msgs[1:]] == ["first", "ok", "second"]


@pytest.mark.parametrize("text, expected", [("no tags at all ", "no tags at all"),
                                            ("<output>unclosed", "unclosed"),
                                            ("a<output> 4 </output>b", "4")])
def test_extract_output(text, expected):
    assert extract_output(text) == expected


def test_bon_samples_once_rates_each_and_picks_best(client, fake):
    fake.when(lambda r: r.n == 3, ["cand A", "cand B", "cand C"])
    fake.when_contains("Rate the following", lambda r: {"cand A": "3", "cand B": "9",
                                                        "cand C": "5"}[r.messages[-2].content])
    data = chat(client, model="bon-fake").get_json()
    assert data["choices"][0]["message"]["content"] == "cand B"
    assert len(fake.history) == 4 and fake.history[0].n == 3
    # usage is the exact sum over all four calls
    prompt = sum(sum(len(m.text.split()) or 1 for m in r.messages) for r in fake.history)
    assert data["usage"]["prompt_tokens"] == prompt
    assert data["usage"]["completion_tokens"] == 6 + 3


def test_bon_tied_ratings_go_to_the_answer_most_candidates_share(client, fake):
    fake.when(lambda r: r.n == 4, ["The answer is 30.", "The answer is 21.",
                                   "So 21.", "The answer is 11."])
    fake.when_contains("Rate the following", "8")  # an uninformative judge: all equal
    data = chat(client, model="bon-fake", best_of_n=4).get_json()
    assert data["choices"][0]["message"]["content"] == "The answer is 21."
    votes = data["choices"][0]["optillm_votes"]
    assert votes["chosen"] == 1 and votes["tie_break"] == "agreement"
    assert votes["answers"] == ["30", "21", "21", "11"] and votes["ratings"] == [8.0] * 4


def test_bon_rating_beats_agreement_and_ties_without_agreement_keep_the_first():
    from optillm.approaches.bon import choose

    assert choose([3.0, 9.0, 3.0], ["5", "7", "5"]) == (1, None)  # the judge decides
    assert choose([8.0, 8.0, 2.0], ["5", "7", "7"]) == (1, "agreement")
    assert choose([8.0, 8.0], ["5", "7"]) == (0, None)
    assert choose([8.0, 8.0], [None, None]) == (0, None)


def test_bon_option_from_body(client, fake):
    chat(client, model="bon-fake", best_of_n=5)
    assert fake.history[0].n == 5 and len(fake.history) == 6


def test_bon_options_never_leak_between_requests(client, fake):
    chat(client, model="bon-fake", optillm={"best_of_n": 2})
    fake.history.clear()
    chat(client, model="bon-fake")
    assert fake.history[0].n == 3


def test_bon_ratings_run_concurrently(make_app, fake):
    fake.delay = 0.1
    client = make_app().test_client()
    chat(client, model="bon-fake", best_of_n=4)
    assert fake.max_active >= 3


@pytest.mark.parametrize("text, value", [("8", 8.0), ("Rating: 7.5/10", 7.5), ("none", 0.0),
                                         ("15", 10.0)])
def test_parse_rating(text, value):
    assert parse_rating(text) == value


def test_moa_candidates_critique_synthesis(client, fake):
    fake.when(lambda r: r.n == 3, ["one", "two", "three"])
    fake.when_contains("critique each one", "critique text")
    fake.when_contains("Critique of the candidates", "final answer")
    data = chat(client, model="moa-fake", temperature=0.5).get_json()
    assert data["choices"][0]["message"]["content"] == "final answer"
    assert len(fake.history) == 3
    synth = fake.history[2].messages[-1].content
    assert "one" in synth and "three" in synth and "critique text" in synth
    assert data["usage"]["completion_tokens"] == 3 + 2 + 2


def test_moa_without_native_n_emulates_candidates(make_app):
    from ..fakes import FakeUpstream

    fake = FakeUpstream(supports_n=False)
    client = make_app(upstream=fake).test_client()
    chat(client, model="moa-fake")
    # n=3 ignored (one choice back), 2 more single calls, then critique and synthesis
    assert [r.n for r in fake.history] == [3, 1, 1, 1, 1]
    assert "Candidate 3:" in fake.history[-1].messages[-1].content
    fake.history.clear()
    chat(client, model="moa-fake")  # learned: no more n on this upstream
    assert [r.n for r in fake.history] == [1, 1, 1, 1, 1]


def test_self_consistency_majority_answer(client, fake):
    fake.when(lambda r: r.n == 5, ["so it is 4", "answer: 5", "the answer is 4.", "#### 4",
                                   "I think 7"])
    data = chat(client, model="self_consistency-fake").get_json()
    assert data["choices"][0]["message"]["content"] == "so it is 4"
    assert data["choices"][0]["optillm_votes"]["votes"]["4"] == 3
    assert len(fake.history) == 1


def test_self_consistency_similarity_fallback():
    samples = ["Paris is the capital of France.", "Paris is the capital of France!",
               "Lyon, I believe.", "Paris is the capital of France"]
    idx, record = select(samples, 0.8)
    assert samples[idx].startswith("Paris") and record["method"] == "similarity"
    assert cluster(["a", "b", "a"], 0.9) == [[0, 2], [1]]


def test_n_choices_run_the_approach_n_times(client, fake):
    fake.default = "x"
    data = chat(client, model="re2-fake", n=3).get_json()
    assert len(data["choices"]) == 3 and [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert len(fake.history) == 3


def test_sequence_feeds_each_answer_to_the_next(client, fake):
    fake.when_contains("Read the question again", "stage one answer")
    fake.default = "<output>final</output>"
    data = chat(client, model="re2&cot_reflection-fake").get_json()
    assert data["choices"][0]["message"]["content"] == "final"
    assert fake.history[1].messages[-1].content == "stage one answer"


def test_parallel_gives_one_choice_per_approach(client, fake):
    fake.when_contains("Read the question again", "from re2")
    fake.default = "from none"
    data = chat(client, model="re2|none-fake").get_json()
    assert [c["message"]["content"] for c in data["choices"]] == ["from re2", "from none"]


def test_none_passes_tools_and_response_format_on_typed_path(client, fake):
    chat(client, model="none-fake", n=2, tools=[{"type": "function", "function": {
        "name": "f", "parameters": {}}}], response_format={"type": "json_object"})
    (call,) = fake.history
    assert call.params["tools"][0]["function"]["name"] == "f"
    assert call.params["response_format"] == {"type": "json_object"} and call.n == 2


def test_internal_calls_get_sampling_params_only(client, fake):
    fake.when(lambda r: r.n == 3, ["a", "b", "c"])
    chat(client, model="bon-fake", response_format={"type": "json_object"}, seed=3,
         max_tokens=50)
    candidates, *ratings = fake.history
    assert candidates.params["response_format"] == {"type": "json_object"}
    assert all("response_format" not in r.params for r in ratings)
    assert all(r.params["seed"] == 3 for r in fake.history)


def test_n_runs_are_concurrent(make_app, fake):
    fake.delay = 0.2
    client = make_app().test_client()
    chat(client, model="re2-fake", n=4)
    assert fake.max_active == 4


def test_a_failing_parallel_branch_is_reported_in_its_choice(client, fake, openapi):
    from optillm.errors import UpstreamError

    fake.when_contains("Read the question again", "from re2")
    fake.when(lambda r: r.n == 3, UpstreamError("upstream: boom"))  # bon's candidates
    r = chat(client, model="re2|bon-fake")
    assert r.status_code == 200
    data = r.get_json()
    openapi(data, "CreateChatCompletionResponse")
    first, second = data["choices"]
    assert first["message"]["content"] == "from re2" and "optillm_error" not in first
    assert second["message"]["content"] == ""
    assert second["optillm_error"]["approach"] == "bon"
    assert second["optillm_error"]["status"] == 502 and "boom" in second["optillm_error"][
        "message"]
    assert data["usage"]["completion_tokens"] == 2  # only the call that answered


def test_every_parallel_branch_failing_is_the_error(client, fake):
    from optillm.errors import UpstreamError

    fake.default = UpstreamError("upstream: down")
    r = chat(client, model="re2|bon-fake")
    assert r.status_code == 502 and "down" in r.get_json()["error"]["message"]


def test_the_upstream_call_count_is_a_response_header(client, fake):
    r = chat(client, model="bon-fake", best_of_n=3)
    assert r.headers["X-Optillm-Upstream-Calls"] == "4" and len(fake.history) == 4
    r = chat(client, model="re2|moa-fake")
    assert r.headers["X-Optillm-Upstream-Calls"] == str(1 + 3) == str(len(fake.history) - 4)
