"""``web_search`` against a local stub search server on 127.0.0.1: the three backends, the
results in the prompt, augment mode, malformed and failing backends, options, a chain; and
the server's policy: a request's ``web_search_url`` on a loopback/private/metadata host is a
400 before any connection, the server's key never goes to a request's URL.

``StubSearch`` is also used by the ``deep_research`` tests (it serves pages too)."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from urllib3.util import connection as u3conn

from optillm.plugins import web_search
from optillm.toolkit import net

from ..conftest import chat


class StubSearch:
    """A search server answering SearXNG (``/search``), Brave (``/brave``) and Serper
    (``/serper``) requests; ``results(query) -> [(title, url, snippet)]`` decides the results,
    ``requests`` records ``(path, query, headers)``. ``pages`` maps a path to
    ``(content type, bytes)`` served on GET; ``page_requests`` records their paths."""

    def __init__(self, results=None):
        self.results = results or (lambda q: [(f"About {q}", f"https://ex.com/{len(q)}",
                                               f"Snippet on {q}.")])
        self.requests = []
        self.raw = None  # bytes to answer with instead of results (malformed answers)
        self.pages = {}
        self.page_requests = []
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
                if parts.path in stub.pages:
                    stub.page_requests.append(parts.path)
                    ctype, payload = stub.pages[parts.path]
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
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
def client(make_app):
    """A server that lets fetches reach 127.0.0.1 (``--allow-private-urls 127.0.0.1/32``), so
    a request may point ``web_search_url`` at the local stub."""
    return make_app(allow_private_urls="127.0.0.1/32").test_client()


@pytest.fixture
def connections(monkeypatch):
    """Every address a connection is opened to (urllib3's and the socket module's)."""
    seen = []
    real_u3, real_socket = u3conn.create_connection, socket.create_connection

    def watch(real):
        def create(address, *args, **kwargs):
            seen.append(address)
            return real(address, *args, **kwargs)
        return create

    monkeypatch.setattr(u3conn, "create_connection", watch(real_u3))
    monkeypatch.setattr(socket, "create_connection", watch(real_socket))
    return seen


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
    backend = web_search.Backend(stub.url, None, ("127.0.0.1/32",))
    assert web_search.search("x", web_search.Options(), backend) == []
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
    for bad in ({"web_search_url": "file:///etc/passwd"},):
        r = chat(client, model="web_search-fake", **{"web_search_url": "http://127.0.0.1:1",
                                                     **bad})
        assert r.status_code == 400, bad
    r = chat(client, model="web_search-fake")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "web_search_url_required"


# -- server policy -------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["searxng", "serper"])
@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "http://10.0.0.1/",
                                 "http://169.254.169.254/latest/meta-data/",
                                 "http://[::1]:8080/", "http://[::ffff:127.0.0.1]/",
                                 "http://100.64.0.1/", "http://0.0.0.0:9/",
                                 "http://localhost:9/"])
def test_private_request_urls_are_refused_before_any_connection(make_app, fake, connections,
                                                                url, backend):
    client = make_app().test_client()  # the default: no private networks
    r = chat(client, model="web_search-fake", content=Q, web_search_url=url,
             web_search_backend=backend)
    err = r.get_json()["error"]
    assert r.status_code == 400 and err["code"] == "web_search_url_refused", err
    assert err["param"] == "web_search_url"
    assert connections == [] and fake.history == []


def test_metadata_is_refused_even_when_the_server_allows_all(make_app, fake, connections):
    client = make_app(allow_private_urls="all").test_client()
    r = chat(client, model="web_search-fake", content=Q,
             web_search_url="http://169.254.169.254/", web_search_backend="brave")
    assert r.status_code == 400 and "metadata" in r.get_json()["error"]["message"]
    assert connections == [] and fake.history == []


def test_only_the_listed_networks_are_opened(stub, make_app, fake, connections):
    client = make_app(allow_private_urls="127.0.0.2/32").test_client()
    r = chat(client, model="web_search-fake", content=Q, web_search_url=stub.url)
    assert r.status_code == 400 and connections == [] and stub.requests == []


def test_unresolvable_request_host_is_refused(make_app, fake, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror("no such host")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    client = make_app().test_client()
    r = chat(client, model="web_search-fake", content=Q, web_search_url="http://nx.test/")
    assert r.status_code == 400 and "cannot resolve" in r.get_json()["error"]["message"]
    assert chat(client, model="web_search-fake", web_search_url="http://h:99999/").status_code \
        == 400


def test_loopback_stub_goes_through_the_pinned_fetcher(client, fake, stub, connections,
                                                       monkeypatch):
    seen = []
    real = net.fetch

    def spy(url, **kwargs):
        seen.append((url, kwargs["allow_private"]))
        return real(url, **kwargs)

    monkeypatch.setattr(net, "fetch", spy)
    r = chat(client, model="web_search-fake", content=Q, web_search_url=stub.url)
    assert r.status_code == 200, r.get_json()
    ((url, allow),) = seen
    assert url.startswith(f"{stub.url}/search?q=") and allow == ("127.0.0.1/32",)
    assert stub.requests[0][:2] == ("/search", Q)
    assert connections and {a[0] for a in connections} == {"127.0.0.1"}


def test_the_servers_url_and_key(make_app, fake, stub):
    """The server's --web-search-url may be local (the operator's choice) and its key is
    sent to it; the body's key is the fallback."""
    client = make_app(web_search_url=stub.url + "/brave",
                      web_search_api_key="server-key").test_client()
    r = chat(client, model="web_search-fake", content=Q, web_search_backend="brave",
             web_search_api_key="client-key")
    assert r.status_code == 200, r.get_json()
    assert stub.requests[-1][0] == "/brave"
    assert stub.requests[-1][2]["X-Subscription-Token"] == "server-key"
    client = make_app(web_search_url=stub.url + "/serper").test_client()
    chat(client, model="web_search-fake", content=Q, web_search_backend="serper",
         web_search_api_key="client-key")
    assert stub.requests[-1][2]["X-API-KEY"] == "client-key"
    client = make_app(web_search_url=stub.url).test_client()
    r = chat(client, model="web_search-fake", content=Q)
    assert r.status_code == 200 and stub.requests[-1][0] == "/search"
    assert "[1] Paris" in fake.history[-1].messages[-1].text


def test_the_servers_key_never_goes_to_a_request_url(make_app, fake, stub):
    client = make_app(web_search_url="http://search.internal.invalid/",
                      web_search_api_key="server-key",
                      allow_private_urls="127.0.0.1/32").test_client()
    for backend, path, header in (("brave", "/brave", "X-Subscription-Token"),
                                  ("serper", "/serper", "X-API-KEY")):
        r = chat(client, model="web_search-fake", content=Q, web_search_backend=backend,
                 web_search_url=stub.url + path)
        assert r.status_code == 200, r.get_json()
        assert header not in stub.requests[-1][2]
        chat(client, model="web_search-fake", content=Q, web_search_backend=backend,
             web_search_url=stub.url + path, web_search_api_key="own")
        assert stub.requests[-1][2][header] == "own"
