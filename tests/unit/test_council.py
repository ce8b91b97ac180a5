"""``council`` (Composite LLM, after karpathy/llm-council): first opinions, anonymised ranking,
the chairman's synthesis; ranking parsing on malformed reviews, aggregation, metadata,
other models, concurrency and streaming."""

import threading

import pytest

from optillm.approaches.council import aggregate, parse_ranking
from optillm.errors import BadRequestError
from optillm.plan.loader import build_registry
from optillm.plan.model_names import council_slash as parse_model
from optillm.types import SINGLE, Plan

from ..conftest import chat
from ..fakes import FakeUpstream, words
from .test_streaming import events

QUESTION = "What is 2+2?"
RANKING = "FINAL RANKING"


def is_opinion(r) -> bool:
    return r.messages[-1].content == QUESTION


def is_review(r) -> bool:
    return RANKING in r.messages[-1].content and "chairman" not in r.messages[-1].content


def is_synthesis(r) -> bool:
    return "chairman" in r.messages[-1].content


def script(fake, reviews):
    """Opinions name their temperature; reviews by temperature; the synthesis is fixed."""
    fake.when(is_opinion, lambda r: f"answer at {r.params.get('temperature')}")
    fake.when(is_review, lambda r: reviews[r.params.get("temperature")])
    fake.when(is_synthesis, "the synthesis")


REVIEWS = {0.3: "B is best, C is wrong.\n\nFINAL RANKING:\n1. Response B\n2. Response A\n"
                "3. Response C",
           0.7: "**FINAL RANKING:**\n1. **Response B**\n2. **Response C**\n3. **Response A**",
           1.0: "final ranking: C > B"}


def test_three_stages_default_council(client, fake, openapi):
    script(fake, REVIEWS)
    r = chat(client, model="council-fake", content=QUESTION)
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    openapi(data, "CreateChatCompletionResponse")
    choice = data["choices"][0]
    assert choice["message"]["content"] == "the synthesis"
    opinions = [h for h in fake.history if is_opinion(h)]
    reviews = [h for h in fake.history if is_review(h)]
    (synthesis,) = [h for h in fake.history if is_synthesis(h)]
    assert len(fake.history) == 7 and fake.history[-1] is synthesis
    assert sorted(h.params["temperature"] for h in opinions) == [0.3, 0.7, 1.0]
    assert sorted(h.params["temperature"] for h in reviews) == [0.3, 0.7, 1.0]
    assert {h.model for h in fake.history} == {"fake"}
    meta = choice["council_metadata"]
    assert [m["label"] for m in meta["members"]] == ["A", "B", "C"]
    assert [m["answer"] for m in meta["members"]] == ["answer at 0.3", "answer at 0.7",
                                                      "answer at 1.0"]
    assert [m["ranking"] for m in meta["members"]] == [["B", "A", "C"], ["B", "C", "A"],
                                                       ["C", "B"]]
    assert meta["members"][0]["review"] == REVIEWS[0.3]
    assert meta["chairman_model"] == "fake"
    ranking = meta["aggregate_ranking"]
    assert [row["label"] for row in ranking] == ["B", "C", "A"]
    assert ranking[0] == {"label": "B", "average_rank": 1.3333,
                          "rankings_count": 3, "model": "fake", "temperature": 0.7}
    assert ranking[1]["average_rank"] == 2.0 and ranking[2]["average_rank"] == 2.5
    assert ranking[2]["rankings_count"] == 2
    # the chairman sees the answers, the reviews and the aggregate order
    prompt = synthesis.messages[-1].content
    assert "Response A:\nanswer at 0.3" in prompt and REVIEWS[0.7] in prompt
    assert "Response B (1.33), Response C (2.00), Response A (2.50)" in prompt


def test_usage_is_the_sum_of_all_calls(client, fake):
    script(fake, REVIEWS)
    data = chat(client, model="council-fake", content=QUESTION).get_json()
    prompt = sum(sum(words(m.text) for m in h.messages) for h in fake.history)
    completion = sum(words(f"answer at {t}") + words(REVIEWS[t]) for t in REVIEWS) + 2
    assert data["usage"]["prompt_tokens"] == prompt
    assert data["usage"]["completion_tokens"] == completion


def test_reviews_are_anonymised(make_app):
    fake = FakeUpstream()
    fake.when(is_opinion, lambda r: f"opinion of {r.model}")
    fake.default = "FINAL RANKING:\n1. Response B\n2. Response A"
    client = make_app(upstream=fake).test_client()
    data = chat(client, model="council-fake", content=QUESTION,
                council_models=["m-alpha", "m-beta"]).get_json()
    reviews = [h for h in fake.history if is_review(h)]
    assert sorted(h.model for h in reviews) == ["m-alpha", "m-beta"]
    for h in reviews:
        prompt = h.messages[-1].content
        assert "Response A:\nopinion of m-alpha" in prompt
        assert "Response B:\nopinion of m-beta" in prompt
        assert "m-alpha" not in prompt.replace("opinion of m-alpha", "")
        assert "m-beta" not in prompt.replace("opinion of m-beta", "")
        assert QUESTION in prompt
    ranking = data["choices"][0]["council_metadata"]["aggregate_ranking"]
    assert [(r["label"], r["model"]) for r in ranking] == [("B", "m-beta"), ("A", "m-alpha")]


