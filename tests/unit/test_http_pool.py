"""``optillm.upstream.http_pool``: keep-alive reuse, the request as sent, chunked and
close-delimited answers, a connection the server dropped while idle, timeouts, CR/LF in a
header, and release versus close."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from optillm.upstream.http_pool import HTTPPool


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list = []
    connections: set = set()

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Handler.seen.append((self.path, dict(self.headers), body))
        Handler.connections.add(self.client_address)
        mode = self.path.rsplit("/", 1)[-1]
        if mode == "slow":
            time.sleep(1.0)
        if mode == "chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"data: 1\n\n", b"data: [DONE]\n\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        if mode == "close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b'{"closed": true}')
            self.close_connection = True
            return
        reply = b'{"echo": ' + str(len(body)).encode() + b"}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture
def server():
    Handler.seen = []
    Handler.connections = set()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given(server):
    pool = HTTPPool(server, maxsize=4)
    for i in range(5):
        resp = pool.post("/v1/chat/completions", b"x" * i, {"Authorization": "Bearer k"})
        assert resp.status == 200 and resp.headers.get("content-type") == "application/json"
        assert resp.read() == b'{"echo": %d}' % i
    assert len(Handler.connections) == 1
    path, headers, body = Handler.seen[-1]
    assert path == "/v1/chat/completions" and body == b"xxxx"
    assert headers["Authorization"] == "Bearer k" and headers["Content-Length"] == "4"
    assert headers["Host"] == server.split("//")[1]
    assert headers["Accept-Encoding"] == "identity"


def test_chunked_stream_pieces_then_the_connection_is_reused(server):
    pool = HTTPPool(server)
    resp = pool.post("/chunked", b"{}", {})
    pieces = []
    while True:
        piece = resp.read1(65536)
        if not piece:
            break
        pieces.append(piece)
    resp.release()
    assert b"".join(pieces) == b"data: 1\n\ndata: [DONE]\n\n"
    assert pool.post("/again", b"{}", {}).read() == b'{"echo": 2}'
    assert len(Handler.connections) == 1


def test_connection_close_answer_is_not_pooled(server):
    pool = HTTPPool(server)
    assert pool.post("/close", b"", {}).read() == b'{"closed": true}'
    assert pool._idle == []
    assert pool.post("/next", b"", {}).read() == b'{"echo": 0}'
    assert len(Handler.connections) == 2


def test_a_connection_dropped_while_idle_is_replaced(server):
    pool = HTTPPool(server)
    pool.post("/a", b"", {}).read()
    (idle,) = pool._idle
    idle.shutdown(socket.SHUT_RDWR)  # as if the server had closed it
    assert pool.post("/b", b"", {}).read() == b'{"echo": 0}'
    assert len(Handler.connections) == 2


def test_an_unread_body_closes_instead_of_pooling(server):
    pool = HTTPPool(server)
    resp = pool.post("/chunked", b"", {})
    assert resp.read1(4)
    resp.release()
    assert pool._idle == []


def test_read_timeout_raises_timeout_error(server):
    pool = HTTPPool(server, read_timeout=0.2)
    with pytest.raises(TimeoutError):
        pool.post("/slow", b"", {})


def test_refused_connection_raises_oserror():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        HTTPPool(f"http://127.0.0.1:{port}", connect_timeout=1).post("/", b"", {})


def test_header_injection_is_refused(server):
    with pytest.raises(ValueError):
        HTTPPool(server).post("/", b"", {"X-Bad": "a\r\nInjected: 1"})
    assert not Handler.seen


def test_extra_connections_beyond_maxsize_are_closed(server):
    pool = HTTPPool(server, maxsize=1)
    first = pool.post("/1", b"", {})
    second = pool.post("/2", b"", {})
    first.read()
    second.read()
    assert len(pool._idle) == 1
    with pytest.raises(ValueError):
        HTTPPool("ftp://example.com")
