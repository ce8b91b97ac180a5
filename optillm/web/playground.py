"""The playground and the conversation log viewer, and the JSON routes they read.

Pages (static files under ``optillm/web/static/``, no build step, no CDN; open without the
proxy key, their data routes need it):

- ``GET /`` redirects a browser (``Accept`` prefers HTML) to ``/playground``; other clients get
  a small JSON index of the web face.
- ``GET /playground``: one prompt (and an optional system prompt), a base model and one or
  more approaches with their options, run side by side; each column streams its answer, then
  shows tokens, upstream calls, wall time, the approach's metadata and the trace.
- ``GET /playground/logs``: the last N conversation records, filterable by approach and
  status, with the same trace view.
- ``GET /playground/static/<file>``: their scripts and style sheet.

Data (proxy key required, OpenAI error objects):

- ``GET /v1/optillm/approaches``: every approach with its options as JSON Schema, the default
  model and approach, whether conversation logging is on.
- ``GET /v1/optillm/requests?limit=&approach=&status=ok|error``: recent records, newest first.
- ``GET /v1/optillm/requests/<request_id>``: one record (404 until the request has finished).

The records hold every client's prompts: a proxy without a key serves them to loopback
clients only (403 ``records_need_a_key`` to others).

Records come from ``optillm.web.traces``: the log files with ``--log-conversations``, else the
requests that sent ``X-Optillm-Trace: 1`` (the playground's): a small in-memory ring per
process, and by request id the app's shared store (any worker finds them for an hour).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from flask import (
    Blueprint,
    Response,
    has_request_context,
    redirect,
    request,
    send_from_directory,
)

from .. import __version__
from ..errors import BadRequestError, NotFoundError, OptillmError
from ..upstream.conversation_log import ConversationLogger
from .chat import json_response, services
from .docs import approach_options_schema, public
from .traces import RecentRecords, TracingLogger

bp = Blueprint("optillm_playground", __name__)

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
#: The request header that keeps a request's record in the ring (logging on or off).
TRACE_HEADER = "X-Optillm-Trace"
#: Records the ring keeps (per process).
RING_SIZE = 64
MAX_LIMIT = 500


def _wants_trace() -> bool:
    return has_request_context() and request.headers.get(TRACE_HEADER, "") in ("1", "true")


def conversation_logger(settings: Any, store: Any = None) -> TracingLogger:
    """The app's conversation logger: the JSONL files when ``settings.log_conversations``,
    and the traced requests (this process's ring; by id also in ``store``, the app's shared
    ``LazyStore``, so any worker finds them)."""
    files = ConversationLogger(settings.conversation_log_dir) \
        if settings.log_conversations else None
    return TracingLogger(files, RecentRecords(RING_SIZE), _wants_trace, store)


def _logger() -> TracingLogger | None:
    """The app's logger, once the caller may read records: they hold every client's prompts,
    so a proxy without a key shows them to loopback clients only (403 otherwise)."""
    svc = services()
    if not svc.settings.optillm_api_key:
        try:
            loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise OptillmError("conversation records are served to other machines only when "
                               "the proxy has a key (--optillm-api-key)", status=403,
                               type="permission_error", code="records_need_a_key")
    logger = svc.conversation_logger
    return logger if isinstance(logger, TracingLogger) else None


def _page(name: str) -> Response:
    response = send_from_directory(STATIC, name, max_age=0)
    # the pages run only their own scripts; model output is never markup (see app.js)
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/")
@public
def index() -> Response:
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        return redirect("/playground", code=302)
    return json_response({"object": "optillm.index", "version": __version__,
                          "playground": "/playground", "logs": "/playground/logs",
                          "docs": "/docs", "openapi": "/openapi.json"})


@bp.get("/playground")
@public
def playground_page() -> Response:
    return _page("playground.html")


@bp.get("/playground/logs")
@public
def logs_page() -> Response:
    return _page("logs.html")


@bp.get("/playground/static/<path:filename>")
@public
def static_file(filename: str) -> Response:
    response = send_from_directory(STATIC, filename, max_age=300)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/v1/optillm/approaches")
def approaches() -> Response:
    svc = services()
    data = []
    for slug in svc.registry:
        approach = svc.registry.get(slug)
        data.append({"id": slug, "description": approach.description,
                     "streams": approach.streams,
                     "options": approach_options_schema(approach.options)})
    return json_response({"object": "list", "data": data,
                          "default_model": svc.settings.model,
                          "default_approach": svc.settings.approach,
                          "conversation_log": svc.settings.log_conversations})


def _status(record: dict[str, Any]) -> str:
    return "ok" if not record.get("error") else "error"


@bp.get("/v1/optillm/requests")
def list_requests() -> Response:
    """Recent records, newest first (``limit`` 1-500, default 50)."""
    try:
        limit = int(request.args.get("limit", 50))
    except ValueError:
        raise BadRequestError("'limit' must be an integer", param="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequestError(f"'limit' must be between 1 and {MAX_LIMIT}", param="limit")
    approach = request.args.get("approach", "").strip()
    status = request.args.get("status", "").strip()
    if status not in ("", "ok", "error"):
        raise BadRequestError("'status' must be 'ok' or 'error'", param="status")

    def keep(record: dict[str, Any]) -> bool:
        if approach and approach not in str(record.get("approach") or ""):
            return False
        return not status or _status(record) == status

    logger = _logger()
    data = logger.recent(limit, keep) if logger is not None else []
    return json_response({"object": "list", "data": data,
                          "sources": {"log_files": bool(logger and logger.files is not None),
                                      "memory": len(logger.ring) if logger else 0}})


@bp.get("/v1/optillm/requests/<request_id>")
def get_request(request_id: str) -> Response:
    logger = _logger()
    record = logger.find(request_id) if logger is not None else None
    if record is None:
        raise NotFoundError(f"no conversation record for request {request_id!r} (it has not "
                            "finished, or conversation logging is off and the request did not "
                            f"send '{TRACE_HEADER}: 1', or it left the recent-records ring)",
                            param="request_id", code="record_not_found")
    return json_response(record)


def register(app) -> None:
    """Add the playground's pages and data routes to ``app``."""
    app.register_blueprint(bp)
