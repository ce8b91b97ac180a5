"""Server-sent events for ``stream=true`` answers produced by approaches.

Framing (OpenAI's ``chat.completion.chunk`` stream): the role chunk at once, then ``: keep-alive``
comments every few seconds while the approach works, the answer as content chunks (token by
token when the approach's final call is streamed, else whole when it is ready), a chunk with the
``finish_reason``, the usage chunk with empty ``choices`` when ``stream_options.include_usage``
is set, then ``data: [DONE]``. An error after the stream has started is sent as an
``{"error": {...}}`` event followed by ``[DONE]``, since the status line is already gone.

The approach runs on the app's executor; closing this generator (the client went away) sets
``cancelled``, which stops the approach at its next upstream call.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..concurrency import BoundedExecutor
from ..errors import OptillmError, UpstreamError
from ..types import Completion, new_id

log = logging.getLogger(__name__)

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"
_END = object()


def event(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def chunk(cid: str, model: str, created: int, choices: list, usage: Any = None,
          include_usage_field: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                         "model": model, "choices": choices}
    if include_usage_field:
        d["usage"] = usage
    return d


def delta_choice(index: int, delta: dict, finish_reason: str | None = None,
                 extra: dict | None = None) -> dict[str, Any]:
    d = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    if extra:
        d.update(extra)
    return d


def stream_approach(run: Callable[[Callable[[str], None], threading.Event], Any],
                    executor: BoundedExecutor, *, model: str, n: int, include_usage: bool,
                    keepalive: float,
                    on_done: Callable[[Completion | None, OptillmError | None], None]
                    ) -> Iterator[bytes]:
    """SSE bytes for an approach run.

    ``run(sink, cancelled)`` returns a ``PipelineResult`` (``.completion``, ``.sent``);
    ``sink(text)`` forwards a piece of choice 0's answer as it is generated.
    ``on_done(completion, error)`` is called once at the end (for the conversation log).
    """
    cid = new_id()
    created = int(time.time())
    q: queue.Queue[Any] = queue.Queue()
    cancelled = threading.Event()

    def sink(text: str) -> None:
        if cancelled.is_set():
            from ..toolkit.context import Cancelled
            raise Cancelled("the client closed the request")
        q.put(text)

    def work() -> Any:
        try:
            return run(sink, cancelled)
        finally:
            q.put(_END)

    future = executor.submit(work)
    finished = False
    try:
        yield event(chunk(cid, model, created,
                          [delta_choice(i, {"role": "assistant", "content": ""})
                           for i in range(n)], None, include_usage))
        while True:
            try:
                item = q.get(timeout=keepalive)
            except queue.Empty:
                yield KEEPALIVE
                continue
            if item is _END:
                break
            yield event(chunk(cid, model, created, [delta_choice(0, {"content": item})],
                              None, include_usage))
        try:
            result = future.result()
        except OptillmError as exc:
            on_done(None, exc)
            finished = True
            yield event(exc.to_dict())
            yield DONE
            return
        except Exception as exc:  # noqa: BLE001 - the stream is open: report, never a trace
            log.exception("approach failed while streaming")
            err = UpstreamError(f"approach failed: {exc}", code="approach_error", status=500,
                                type="server_error")
            on_done(None, err)
            finished = True
            yield event(err.to_dict())
            yield DONE
            return
        completion: Completion = result.completion
        for c in completion.choices:
            content = c.message.content
            if c.index == 0 and result.sent:
                text = c.message.text
                if not text.startswith(result.sent):
                    log.warning("approach answer does not begin with what it streamed")
                content = text[len(result.sent):] if text.startswith(result.sent) else ""
                if not content and not c.message.extra.get("tool_calls"):
                    continue
            delta: dict[str, Any] = {"content": content}
            if c.message.extra.get("tool_calls"):
                delta["tool_calls"] = [{"index": i, **tc} for i, tc in
                                       enumerate(c.message.extra["tool_calls"])]
            yield event(chunk(cid, model, created, [delta_choice(c.index, delta)],
                              None, include_usage))
        for c in completion.choices:
            yield event(chunk(cid, model, created,
                              [delta_choice(c.index, {}, c.finish_reason or "stop",
                                            dict(c.extra) or None)],
                              None, include_usage))
        if include_usage:
            yield event(chunk(cid, model, created, [], completion.usage.to_dict(), True))
        yield DONE
        on_done(completion, None)
        finished = True
    finally:
        if not finished:  # the client went away mid-stream
            cancelled.set()
            on_done(None, OptillmError("the client closed the stream", status=499,
                                       type="client_closed_request"))
