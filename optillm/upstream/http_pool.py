"""A keep-alive HTTP/1.1 connection pool for the passthrough: one ``sendall`` per request,
``http.client``'s response parser on the way back.

The passthrough is the proxy's hot path, and on loopback its HTTP client is most of what it
costs: against a 0 ms stub, urllib3's ``urlopen`` took 297 µs a call, ``http.client`` 222 µs,
and ``http.client``'s parser behind a request written in one ``sendall`` 193 µs (4,000 calls
each, this machine). This module is that last shape: it writes the request line and headers
itself (they are the proxy's own, checked for CR/LF) and leaves everything about the answer to
the standard library (status line, headers, ``Content-Length``, chunked transfer coding,
``Connection: close``).

``HTTPPool(url, maxsize, connect_timeout, read_timeout, ssl_context)``: ``post(path, body,
headers) -> PooledResponse``. Idle connections are kept up to ``maxsize`` (more are opened
when all are busy; extras are closed on return, so a call never waits for a free one). A
connection the server has closed while idle is noticed before reuse (a zero-timeout poll) and
replaced; a reused connection that fails before any answer byte is retried once on a new
connection, since the server cannot have acted on a request it never read.

``PooledResponse`` has ``status``, ``headers`` (case-insensitive ``get``), ``read()`` (the whole
body; the connection goes back to the pool), ``read1(n)`` (a stream's pieces as they arrive),
``release()`` (back to the pool when the body was read to its end, else closed) and
``close()`` (drop the connection: stops a streaming upstream). ``readable(sock, timeout_ms)``
is the zero-or-short-timeout poll, shared with the gthread worker's keep-alive linger.

Raises ``TimeoutError`` (connect or read limit), ``OSError`` (no connection, reset) and
``http.client.HTTPException`` (a malformed or cut answer); ``ValueError`` for a header value
with CR or LF.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError)


class PooledResponse:
    """One answer read over a pooled connection (see the module docstring)."""

    __slots__ = ("_pool", "_sock", "_resp", "status", "headers")

    def __init__(self, pool: HTTPPool, sock: socket.socket, resp: http.client.HTTPResponse):
        self._pool = pool
        self._sock: socket.socket | None = sock
        self._resp = resp
        self.status = resp.status
        self.headers = resp.msg

    def read(self) -> bytes:
        """The whole body; the connection is released (or closed) after, even on failure."""
        try:
            return self._resp.read()
        finally:
            self.release()

    def read1(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes as soon as some arrive; b"" at the body's end."""
        return self._resp.read1(n)

    def release(self) -> None:
        """Back to the pool when the body was read to its end and the server keeps the
        connection open; closed otherwise."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._resp.isclosed() and not self._resp.will_close:
            self._pool._put(sock)
        else:
            self._resp.close()
            sock.close()

    def close(self) -> None:
        """Drop the connection now (a client that went away stops the upstream)."""
        sock, self._sock = self._sock, None
        self._resp.close()
        if sock is not None:
            sock.close()


class HTTPPool:
    """Keep-alive connections to the host of ``url`` (http or https)."""

    def __init__(self, url: str, *, maxsize: int = 32, connect_timeout: float = 10.0,
                 read_timeout: float = 600.0, ssl_context: ssl.SSLContext | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        default_port = 443 if self.https else 80
        self.port = parts.port or default_port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.maxsize = maxsize
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.ssl_context = ssl_context or (ssl.create_default_context() if self.https
                                           else None)
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> PooledResponse:
        """POST ``body`` to ``path`` and read the status line and headers of the answer.

        Raises: see the module docstring.
        """
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host_header}",
                f"Content-Length: {len(body)}", "Accept-Encoding: identity"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} has a CR or LF")
            head.append(f"{name}: {value}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        sock, reused = self._get()
        try:
            return self._exchange(sock, request)
        except _STALE:
            if not reused:
                raise
        # the server closed it while idle (_exchange has closed it): once more, on a new one
        return self._exchange(self._connect(), request)

    def _exchange(self, sock: socket.socket, request: bytes) -> PooledResponse:
        """Send ``request`` on ``sock`` and read the answer's head; ``sock`` is closed when
        that fails."""
        try:
            sock.sendall(request)
            resp = http.client.HTTPResponse(sock, method="POST")
            resp.begin()
        except BaseException:
            sock.close()
            raise
        return PooledResponse(self, sock, resp)

    def _get(self) -> tuple[socket.socket, bool]:
        while True:
            with self._lock:
                sock = self._idle.pop() if self._idle else None
            if sock is None:
                return self._connect(), False
            if not _dropped(sock):
                return sock, True
            sock.close()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.read_timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def _put(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < self.maxsize:
                self._idle.append(sock)
                return
        sock.close()

    def clear(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()


def readable(sock: Any, timeout_ms: int = 0) -> bool:
    """Whether ``sock`` has bytes to read (or its peer closed it) within ``timeout_ms``.

    Raises: OSError / ValueError for a closed or unusable socket.
    """
    if hasattr(select, "poll"):  # any descriptor number (select() stops at 1024)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout_ms))
    return bool(select.select([sock], [], [], timeout_ms / 1000)[0])


def _dropped(sock: socket.socket) -> bool:
    """True when an idle connection is readable: the server closed it (or sent bytes no
    request asked for), so it cannot carry another request."""
    try:
        return readable(sock)
    except (OSError, ValueError):
        return True
