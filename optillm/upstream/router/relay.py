"""What the router relays once an endpoint answered: stream chunks, passthrough bytes.

- ``ChunkRelay``: a typed stream's chunks after the first; a break counts as the endpoint's
  failure, and the usage chunk corrects its token count.
- ``relay_bytes`` / ``count_body_tokens``: the passthrough's bytes, streamed or whole, with
  the ``total_tokens`` of the answer handed to the token count.
- ``checked_body`` / ``first_bytes``: a non-streamed answer checked to be a JSON object, a
  stream whose first bytes have arrived; both raise ``UpstreamError`` otherwise, so the
  router fails over before any byte reaches the client. ``drain``, ``close_quietly``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from ...errors import OptillmError, UpstreamError
from ...types import Chunk
from ..base import RawResponse

_loads = orjson.loads

TOTAL_TOKENS = re.compile(rb'"total_tokens"\s*:\s*(\d+)')


class ChunkRelay(Iterator[Chunk]):
    """A stream's chunks after the first: a break counts as the endpoint's failure; token usage
    in the last chunk corrects the endpoint's tpm estimate. ``close()`` closes the upstream's."""

    def __init__(self, first: Chunk, inner: Iterator[Chunk], on_usage: Callable[[int], None],
                 on_break: Callable[[OptillmError], None]):
        self._first: Chunk | None = first
        self._inner = inner
        self._on_usage = on_usage
        self._on_break = on_break

    def __next__(self) -> Chunk:
        if self._first is not None:
            chunk, self._first = self._first, None
        else:
            try:
                chunk = next(self._inner)
            except OptillmError as exc:
                self._on_break(exc)
                raise
        if chunk.usage is not None:
            self._on_usage(chunk.usage.total_tokens)
        return chunk

    def close(self) -> None:
        close_quietly(self._inner)


def relay_bytes(chunks: Iterator[bytes], on_usage: Callable[[int], None] | None,
                on_break: Callable[[OptillmError], None]) -> Iterator[bytes]:
    """``chunks`` as they come; ``on_usage(total_tokens)`` when a piece carries the usage
    (only when ``on_usage`` is given), ``on_break(error)`` before a break is raised on."""
    try:
        for part in chunks:
            if on_usage is not None and b'"total_tokens"' in part:
                found = TOTAL_TOKENS.search(part)
                if found:
                    on_usage(int(found.group(1)))
            yield part
    except OptillmError as exc:
        on_break(exc)
        raise


def count_body_tokens(raw: RawResponse, on_usage: Callable[[int | None], None]
                      ) -> RawResponse:
    """A whole answer, its ``total_tokens`` (None when it has none) handed to ``on_usage``."""
    data = b"".join(raw.chunks)
    found = TOTAL_TOKENS.search(data)
    on_usage(int(found.group(1)) if found else None)
    return RawResponse(raw.status, raw.content_type, iter((data,)), raw.close, raw.headers)


def close_quietly(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


def drain(raw: RawResponse) -> bytes:
    """All of ``raw``'s bytes (b"" when it breaks), its connection released."""
    try:
        return b"".join(raw.chunks)
    except OptillmError:
        return b""
    finally:
        raw.close()


def checked_body(raw: RawResponse) -> RawResponse:
    """The whole non-streamed answer, checked to be a JSON object.

    Raises: UpstreamError when it is not (a truncated or garbled answer).
    """
    data = drain(raw)
    try:
        ok = isinstance(_loads(data), dict)
    except ValueError:
        ok = False
    if not ok:
        raise UpstreamError(f"upstream returned malformed JSON: "
                            f"{data[:200].decode('utf-8', 'replace')!r}")
    return RawResponse(raw.status, raw.content_type, iter((data,)), lambda: None, raw.headers)


def first_bytes(raw: RawResponse) -> RawResponse:
    """A streamed answer whose first bytes have arrived (so a stream that fails at once is
    failed over). Raises: UpstreamError when it ends or breaks before them."""
    chunks = iter(raw.chunks)
    try:
        first = next(chunks)
        while not first:
            first = next(chunks)
    except StopIteration:
        raw.close()
        raise UpstreamError("upstream stream ended before its first bytes") from None
    except BaseException:
        raw.close()
        raise

    def relay() -> Iterator[bytes]:
        yield first
        yield from chunks

    return RawResponse(raw.status, raw.content_type, relay(), raw.close, raw.headers)
