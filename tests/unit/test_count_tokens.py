"""Token counting as an ``Upstream`` call: ``OpenAIUpstream.count_tokens`` over a real HTTP
``POST /tokenize`` (llama-server's shape), ``CapabilityError`` where there is none (found out
once, then no more calls; none at all for hosted APIs), unreachable upstreams as
``UpstreamError``; every wrapper of the stack and the router pass it through."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from optillm.concurrency import BoundedExecutor
from optillm.errors import CapabilityError, UpstreamError
from optillm.settings import Settings
from optillm.upstream.base import NO_META, CallMeta, Upstream
from optillm.upstream.config import Endpoint, GeneralSettings
from optillm.upstream.openai_client import OpenAIUpstream
from optillm.upstream.router import RouterUpstream

from ..fakes import FakeUpstream


class Tokenizer(BaseHTTPRequestHandler):
    """``POST /tokenize`` answering one token per word; ``status`` set on the server
    overrides the answer (a server without the endpoint)."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, body, self.headers.get("Authorization")))
        status = self.server.status
        data = json.dumps({"tokens": list(range(len(body["content"].split())))} if status == 200
                          else {"error": {"message": "File Not Found"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Tokenizer)
    srv.seen, srv.status = [], 200
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def test_counts_by_tokenize_at_the_servers_root(server):
    up = OpenAIUpstream(url(server), retries=0)
    assert up.count_tokens("one two three four", "m", CallMeta(api_key="client")) == 4
    path, body, auth = server.seen[0]
    assert path == "/tokenize" and body == {"content": "one two three four"}
    assert auth == "Bearer client"  # the client's key when the proxy has none
    assert up.capabilities.tokenize is True


def test_no_tokenize_is_a_capability_error_found_out_once(server):
    server.status = 404
    up = OpenAIUpstream(url(server), retries=0)
    for _ in range(2):
        with pytest.raises(CapabilityError, match="cannot count tokens"):
            up.count_tokens("text", "m")
    assert len(server.seen) == 1 and up.capabilities.tokenize is False


def test_hosted_apis_are_never_asked(server):
    up = OpenAIUpstream("https://api.openai.com/v1", "sk-x", retries=0)
    with pytest.raises(CapabilityError):
        up.count_tokens("text", "gpt-4o")
    azure = OpenAIUpstream(None, "k", azure=(url(server), "2024-10-21"), retries=0)
    with pytest.raises(CapabilityError):
        azure.count_tokens("text", "dep")
    assert server.seen == []


def test_an_unreachable_upstream_is_an_upstream_error():
    with pytest.raises(UpstreamError):
        OpenAIUpstream("http://127.0.0.1:9/v1", retries=0).count_tokens("text", "m")


def test_the_base_class_cannot_count():
    with pytest.raises(CapabilityError):
        Upstream().count_tokens("text", "m")


class Counting(FakeUpstream):
    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.counted: list[str] = []

    def count_tokens(self, text, model, meta=NO_META):
        self.counted.append(model)
        return len(text)


def test_every_wrapper_of_the_stack_passes_it_through():
    from optillm.app import build_stack
    from optillm.upstream.cache import ResponseCache

    class Store:
        def get(self, key):
            return None

        def set(self, key, value, ttl):
            pass

    bottom = Counting("bottom")
    executor = BoundedExecutor(2)
    try:
        stack, _ = build_stack(Settings(batch_mode=True), executor, bottom,
                               cache=ResponseCache(Store(), 60))
        assert stack.count_tokens("abcd", "m") == 4 and bottom.counted == ["m"]
    finally:
        executor.shutdown()


def test_the_router_counts_on_an_endpoint_of_the_group_with_its_model():
    a = Counting("a")
    endpoint = Endpoint(base_url="http://a.invalid/v1", model="a-model", name="a")
    router = RouterUpstream({"pub": [endpoint]}, None, lambda ep, on_headers: a,
                            GeneralSettings())
    assert router.count_tokens("abc", "pub") == 3 and a.counted == ["a-model"]
