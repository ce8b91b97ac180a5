"""``deep_research`` (TTD-DR) against the local stub search server: plan, draft, query/search/
revise iterations, stopping rules, source numbering, malformed replies, budget stop, options,
concurrency of the searches, a chain; page reading through ``optillm.toolkit.net.fetch`` (pages
served
by the stub under ``--allow-private-urls 127.0.0.1/32``), its fallback to snippets, and the
server's address policy for the backend URL and the result pages.

No name is ever looked up: ``socket.getaddrinfo`` fails for every name (the stub's results
on ``ex.com`` cannot be read and fall back to their snippets)."""

import ipaddress
import socket
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


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    """Address literals still work (the socket layer parses them); names never resolve."""
    real = socket.getaddrinfo

    def literal_only(host, *args, **kwargs):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise socket.gaierror(f"no DNS in these tests ({host})") from None
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", literal_only)


@pytest.fixture
def client(make_app):
    """A server that lets fetches reach 127.0.0.1 (the stub)."""
    return make_app(allow_private_urls="127.0.0.1/32").test_client()


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


def test_in_a_chain(client, fake, stub):
    script(fake)
    r = chat(client, model="deep_research&re2-fake", content="Q?", web_search_url=stub.url,
             deep_research_max_iterations=1)
    assert r.status_code == 200
    assert fake.history[-1].messages[-1].text.startswith("Final report [1][2]")


PAGE = (b"<html><head><script>var hidden = 1;</script></head><body><article>"
        b"<p>The alpha particle has two protons and two neutrons.</p></article></body></html>")


def page_stub(stub, n_results=3):
    """Results on the stub itself: /doc/0 (a page), /doc/1 (a page), /doc/2 (missing)."""
    stub.pages["/doc/0"] = ("text/html; charset=utf-8", PAGE)
    stub.pages["/doc/1"] = ("text/plain", b"Beta decay emits an electron.")
    stub.results = lambda q: [(f"Doc {i}", f"{stub.url}/doc/{i}", f"snippet {i}")
                              for i in range(n_results)]


def revise_prompt(fake):
    return next(h for h in fake.history if stage(h) == "revise").messages[-1].text


def test_pages_of_the_top_sources_are_read(client, fake, stub):
    script(fake)
    page_stub(stub)
    r = chat(client, model="deep_research-fake", content="Q?", web_search_url=stub.url,
             deep_research_max_iterations=1)
    assert r.status_code == 200, r.get_json()
    assert sorted(stub.page_requests) == ["/doc/0", "/doc/1"]  # the default: 2 pages
    prompt = revise_prompt(fake)
    assert f"[1] Doc 0 ({stub.url}/doc/0): The alpha particle has two protons" in prompt
    assert f"[2] Doc 1 ({stub.url}/doc/1): Beta decay emits an electron." in prompt
    assert f"[3] Doc 2 ({stub.url}/doc/2): snippet 2" in prompt  # not read: its snippet
    assert "hidden" not in prompt and "snippet 0" not in prompt
    meta = r.get_json()["choices"][0]["optillm_deep_research"]
    assert meta["iterations"][0]["pages_read"] == [f"{stub.url}/doc/0", f"{stub.url}/doc/1"]
    report = fake.history[-1].messages[-1].text
    assert "snippet 0" in report  # the report lists the snippets


def test_failed_pages_fall_back_to_snippets(client, fake, stub):
    script(fake)
    page_stub(stub)
    stub.results = lambda q: [("Doc 2", f"{stub.url}/doc/2", "snippet 2"),
                              ("Doc 0", f"{stub.url}/doc/0", "snippet 0")]
    r = chat(client, model="deep_research-fake", content="Q?", web_search_url=stub.url,
             deep_research_max_iterations=1, deep_research_read_pages=1)
    assert r.status_code == 200, r.get_json()
    assert stub.page_requests == []  # /doc/2 is a 404 (not a served page); only one read
    prompt = revise_prompt(fake)
    assert "[1] Doc 2" in prompt and "snippet 2" in prompt and "snippet 0" in prompt
    assert any("404" in e for e in r.get_json()["choices"][0]["optillm_deep_research"]["errors"])


def test_read_pages_zero_fetches_nothing(client, fake, stub):
    script(fake)
    page_stub(stub)
    r = chat(client, model="deep_research-fake", content="Q?", web_search_url=stub.url,
             deep_research_max_iterations=1, deep_research_read_pages=0)
    assert r.status_code == 200 and stub.page_requests == []
    assert "[1] Doc 0" in revise_prompt(fake) and "snippet 0" in revise_prompt(fake)


def test_result_pages_follow_the_servers_address_policy(make_app, fake, stub):
    """The server's own backend may be local, but the pages its results name are fetched
    under --allow-private-urls (none here): loopback pages are refused, snippets are used."""
    script(fake)
    page_stub(stub)
    client = make_app(web_search_url=stub.url).test_client()
    r = chat(client, model="deep_research-fake", content="Q?", deep_research_max_iterations=1)
    assert r.status_code == 200, r.get_json()
    assert stub.requests and stub.page_requests == []
    assert "snippet 0" in revise_prompt(fake)
    errors = r.get_json()["choices"][0]["optillm_deep_research"]["errors"]
    assert any("loopback" in e for e in errors)


def test_private_backend_url_from_the_request_is_400(make_app, fake, stub):
    client = make_app().test_client()
    r = chat(client, model="deep_research-fake", content="Q?", web_search_url=stub.url)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "web_search_url_refused"
    assert fake.history == [] and stub.requests == []
