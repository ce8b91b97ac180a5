"""``web_search`` against a local stub search server on 127.0.0.1: the three backends, the
results in the prompt, augment mode, malformed and failing backends, options, a chain.

``StubSearch`` is also used by the ``deep_research`` tests."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from optillm.plugins import web_search

from ..conftest import chat


class StubSearch:
    """A search server answering SearXNG (``/search``), Brave (``/brave``) and Serper
    (``/serper``) requests; ``results(query) -> [(title, url, snippet)]`` decides the results,
    ``requests`` records ``(path, query, headers)``."""

    def __init__(self, results=None):
        self.results = results or (lambda q: [(f"About {q}", f"https://ex.com/{len(q)}",
                                               f"Snippet on {q}.")])
        self.requests = []
        self.raw = None  # bytes to answer with instead of results (malformed answers)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, path, query):
                stub.requests.append((path, query, dict(self.headers)))
                rows = stub.results(query)
                if path == "/search":
                    data = {"results": [{"title": t, "url": u, "content": s} for t, u, s in rows]}
                elif path == "/brave":
                    data = {"web": {"results": [{"title": t, "url": u, "description": s}
                                                for t, u, s in rows]}}
                elif path == "/serper":
                    data = {"organic": [{"title": t, "link": u, "snippet": s} for t, u, s in rows]}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                payload = stub.raw if stub.raw is not None else json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                parts = urlsplit(self.path)
                self._answer(parts.path, parse_qs(parts.query).get("q", [""])[0])

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                self._answer(urlsplit(self.path).path, body.get("q", ""))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = StubSearch(lambda q: [("Paris", "https://ex.com/paris", "Paris is the capital."),
                              ("France", "https://ex.com/fr", "<b>France</b> in Europe.")])
    yield s
    s.close()


Q = "What is the capital of France?"


def test_searxng_results_reach_the_prompt(client, fake, stub):
    fake.enqueue("Paris [1]")
    r = chat(client, model="web_search-fake", content=Q, web_search_url=stub.url)
    assert r.status_code == 200, r.get_json()
    assert stub.requests[0][:2] == ("/search", Q)
    assert len(fake.history) == 1
    prompt = fake.history[0].messages[-1].text
    assert prompt.startswith(Q)
    assert "[1] Paris (https://ex.com/paris)\nParis is the capital." in prompt
    assert "[2] France (https://ex.com/fr)\nFrance in Europe." in prompt  # tags stripped
    choice = r.get_json()["choices"][0]
    assert choice["message"]["content"] == "Paris [1]"
    assert choice["optillm_web_search"]["results"] == ["https://ex.com/paris",
                                                       "https://ex.com/fr"]


@pytest.mark.parametrize("backend,path,header", [("brave", "/brave", "X-Subscription-Token"),
                                                  ("serper", "/serper", "X-API-KEY")])
def test_key_backends(client, fake, stub, backend, path, header):
    r = chat(client, model="web_search-fake", content=Q, web_search_backend=backend,
             web_search_url=stub.url + path, web_search_api_key="k123",
             web_search_max_results=1)
    assert r.status_code == 200, r.get_json()
    (req_path, query, headers) = stub.requests[0]
    assert (req_path, query) == (path, Q) and headers[header] == "k123"
    prompt = fake.history[0].messages[-1].text
    assert "https://ex.com/paris" in prompt and "https://ex.com/fr" not in prompt


def test_whole_conversation_and_client_params(client, fake, stub):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": Q}]
    chat(client, model="web_search-fake", messages=messages, web_search_url=stub.url,
         temperature=0.3)
    sent = fake.history[0]
    assert [m.role for m in sent.messages] == ["system", "user", "assistant", "user"]
    assert sent.params["temperature"] == 0.3


def test_augment_mode_makes_no_call_and_chains(client, fake, stub):
    r = chat(client, model="web_search-fake", content=Q, web_search_url=stub.url,
             web_search_mode="augment")
    assert fake.history == []
    assert "[1] Paris" in r.get_json()["choices"][0]["message"]["content"]
    fake.enqueue("answer")
    r = chat(client, model="web_search&re2-fake", content=Q, web_search_url=stub.url,
             web_search_mode="augment")
    assert r.status_code == 200 and len(fake.history) == 1
    assert "Read the question again" in fake.history[0].messages[-1].text
    assert "[1] Paris" in fake.history[0].messages[-1].text


def test_malformed_and_failing_backends_still_answer(client, fake, stub):
    stub.raw = b"<html>not json</html>"
    fake.enqueue("no results answer")
    r = chat(client, model="web_search-fake", content=Q, web_search_url=stub.url)
    assert r.status_code == 200
    meta = r.get_json()["choices"][0]["optillm_web_search"]
    assert meta["results"] == [] and "failed" in meta["error"]
    assert fake.history[0].messages[-1].text == Q
    stub.raw = b'{"results": "nope"}'
    assert web_search.search("x", web_search.Options(web_search_url=stub.url)) == []
    # nothing listens on the port of a closed server
    stub.close()
    r = chat(client, model="web_search-fake", content=Q, web_search_url=stub.url,
             web_search_timeout=1)
    assert r.status_code == 200 and r.get_json()["choices"][0]["optillm_web_search"]["error"]


def test_parse_results_tolerates_garbage():
    assert web_search.parse_results("searxng", [1, 2], 5) == []
    assert web_search.parse_results("brave", {"web": []}, 5) == []
    rows = {"organic": [None, {"link": "u"}, {"link": "u2", "snippet": "s"}, "x"]}
    assert web_search.parse_results("serper", rows, 5) == [
        web_search.SearchResult("u2", "u2", "s")]


def test_options(client):
    for bad in ({"web_search_backend": "google"}, {"web_search_url": "file:///etc/passwd"},
                {"web_search_max_results": 0}, {"web_search_mode": "x"},
                {"web_search_timeout": 0}):
        r = chat(client, model="web_search-fake", **{"web_search_url": "http://127.0.0.1:1",
                                                     **bad})
        assert r.status_code == 400, bad
    r = chat(client, model="web_search-fake")
    assert r.status_code == 400 and "web_search_url" in r.get_json()["error"]["message"]
