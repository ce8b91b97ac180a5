"""HTTP routes (Flask blueprint): ``/v1/chat/completions``, ``/v1/models``, ``/health``,
``DELETE /cache`` (and ``GET /cache``: this process's cache counts).

The passthrough is the hot path: when a request names no approach (or ``none``) with one
choice, the client's bytes go upstream (re-serialised only when the model name or proxy fields
must change) and the upstream's bytes come back, streamed or not. Everything else is parsed
into a ``ChatRequest`` and run by the pipeline.

The response cache (``optillm.upstream.cache``) is the stack's and the plan layer's: the
passthrough's bytes are cached by the stack's cache layer, an approach request's final answer
by ``optillm.plan.answer_cache``; with it on, every answer carries ``X-Optillm-Cache: hit`` or
``miss``. The body's ``cache`` directive is read here (into ``CacheCallMeta``) and never sent
upstream, cache on or off; this module touches the cache itself only for ``/cache``.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Iterator
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from .. import __version__
from ..errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    OptillmError,
    UpstreamError,
)
from ..plan.planner import cached_plan_for_model, parse_plan
from ..types import ChatRequest, Completion
from ..upstream.base import CallMeta
from ..upstream.conversation_log import start_request
from .conform import conform_completion, with_reasoning_usage
from .request_context import current_request_id, note_plan
from .streaming import DONE, event, stream_approach

_loads = orjson.loads  # several times faster than the stdlib's json (a hard dependency)
_dumps = orjson.dumps

log = logging.getLogger(__name__)
bp = Blueprint("optillm", __name__)

_JSON = "application/json"


def services():
    return current_app.extensions["optillm"]


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(_dumps(obj), status=status, content_type=_JSON, headers=headers)


def _client_key() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("api-key") or request.headers.get("x-api-key")


@bp.before_app_request
def _authenticate() -> None:
    key = services().settings.optillm_api_key
    if not key or request.path in ("/health", "/health/readiness"):
        return
    # CORS preflights, and the web face's public pages (``optillm.web.docs.public``)
    if request.method == "OPTIONS" or getattr(
            current_app.view_functions.get(request.endpoint), "optillm_public", False):
        return
    given = _client_key() or ""
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise AuthenticationError("invalid or missing API key for this proxy; send "
                                  "'Authorization: Bearer <OPTILLM_API_KEY>'")


def _upstream_key(settings) -> str | None:
    """The client's key goes upstream only when the proxy has neither an upstream key nor a
    key of its own (then the client's key is the proxy's and must stay here)."""
    if settings.openai_api_key or settings.azure_api_key or settings.optillm_api_key:
        return None
    return _client_key()


@bp.get("/health")
def health() -> Response:
    return json_response({"status": "healthy", "version": __version__})


@bp.get("/v1/models")
def models() -> Response:
    svc = services()
    meta = CallMeta(api_key=_upstream_key(svc.settings))
    data: list[dict[str, Any]] = []
    try:
        data = svc.upstream.models(meta)
    except OptillmError as exc:
        log.warning("upstream /models failed: %s", exc.message)
    for slug in svc.registry:
        approach = svc.registry.get(slug)
        data.append({"id": slug, "object": "model", "created": 0, "owned_by": "optillm",
                     "description": approach.description})
    return json_response({"object": "list", "data": data})


@bp.post("/v1/chat/completions")
@bp.post("/chat/completions")
def chat_completions() -> Response:
    svc = services()
    settings = svc.settings
    raw = request.get_data(cache=False)
    request_id = current_request_id()  # the X-Request-ID of this request
    record = None
    try:
        body = _loads(raw)
    except ValueError as exc:
        body = None
        error = BadRequestError(f"request body is not valid JSON: {exc}")
    else:
        error = None
    if svc.conversation_logger is not None:
        record = start_request(svc.conversation_logger,
            request_id, body if body is not None else raw.decode("utf-8", "replace"))
    try:
        if error is not None:
            raise error
        if isinstance(body, dict) and not body.get("model") and settings.model:
            body["model"] = settings.model
            raw = _dumps(body)  # the upstream must see the model it answers for
        if settings.n > 1 and isinstance(body, dict) and "n" not in body:
            body["n"] = settings.n  # OptiLLM's --n: the server's choice count
            raw = _dumps(body)
        model, n, stream = ChatRequest.check_envelope(body)
        control = None  # the body's cache directive, when it has one
        if "cache" in body:
            from ..upstream.cache import CacheControl

            control = CacheControl.parse(body["cache"])
            body = {k: v for k, v in body.items() if k != "cache"}  # never sent upstream
        passthrough_ok = (stream or n == 1) and not settings.batch_mode
        if passthrough_ok and "optillm_approach" not in body and "tts_strategy" not in body \
                and b"<optillm_approach>" not in raw:
            # the hot path decides from the model name alone, without parsing the messages
            plan = cached_plan_for_model(model, svc.registry, svc.plugin_manager.hook,
                                         settings.approach, settings.model)
            if plan.is_passthrough:
                meta = _meta(request_id, settings, record, plan, control)
                return _passthrough(svc, body, raw, plan, stream, None, meta, record,
                                    control)
        chat = ChatRequest.from_body(body)
        plan, messages = parse_plan(chat.model, body, chat.messages, svc.registry,
                                    hook=svc.plugin_manager.hook,
                                    default_approach=settings.approach,
                                    default_model=settings.model)
        meta = _meta(request_id, settings, record, plan, control)
        if plan.is_passthrough and passthrough_ok:
            changed = messages if messages is not chat.messages else None
            return _passthrough(svc, body, raw, plan, stream, changed, meta, record, control)
        return _run_pipeline(body, plan, chat.replace(messages=messages), meta, record)
    except OptillmError as exc:
        if record:
            record.finish(None, exc.message)
        raise
    except Exception as exc:  # a bug: the client gets a 500, the log keeps the request
        if record:
            record.finish(None, f"internal error: {type(exc).__name__}: {exc}")
        raise


def _meta(request_id: str, settings, record, plan, control=None) -> CallMeta:
    note_plan(plan.label, plan.model)  # the request metrics' approach and model labels
    if record:
        record.describe(approach=plan.label, model=plan.model)
    on_call = record.add_call if record else None
    if control is not None:
        from ..upstream.cache import CacheCallMeta  # the directive, down to the cache layers

        return CacheCallMeta(request_id, _upstream_key(settings), on_call, cache=control)
    return CallMeta(request_id, _upstream_key(settings), on_call)


def _cache_header(status: str | None) -> dict[str, str]:
    """``X-Optillm-Cache: hit|miss`` when the cache decided on the answer (it is on)."""
    return {"X-Optillm-Cache": status} if status else {}


def _passthrough(svc, body, raw: bytes, plan, stream: bool, messages, meta, record,
                 control=None) -> Response:
    """Relay the client's bytes (re-serialised only when the model, proxy fields, messages
    or a cache directive must change) and the upstream's answer, through the cache when on."""
    fields = svc.registry.consumed_fields(plan.slugs)
    proxy_fields = [k for k in body if k in fields]
    if plan.model != body["model"] or proxy_fields or messages is not None \
            or control is not None:  # (``raw`` still carries the directive)
        body = {k: v for k, v in body.items() if k not in proxy_fields}
        body["model"] = plan.model
        if messages is not None:
            body["messages"] = [m.to_dict() for m in messages]
        raw = _dumps(body)
    upstream = svc.upstream.forward(raw, meta, stream=stream, model=plan.model)
    headers = _cache_header(upstream.cache)  # the stack's cache layer marks hit or miss
    if upstream.status >= 400:
        data = b"".join(upstream.chunks)
        upstream.close()
        response = _upstream_error(upstream.status, data, record)
        response.headers.update(headers or {})
        return response
    if not stream:
        data = conform_completion(b"".join(upstream.chunks))
        if record:
            record.finish(_loads_or_text(data), None)
        return Response(data, status=upstream.status, content_type=upstream.content_type,
                        headers=headers)

    options = body.get("stream_options")
    wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))

    def relay() -> Iterator[bytes]:
        complete = False
        error = "stream ended before [DONE]"
        try:
            yield from (with_reasoning_usage(upstream.chunks) if wants_usage
                        else upstream.chunks)
            complete = True
        except OptillmError as exc:  # broke midway: the status line is gone, so an error
            error = exc.message        # event the SDKs raise on ends it, never a silent cut
            log.warning("passthrough stream broke: %s", exc.message)
            yield event(exc.to_dict()) + DONE  # as approach streams end on an error
        finally:
            if not complete:
                upstream.close()  # client gone or upstream broken: stop its generation
            if record:
                record.finish({"streamed": True}, None if complete else error)

    return Response(relay(), status=upstream.status, content_type=upstream.content_type,
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                             **(headers or {})},
                    direct_passthrough=True)


