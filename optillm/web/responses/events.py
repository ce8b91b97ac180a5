"""The Responses API's streaming events: the ``runner.Encoder`` of ``POST /v1/responses``
with ``stream: true``.

Semantic events, numbered by ``sequence_number`` from 0: ``response.created``,
``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` (token by token where the approach streams its final call, else
the whole answer when it is ready), ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``, ``response.completed`` (the
whole response, with ``usage``; ``response.incomplete`` instead, as OpenAI sends it, when
``max_output_tokens`` cut the answer: status ``incomplete``, ``incomplete_details.reason``
``max_output_tokens``). ``: keep-alive`` comments go out while the approach works. A failure
after the stream started is an ``error`` event followed by ``response.failed``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

from ...errors import OptillmError
from .. import runner
from ..runner import KEEPALIVE
from .mapping import ResponseState, message_item, text_part


def _error_code(exc: OptillmError) -> str:
    """A ``ResponseErrorCode`` for ``response.failed`` (the spec's list is short)."""
    return "rate_limit_exceeded" if exc.status == 429 else "server_error"


class ResponseEvents:
    """The events of one streamed response (``state``: its ids and what it echoes).

    After ``final``, ``response`` holds the finished ``Response`` object that
    ``response.completed`` carries (for the store and the log, which ``on_done`` writes
    before it is announced)."""

    def __init__(self, state: ResponseState):
        self.state = state
        self.response: dict[str, Any] | None = None
        self._seq = itertools.count()
        self._opened = False

    def _send(self, kind: str, **fields: Any) -> bytes:
        obj = {"type": kind, **fields, "sequence_number": next(self._seq)}
        return f"event: {kind}\ndata: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()

    def _open_item(self) -> Iterator[bytes]:
        if self._opened:
            return
        self._opened = True
        item_id = self.state.item_id
        yield self._send("response.output_item.added", output_index=0,
                         item=message_item(item_id, "in_progress", []))
        yield self._send("response.content_part.added", item_id=item_id, output_index=0,
                         content_index=0, part=text_part(""))

    def start(self) -> Iterator[bytes]:
        yield self._send("response.created", response=self.state.to_dict("in_progress"))
        yield self._send("response.in_progress", response=self.state.to_dict("in_progress"))

    def delta(self, text: str) -> Iterator[bytes]:
        yield from self._open_item()
        yield self._send("response.output_text.delta", item_id=self.state.item_id,
                         output_index=0, content_index=0, delta=text, logprobs=[])

    def final(self, result) -> Iterator[bytes]:
        completion = result.completion
        text = completion.choices[0].text
        rest = runner.unsent(result)
        yield from self._open_item()
        if rest:
            yield from self.delta(rest)
        self.response, item = self.state.finished(completion)
        item_id = self.state.item_id
        yield self._send("response.output_text.done", item_id=item_id, output_index=0,
                         content_index=0, text=text, logprobs=[])
        yield self._send("response.content_part.done", item_id=item_id, output_index=0,
                         content_index=0, part=text_part(text))
        yield self._send("response.output_item.done", output_index=0, item=item)

    def end(self, result) -> Iterator[bytes]:
        response = self.response
        yield self._send("response.completed" if response["status"] == "completed"
                         else "response.incomplete", response=response)

    def error(self, exc: OptillmError) -> Iterator[bytes]:
        yield self._send("error", code=exc.code, message=exc.message, param=exc.param)
        yield self._send("response.failed", response=self.state.to_dict(
            "failed", error={"code": _error_code(exc), "message": exc.message}))

    def keepalive(self) -> bytes:
        return KEEPALIVE
