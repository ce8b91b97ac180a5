"""Request ids and the log format: ``X-Request-ID`` on every answer, in every log line.

Each request gets an id: the client's own ``X-Request-ID`` when it is 1-128 characters of
``[A-Za-z0-9._:-]`` (anything else is replaced, never echoed), else a new ``req-<hex>``. The
id lives in a ``contextvars.ContextVar`` for the request's duration, through the body of a
streamed answer (it is reset when the server closes the response) and into the approach
threads (``BoundedExecutor.submit`` copies the context). ``RequestIdFilter`` puts it on every
log record as ``request_id`` (``-`` outside a request); the conversation log's ``request_id``
is the same id (``optillm.web.chat`` asks ``current_request_id()``).

``configure_logging(level, fmt)`` sets the root logger up once: ``text`` (one line,
``time level logger [request id]: message``) or ``json`` (one JSON object per line, with
python-json-logger when installed, else the stdlib ``JsonFormatter`` below).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time

from flask import Flask, Response, g, request

from ..types import new_id

HEADER = "X-Request-ID"
_VALID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "optillm_request_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_JSON_FIELDS = ("asctime", "levelname", "name", "message", "request_id")


def valid_request_id(value: str | None) -> str | None:
    """``value`` when it is an acceptable client request id (1-128 of ``[A-Za-z0-9._:-]``),
    else None."""
    if value and _VALID.fullmatch(value):
        return value
    return None


def current_request_id() -> str:
    """The id of the request being served; a new ``req-<hex>`` outside any request."""
    return _REQUEST_ID.get() or new_id("req-")


def note_plan(approach: str, model: str) -> None:
    """Record the request's plan (approach label, base model) for its metrics labels."""
    g.optillm_plan = (approach, model)


def planned(ns=None) -> tuple[str, str] | None:
    """The ``(approach, base model)`` ``note_plan`` recorded for this request, if any
    (``ns``: the request's ``g`` object, when the caller holds it already)."""
    return (g if ns is None else ns).get("optillm_plan")


def install(app: Flask) -> None:
    """Give every request of ``app`` an id (``g.request_id``, the context variable, the
    ``X-Request-ID`` answer header) and its start time (``g.request_start``,
    ``time.perf_counter()`` seconds)."""

    def start() -> None:
        ns = g._get_current_object()  # one proxy lookup, not one per attribute
        ns.request_start = time.perf_counter()
        rid = valid_request_id(request.headers.get(HEADER)) or new_id("req-")
        ns.request_id = rid
        ns.request_id_token = _REQUEST_ID.set(rid)

    def finish(response: Response) -> Response:
        ns = g._get_current_object()
        if "request_id" not in ns:  # a before_request ahead of ours failed the request
            start()
        response.headers[HEADER] = ns.request_id
        if ns.pop("request_id_token", None) is not None:
            after_body(response, _clear)  # a stream's log lines keep the id to the end
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, start)  # ahead of authentication
    app.after_request(finish)


def _clear() -> None:
    _REQUEST_ID.set(None)


class _AfterBody:
    """A response body that calls ``fn`` once when the server closes it."""

    def __init__(self, body, fn):
        self.body = body
        self.fn = fn

    def __iter__(self):
        return iter(self.body)

    def close(self) -> None:
        fn, self.fn = self.fn, None
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            if fn is not None:
                fn()


def after_body(response: Response, fn) -> None:
    """Call ``fn()`` once the server has sent ``response``'s body and closed it. (Werkzeug
    drops ``call_on_close`` callbacks of ``direct_passthrough`` answers, the streamed ones, so
    those bodies are wrapped instead.)"""
    if response.is_streamed:
        response.response = _AfterBody(response.response, fn)
    else:
        response.call_on_close(fn)


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` to the current request's id (``-`` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``,
    ``request_id``, ``exc_info`` when there is one, and any ``extra`` fields."""

    _STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | \
        {"message", "asctime", "request_id"}

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record), "level": record.levelname,
               "logger": record.name, "message": record.getMessage(),
               "request_id": getattr(record, "request_id", "-")}
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def json_formatter() -> logging.Formatter:
    """python-json-logger's formatter when installed, else ``JsonFormatter``."""
    try:
        from pythonjsonlogger.json import JsonFormatter as PJLFormatter
    except ImportError:
        try:
            from pythonjsonlogger.jsonlogger import JsonFormatter as PJLFormatter
        except ImportError:
            return JsonFormatter()
    return PJLFormatter(" ".join(f"%({f})s" for f in _JSON_FIELDS),
                        rename_fields={"asctime": "time", "levelname": "level",
                                       "name": "logger"})


def formatter(fmt: str) -> logging.Formatter:
    """The formatter for ``--log-format`` ``fmt`` (``text`` or ``json``)."""
    return json_formatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Set the root logger to ``level`` with one stderr handler in format ``fmt`` carrying
    request ids. Idempotent: a handler this function installed is reused, not doubled."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    handler = next((h for h in root.handlers if getattr(h, "_optillm", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._optillm = True  # type: ignore[attr-defined]
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    handler.setFormatter(formatter(fmt))