def _loads_or_text(data: bytes) -> Any:
    try:
        return _loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


def _upstream_error(status: int, data: bytes, record) -> Response:
    """An upstream error answer as ours: the client's mistakes (4xx) keep their status and the
    upstream's message; upstream failures (5xx) become 502 carrying its message."""
    from ..errors import from_upstream_status

    parsed = _loads_or_text(data)
    message = ""
    if isinstance(parsed, dict):
        inner = parsed.get("error", parsed)
        message = inner.get("message", "") if isinstance(inner, dict) else str(inner)
    message = message or (data.decode("utf-8", "replace")[:500] if data else f"status {status}")
    err = from_upstream_status(status, message)
    if record:
        record.finish(None, err.message)
    return json_response(err.to_dict(), err.status)


def _run_pipeline(body, plan, chat: ChatRequest, meta: CallMeta, record) -> Response:
    """Run the plan through the answer cache (``optillm.plan.answer_cache``: a hit replays
    the stored answer, a complete answer is kept)."""
    svc = services()
    settings = svc.settings
    full = bool(body.get("return_full_response", settings.return_full_response))
    job = svc.answers.prepare(plan, chat, body, meta, full_response=full)
    headers = _cache_header(job.status)
    if not chat.stream:
        result = job.run()
        response = result.completion.to_dict()
        if record:
            record.finish(response, None)
        job.keep(result.completion)
        headers = {**headers, "X-Optillm-Upstream-Calls": str(result.calls)}
        return json_response(response, headers=headers)
    return _approach_stream(job.run, chat, _finisher(record, job.keep), headers)


