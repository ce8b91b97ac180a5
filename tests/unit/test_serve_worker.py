"""The gthread worker's keep-alive linger (``optillm.serve``): what counts as a kept
connection, and when a next request is "soon"."""

from __future__ import annotations

import io
import socket
import threading
import time
from types import SimpleNamespace

from optillm import serve


def conn_over(sock, buffered: bytes = b""):
    return SimpleNamespace(sock=sock, parser=SimpleNamespace(
        unreader=SimpleNamespace(buf=io.BytesIO(buffered))))


def test_keeps_reads_both_gunicorn_shapes():
    assert serve._keeps(True) and serve._keeps((True, object()))
    assert not serve._keeps(False) and not serve._keeps((False, None))
    assert not serve._keeps(None) and not serve._keeps(object())


def test_next_request_soon_waits_at_most_the_linger():
    a, b = socket.socketpair()
    try:
        start = time.monotonic()
        assert not serve._next_request_soon(conn_over(a))
        assert time.monotonic() - start < 0.5
        threading.Timer(serve.LINGER_MS / 4000, b.sendall, (b"POST / HTTP/1.1\r\n",)).start()
        assert serve._next_request_soon(conn_over(a))
    finally:
        a.close()
        b.close()


def test_buffered_bytes_count_and_a_closed_socket_does_not_crash():
    a, b = socket.socketpair()
    assert serve._next_request_soon(conn_over(a, b"GET / HTTP/1.1\r\n"))
    a.close()
    b.close()
    assert serve._next_request_soon(conn_over(a)) is False


def test_the_worker_class_is_gthreads_with_the_linger():
    from gunicorn.workers.gthread import ThreadWorker

    worker = serve._thread_worker_class()
    assert issubclass(worker, ThreadWorker) and worker.__name__ == "OptillmThreadWorker"