def test_other_models_and_chairman_are_called_and_counted(make_app):
    fake = FakeUpstream()
    fake.when(is_opinion, lambda r: f"opinion of {r.model}")
    fake.when(is_synthesis, "chaired")
    fake.default = "FINAL RANKING:\n1. Response A"
    client = make_app(upstream=fake).test_client()
    data = chat(client, model="council-fake", council_models=["m1", "m2"],
                council_temperatures=[0.2], chairman_model="boss", temperature=0.9,
                content=QUESTION).get_json()
    assert data["choices"][0]["message"]["content"] == "chaired"
    assert sorted(h.model for h in fake.history if is_opinion(h)) == ["m1", "m2"]
    assert all(h.params["temperature"] == 0.2 for h in fake.history if not is_synthesis(h))
    (synthesis,) = [h for h in fake.history if is_synthesis(h)]
    assert synthesis.model == "boss" and synthesis.params["temperature"] == 0.9
    assert len(fake.history) == 5
    prompt = sum(sum(words(m.text) for m in h.messages) for h in fake.history)
    assert data["usage"]["prompt_tokens"] == prompt
    meta = data["choices"][0]["council_metadata"]
    assert meta["chairman_model"] == "boss"
    assert [(m["model"], m["temperature"]) for m in meta["members"]] == [("m1", 0.2),
                                                                         ("m2", 0.2)]


def test_council_models_without_temperatures_use_the_clients(client, fake):
    chat(client, model="council-fake", council_models=["x", "y", "z"], temperature=0.4)
    assert all(h.params["temperature"] == 0.4 for h in fake.history)
    fake.history.clear()
    chat(client, model="council-fake", council_models=["x"], council_temperatures=[0.1, 0.5])
    assert sorted((h.model, h.params["temperature"]) for h in fake.history
                  if h.model == "x") == [("x", 0.1), ("x", 0.1), ("x", 0.5), ("x", 0.5)]


def test_a_single_member_skips_the_review(client, fake):
    fake.when(is_synthesis, "done")
    data = chat(client, model="council-fake", council_models=["solo"]).get_json()
    assert len(fake.history) == 2
    meta = data["choices"][0]["council_metadata"]
    assert meta["members"][0]["review"] is None
    assert meta["aggregate_ranking"][0]["average_rank"] is None


def test_unparseable_rankings_leave_the_aggregate_empty(client, fake):
    fake.when(is_opinion, "an answer")
    fake.when(is_synthesis, "chaired anyway")
    fake.default = "They are all fine, I cannot choose."
    data = chat(client, model="council-fake").get_json()
    assert data["choices"][0]["message"]["content"] == "chaired anyway"
    meta = data["choices"][0]["council_metadata"]
    assert all(row["average_rank"] is None and row["rankings_count"] == 0
               for row in meta["aggregate_ranking"])
    assert "no usable ranking" in fake.history[-1].messages[-1].content


@pytest.mark.parametrize("body", [{"council_models": []}, {"council_models": "gpt-4o"},
                                  {"council_models": ["a", ""]},
                                  {"council_models": ["a"] * 13},
                                  {"council_temperatures": [3.0]},
                                  {"council_temperatures": ["hot"]},
                                  {"council_models": ["a", "b"],
                                   "council_temperatures": [0.1, 0.2, 0.3]},
                                  {"chairman_model": ""}, {"chairman_model": 5}])
def test_bad_options_are_400(client, fake, body):
    r = chat(client, model="council-fake", **body)
    assert r.status_code == 400, r.get_json()
    assert not fake.history


# -- model names -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry():
    return build_registry(entry_points=False)[1]


@pytest.mark.parametrize("model, base", [("council/gpt-4o", "gpt-4o"),
                                         ("council/cerebras/llama-3.3-70b",
                                          "cerebras/llama-3.3-70b")])
def test_slash_form_parses(registry, model, base):
    assert parse_model(model, registry) == Plan(SINGLE, ("council",), base)


@pytest.mark.parametrize("model", ["gpt-4o", "council-gpt-4o", "my-council/x", "Council/x"])
def test_other_names_are_not_the_slash_form(registry, model):
    assert parse_model(model, registry) is None


def test_slash_form_without_a_model_is_400(registry):
    with pytest.raises(BadRequestError, match="no base model"):
        parse_model("council/", registry)


def test_both_forms_through_the_app(client, fake):
    for model in ("council-fake", "council/fake"):
        fake.history.clear()
        assert chat(client, model=model).status_code == 200
        assert len(fake.history) == 7 and {h.model for h in fake.history} == {"fake"}


# -- concurrency and streaming -------------------------------------------------------------------

