"""A fast stub OpenAI-compatible upstream for benchmarks (standard library only).

What lives here:

- ``StubUpstream``: an asyncio HTTP/1.1 server (asyncio streams, keep-alive, just enough
  parsing: request line, headers, ``Content-Length`` body) answering

  - ``POST /v1/chat/completions`` (also ``/chat/completions``): a ``chat.completion`` with ``n``
    choices, ``usage`` counting every choice, ``logprobs`` when asked for; with ``stream: true``
    the same as ``chat.completion.chunk`` SSE events (chunked transfer encoding) ending with
    ``data: [DONE]``, plus a usage chunk when ``stream_options.include_usage`` is set;
  - ``GET /v1/models``: one model, ``stub-model``;
  - ``GET /stub/stats``: counters (connections, chat calls, choices, peak concurrency, faults)
    so a benchmark can count the upstream calls an approach made; ``POST /stub/reset`` zeroes
    them;
  - ``POST /stub/fail``: fail chat calls on command (``Fault``): ``{"mode": "500"}`` (any
    status: ``"503"``, ``"429"`` with ``"retry_after": 2``), ``"hang"`` (never answer),
    ``"malformed"`` (invalid JSON, or non-JSON stream events), ``"cut"`` (the connection drops
    midway through the answer), ``"truncate"`` (a stream that ends cleanly but without
    ``data: [DONE]``; a non-streamed answer cut short with a consistent length), ``"ok"``
    (heal); ``"every": k`` hits calls 1, 1+k, 1+2k, ...
    (2 = half of them), ``"times": n`` heals after n hits; ``"headers": {...}`` are added to
    every chat answer (``x-ratelimit-remaining-requests``, ...).

  ``latency_ms`` is slept (``asyncio.sleep``, so concurrent requests are not held up) before
  each chat answer; ``chunk_delay_ms`` between stream events.
- ``start_in_thread(...)`` / ``start_subprocess(...)``: start one and get a ``StubHandle``
  (``.url`` is the base URL ending in ``/v1``; ``.stats()``, ``.stop()``; a context manager).
  ``StubHandle.fail(mode, ...)`` sets a fault, in either mode.
- ``main()``: ``python scripts/stub_upstream.py --port P --latency-ms L [--fail MODE
  --fail-every K]`` (``--port 0`` picks a free port; the first line on stdout names the URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REPLY_TEXT = "The answer is 42."
MODEL_ID = "stub-model"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Payload Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
MAX_BODY = 16 * 1024 * 1024


@dataclass
class Stats:
    """What the stub has served since it started (or since ``/stub/reset``)."""

    connections: int = 0
    requests: int = 0
    chat_calls: int = 0
    stream_calls: int = 0
    choices: int = 0
    models_calls: int = 0
    active: int = 0
    peak_active: int = 0
    faults: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Fault:
    """How the stub misbehaves on chat calls (see the module docstring). ``mode``: ``"ok"``,
    an HTTP status as text (``"500"``, ``"429"``), ``"hang"``, ``"malformed"`` or ``"cut"``."""

    mode: str = "ok"
    every: int = 1
    times: int | None = None
    retry_after: float | None = None
    hang_s: float = 3600.0
    headers: dict[str, str] = field(default_factory=dict)
    seen: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("ok", "hang", "malformed", "cut", "truncate") and not (
                self.mode.isdigit() and 400 <= int(self.mode) <= 599):
            raise ValueError(f"unknown fault mode {self.mode!r}")
        if self.every < 1:
            raise ValueError("'every' must be at least 1")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fault:
        return cls(mode=str(d.get("mode", "ok")), every=int(d.get("every") or 1),
                   times=d.get("times"), retry_after=d.get("retry_after"),
                   hang_s=float(d.get("hang_s") or 3600.0),
                   headers={str(k): str(v) for k, v in (d.get("headers") or {}).items()})

    def hits(self) -> bool:
        """Whether this chat call fails (counts the call)."""
        if self.mode == "ok" or self.times == 0:
            return False
        self.seen += 1
        if (self.seen - 1) % self.every:
            return False
        if self.times is not None:
            self.times -= 1
        return True

    def error_headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return self.headers
        return {**self.headers, "Retry-After": f"{self.retry_after:g}"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# -- HTTP framing ---------------------------------------------------------------------------


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection, or None when the client closed it.

    Raises: BadRequest (malformed or unsupported framing).
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest(400, "request head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise BadRequest(411, "chunked request bodies are not supported; send Content-Length")
    length = int(headers.get("content-length") or 0)
    if length > MAX_BODY:
        raise BadRequest(413, "request body too large")
    body = await reader.readexactly(length) if length else b""
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return Request(method, target.split("?", 1)[0], headers, body, keep_alive)


def response_head(status: int, content_type: str, length: int | None, keep_alive: bool,
                  headers: dict[str, str] | None = None) -> bytes:
    """Status line and headers; ``length=None`` means a chunked body follows."""
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\n{framing}\r\n{extra}"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n").encode("latin-1")


def json_message(status: int, obj: Any, keep_alive: bool,
                 headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps(obj).encode()
    return response_head(status, "application/json", len(body), keep_alive, headers) + body


def error_message(status: int, message: str, keep_alive: bool,
                  headers: dict[str, str] | None = None) -> bytes:
    err = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                     "code": None}}
    return json_message(status, err, keep_alive, headers)


def chunk_frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# -- OpenAI bodies ----------------------------------------------------------------------------


def reply_tokens(index: int) -> list[str]:
    """The reply of choice ``index`` as the tokens it is streamed in."""
    words = REPLY_TEXT.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def prompt_tokens(body: dict[str, Any]) -> int:
    """A cheap token estimate: words in the messages' string contents."""
    total = 0
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            total += len(content.split())
    return max(1, total)


