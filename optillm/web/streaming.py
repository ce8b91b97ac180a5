"""Server-sent events for ``stream=true`` chat completions produced by approaches: the
``chat.completion.chunk`` encoder over the shared engine (``optillm.web.runner``).

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
import time
from collections.abc import Iterator
from typing import Any

from ..concurrency import BoundedExecutor
from ..errors import OptillmError
from ..types import new_id
from . import runner
from .runner import KEEPALIVE, OnDone, Run

DONE = b"data: [DONE]\n\n"


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


class ChatChunks:
    """The ``runner.Encoder`` of ``/v1/chat/completions``: ``n`` choices of ``model``; the
    ``usage`` field on every chunk (null until the last) when ``include_usage``."""

    def __init__(self, model: str, n: int, include_usage: bool):
        self.model, self.n, self.include_usage = model, n, include_usage
        self.id = new_id()
        self.created = int(time.time())

    def _chunk(self, choices: list, usage: Any = None, last: bool = False) -> bytes:
        return event(chunk(self.id, self.model, self.created, choices, usage,
                           self.include_usage or last))

    def start(self) -> Iterator[bytes]:
        yield self._chunk([delta_choice(i, {"role": "assistant", "content": ""})
                           for i in range(self.n)])

    def delta(self, text: str) -> Iterator[bytes]:
        yield self._chunk([delta_choice(0, {"content": text})])

    def final(self, result) -> Iterator[bytes]:
        completion = result.completion
        for c in completion.choices:
            content = c.message.content
            tool_calls = c.message.extra.get("tool_calls")
            if c.index == 0 and result.sent:
                content = runner.unsent(result)
                if not content and not tool_calls:
                    continue
            delta: dict[str, Any] = {"content": content}
            if tool_calls:
                delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(tool_calls)]
            yield self._chunk([delta_choice(c.index, delta)])
        for c in completion.choices:
            yield self._chunk([delta_choice(c.index, {}, c.finish_reason or "stop",
                                            dict(c.extra) or None)])
        if self.include_usage:
            yield self._chunk([], completion.usage.to_dict(), last=True)

    def end(self, result) -> Iterator[bytes]:
        yield DONE

    def error(self, exc: OptillmError) -> Iterator[bytes]:
        yield event(exc.to_dict())
        yield DONE

    def keepalive(self) -> bytes:
        return KEEPALIVE


def stream_approach(run: Run, executor: BoundedExecutor, *, model: str, n: int,
                    include_usage: bool, keepalive: float, on_done: OnDone) -> Iterator[bytes]:
    """SSE bytes for an approach run.

    ``run(sink, cancelled)`` returns a ``PipelineResult`` (``.completion``, ``.sent``);
    ``sink(text)`` forwards a piece of choice 0's answer as it is generated.
    ``on_done(completion, error)`` is called once at the end (for the conversation log and
    the cache), before ``[DONE]``.
    """
    return runner.stream(run, executor, ChatChunks(model, n, include_usage),
                         keepalive=keepalive, on_done=on_done)
