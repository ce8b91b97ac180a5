"""``deep_research`` (TTD-DR) against the local stub search server: plan, draft, query/search/
revise iterations, stopping rules, source numbering, malformed replies, budget stop, options,
concurrency of the searches, a chain."""

import threading
import time

import pytest

from optillm.plugins.deep_research import parse_queries

from ..conftest import chat
from .test_plugin_web_search import StubSearch


def stage(r):
    text = r.messages[-1].text
    for name, marker in (("plan", "You are planning a research report"),
                         ("draft", "Write a preliminary draft"),
                         ("queries", "web search queries that would"),
                         ("revise", "Revise the draft using the sources"),
                         ("report", "Write the final report")):
        if marker in text:
            return name
    return "?"


@pytest.fixture
def stub():
    s = StubSearch(lambda q: [(f"On {q}", f"https://ex.com/{q.replace(' ', '-')}",
                               f"Facts about {q}.")])
    yield s
    s.close()


def script(fake):
    fake.when(lambda r: stage(r) == "plan", "1. Intro 2. Facts")
    fake.when(lambda r: stage(r) == "draft", "Draft v0 (?)")
    fake.when(lambda r: stage(r) == "queries", "1. alpha facts\n- \"beta facts\"\nalpha facts")
    fake.when(lambda r: stage(r) == "revise", lambda r: "Draft revised [1]")
    fake.when(lambda r: stage(r) == "report", "Final report [1][2]")


def test_two_iterations_call_pattern(client, fake, stub):
    script(fake)
    n = {"i": 0}
    stub.results = lambda q: [(q, f"https://ex.com/{q}-{n['i']}", f"about {q}")]

    def queries(r):
        n["i"] += 1
        return "alpha facts\nbeta facts"

    fake.when(lambda r: stage(r) == "queries", queries)
    fake.rules.insert(0, fake.rules.pop())  # the counting rule first
    r = chat(client, model="deep_research-fake", content="Tell me about alpha",
             web_search_url=stub.url, deep_research_max_iterations=2)
    assert r.status_code == 200, r.get_json()
    assert [stage(h) for h in fake.history] == ["plan", "draft", "queries", "revise",
                                                "queries", "revise", "report"]
    assert len(stub.requests) == 4
    report = fake.history[-1].messages[-1].text
    assert "[1] alpha facts (https://ex.com/alpha facts-1)" in report
    assert "[4] beta facts (https://ex.com/beta facts-2)" in report
    second_revise = fake.history[5].messages[-1].text
    assert "[3] alpha facts" in second_revise  # new sources numbered after the old ones
    choice = r.get_json()["choices"][0]
    assert choice["message"]["content"] == "Final report [1][2]"
    meta = choice["optillm_deep_research"]
    assert len(meta["sources"]) == 4 and meta["iterations"][0]["queries"] == ["alpha facts",
                                                                              "beta facts"]


def test_stops_when_nothing_new_and_dedupes_queries(client, fake, stub):
    script(fake)
    r = chat(client, model="deep_research-fake", content="Q?", web_search_url=stub.url,
             deep_research_max_iterations=3)
    assert r.status_code == 200
    # round 1 finds 2 sources; round 2 finds the same ones: no revision, straight to report
    assert [stage(h) for h in fake.history] == ["plan", "draft", "queries", "revise",
                                                "queries", "report"]
    assert sorted(q for _, q, _ in stub.requests[:2]) == ["alpha facts", "beta facts"]


def test_source_cap_and_garbage_queries(client, fake, stub):
    script(fake)
    fake.when(lambda r: stage(r) == "queries", "")  # nothing usable: the question is searched
    fake.rules.insert(0, fake.rules.pop())
    r = chat(client, model="deep_research-fake", content="What is zeta?",
             web_search_url=stub.url, deep_research_max_sources=1,
             deep_research_max_iterations=4)
    assert r.status_code == 200
    assert stub.requests[0][1] == "What is zeta?"
    assert len(r.get_json()["choices"][0]["optillm_deep_research"]["sources"]) == 1
    assert [stage(h) for h in fake.history] == ["plan", "draft", "queries", "revise", "report"]


def test_searches_run_concurrently(client, fake, stub):
    script(fake)
    active, peak, lock = [0], [0], threading.Lock()

    def slow(q):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.3)
        with lock:
            active[0] -= 1
        return [(q, f"https://ex.com/{q}", "s")]

    stub.results = slow
    chat(client, model="deep_research-fake", content="Q?", web_search_url=stub.url,
         deep_research_max_iterations=1)
    assert peak[0] == 2


def test_failing_backend_and_budget_stop(client, fake, stub):
    script(fake)
    stub.raw = b"garbage"
    r = chat(client, model="deep_research-fake", content="Q?", web_search_url=stub.url)
    meta = r.get_json()["choices"][0]["optillm_deep_research"]
    assert r.status_code == 200 and meta["sources"] == [] and meta["errors"]
    fake.history.clear()
    stub.raw = None
    r = chat(client, model="deep_research-fake", content="Q?", web_search_url=stub.url,
             max_upstream_calls=3)
    assert r.status_code == 200 and len(fake.history) == 3
    choice = r.get_json()["choices"][0]
    # the latest draft, with the sources found before the budget ran out
    assert choice["message"]["content"].startswith("Draft v0 (?)\n\nSources:\n[1] On alpha")
    assert choice["optillm_budget"]["stopped_early"] is True


def test_parse_queries():
    assert parse_queries("Queries:\n1) a b c\n* 'd e f'\nQuery 3: g h\n\nA B C", 5) == [
        "a b c", "d e f", "g h"]
    assert parse_queries("x\ny", 3) == []


def test_options(client, fake):
    assert chat(client, model="deep_research-fake").status_code == 400  # no web_search_url
    assert fake.history == []
    for bad in ({"deep_research_max_iterations": 0}, {"deep_research_queries": 9},
                {"deep_research_max_sources": 0}, {"web_search_backend": "x"}):
        r = chat(client, model="deep_research-fake",
                 **{"web_search_url": "http://127.0.0.1:1", **bad})
        assert r.status_code == 400, bad


def test_in_a_chain(client, fake, stub):
    script(fake)
    r = chat(client, model="deep_research&re2-fake", content="Q?", web_search_url=stub.url,
             deep_research_max_iterations=1)
    assert r.status_code == 200
    assert fake.history[-1].messages[-1].text.startswith("Final report [1][2]")