def logprobs_of(tokens: list[str]) -> dict[str, Any]:
    return {"content": [{"token": t, "logprob": -0.01, "bytes": list(t.encode()),
                         "top_logprobs": []} for t in tokens], "refusal": None}


def completion(body: dict[str, Any], n: int) -> dict[str, Any]:
    """A ``chat.completion`` with ``n`` choices; usage counts all of them."""
    choices = []
    completion_tokens = 0
    for i in range(n):
        tokens = reply_tokens(i)
        completion_tokens += len(tokens)
        choices.append({"index": i,
                        "message": {"role": "assistant", "content": "".join(tokens),
                                    "refusal": None},
                        "logprobs": logprobs_of(tokens) if body.get("logprobs") else None,
                        "finish_reason": "stop"})
    prompt = prompt_tokens(body)
    return {"id": f"chatcmpl-stub{time.monotonic_ns()}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model") or MODEL_ID,
            "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                      "total_tokens": prompt + completion_tokens}}


def stream_events(body: dict[str, Any], n: int) -> list[bytes]:
    """The SSE events of a streamed answer, ``data: [DONE]`` last."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base = {"id": f"chatcmpl-stub{time.monotonic_ns()}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": body.get("model") or MODEL_ID}
    if include_usage:
        base["usage"] = None

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + json.dumps({**base, "choices": choices, **extra}).encode() + b"\n\n"

    def choice(i: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}

    events = [event([choice(i, {"role": "assistant", "content": ""}) for i in range(n)])]
    completion_tokens = 0
    for i in range(n):
        tokens = reply_tokens(i)
        completion_tokens += len(tokens)
        events += [event([choice(i, {"content": t})]) for t in tokens]
    events.append(event([choice(i, {}, "stop") for i in range(n)]))
    if include_usage:
        prompt = prompt_tokens(body)
        events.append(event([], usage={"prompt_tokens": prompt,
                                       "completion_tokens": completion_tokens,
                                       "total_tokens": prompt + completion_tokens}))
    events.append(b"data: [DONE]\n\n")
    return events


def parse_chat_body(raw: bytes) -> tuple[dict[str, Any], int]:
    """The request's JSON object and its ``n``.

    Raises: BadRequest.
    """
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest(400, "request body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise BadRequest(400, "'messages' is required")
    n = body.get("n")
    n = 1 if n is None else n
    if not isinstance(n, int) or not 1 <= n <= 128:
        raise BadRequest(400, "'n' must be an integer between 1 and 128")
    return body, n


# -- the server -------------------------------------------------------------------------------


@dataclass
class StubUpstream:
    """The stub server (see the module docstring). ``port=0`` picks a free port."""

    host: str = "127.0.0.1"
    port: int = 0
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    stats: Stats = field(default_factory=Stats)
    fault: Fault = field(default_factory=Fault)
    _server: asyncio.AbstractServer | None = None
    _connections: set[asyncio.Task] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve_connection, self.host, self.port,
                                                  backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and end the open connections (idle keep-alive ones included)."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            while True:
                try:
                    request = await read_request(reader)
                except BadRequest as exc:
                    writer.write(error_message(exc.status, str(exc), False))
                    await writer.drain()
                    return
                if request is None:
                    return
                await self._answer(request, writer)
                if not request.keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request
        except asyncio.CancelledError:
            pass  # the server is closing
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer(self, request: Request, writer: asyncio.StreamWriter) -> None:
        self.stats.requests += 1
        keep = request.keep_alive
        path = request.path.rstrip("/")
        if path in ("/v1/chat/completions", "/chat/completions"):
            if request.method != "POST":
                writer.write(error_message(405, "use POST", keep))
            else:
                await self._chat(request, writer)
                return
        elif path in ("/v1/models", "/models") and request.method == "GET":
            self.stats.models_calls += 1
            writer.write(json_message(200, {"object": "list", "data": [
                {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "stub"}]}, keep))
        elif path == "/stub/stats" and request.method == "GET":
            writer.write(json_message(200, self.stats.to_dict(), keep))
        elif path == "/stub/reset" and request.method == "POST":
            self.stats = Stats(connections=0, active=self.stats.active)
            writer.write(json_message(200, self.stats.to_dict(), keep))
        elif path == "/stub/fail" and request.method == "POST":
            try:
                self.fault = Fault.from_dict(json.loads(request.body or b"{}"))
            except (ValueError, TypeError, AttributeError) as exc:
                writer.write(error_message(400, f"bad fault: {exc}", keep))
            else:
                writer.write(json_message(200, {"mode": self.fault.mode}, keep))
        else:
            writer.write(error_message(404, f"no route {request.method} {request.path}", keep))
        await writer.drain()

    async def _chat(self, request: Request, writer: asyncio.StreamWriter) -> None:
        keep = request.keep_alive
        try:
            body, n = parse_chat_body(request.body)
        except BadRequest as exc:
            writer.write(error_message(exc.status, str(exc), keep))
            await writer.drain()
            return
        stats = self.stats
        stats.chat_calls += 1
        stats.choices += n
        stats.active += 1
        stats.peak_active = max(stats.peak_active, stats.active)
        fault = self.fault
        try:
            if self.latency_ms > 0:
                await asyncio.sleep(self.latency_ms / 1000.0)
            if fault.hits():
                stats.faults += 1
                await self._fail(fault, body, n, writer, keep)
            elif body.get("stream"):
                stats.stream_calls += 1
                await self._write_stream(stream_events(body, n), writer, keep, fault.headers)
            else:
                writer.write(json_message(200, completion(body, n), keep, fault.headers))
                await writer.drain()
        finally:
            self.stats.active -= 1

    async def _fail(self, fault: Fault, body: dict[str, Any], n: int,
                    writer: asyncio.StreamWriter, keep: bool) -> None:
        """Answer one chat call as ``fault`` says. Raises ConnectionResetError after dropping
        the connection (hang, cut), which ends it."""
        if fault.mode.isdigit():
            writer.write(error_message(int(fault.mode), f"stub fault: status {fault.mode}",
                                       keep, fault.error_headers()))
            await writer.drain()
            return
        if fault.mode == "hang":
            await asyncio.sleep(fault.hang_s)
            writer.transport.abort()
            raise ConnectionResetError("hung up")
        stream = bool(body.get("stream"))
        if fault.mode == "malformed":
            if stream:
                events = [b"data: {not json\n\n", b"data: [DONE]\n\n"]
                await self._write_stream(events, writer, keep, fault.headers)
            else:
                data = b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "message": '
                writer.write(response_head(200, "application/json", len(data), keep,
                                           fault.headers) + data)
                await writer.drain()
            return
        if fault.mode == "truncate":
            if stream:
                await self._write_stream(stream_events(body, n)[:2], writer, keep,
                                         fault.headers)
            else:
                data = json.dumps(completion(body, n)).encode()[:40]
                writer.write(response_head(200, "application/json", len(data), keep,
                                           fault.headers) + data)
                await writer.drain()
            return
        # cut: part of the answer, then the connection drops
        if stream:
            events = stream_events(body, n)
            writer.write(response_head(200, "text/event-stream", None, keep, fault.headers) +
                         b"".join(chunk_frame(e) for e in events[:2]))
        else:
            data = json.dumps(completion(body, n)).encode()
            writer.write(response_head(200, "application/json", len(data), keep,
                                       fault.headers) + data[:len(data) // 2])
        await writer.drain()
        writer.transport.abort()
        raise ConnectionResetError("cut")

    async def _write_stream(self, events: list[bytes], writer: asyncio.StreamWriter,
                            keep: bool, headers: dict[str, str] | None = None) -> None:
        head = response_head(200, "text/event-stream", None, keep, headers)
        if self.chunk_delay_ms <= 0:
            writer.write(head + b"".join(chunk_frame(e) for e in events) + b"0\r\n\r\n")
            await writer.drain()
            return
        writer.write(head)
        for e in events:
            writer.write(chunk_frame(e))
            await writer.drain()
            await asyncio.sleep(self.chunk_delay_ms / 1000.0)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


# -- starting one -----------------------------------------------------------------------------


@dataclass
class StubHandle:
    """A running stub: ``url`` ends in ``/v1``; ``stop()`` ends it (idempotent)."""

    url: str
    _stop: Callable[[], None]
    pid: int | None = None  # the child's process id (subprocess mode)

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url.rsplit("/v1", 1)[0] + "/stub/stats",
                                    timeout=5) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        req = urllib.request.Request(self.url.rsplit("/v1", 1)[0] + "/stub/reset", data=b"",
                                     method="POST")
        urllib.request.urlopen(req, timeout=5).close()

    def fail(self, mode: str = "500", **options: Any) -> None:
        """Set the stub's ``Fault``: ``fail("429", retry_after=2)``, ``fail("hang")``,
        ``fail("500", every=2)``, ``fail("ok", headers={...})``, ``fail("ok")`` heals."""
        req = urllib.request.Request(self.url.rsplit("/v1", 1)[0] + "/stub/fail",
                                     data=json.dumps({"mode": mode, **options}).encode(),
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).close()

    def stop(self) -> None:
        self._stop()

    def __enter__(self) -> StubHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(latency_ms: float = 0.0, port: int = 0, host: str = "127.0.0.1",
                    chunk_delay_ms: float = 0.0) -> StubHandle:
    """Serve from a daemon thread of this process (shares this process's GIL: for tests and
    light use; benchmarks should prefer ``start_subprocess``)."""
    stub = StubUpstream(host, port, latency_ms, chunk_delay_ms)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(stub.start())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(stub.close())
            loop.close()

    thread = threading.Thread(target=run, name="stub-upstream", daemon=True)
    thread.start()
    ready.wait(10)
    if failure:
        raise failure[0]

    def stop() -> None:
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)

    return StubHandle(stub.url, stop)


def start_subprocess(latency_ms: float = 0.0, port: int = 0, host: str = "127.0.0.1",
                     chunk_delay_ms: float = 0.0, timeout: float = 10.0,
                     fail: str = "ok", fail_every: int = 1) -> StubHandle:
    """Run ``python stub_upstream.py`` as a child process (its own GIL and core).

    Raises: RuntimeError when it does not report its URL within ``timeout`` seconds.
    """
    cmd = [sys.executable, __file__, "--host", host, "--port", str(port),
           "--latency-ms", str(latency_ms), "--chunk-delay-ms", str(chunk_delay_ms),
           "--fail", fail, "--fail-every", str(fail_every)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()

    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not line or "http://" not in line[0]:
        stop()
        raise RuntimeError(f"stub upstream did not start (exit code {proc.poll()})")
    url = line[0].strip().rsplit(" ", 1)[-1]
    return StubHandle(url, stop, proc.pid)


async def serve(stub: StubUpstream) -> None:
    """Serve until SIGTERM or SIGINT."""
    await stub.start()
    print(f"stub upstream listening on {stub.url}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await stub.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fast stub OpenAI-compatible upstream.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="delay before each chat answer (does not block other requests)")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0,
                   help="delay between the events of a streamed answer")
    p.add_argument("--fail", default="ok",
                   help="fault mode for chat calls: ok, a status (500, 429), hang, malformed, "
                        "cut (also set later with POST /stub/fail)")
    p.add_argument("--fail-every", type=int, default=1,
                   help="the fault hits calls 1, 1+k, 1+2k, ... (2: half of them)")
    args = p.parse_args(argv)
    stub = StubUpstream(args.host, args.port, args.latency_ms, args.chunk_delay_ms,
                        fault=Fault(args.fail, every=args.fail_every))
    try:
        asyncio.run(serve(stub))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
