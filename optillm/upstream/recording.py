"""The logging wrapper: reports every upstream call of a request to ``meta.on_call``.

The outermost layer of the stack, so it sees each call as the approach made it (before
batching). It costs nothing when the request has no ``on_call`` (conversation logging off).
A reported call is ``{"provider_request", "response", "duration_ms", "error"}``; streamed calls
are reported once the stream ends, with the text and usage they carried. A text completion's
``provider_request`` is ``{"model", "prompt", ...params}`` (the ``/v1/completions`` body).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ..types import ChatRequest, Chunk, Completion
from .base import NO_META, CallMeta, RawResponse, UpstreamWrapper


def _ms(start: float) -> float:
    return round((time.monotonic() - start) * 1000, 1)


class RecordingUpstream(UpstreamWrapper):
    """Reports each call to ``meta.on_call``; forwards everything unchanged."""

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        if meta.on_call is None:
            return self.inner.complete(request, meta)
        start = time.monotonic()
        try:
            result = self.inner.complete(request, meta)
        except Exception as exc:
            meta.on_call({"provider_request": request.to_body(), "response": None,
                          "duration_ms": _ms(start), "error": str(exc)})
            raise
        meta.on_call({"provider_request": request.to_body(), "response": result.to_dict(),
                      "duration_ms": _ms(start), "error": None})
        return result

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        if meta.on_call is None:
            return self.inner.stream(request, meta)
        return self._record_stream(request, meta)

    def _record_stream(self, request: ChatRequest, meta: CallMeta) -> Iterator[Chunk]:
        start = time.monotonic()
        texts: dict[int, list[str]] = {}
        usage = None
        error = None
        finished = False
        inner = self.inner.stream(request, meta)
        try:
            for chunk in inner:
                for c in chunk.choices:
                    texts.setdefault(c.get("index", 0), []).append(
                        (c.get("delta") or {}).get("content") or "")
                if chunk.usage is not None:
                    usage = chunk.usage.to_dict()
                yield chunk
            finished = True
        except Exception as exc:
            error = str(exc)
            raise
        finally:
            close = getattr(inner, "close", None)
            if close:
                close()
            if error is None and not finished:
                error = "stream closed early by the proxy"
            meta.on_call({"provider_request": {**request.to_body(), "stream": True},
                          "response": {"streamed": True, "usage": usage,
                                       "choices": [{"index": i, "content": "".join(t)}
                                                   for i, t in sorted(texts.items())]},
                          "duration_ms": _ms(start), "error": error})

    def complete_text(self, prompt: str, model: str, params: Mapping[str, Any],
                      meta: CallMeta = NO_META) -> Completion:
        if meta.on_call is None:
            return self.inner.complete_text(prompt, model, params, meta)
        start = time.monotonic()
        body = {"model": model, "prompt": prompt, **params}
        try:
            result = self.inner.complete_text(prompt, model, params, meta)
        except Exception as exc:
            meta.on_call({"provider_request": body, "response": None,
                          "duration_ms": _ms(start), "error": str(exc)})
            raise
        meta.on_call({"provider_request": body, "response": result.to_dict(),
                      "duration_ms": _ms(start), "error": None})
        return result

    def forward(self, body: bytes, meta: CallMeta = NO_META, stream: bool = False,
                model: str | None = None) -> RawResponse:
        if meta.on_call is None:
            return self.inner.forward(body, meta, stream, model)
        start = time.monotonic()
        try:
            request: Any = json.loads(body)
        except ValueError:
            request = body.decode("utf-8", "replace")
        try:
            raw = self.inner.forward(body, meta, stream, model)
        except Exception as exc:
            meta.on_call({"provider_request": request, "response": None,
                          "duration_ms": _ms(start), "error": str(exc)})
            raise
        on_call = meta.on_call

        def tee() -> Iterator[bytes]:
            parts: list[bytes] = []
            try:
                for part in raw.chunks:
                    parts.append(part)
                    yield part
            finally:
                data = b"".join(parts)
                response: Any
                if stream:
                    response = {"streamed": True, "sse": data.decode("utf-8", "replace")}
                else:
                    try:
                        response = json.loads(data)
                    except ValueError:
                        response = data.decode("utf-8", "replace")
                on_call({"provider_request": request, "response": response,
                         "duration_ms": _ms(start),
                         "error": None if raw.status < 400 else f"upstream status {raw.status}"})

        return RawResponse(raw.status, raw.content_type, tee(), raw.close, raw.headers,
                           raw.cache)
