"""``TraceStream``: a streamed upstream call under an approach's control (``ctx.stream``).

The approach iterates its chunks and may close it early (a cut trace stops costing tokens);
closing adds the call's usage to the context. ``optillm.toolkit.context`` re-exports the name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..types import Usage, reasoning_share

if TYPE_CHECKING:
    from .context import RunContext


class TraceStream:
    """A streamed call under an approach's control (see ``RunContext.stream``).

    Iterating yields ``Chunk`` values; ``text``, ``logprobs`` (the token entries received so
    far), ``finish_reason`` and ``cut`` (closed before the upstream finished) describe it.
    """

    def __init__(self, ctx: RunContext, chunks, prompt_tokens: int | None):
        self._ctx = ctx
        self._chunks = chunks
        self._prompt_tokens = prompt_tokens
        self._parts: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._content_chunks = 0
        self._closed = False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def cut(self) -> bool:
        return self._closed and self.finish_reason is None

    def __iter__(self):
        for chunk in self._chunks:
            if chunk.usage is not None:
                self.usage = chunk.usage
            for c in chunk.choices:
                if c.get("finish_reason"):
                    self.finish_reason = c["finish_reason"]
                entries = (c.get("logprobs") or {}).get("content")
                if entries:
                    self.logprobs.extend(entries)
            text = chunk.content
            if text:
                self._parts.append(text)
                self._content_chunks += 1
            yield chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._chunks, "close", None)
        if close:
            close()
        usage = self.usage
        if usage is None:
            generated = len(self.logprobs) if self.logprobs else self._content_chunks
            usage = Usage(self._prompt_tokens or 0, generated)
        if not usage.reasoning_tokens:  # the upstream's usage chunk gave no thinking figure
            usage = Usage(usage.prompt_tokens, usage.completion_tokens,
                          reasoning_share(["".join(self._parts)], usage.completion_tokens))
        self.usage = usage
        self._ctx.add_usage(usage)

    def __enter__(self) -> TraceStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
