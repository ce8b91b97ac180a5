"""``optillm.toolkit.net.fetch`` (the safe fetcher) and the ``readurls`` plugin.

Only loopback servers started here are ever contacted; every refusal is checked to happen
before any connection (``create_connection`` is watched)."""

from __future__ import annotations

import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from urllib3.util import connection as u3conn

from optillm.plugins import readurls
from optillm.toolkit import net

from ..conftest import chat

PAGE = (b"<html><head><script>var secret = 1;</script><style>p{}</style></head><body>"
        b"<p>The quokka lives on Rottnest Island.</p></body></html>")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, ctype, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        target = self.server.redirect_target  # type: ignore[attr-defined]
        routes = {
            "/page": lambda: self._send(200, "text/html; charset=utf-8", PAGE),
            "/plain": lambda: self._send(200, "text/plain", b"plain words"),
            "/big": lambda: self._send(200, "text/plain", b"x" * 50_000),
            "/bin": lambda: self._send(200, "image/png", b"\x89PNG"),
            "/missing": lambda: self._send(404, "text/plain", b"no"),
            "/redirect": lambda: self._send(302, "text/plain", b"", [("Location", "/page")]),
            "/loop": lambda: self._send(302, "text/plain", b"", [("Location", "/loop")]),
            "/away": lambda: self._send(302, "text/plain", b"", [("Location", target)]),
        }
        if self.path == "/slow":
            time.sleep(1.5)
            return self._send(200, "text/plain", b"late")
        routes.get(self.path, lambda: self._send(404, "text/plain", b"?"))()


def serve(host: str):
    server = ThreadingHTTPServer((host, 0), Handler)
    server.redirect_target = ""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def server():
    s = serve("127.0.0.1")
    yield f"http://127.0.0.1:{s.server_address[1]}", s
    s.shutdown()
    s.server_close()


@pytest.fixture
def connections(monkeypatch):
    """Every address a connection is opened to (urllib3's and the socket module's)."""
    seen: list[tuple] = []
    real = u3conn.create_connection

    def watch(address, *args, **kwargs):
        seen.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(u3conn, "create_connection", watch)
    monkeypatch.setattr(socket, "create_connection", watch)
    return seen


LOOPBACK = ["127.0.0.1/32"]


def test_fetches_a_local_page_when_allowed(server, connections):
    url, _ = server
    page = net.fetch(f"{url}/page", allow_private=LOOPBACK)
    assert page.status == 200 and page.content_type == "text/html"
    assert b"quokka" in page.body and page.charset == "utf-8" and not page.truncated
    assert connections and all(a[0] == "127.0.0.1" for a in connections)


def test_redirects_are_followed_and_limited(server):
    url, _ = server
    assert net.fetch(f"{url}/redirect", allow_private=LOOPBACK).url == f"{url}/page"
    with pytest.raises(net.FetchRefused, match="redirects"):
        net.fetch(f"{url}/loop", allow_private=LOOPBACK, max_redirects=3)


def test_size_time_and_status_limits(server):
    url, _ = server
    big = net.fetch(f"{url}/big", allow_private=LOOPBACK, max_bytes=1000)
    assert big.truncated and len(big.body) == 1000
    with pytest.raises(net.FetchFailed):
        net.fetch(f"{url}/slow", allow_private=LOOPBACK, timeout=0.5)
    with pytest.raises(net.FetchFailed, match="404"):
        net.fetch(f"{url}/missing", allow_private=LOOPBACK)


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://10.0.0.1/x",
                                 "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
                                 "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/",
                                 "http://224.0.0.1/", "http://100.64.0.1/",
                                 "file:///etc/passwd", "ftp://example.com/", "http:///nohost"])
def test_refusals_happen_before_any_connection(url, connections):
    with pytest.raises(net.FetchRefused):
        net.fetch(url)
    assert connections == []


def test_every_resolved_address_is_checked(connections):
    resolver = lambda host, port: ["93.184.216.34", "10.0.0.7"]  # noqa: E731
    with pytest.raises(net.FetchRefused, match="10.0.0.7"):
        net.fetch("http://mixed.test/", resolver=resolver)
    assert connections == []


def test_metadata_is_refused_even_when_private_is_allowed(connections):
    with pytest.raises(net.FetchRefused, match="metadata"):
        net.fetch("http://169.254.169.254/", allow_private=True)
    assert connections == []


def test_redirect_to_loopback_is_refused_before_connecting(connections):
    s = serve("127.0.0.2")  # the allowed origin; it redirects to 127.0.0.1
    try:
        s.redirect_target = "http://127.0.0.1:9/secret"
        with pytest.raises(net.FetchRefused, match="127.0.0.1"):
            net.fetch(f"http://127.0.0.2:{s.server_address[1]}/away",
                      allow_private=["127.0.0.2/32"])
    finally:
        s.shutdown()
        s.server_close()
    assert connections and all(a[0] == "127.0.0.2" for a in connections)


