"""The passthrough's HTTP attempt: the client's bytes up, the answer back unparsed.

``forward_once`` is one attempt of ``OpenAIUpstream.forward`` (its ``RetryPolicy`` repeats it):
it raises what the retries judge (``optillm.upstream.retry``) and returns what may go to the
client. A non-streamed answer is read whole and, when its status is 200, checked to be a JSON
object (never relayed as a 200 otherwise); a stream is returned once its first bytes are in,
and its chunks raise ``UpstreamError`` when it breaks later or ends without ``data: [DONE]``.
The wire is ``optillm.upstream.http_pool`` (one ``sendall`` a request); ``is_timeout`` and
``unreachable`` map the urllib3 errors of the upstream's other raw calls (``/tokenize``,
``/apply-template``).
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator

import urllib3
from orjson import loads as _loads

from ..errors import (
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnreachableError,
    error_text,
    from_upstream_status,
)
from .base import RawResponse
from .http_pool import HTTPPool, PooledResponse

#: Bytes kept from a stream's end to see its ``data: [DONE]``.
_TAIL = 32


def forward_once(pool: HTTPPool, path: str, body: bytes, headers: dict[str, str],
                 stream: bool) -> RawResponse:
    """POST ``body`` to ``path`` of ``pool`` once. A 4xx other than 429 is returned as it is.

    Raises:
        UpstreamUnreachableError: no answer, or it broke off before it was whole.
        UpstreamTimeoutError: a read waited longer than the pool's timeout; an upstream
            504/408.
        RateLimitError / UpstreamError: a 429 / another 5xx (with status, headers and
            ``Retry-After``); a 200 whose body is not a JSON object.
    """
    try:
        resp = pool.post(path, body, headers)
    except _WIRE_ERRORS as exc:
        raise _failed(exc, "upstream unreachable") from exc
    content_type = resp.headers.get("Content-Type", "application/json")
    status = resp.status
    if stream and status == 200:
        chunks, abort = _stream_body(resp)
        return RawResponse(status, content_type, chunks, abort, resp.headers)
    data = _read_all(resp)
    if status >= 500 or status == 429:
        raise from_upstream_status(status, error_text(data, status), resp.headers)
    if status == 200 and not stream:
        try:
            whole = isinstance(_loads(data), dict)
        except ValueError:
            whole = False
        if not whole:
            raise UpstreamError(f"upstream returned malformed JSON with status 200: "
                                f"{data[:200].decode('utf-8', 'replace')!r}")
    return RawResponse(status, content_type, iter((data,)), lambda: None, resp.headers)


#: What the pool raises for a failed exchange (``ssl.SSLError`` is an ``OSError``).
_WIRE_ERRORS = (OSError, http.client.HTTPException)


def _failed(exc: BaseException, what: str) -> UpstreamTimeoutError | UpstreamUnreachableError:
    """A timeout is a 504; anything else that broke the exchange a 502."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeoutError(f"upstream timed out: {exc or 'no answer in time'}")
    return UpstreamUnreachableError(f"{what}: {type(exc).__name__}: {exc}")


def _read_all(resp: PooledResponse) -> bytes:
    """A whole answer body; the connection goes back to the pool (or is closed).

    Raises: UpstreamTimeoutError / UpstreamUnreachableError when it breaks off.
    """
    try:
        return resp.read()
    except _WIRE_ERRORS as exc:
        raise _failed(exc, "upstream answer broke") from exc


def _stream_body(resp: PooledResponse) -> tuple[Iterator[bytes], Callable[[], None]]:
    """``(chunks, abort)`` of a streamed answer whose first bytes have been read here.

    Raises (now): UpstreamUnreachableError / UpstreamTimeoutError when the stream ends or
    breaks before its first bytes.
    """
    def read() -> bytes:  # read1: hand on each piece as it arrives, chunked or not
        try:
            return resp.read1(65536)
        except _WIRE_ERRORS as exc:
            raise _failed(exc, "upstream stream broke") from exc

    try:
        first = read()
    except BaseException:
        resp.close()
        raise
    if not first:
        resp.release()
        raise UpstreamUnreachableError("upstream stream ended before its first bytes")

    def chunks() -> Iterator[bytes]:
        tail = first[-_TAIL:]
        try:
            yield first
            while True:
                data = read()
                if not data:
                    break
                tail = (tail + data)[-_TAIL:]
                yield data
            if b"[DONE]" not in tail:
                raise UpstreamError("upstream stream ended before 'data: [DONE]'")
        finally:
            resp.release()

    return chunks(), resp.close  # abort: a client that went away stops the generation


def is_timeout(exc: BaseException) -> bool:
    """A timeout, also when urllib3 wraps it (``MaxRetryError(reason=ReadTimeoutError)``).
    A refused connection is none (urllib3's ``NewConnectionError`` subclasses its timeout)."""
    for err in (exc, getattr(exc, "reason", None)):
        if isinstance(err, urllib3.exceptions.TimeoutError) and \
                not isinstance(err, urllib3.exceptions.NewConnectionError):
            return True
    return False


def unreachable(exc: urllib3.exceptions.HTTPError
                ) -> UpstreamUnreachableError | UpstreamTimeoutError:
    """The error for a call that got no answer: a timeout (504) or unreachable (502)."""
    if is_timeout(exc):
        return UpstreamTimeoutError(f"upstream timed out: {exc}")
    return UpstreamUnreachableError(f"upstream unreachable: {exc}")
