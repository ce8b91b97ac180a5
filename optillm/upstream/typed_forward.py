"""The passthrough (``forward``) for upstreams that only have typed calls.

``forward_typed(upstream, body, meta, stream)`` parses the client's chat completion bytes, makes
the ``complete`` / ``stream`` call and hands the answer back as OpenAI's JSON or SSE bytes, so a
client of ``/v1/chat/completions`` cannot tell such an upstream (a CLI agent, LiteLLM) from an
HTTP one. A failure before the first byte raises (the face answers with its status); one after
the stream started is an ``{"error": {...}}`` event followed by ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..errors import BadRequestError, OptillmError
from ..types import ChatRequest, Chunk
from .base import CallMeta, RawResponse, Upstream


def _event(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def sse_bytes(chunks: Iterator[Chunk], include_usage: bool, model: str) -> Iterator[bytes]:
    """``chat.completion.chunk`` events of ``chunks`` (usage chunk only when asked), then
    ``[DONE]``; closes ``chunks`` however the stream ends."""
    try:
        for c in chunks:
            base = {"id": c.id, "object": "chat.completion.chunk", "created": c.created,
                    "model": c.model or model}
            if not c.choices:
                if include_usage and c.usage is not None:
                    yield _event({**base, "choices": [], "usage": c.usage.to_dict()})
                continue
            yield _event({**base, "choices": [{"logprobs": None, **ch} for ch in c.choices]})
    except OptillmError as exc:
        yield _event(exc.to_dict())
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    yield b"data: [DONE]\n\n"


def forward_typed(upstream: Upstream, body: bytes, meta: CallMeta, stream: bool
                  ) -> RawResponse:
    """``upstream.complete`` / ``upstream.stream`` of the chat body ``body`` as raw bytes.

    Raises: BadRequestError (not JSON, a bad body); what the call raises before its first
    byte."""
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None
    request = ChatRequest.from_body(parsed)
    params = {k: v for k, v in request.params.items() if k != "stream_options"}
    typed = request.replace(stream=False, params=params)
    if not stream:
        data = upstream.complete(typed, meta).to_dict()
        return RawResponse(200, "application/json", iter((json.dumps(data).encode(),)))
    chunks = upstream.stream(typed, meta)
    include_usage = bool((request.params.get("stream_options") or {}).get("include_usage"))
    return RawResponse(200, "text/event-stream", sse_bytes(chunks, include_usage, request.model),
                       getattr(chunks, "close", lambda: None))
