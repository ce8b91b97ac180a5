"""Anthropic's streaming events for ``POST /v1/messages`` with ``stream: true``.

Event order (Anthropic's Messages streaming)::

    message_start        the message with empty content, stop_reason null, usage so far
    ping                 at once, then whenever the approach works for a keep-alive interval
    content_block_start  a text block when the first text arrives; one per tool_use block
    content_block_delta  text_delta pieces (token by token where the approach streams its
                         final call, else the whole answer when it is ready);
                         input_json_delta with a tool call's arguments
    content_block_stop
    message_delta        stop_reason, stop_sequence and the usage (input and output tokens)
    message_stop

A failure after the stream started is an ``error`` event (an Anthropic error object) and the
stream ends. ``MessageEncoder`` is an ``optillm.web.runner.Encoder``: the shared streaming
engine drives it; it knows nothing of Flask or of how the answer is produced. A piece handed
to ``delta`` is either text (an approach's streamed final call) or an upstream ``Chunk`` (the
passthrough: text and tool-call deltas re-encoded as they come).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import OptillmError
from ..types import Chunk, Completion, Usage
from .anthropic_map import error_object, stop_reason, tool_use_block


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return (f"event: {kind}\ndata: " + json.dumps(data, ensure_ascii=False) + "\n\n").encode()


class MessageEncoder:
    """The SSE bytes of one streamed message (the ``Encoder`` protocol: ``start``, ``delta``,
    ``keepalive``, ``final``, ``end``, ``error``; each returns the events to send)."""

    def __init__(self, message_id: str, model: str, stops: list[str] | None = None,
                 input_tokens: int = 0):
        self.id = message_id
        self.model = model
        self.stops = stops
        self.input_tokens = input_tokens
        self.index = -1          # the open block's index (-1: none yet)
        self.open: str | None = None   # "text" or "tool_use"
        self.sent = ""           # text already streamed
        self.tools: dict[int, int] = {}  # OpenAI tool call index -> our block index
        self.finish_reason: str | None = None
        self.choice_extra: dict[str, Any] = {}
        self.usage: Usage | None = None
        self.saw_tools = False
        self.saw_chunks = False  # the passthrough: the chunks carry the whole answer

    # -- the Encoder protocol --------------------------------------------------------------

    def delta(self, piece: str | Chunk) -> list[bytes]:
        return [self.chunk(piece) if isinstance(piece, Chunk) else self.text(piece)]

    def keepalive(self) -> bytes:
        return self.ping()

    def final(self, result: Any) -> list[bytes]:
        """The rest of ``result.completion`` (a ``PipelineResult``); after passthrough chunks
        only its finish reason and usage count (the chunks were the answer)."""
        completion = result.completion if result is not None else None
        return [self.finish(completion)]

    def end(self, result: Any) -> list[bytes]:
        return [sse("message_stop", {"type": "message_stop"})]

    # -- the events ------------------------------------------------------------------------

    def start(self) -> list[bytes]:
        message = {"id": self.id, "type": "message", "role": "assistant", "content": [],
                   "model": self.model, "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.input_tokens, "output_tokens": 0}}
        return [sse("message_start", {"type": "message_start", "message": message}),
                self.ping()]

    @staticmethod
    def ping() -> bytes:
        return sse("ping", {"type": "ping"})

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.open = block["type"]
        return out + sse("content_block_start", {"type": "content_block_start",
                                                 "index": self.index, "content_block": block})

    def text(self, piece: str) -> bytes:
        if not piece:
            return b""
        out = b"" if self.open == "text" else self._open({"type": "text", "text": ""})
        self.sent += piece
        return out + sse("content_block_delta", {"type": "content_block_delta",
                                                 "index": self.index,
                                                 "delta": {"type": "text_delta",
                                                           "text": piece}})

    def _tool(self, block: dict[str, Any], arguments: str) -> bytes:
        self.saw_tools = True
        out = self._open({**block, "input": {}})
        if arguments:
            out += sse("content_block_delta", {"type": "content_block_delta",
                                               "index": self.index,
                                               "delta": {"type": "input_json_delta",
                                                         "partial_json": arguments}})
        return out

    def chunk(self, chunk: Chunk) -> bytes:
        """An upstream chat chunk (the passthrough): text, tool call deltas, finish, usage."""
        out = b""
        self.saw_chunks = True
        if chunk.usage is not None:
            self.usage = chunk.usage
        for c in chunk.choices:
            if c.get("index", 0) != 0:
                continue
            delta = c.get("delta") or {}
            out += self.text(delta.get("content") or "")
            for call in delta.get("tool_calls") or ():
                pos = call.get("index", 0)
                fn = call.get("function") or {}
                if pos not in self.tools:
                    block = tool_use_block({"id": call.get("id"),
                                            "function": {"name": fn.get("name")}})
                    out += self._tool({k: block[k] for k in ("type", "id", "name")},
                                      fn.get("arguments") or "")
                    self.tools[pos] = self.index
                elif fn.get("arguments") and self.tools[pos] == self.index:
                    out += sse("content_block_delta", {
                        "type": "content_block_delta", "index": self.index,
                        "delta": {"type": "input_json_delta",
                                  "partial_json": fn["arguments"]}})
            if c.get("finish_reason"):
                self.finish_reason = c["finish_reason"]
                self.choice_extra = {k: v for k, v in c.items()
                                     if k not in ("index", "delta", "finish_reason",
                                                  "logprobs")}
        return out

    def finish(self, completion: Completion | None = None) -> bytes:
        """The rest of the answer (what was not streamed of ``completion``'s choice 0, its
        tool calls) and ``message_delta``. After passthrough chunks only the completion's
        usage counts (the chunks were the answer)."""
        out = b""
        if completion is not None and self.saw_chunks:
            self.usage = completion.usage if self.usage is None else self.usage
        elif completion is not None and completion.choices:
            choice = completion.choices[0]
            text = choice.message.text
            if text.startswith(self.sent):
                out += self.text(text[len(self.sent):])
            for call in choice.message.extra.get("tool_calls") or ():
                block = tool_use_block(call)
                out += self._tool({k: block[k] for k in ("type", "id", "name")},
                                  json.dumps(block["input"]))
            self.finish_reason = choice.finish_reason
            self.choice_extra = dict(choice.extra)
            self.usage = completion.usage
        out += self._close()
        reason, sequence = stop_reason(self.finish_reason, self.choice_extra, self.stops)
        if self.saw_tools and reason == "end_turn":
            reason = "tool_use"
        usage = self.usage or Usage()
        out += sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": reason,
                                               "stop_sequence": sequence},
                                     "usage": {"input_tokens": usage.prompt_tokens,
                                               "output_tokens": usage.completion_tokens}})
        return out

    def error(self, exc: OptillmError) -> list[bytes]:
        obj, _ = error_object(exc)
        return [self._close() + sse("error", obj)]