def test_opinions_and_reviews_each_run_concurrently(make_app):
    """Each stage's three calls must all be in flight at once: a barrier of three would
    time out (and the request fail) if a stage ran its calls one after another."""
    opinions, reviews = threading.Barrier(3, timeout=5), threading.Barrier(3, timeout=5)

    def opinion(r):
        opinions.wait()
        return "an answer"

    def review(r):
        reviews.wait()
        return "FINAL RANKING:\n1. Response A"

    fake = FakeUpstream(delay=0.1)
    fake.when(is_opinion, opinion)
    fake.when(is_review, review)
    client = make_app(upstream=fake).test_client()
    r = chat(client, model="council-fake", content=QUESTION)
    assert r.status_code == 200, r.get_json()
    assert fake.max_active == 3 and len(fake.history) == 7


def test_streamed_synthesis_token_by_token_with_metadata(client, fake, openapi):
    fake.when(is_synthesis, "the streamed synthesis answer")
    script(fake, REVIEWS)
    r = chat(client, model="council-fake", content=QUESTION, stream=True,
             stream_options={"include_usage": True})
    _, data, done = events(r.get_data())
    assert done
    pieces = [d["choices"][0]["delta"]["content"] for d in data[1:]
              if d["choices"] and d["choices"][0]["delta"].get("content")]
    assert pieces == ["the ", "streamed ", "synthesis ", "answer"]
    (finish,) = [d for d in data if d["choices"] and d["choices"][0]["finish_reason"]]
    assert [row["label"] for row in
            finish["choices"][0]["council_metadata"]["aggregate_ranking"]] == ["B", "C", "A"]
    assert data[-1]["usage"]["completion_tokens"] > 0
    for d in data:
        openapi(d, "CreateChatCompletionStreamResponse")


def test_other_chairman_answer_streams_too(client, fake):
    fake.when(is_synthesis, "streamed answer here")
    r = chat(client, model="council-fake", chairman_model="boss", stream=True)
    _, data, done = events(r.get_data())
    pieces = [d["choices"][0]["delta"]["content"] for d in data[1:]
              if d["choices"] and d["choices"][0]["delta"].get("content")]
    assert done and pieces == ["streamed ", "answer ", "here"]
    assert [r.model for r in fake.history if is_synthesis(r)] == ["boss"]


# -- ranking parsing and aggregation -----------------------------------------------------------

LABELS = ["A", "B", "C"]


@pytest.mark.parametrize("text, expected", [
    ("Good.\n\nFINAL RANKING:\n1. Response C\n2. Response A\n3. Response B", ["C", "A", "B"]),
    ("**FINAL RANKING:**\n1. **Response B**\n2. **Response A**", ["B", "A"]),
    ("Final Ranking\n1) Response B\n2) Response C\n3) Response A", ["B", "C", "A"]),
    ("FINAL RANKING:\n- 1. Response A\n- 2. Response C", ["A", "C"]),
    ("FINAL RANKING:\n1. response c\n2. response a", ["C", "A"]),
    # duplicates keep the first place; letters out of range are dropped
    ("FINAL RANKING:\n1. Response A\n2. Response A\n3. Response Z\n4. Response B\n"
     "5. Response D", ["A", "B"]),
    # bare letters, a chain, mentions in order
    ("FINAL RANKING:\n1. B\n2. C\n3. a weak one", ["B", "C"]),
    ("FINAL RANKING: C > A > B", ["C", "A", "B"]),
    ("FINAL RANKING: C, B, A.", ["C", "B", "A"]),
    ("FINAL RANKING: Response B is best, then Response C.", ["B", "C"]),
    # the last header wins (a review quoting the instructions first)
    ("Use FINAL RANKING:\n1. Response A\nOK.\nFINAL RANKING:\n1. Response C\n2. Response B",
     ["C", "B"]),
    # missing header: numbered "Response X" lines only, never free-text mentions
    ("Response A is weak.\n1. Response B\n2. Response A", ["B", "A"]),
    ("I prefer Response B to Response A.", []),
    ("1. The first point\n2. A second point", []),
    ("FINAL RANKING:\nI cannot decide.", []),
    ("", []),
    (None, []),
])
def test_parse_ranking_survives_malformed_reviews(text, expected):
    assert parse_ranking(text, LABELS) == expected


def test_aggregate_by_average_rank():
    rows = aggregate([["C", "A", "B"], ["C", "B"], ["B", "C", "A"], []], LABELS)
    assert [(r["label"], r["average_rank"], r["rankings_count"]) for r in rows] == [
        ("C", 1.3333, 3), ("B", 2.0, 3), ("A", 2.5, 2)]  # rounded to 4 places


def test_aggregate_ties_keep_label_order_and_unranked_come_last():
    rows = aggregate([["B", "A"], ["A", "B"]], ["A", "B", "C", "D"])
    assert [r["label"] for r in rows] == ["A", "B", "C", "D"]
    assert rows[2]["average_rank"] is None and rows[3]["rankings_count"] == 0