def test_connection_is_pinned_to_the_checked_address(server, connections):
    """DNS rebinding: the name is looked up once and the connection goes to that answer."""
    url, _ = server
    port = url.rsplit(":", 1)[1]
    lookups: list[str] = []

    def resolver(host, p):
        lookups.append(host)
        return ["127.0.0.1"] if len(lookups) == 1 else ["10.9.9.9"]

    page = net.fetch(f"http://rebind.test:{port}/plain", allow_private=LOOPBACK,
                     resolver=resolver)
    assert page.body == b"plain words" and lookups == ["rebind.test"]
    assert [a[0] for a in connections] == ["127.0.0.1"]


# -- the plugin ----------------------------------------------------------------------------

@pytest.fixture
def local_client(make_app):
    """A server whose ``--allow-private-urls`` is 127.0.0.1/32 (the local test server)."""
    return make_app(allow_private_urls="127.0.0.1/32").test_client()


def test_plugin_adds_page_text_without_a_model_call(local_client, fake, server):
    url, _ = server
    res = chat(local_client, model="readurls-fake", content=f"Summarise {url}/page, please.")
    data = res.get_json()
    assert res.status_code == 200, data
    text = data["choices"][0]["message"]["content"]
    assert f"{url}/page [Content: " in text and "Rottnest Island" in text
    assert "secret" not in text and text.endswith(", please.")
    assert fake.history == [] and data["usage"]["total_tokens"] == 0
    (record,) = data["choices"][0]["optillm_readurls"]
    assert record["ok"] and record["chars"] > 0


def test_plugin_in_a_chain_and_answering(local_client, fake, server):
    url, _ = server
    chat(local_client, model="readurls&re2-fake", content=f"Read {url}/plain")
    (call,) = fake.history
    assert "plain words" in call.messages[-1].content  # re2 saw the page
    fake.history.clear()
    fake.default = "an answer"
    data = chat(local_client, model="readurls-fake", content=f"Read {url}/plain",
                readurls_answer=True).get_json()
    assert data["choices"][0]["message"]["content"] == "an answer"
    assert "plain words" in fake.history[0].messages[-1].content


def test_plugin_notes_refused_and_failed_urls(client, fake, connections):
    data = chat(client, model="readurls-fake",
                content="See http://10.0.0.1/admin and http://169.254.169.254/.").get_json()
    text = data["choices"][0]["message"]["content"]
    assert text.count("[Could not read this page: refused") == 2
    assert all(r["refused"] for r in data["choices"][0]["optillm_readurls"])
    assert connections == []


def test_private_access_is_the_servers_setting_only(client, local_client, fake, server,
                                                     connections):
    """The default server refuses loopback whatever the body says (the old
    ``readurls_allow_private`` field widens nothing); only --allow-private-urls opens it, and
    only for the networks it lists."""
    url, _ = server
    data = chat(client, model="readurls-fake", content=f"Read {url}/plain",
                readurls_allow_private=True, optillm={"readurls_allow_private": True}).get_json()
    (record,) = data["choices"][0]["optillm_readurls"]
    assert record["refused"] and "loopback" in record["error"] and connections == []
    data = chat(local_client, model="readurls-fake",
                content=f"Read {url}/plain and http://127.0.0.2:9/x").get_json()
    ok, refused = data["choices"][0]["optillm_readurls"]
    assert ok["ok"] and refused["refused"]
    assert {a[0] for a in connections} == {"127.0.0.1"}


def test_non_text_pages_and_extractor_fallbacks(server, monkeypatch):
    url, _ = server
    opts = readurls.Options()
    assert not readurls.read_url(f"{url}/bin", opts, LOOPBACK)["ok"]
    monkeypatch.setitem(sys.modules, "trafilatura", None)
    monkeypatch.setitem(sys.modules, "bs4", None)
    result = readurls.read_url(f"{url}/page", opts, LOOPBACK)
    assert result["ok"] and "quokka" in result["text"] and "secret" not in result["text"]


class _BrokenTrafilatura:
    """A meta-path finder making ``import trafilatura`` fail the way lxml >= 5.2 without
    lxml_html_clean does (an ImportError raised from inside the package's imports)."""

    def find_spec(self, name, path=None, target=None):
        if name == "trafilatura":
            raise ImportError("lxml.html.clean module is now a separate project "
                              "lxml_html_clean")
        return None


def test_trafilatura_import_failure_falls_back_to_bs4(server, monkeypatch):
    url, _ = server
    for name in [m for m in sys.modules if m == "trafilatura" or m.startswith("trafilatura.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BrokenTrafilatura(), *sys.meta_path])
    with pytest.raises(ImportError):
        import trafilatura  # noqa: F401
    result = readurls.read_url(f"{url}/page", readurls.Options(), LOOPBACK)
    assert result["ok"] and "Rottnest Island" in result["text"]
    assert "secret" not in result["text"]


def test_find_urls():
    assert readurls.find_urls("a https://x.org/a, and (http://y.org/b). https://x.org/a") == [
        "https://x.org/a", "http://y.org/b"]