def _finisher(record, keep=None):
    """``on_done(completion, error)`` for an approach stream: finishes the log record and
    hands a completed answer to ``keep`` (the cache)."""
    def on_done(completion: Completion | None, error: OptillmError | None) -> None:
        if record:
            record.finish(completion.to_dict() if completion else None,
                          error.message if error else None)
        if keep is not None and completion is not None:
            keep(completion)

    return on_done


def _approach_stream(run, chat: ChatRequest, on_done, headers: dict[str, str]) -> Response:
    svc = services()
    include_usage = bool((chat.params.get("stream_options") or {}).get("include_usage"))
    return Response(stream_approach(run, svc.executor, model=chat.model, n=chat.n,
                                    include_usage=include_usage,
                                    keepalive=svc.settings.keepalive_interval,
                                    on_done=on_done),
                    content_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                             **headers})


@bp.delete("/cache")
def clear_cache() -> Response:
    """Remove every cached answer: ``{"deleted": <entries removed>}``; 503 when the store
    cannot be reached."""
    cache = _cache()
    try:
        deleted = cache.clear()
    except Exception as exc:  # noqa: BLE001 - Redis, SQLite or a missing package
        raise UpstreamError(f"the cache store failed: {type(exc).__name__}: {exc}",
                            status=503, code="cache_unavailable") from exc
    return json_response({"deleted": deleted})


@bp.get("/cache")
def cache_stats() -> Response:
    """This process's cache counts: ``{"hits", "misses", "writes", "backend"}``."""
    return json_response(_cache().stats())


def _cache():
    cache = services().cache
    if cache is None:
        raise NotFoundError("the response cache is off (turn it on with --cache-ttl or the "
                            "config's general_settings.cache_ttl)", code="cache_off")
    return cache


def retry_after_header(exc: OptillmError) -> dict[str, str] | None:
    """``Retry-After`` (whole seconds, rounded up) for a 429 or 503 that knows its wait."""
    if exc.retry_after is None or exc.status not in (429, 503):
        return None
    return {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}


def register_error_handlers(app) -> None:
    """One JSON error handler: every failure is an OpenAI error object, never HTML or a trace."""
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(OptillmError)
    def _optillm_error(exc: OptillmError):
        return json_response(exc.to_dict(), exc.status, retry_after_header(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        kinds = {404: ("not_found", "unknown_url"), 405: ("invalid_request_error",
                                                          "method_not_allowed"),
                 413: ("invalid_request_error", "request_too_large")}
        etype, code = kinds.get(status, ("invalid_request_error", None))
        message = exc.description or exc.name
        if status == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            message = f"request body is larger than the limit of {limit} bytes"
        err = OptillmError(message, status=status, type=etype, code=code)
        return json_response(err.to_dict(), status)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        err = UpstreamError(f"internal error: {type(exc).__name__}: {exc}", status=500,
                            type="server_error", code="internal_error")
        return json_response(err.to_dict(), 500)
