"""Anthropic's Messages API over any approach: ``POST /v1/messages`` and
``POST /v1/messages/count_tokens`` (also without the ``/v1`` prefix).

A request becomes a chat completion body (``anthropic_map.chat_body``) and runs exactly like
``/v1/chat/completions``: the ``model`` may carry any naming form (``moa-gpt-4o-mini``,
``bon&re2-x``, ``profile/<name>``, ``cli/<agent>``, ...), the plan is parsed the same way and
``Pipeline.run`` does the work. A plain request (no approach) is one call on the stack's byte
path (``Upstream.forward``, no SDK on the way, as the chat passthrough): its JSON, or its SSE
chunks as they come (text and tool-call deltas), read into our values and re-encoded; every
other request goes through the pipeline (``stream: true`` then streams the approach's final
call where it can, as chat completions do). Answers are Anthropic ``Message`` objects;
streams are Anthropic's event sequence (``anthropic_stream``); errors are Anthropic error
objects (``{"type": "error", "error": {"type", "message"}}``, statuses in ``anthropic_map``).

The proxy key may come as ``x-api-key`` (what Anthropic's clients send) or as a Bearer token.
Approach answers are not kept by the response cache on this face (the typed upstream calls
underneath still are, when the cache is on).

``count_tokens`` answers ``{"input_tokens": N}``: the upstream's tokenizer where the upstream
stack has one (``count_tokens``), else an estimate of four characters a token over the
rendered conversation and tool definitions, marked ``X-Optillm-Token-Count: estimate``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, request

from ..errors import BadRequestError, OptillmError, UpstreamError, from_upstream_status
from ..plan.pipeline import PipelineResult
from ..plan.planner import parse_plan, plan_for_model
from ..types import ChatRequest, Choice, Chunk, Completion, Message, Usage, new_id
from ..upstream.base import CallMeta
from ..upstream.conversation_log import start_request
from . import runner
from .anthropic_map import chat_body, error_object, message_object
from .anthropic_stream import MessageEncoder
from .chat import _dumps, _loads, _upstream_key, json_response, services
from .request_context import current_request_id

log = logging.getLogger(__name__)
bp = Blueprint("anthropic", __name__)


def _body() -> Any:
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None


def _error_response(exc: OptillmError) -> Response:
    obj, status = error_object(exc)
    return json_response(obj, status)


@bp.errorhandler(OptillmError)
def _optillm_error(exc: OptillmError) -> Response:
    return _error_response(exc)


@bp.errorhandler(Exception)
def _other_error(exc: Exception) -> Response:
    from werkzeug.exceptions import HTTPException

    if isinstance(exc, HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            from flask import current_app

            message = (f"request body is larger than the limit of "
                       f"{current_app.config.get('MAX_CONTENT_LENGTH')} bytes")
        return _error_response(OptillmError(message, status=status))
    log.exception("unhandled error")
    return _error_response(UpstreamError(f"internal error: {type(exc).__name__}: {exc}",
                                         status=500))


def _prepare(body: Any) -> tuple[dict[str, Any], ChatRequest, Any]:
    """(chat body, typed request with the approach tag removed, plan)."""
    svc = services()
    settings = svc.settings
    chat = chat_body(body, settings.model)
    typed = ChatRequest.from_body(chat)
    plan, messages = parse_plan(typed.model, chat, typed.messages, svc.registry,
                                hook=svc.plugin_manager.hook,
                                default_approach=settings.approach,
                                default_model=settings.model)
    return chat, typed.replace(messages=messages), plan


@bp.post("/v1/messages")
@bp.post("/messages")
def create_message() -> Response:
    svc = services()
    body = _body()
    request_id = current_request_id()  # the X-Request-ID of this request
    record = None
    if svc.conversation_logger is not None:
        record = start_request(svc.conversation_logger, request_id, body)
    try:
        chat, typed, plan = _prepare(body)
    except OptillmError as exc:
        if record:
            record.finish(None, exc.message)
        raise
    if record:
        record.describe(approach=plan.label, model=plan.model)
    meta = CallMeta(request_id, _upstream_key(svc.settings),
                    record.add_call if record else None)
    model = body["model"] if isinstance(body.get("model"), str) and body["model"] \
        else typed.model
    stops = chat.get("stop")
    full = bool(chat.get("return_full_response", svc.settings.return_full_response))
    if plan.is_passthrough and not full and not svc.settings.batch_mode:
        try:
            return _passthrough(svc, plan, typed, chat, meta, model, stops, record)
        except OptillmError as exc:
            if record:
                record.finish(None, exc.message)
            raise
    if not typed.stream:
        try:
            result = svc.pipeline.run(plan, typed, chat, meta, full_response=full)
        except OptillmError as exc:
            if record:
                record.finish(None, exc.message)
            raise
        message = message_object(result.completion, model, stops)
        if record:
            record.finish(message, None)
        return json_response(message, headers={"X-Optillm-Upstream-Calls": str(result.calls)})

    def run(sink, cancelled):
        return svc.pipeline.run(plan, typed, chat, meta, full_response=full, sink=sink,
                                cancelled=cancelled)

    return _stream_response(run, model, stops, record)


def _stream_response(run, model: str, stops, record) -> Response:
    svc = services()

    def on_done(completion, error):
        if record:
            record.finish(completion.to_dict() if completion else None,
                          error.message if error else None)

    encoder = MessageEncoder(new_id("msg_"), model, stops)
    events = runner.stream(run, svc.executor, encoder,
                           keepalive=svc.settings.keepalive_interval, on_done=on_done)
    return Response(events, content_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _passthrough(svc, plan, typed: ChatRequest, chat: dict[str, Any], meta: CallMeta,
                 model: str, stops, record) -> Response:
    """A plain request: one upstream call through the stack's byte path (``forward``, no SDK
    on the way), its JSON or SSE chunks read into our values and re-encoded."""
    fields = svc.registry.consumed_fields(plan.slugs)
    body = {k: v for k, v in chat.items() if k not in fields and k != "stream"}
    body["model"] = plan.model
    body["messages"] = [m.to_dict() for m in typed.messages]
    if typed.stream:
        body.update(stream=True, stream_options={"include_usage": True})
    raw = svc.upstream.forward(_dumps(body), meta, stream=typed.stream, model=plan.model)
    if raw.status >= 400:
        data = b"".join(raw.chunks)
        raw.close()
        raise from_upstream_status(raw.status, _error_text(data, raw.status), raw.headers)
    if not typed.stream:
        try:
            completion = Completion.from_dict(_loads(b"".join(raw.chunks)))
        except (ValueError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"upstream returned malformed JSON: {exc}") from None
        if not completion.choices:
            raise UpstreamError("upstream returned no choices")
        message = message_object(completion, model, stops)
        if record:
            record.finish(message, None)
        headers = {"X-Optillm-Upstream-Calls": "1"}
        if raw.cache:
            headers["X-Optillm-Cache"] = raw.cache
        return json_response(message, headers=headers)

    def run(sink, cancelled):
        return relay_chunks(sse_chunks(raw), sink, model)

    return _stream_response(run, model, stops, record)


def _error_text(data: bytes, status: int) -> str:
    try:
        parsed = _loads(data)
    except ValueError:
        parsed = None
    inner = parsed.get("error", parsed) if isinstance(parsed, dict) else None
    if isinstance(inner, dict) and inner.get("message"):
        return str(inner["message"])
    return data[:500].decode("utf-8", "replace") or f"status {status}"


def sse_chunks(raw) -> Iterator[Chunk]:
    """The ``Chunk`` values of an upstream's SSE bytes (``data:`` lines up to ``[DONE]``).

    Raises: UpstreamError for an error event or a line that is not JSON."""
    buffer = b""
    try:
        for piece in raw.chunks:
            buffer += piece
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                try:
                    obj = _loads(payload)
                except ValueError:
                    raise UpstreamError(f"upstream sent a malformed stream event: "
                                        f"{payload[:200]!r}") from None
                if isinstance(obj, dict) and "error" in obj and "choices" not in obj:
                    inner = obj["error"]
                    raise UpstreamError(str(inner.get("message") if isinstance(inner, dict)
                                            else inner))
                yield Chunk.from_dict(obj)
    finally:
        raw.close()


def relay_chunks(chunks, sink, model: str) -> PipelineResult:
    """Hand each upstream chunk to ``sink`` (the encoder re-encodes it) and return what they
    added up to (text, tool calls, finish reason, usage) for the conversation log; closes the
    upstream stream however it ends."""
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish = "stop"
    usage = Usage()
    try:
        for chunk in chunks:
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                delta = c.get("delta") or {}
                text.append(delta.get("content") or "")
                for call in delta.get("tool_calls") or ():
                    slot = calls.setdefault(call.get("index", 0), {
                        "id": call.get("id"), "type": "function",
                        "function": {"name": "", "arguments": ""}})
                    fn = call.get("function") or {}
                    slot["function"]["name"] += fn.get("name") or ""
                    slot["function"]["arguments"] += fn.get("arguments") or ""
                finish = c.get("finish_reason") or finish
            sink(chunk)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    extra = {"tool_calls": [calls[i] for i in sorted(calls)]} if calls else {}
    message = Message("assistant", "".join(text), extra)
    completion = Completion((Choice(0, message, finish),), usage, model=model)
    return PipelineResult(completion, message.text, 1)


@bp.post("/v1/messages/count_tokens")
@bp.post("/messages/count_tokens")
def count_tokens() -> Response:
    """``{"input_tokens": N}`` for a Messages body (``max_tokens`` not needed)."""
    svc = services()
    body = _body()
    if isinstance(body, dict):
        body = {**body, "max_tokens": 1, "stream": False}
    chat = chat_body(body, svc.settings.model)
    typed = ChatRequest.from_body(chat)
    plan = plan_for_model(typed.model, svc.registry, svc.plugin_manager.hook,
                          svc.settings.approach, svc.settings.model)
    meta = CallMeta(current_request_id(), _upstream_key(svc.settings))
    counted = tokenizer_count(svc.upstream, typed.replace(model=plan.model), chat, meta)
    if counted is not None:
        return json_response({"input_tokens": counted[0]},
                             headers={"X-Optillm-Token-Count": counted[1]})
    return json_response({"input_tokens": estimate_tokens(chat)},
                         headers={"X-Optillm-Token-Count": "estimate"})


def tokenizer_count(upstream, typed: ChatRequest, chat: dict[str, Any], meta: CallMeta
                    ) -> tuple[int, str] | None:
    """``(tokens, how)`` from the upstream's tokenizer: the conversation rendered with the
    model's chat template (``how`` = "tokenizer"), else each message's text with four tokens
    of framing a message ("tokenizer-text"); the tools' JSON is counted on top. None when
    the upstream has no tokenizer (a ``CapabilityError``)."""
    from ..errors import CapabilityError

    count = getattr(upstream, "count_tokens", None)
    if count is None:
        return None
    try:
        tools = count(json.dumps(chat["tools"]), typed.model, meta) if chat.get("tools") else 0
        try:
            prompt = upstream.apply_template(typed.messages, typed.model, meta)
            return count(prompt, typed.model, meta) + tools, "tokenizer"
        except CapabilityError:
            total = sum(count(m.text, typed.model, meta) + 4 for m in typed.messages if m.text)
            return total + tools, "tokenizer-text"
    except CapabilityError as exc:
        log.info("count_tokens: the upstream cannot count (%s); estimating", exc.message)
        return None


def estimate_tokens(chat: dict[str, Any]) -> int:
    """An estimate of a chat body's prompt tokens: four characters a token over each
    message's text (plus four per message for its framing) and the tools' JSON."""
    chars = 0
    for m in chat["messages"]:
        content = m.get("content")
        chars += len(content) if isinstance(content, str) else \
            sum(len(p.get("text", "")) for p in content or () if isinstance(p, dict))
        chars += len(json.dumps(m["tool_calls"])) if m.get("tool_calls") else 0
        chars += 16
    if chat.get("tools"):
        chars += len(json.dumps(chat["tools"]))
    return max(1, math.ceil(chars / 4))
