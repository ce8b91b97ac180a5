"""Error types and their OpenAI error objects: the one place errors become HTTP answers.

Hierarchy::

    OptillmError                      status, type, code; ``to_dict()`` -> {"error": {...}}
    ├── BadRequestError          400  invalid_request_error (malformed JSON, bad fields, n range)
    ├── AuthenticationError      401  invalid_api_key
    ├── NotFoundError            404  unknown model or approach
    ├── PayloadTooLargeError     413  body over the size limit
    ├── RateLimitError           429  upstream or proxy rate limit
    ├── MissingExtraError        501  a plugin's optional dependency is not installed
    ├── UpstreamError            502  upstream failed (carries the upstream's message)
    │   └── UpstreamUnreachableError  502  no answer: refused or dropped connection
    └── UpstreamTimeoutError     504  upstream did not answer in time

``translate_upstream_errors()`` is the boundary where the ``openai`` SDK's exceptions and
connection failures become these types; nothing above the upstream layer sees an SDK error.
An error made from an upstream's HTTP answer carries its status (``upstream_status``), its
headers (``upstream_headers``) and the wait it asked for (``retry_after``, seconds, from
``Retry-After`` / ``retry-after-ms``), so the retries (``optillm.upstream.retry``) and the
gateway's router can honour them, and the HTTP face sends it on as ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any


class OptillmError(Exception):
    """An error with an HTTP status and an OpenAI-style error object."""

    status = 500
    type = "server_error"
    code: str | None = None
    #: The upstream answer this error was made from: its HTTP status and headers (else None).
    upstream_status: int | None = None
    upstream_headers: Mapping[str, str] | None = None
    #: Seconds to wait before trying again (the upstream's ``Retry-After``), when known.
    retry_after: float | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None, type: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if retry_after is not None:
            self.retry_after = retry_after
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI ``ErrorResponse`` object: ``{"error": {message, type, param, code}}``."""
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


class BadRequestError(OptillmError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(OptillmError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFoundError(OptillmError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLargeError(OptillmError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(OptillmError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(OptillmError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnreachableError(UpstreamError):
    """No answer came: the connection was refused, reset, or dropped before the answer was
    whole. Worth a retry (nothing of it reached the client yet)."""

    code = "upstream_unreachable"


class UpstreamTimeoutError(OptillmError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


class MissingExtraError(OptillmError):
    """An approach or plugin needs an optional dependency this server lacks. The message names
    the install command: ``MissingExtraError.for_extra("memory", "rank_bm25")``."""

    status = 501
    type = "server_error"
    code = "missing_extra"

    @classmethod
    def for_extra(cls, slug: str, extra: str, module: str | None = None) -> MissingExtraError:
        what = f" ({module} is not installed)" if module else ""
        return cls(f"{slug!r} needs the '{extra}' extra{what}: pip install 'optillm[{extra}]'")


class CapabilityError(BadRequestError):
    """The upstream lacks a capability the request needs (logprobs, ``n``, text completions)."""

    code = "unsupported_capability"


def _upstream_message(exc: Exception) -> str:
    """The upstream's own error message, where its body carries one."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(exc, "message", None) or exc)


def error_text(data: bytes, status: int) -> str:
    """The message of an upstream's error body (OpenAI's ``{"error": {"message"}}``, a bare
    ``{"error": "..."}``, or the first 300 bytes of anything else)."""
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        inner = parsed.get("error", parsed)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return data[:300].decode("utf-8", "replace") or f"status {status}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` whatever the case of the stored name (plain dicts included)."""
    value = headers.get(name)
    if value is None and isinstance(headers, dict):
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds an answer asks to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or an
    HTTP date); None when it says nothing readable. Never negative."""
    if not headers:
        return None
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def from_upstream_status(status: int, message: str,
                         headers: Mapping[str, str] | None = None) -> OptillmError:
    """Map an upstream HTTP status to ours: the client's own mistakes keep their status
    (400, 401, 403, 404, 413, 422, 429); anything else is the upstream failing (502).
    The error carries ``status``, ``headers`` and their ``Retry-After``."""
    err = _from_status(status, message)
    err.upstream_status = status
    if headers is not None:
        err.upstream_headers = headers
        err.retry_after = parse_retry_after(headers)
    return err


def _from_status(status: int, message: str) -> OptillmError:
    text = f"upstream: {message}"
    if status in (400, 422):
        return BadRequestError(text, code="upstream_bad_request")
    if status in (401, 403):
        return AuthenticationError(text, code="upstream_auth", status=status)
    if status == 404:
        return NotFoundError(text, code="upstream_not_found")
    if status == 413:
        return PayloadTooLargeError(text)
    if status == 429:
        return RateLimitError(text)
    if status in (408, 504):
        return UpstreamTimeoutError(text)
    return UpstreamError(f"{text} (status {status})")


@contextlib.contextmanager
def translate_upstream_errors() -> Iterator[None]:
    """Translate the ``openai`` SDK's and the HTTP layer's exceptions into ours.

    Raises:
        UpstreamTimeoutError: the upstream timed out.
        UpstreamUnreachableError: connection failure.
        UpstreamError: a 5xx answer.
        BadRequestError / AuthenticationError / NotFoundError / RateLimitError: the upstream
            refused the request for a reason that is the client's (status kept).
    """
    import httpx  # the SDK's HTTP client
    import openai  # the SDK is the upstream layer's dependency; imported lazily for start-up

    try:
        yield
    except OptillmError:
        raise
    except openai.APITimeoutError as exc:
        raise UpstreamTimeoutError(f"upstream timed out: {exc}") from exc
    except openai.APIConnectionError as exc:
        cause = exc.__cause__  # the SDK's message is only "Connection error."
        detail = f"{exc} ({type(cause).__name__}: {cause})" if cause else str(exc)
        raise UpstreamUnreachableError(f"upstream unreachable: {detail}") from exc
    except openai.APIStatusError as exc:
        headers = getattr(getattr(exc, "response", None), "headers", None)
        raise from_upstream_status(exc.status_code, _upstream_message(exc), headers) from exc
    except openai.APIError as exc:
        raise UpstreamError(f"upstream error: {_upstream_message(exc)}") from exc
    except httpx.TimeoutException as exc:  # a stream's read, which the SDK does not wrap
        raise UpstreamTimeoutError(f"upstream stream timed out: {exc}") from exc
    except httpx.HTTPError as exc:
        raise UpstreamUnreachableError(f"upstream stream broke: {type(exc).__name__}: "
                                       f"{exc}") from exc
