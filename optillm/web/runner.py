"""The one streaming engine behind every ``stream: true`` approach answer.

A front (chat completions, the Responses API, later Anthropic's Messages API) says only how it
writes a run as bytes: an ``Encoder``. ``stream(run, executor, encoder, keepalive=...,
on_done=...)`` does the rest, the same for every front:

- ``run(sink, cancelled)`` starts at once on the app's executor (``BackgroundRun``); each piece
  of choice 0's answer the run hands to ``sink`` goes out as ``encoder.delta(piece)`` while
  the approach still works;
- ``encoder.keepalive()`` goes out after ``keepalive`` seconds without a piece, so proxies and
  clients keep the connection open;
- the finished ``PipelineResult`` becomes ``encoder.final(result)`` (the rest of the answer,
  finish reasons, usage), then ``on_done(completion, None)``, then ``encoder.end(result)``
  (the stream's last event);
- a failure becomes ``on_done(None, error)`` then ``encoder.error(error)``: an
  ``OptillmError`` as it is, anything else as a 500 ``approach_error`` (logged with its trace,
  never sent), since the status line is already gone;
- closing the generator early (the client went away) sets ``cancelled``: the run stops at its
  next upstream call or the next piece it streams, and ``on_done(None, ClientClosed)`` is
  called. ``on_done`` is called exactly once in every case.

Events are bytes already framed for the wire (SSE here); the engine never looks inside them.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ..errors import OptillmError, UpstreamError
from ..toolkit.context import Cancelled
from ..types import Completion

log = logging.getLogger(__name__)

#: An SSE comment: ignored by every client, keeps idle connections open.
KEEPALIVE = b": keep-alive\n\n"

#: ``run(sink, cancelled)``: runs the approach; ``sink(text)`` streams a piece of choice 0.
Run = Callable[[Callable[[str], None], threading.Event], Any]
#: ``on_done(completion, error)``: exactly one of the two is None.
OnDone = Callable[[Completion | None, OptillmError | None], None]

_END = object()


class ClientClosed(OptillmError):
    """The client closed the stream before its end (what ``on_done`` receives then)."""

    status = 499
    type = "client_closed_request"


class Encoder(Protocol):
    """How a front writes a streamed run. Each method returns the bytes to send, in order
    (an iterable of already framed events; empty for nothing)."""

    def start(self) -> Iterable[bytes]:
        """The opening events (chat: the role chunk; Responses: ``response.created``)."""

    def delta(self, text: str) -> Iterable[bytes]:
        """A piece of choice 0's answer as it is generated: what the run handed to ``sink``,
        as it is (text for approaches; a relay may hand whole ``Chunk`` values)."""

    def final(self, result: Any) -> Iterable[bytes]:
        """The finished ``PipelineResult`` (``.completion``, ``.sent``): what was not
        streamed yet (``unsent(result)``), finish reasons, usage."""

    def end(self, result: Any) -> Iterable[bytes]:
        """The last events, after ``on_done`` (chat: ``[DONE]``)."""

    def error(self, exc: OptillmError) -> Iterable[bytes]:
        """A failure after the stream started, as the front reports it."""

    def keepalive(self) -> bytes:
        """Sent after ``keepalive`` idle seconds (usually ``KEEPALIVE``)."""


def unsent(result: Any) -> str:
    """The part of choice 0's text not streamed yet: the text after ``result.sent``; "" (and
    a warning) when the final answer does not begin with what was streamed."""
    text = result.completion.choices[0].text if result.completion.choices else ""
    if text.startswith(result.sent):
        return text[len(result.sent):]
    log.warning("approach answer does not begin with what it streamed")
    return ""


class BackgroundRun:
    """``run(sink, cancelled)`` started at once on ``executor``.

    Iterating yields ``("text", piece)`` for each piece the run sends to ``sink``,
    ``("keepalive", None)`` after ``keepalive`` seconds without one, then ``("result",
    value)``, and raises what the run raised. ``close()`` sets ``cancelled`` (the run stops at
    its next upstream call, or the next piece it streams: ``sink`` raises ``Cancelled``);
    closing after the result is harmless.
    """

    def __init__(self, run: Run, executor, keepalive: float):
        self.cancelled = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._keepalive = keepalive
        self._future = executor.submit(self._work, run)

    def _sink(self, text: str) -> None:
        if self.cancelled.is_set():
            raise Cancelled("the client closed the request")
        self._queue.put(text)

    def _work(self, run: Run) -> Any:
        try:
            return run(self._sink, self.cancelled)
        finally:
            self._queue.put(_END)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        while True:
            try:
                item = self._queue.get(timeout=self._keepalive)
            except queue.Empty:
                yield "keepalive", None
                continue
            if item is _END:
                break
            yield "text", item
        yield "result", self._future.result()

    def close(self) -> None:
        self.cancelled.set()


def as_error(exc: Exception) -> OptillmError:
    """``exc`` as the error a stream reports: itself when an ``OptillmError``, else a 500
    ``approach_error`` (the trace is logged here, never sent)."""
    if isinstance(exc, OptillmError):
        return exc
    log.error("approach failed while streaming", exc_info=exc)
    return UpstreamError(f"approach failed: {exc}", code="approach_error", status=500,
                         type="server_error")


def stream(run: Run, executor, encoder: Encoder, *, keepalive: float,
           on_done: OnDone) -> Iterator[bytes]:
    """The bytes of a streamed approach run (see the module docstring for the order).

    ``executor``: the app's ``BoundedExecutor``; ``keepalive``: idle seconds between
    ``encoder.keepalive()`` events. Nothing runs until the first ``next()``.
    """
    background = BackgroundRun(run, executor, keepalive)  # it works while ``start`` goes out
    finished = False
    try:
        yield from encoder.start()
        result = None
        try:
            for kind, value in background:
                if kind == "keepalive":
                    yield encoder.keepalive()
                elif kind == "text":
                    yield from encoder.delta(value)
                else:
                    result = value
        except Exception as exc:  # noqa: BLE001 - the stream is open: report, never a trace
            err = as_error(exc)
            finished = True
            on_done(None, err)
            yield from encoder.error(err)
            return
        yield from encoder.final(result)
        finished = True
        on_done(result.completion, None)
        yield from encoder.end(result)
    finally:
        background.close()
        if not finished:  # the client went away mid-stream
            on_done(None, ClientClosed("the client closed the stream"))
