"""OpenAI's Responses API over any approach: ``POST /v1/responses``, ``GET`` and ``DELETE
/v1/responses/<id>`` (also without the ``/v1`` prefix, as LLMProxy served it).

A request becomes a chat request and runs exactly like ``/v1/chat/completions``: the ``model``
may carry an approach prefix (``moa-gpt-4o-mini``, ``profile/<name>``, ...), the plan is
parsed the same way and ``Pipeline.run`` does the work. The mapping::

    input (string)                    one user message
    input (items)                     message items: role + content (a string, or parts:
                                      input_text / output_text / refusal -> text,
                                      input_image with image_url -> image_url); earlier
                                      output messages are assistant turns
    instructions                      a system message first (never carried over a chain)
    previous_response_id              the stored conversation goes before the new input
    max_output_tokens, temperature,   max_tokens, temperature, top_p, user,
    top_p, user, text.format,         response_format, reasoning_effort
    reasoning.effort
    other fields                      passed on, like chat completions (approach options,
                                      seed, top_k, optillm_approach, ...)

Conversations live in the app's shared store (``Services.store``: Redis, else the on-disk
store), so any worker or instance can continue them: under ``responses:<id>`` the response
object and the full message list (without the instructions), kept ``RESPONSE_TTL`` seconds.
``store: false`` keeps nothing.

``stream: true`` sends the semantic events, numbered by ``sequence_number`` from 0:
``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta`` (token by token where the
approach streams its final call, else the whole answer when it is ready),
``response.output_text.done``, ``response.content_part.done``, ``response.output_item.done``,
``response.completed`` (the whole response, with ``usage``; ``response.incomplete`` instead,
as OpenAI sends it, when ``max_output_tokens`` cut the answer: status ``incomplete``,
``incomplete_details.reason`` ``max_output_tokens``). ``: keep-alive`` comments go out while the
approach works. A failure after the stream started is an ``error`` event followed by
``response.failed``. Errors before it are OpenAI error objects (unknown
``previous_response_id``: 404).
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, request

from ..toolkit.context import Cancelled
from ..errors import BadRequestError, NotFoundError, OptillmError, UpstreamError
from ..plan.planner import parse_plan
from .chat import _upstream_key, json_response, services
from ..types import ChatRequest, Completion, Message, new_id
from ..upstream.base import CallMeta

log = logging.getLogger(__name__)
bp = Blueprint("responses", __name__)

#: Seconds a stored response and its conversation are kept (OpenAI keeps them 30 days).
RESPONSE_TTL = 30 * 24 * 3600.0
KEY_PREFIX = "responses:"

#: Responses API fields this module reads; every other body field is passed on as it is.
_OWN_FIELDS = frozenset({
    "model", "input", "instructions", "previous_response_id", "max_output_tokens",
    "temperature", "top_p", "stream", "stream_options", "store", "metadata", "text",
    "reasoning", "tools", "tool_choice", "parallel_tool_calls", "include", "truncation",
    "service_tier", "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
    "background", "conversation", "max_tool_calls", "prompt", "top_logprobs",
    "context_management", "moderation"})
#: Fields with no meaning here: a 400 rather than a silently different answer.
_REFUSED = {"background": "background responses are not supported by this proxy",
            "conversation": "conversations are not supported by this proxy; chain responses "
                            "with 'previous_response_id'",
            "prompt": "prompt templates are not supported by this proxy",
            "tools": "tools are not supported on /v1/responses by this proxy; use "
                     "/v1/chat/completions",
            "messages": "'messages' belongs to /v1/chat/completions; send 'input'",
            "n": "'n' is not supported on /v1/responses"}
_ROLES = ("user", "assistant", "system", "developer")
_TEXT_PARTS = ("input_text", "output_text", "text")
KEEPALIVE = b": keep-alive\n\n"


# -- the request ------------------------------------------------------------------------------

def _parts(parts: list, param: str) -> str | list[dict[str, Any]]:
    """Content parts -> chat content: one string when every part is text (joined by newlines;
    every upstream takes it), else chat's parts (images)."""
    out: list[dict[str, Any]] = []
    for i, part in enumerate(parts):
        where = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_PARTS or kind == "refusal":
            text = part.get("refusal" if kind == "refusal" else "text")
            if not isinstance(text, str):
                raise BadRequestError(f"{where}.text must be a string", param=where)
            out.append({"type": "text", "text": text})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            out.append({"type": "image_url", "image_url": {"url": part["image_url"],
                                                           "detail": part.get("detail", "auto")}})
        else:
            raise BadRequestError(f"{where}: content parts of type {kind!r} are not supported "
                                  f"by this proxy (input_text, output_text, refusal, "
                                  f"input_image with image_url)", param=f"{where}.type",
                                  code="unsupported_content")
    if all(p["type"] == "text" for p in out):
        return "\n".join(p["text"] for p in out)
    return out


def input_messages(value: Any) -> list[Message]:
    """The ``input`` of a request as chat messages.

    Raises: BadRequestError naming the item: not a string or a list, an item that is not a
    message, an unknown role, unsupported content parts.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [Message("user", value)]
    if not isinstance(value, list):
        raise BadRequestError("'input' must be a string or an array of input items",
                              param="input")
    messages = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequestError(f"{param} must be an object", param=param)
        kind = item.get("type", "message")
        if kind != "message":
            raise BadRequestError(f"{param}: input items of type {kind!r} are not supported by "
                                  f"this proxy (message items only)", param=f"{param}.type",
                                  code="unsupported_input_item")
        role = item.get("role")
        if role not in _ROLES:
            raise BadRequestError(f"{param}.role must be one of {', '.join(_ROLES)}",
                                  param=f"{param}.role")
        content = item.get("content")
        if isinstance(content, list):
            content = _parts(content, f"{param}.content")
        elif not isinstance(content, str):
            raise BadRequestError(f"{param}.content must be a string or an array of parts",
                                  param=f"{param}.content")
        messages.append(Message(role, content))
    return messages


def _optional(body: dict, key: str, kind: type | tuple, what: str) -> Any:
    value = body.get(key)
    if value is not None and (not isinstance(value, kind)
                              or (isinstance(value, bool) and kind is not bool)):
        raise BadRequestError(f"'{key}' must be {what}", param=key)
    return value


def _response_format(text: Any) -> dict[str, Any] | None:
    """``text.format`` -> chat's ``response_format`` (None for plain text)."""
    if text is None:
        return None
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None and isinstance(text, dict):
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object",
                                                            "json_schema"):
        raise BadRequestError("'text.format.type' must be 'text', 'json_object' or "
                              "'json_schema'", param="text.format")
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
    return {"type": "json_schema", "json_schema": schema}


@dataclass(frozen=True)
class ResponsesRequest:
    """A validated ``/v1/responses`` body.

    ``chat`` is the chat completion body it runs as (without the stored conversation);
    ``echo`` the request fields the response object repeats.
    """

    model: str
    messages: tuple[Message, ...]
    instructions: str | None
    previous_response_id: str | None
    stream: bool
    store: bool
    chat: dict[str, Any]
    echo: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Any, default_model: str | None = None) -> ResponsesRequest:
        """Raises: BadRequestError naming the field."""
        if not isinstance(body, dict):
            raise BadRequestError("request body must be a JSON object")
        for key, why in _REFUSED.items():
            if body.get(key):
                raise BadRequestError(why, param=key, code="unsupported_parameter")
        model = body.get("model") or default_model
        if not isinstance(model, str) or not model:
            raise BadRequestError("'model' is required and must be a non-empty string",
                                  param="model")
        instructions = _optional(body, "instructions", str, "a string")
        previous = _optional(body, "previous_response_id", str, "a string")
        max_tokens = _optional(body, "max_output_tokens", int, "an integer")
        if max_tokens is not None and max_tokens < 1:
            raise BadRequestError("'max_output_tokens' must be at least 1",
                                  param="max_output_tokens", code="integer_below_min_value")
        temperature = _optional(body, "temperature", (int, float), "a number")
        top_p = _optional(body, "top_p", (int, float), "a number")
        stream = bool(_optional(body, "stream", bool, "a boolean"))
        store = _optional(body, "store", bool, "a boolean")
        metadata = _optional(body, "metadata", dict, "an object")
        user = _optional(body, "user", str, "a string")
        reasoning = _optional(body, "reasoning", dict, "an object")
        messages = input_messages(body.get("input"))
        if not messages and not previous:
            raise BadRequestError("'input' is required", param="input")
        chat = {k: v for k, v in body.items() if k not in _OWN_FIELDS}
        chat["model"] = model
        for key, value in (("max_tokens", max_tokens), ("temperature", temperature),
                           ("top_p", top_p), ("user", user),
                           ("response_format", _response_format(body.get("text"))),
                           ("reasoning_effort", (reasoning or {}).get("effort"))):
            if value is not None:
                chat[key] = value
        echo = {"instructions": instructions, "max_output_tokens": max_tokens,
                "metadata": metadata or {}, "temperature": temperature, "top_p": top_p,
                "text": body.get("text") or {"format": {"type": "text"}},
                "reasoning": reasoning}
        if user is not None:
            echo["user"] = user
        return cls(model=model, messages=tuple(messages), instructions=instructions,
                   previous_response_id=previous, stream=stream,
                   store=True if store is None else store, chat=chat, echo=echo)


# -- stored responses -------------------------------------------------------------------------

class StoreUnavailable(OptillmError):
    status = 503
    type = "server_error"
    code = "store_unavailable"


def _store_call(store, method: str, *args: Any) -> Any:
    """``store.<method>(*args)``, its failures as ``StoreUnavailable``."""
    from ..upstream.store import StoreError

    if store is None:
        raise StoreUnavailable("this proxy has no store for responses")
    try:
        return getattr(store, method)(*args)
    except StoreError as exc:
        raise StoreUnavailable(f"the response store is unavailable: {exc}") from exc


def load(store, response_id: str, param: str | None = None) -> dict[str, Any]:
    """The stored ``{"response": {...}, "conversation": [message dicts]}`` of ``response_id``
    (``store``: the app's ``LazyStore``).

    Raises: NotFoundError (unknown, expired or deleted); StoreUnavailable.
    """
    data = _store_call(store, "get", KEY_PREFIX + response_id)
    if data is None:
        raise NotFoundError(f"response with id {response_id!r} not found", param=param,
                            code="previous_response_not_found" if param else "not_found")
    return json.loads(data)


def save(store, response: dict[str, Any], conversation: list[Message]) -> None:
    """Keep ``response`` and the conversation that produced it (answer included) for
    ``RESPONSE_TTL`` seconds. Raises: StoreUnavailable."""
    record = {"response": response, "conversation": [m.to_dict() for m in conversation]}
    data = json.dumps(record, ensure_ascii=False).encode()
    _store_call(store, "set", KEY_PREFIX + response["id"], data, RESPONSE_TTL)


# -- the response object ----------------------------------------------------------------------

def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, status: str, content: list[dict[str, Any]],
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """An output message; ``extra`` carries the approach's metadata (``council_metadata``,
    ``tts_metadata``, ...), as chat completions carry it on the choice."""
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": content, **(extra or {})}


def usage_object(completion: Completion) -> dict[str, Any]:
    usage = completion.usage
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}


@dataclass
class ResponseState:
    """One response being made: its id, the message item's id and what it echoes."""

    req: ResponsesRequest
    id: str = field(default_factory=lambda: new_id("resp_"))
    item_id: str = field(default_factory=lambda: new_id("msg_"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def to_dict(self, status: str, output: list | None = None,
                completion: Completion | None = None,
                error: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``Response`` object in ``status`` (``in_progress``, ``completed``,
        ``incomplete``, ``failed``)."""
        d: dict[str, Any] = {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": error,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete" else None,
            "model": self.req.model, "output": output or [],
            "parallel_tool_calls": True,
            "previous_response_id": self.req.previous_response_id,
            "store": self.req.store, "tool_choice": "auto", "tools": [],
            "truncation": "disabled", **self.req.echo}
        if completion is not None:
            d["usage"] = usage_object(completion)
        return d

    def finished(self, completion: Completion) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(response, message item)`` of a finished run."""
        choice = completion.choices[0]
        status = "incomplete" if choice.finish_reason == "length" else "completed"
        item = message_item(self.item_id, status, [text_part(choice.text)], dict(choice.extra))
        return self.to_dict(status, [item], completion), item


# -- routes ---------------------------------------------------------------------------------

def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None


@bp.post("/v1/responses")
@bp.post("/responses")
def create_response() -> Response:
    svc = services()
    settings = svc.settings
    raw = request.get_data(cache=False)
    request_id = new_id("req-")
    record = None
    if svc.conversation_logger is not None:
        try:
            client_request = json.loads(raw)
        except ValueError:
            client_request = raw.decode("utf-8", "replace")
        model = client_request.get("model") if isinstance(client_request, dict) else None
        record = svc.conversation_logger.start(request_id, None, model, client_request)
    try:
        req = ResponsesRequest.from_body(_loads(raw), settings.model)
        history: list[Message] = []
        if req.previous_response_id:
            stored = load(svc.store, req.previous_response_id, param="previous_response_id")
            history = [Message.from_dict(m, i) for i, m in enumerate(stored["conversation"])]
        conversation = history + list(req.messages)
        system = [Message("system", req.instructions)] if req.instructions else []
        body = {**req.chat, "messages": [m.to_dict() for m in system + conversation]}
        chat = ChatRequest.from_body(body)
        plan, messages = parse_plan(chat.model, body, chat.messages, svc.registry,
                                    hook=svc.plugin_manager.hook,
                                    default_approach=settings.approach,
                                    default_model=settings.model)
        if record:
            record.describe(approach=plan.label, model=plan.model)
        meta = CallMeta(request_id, _upstream_key(settings), record.add_call if record else None)
        chat = chat.replace(messages=messages)
        full = bool(body.get("return_full_response", settings.return_full_response))
        state = ResponseState(req)
        if req.stream:
            def run(sink, cancelled):
                return svc.pipeline.run(plan, chat, body, meta, full_response=full, sink=sink,
                                        cancelled=cancelled)

            return Response(stream_events(svc, state, run, conversation, record),
                             content_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        result = svc.pipeline.run(plan, chat, body, meta, full_response=full)
        response, _ = state.finished(result.completion)
        _keep(svc.store, state, response, conversation, result.completion)
        if record:
            record.finish(response, None)
        return json_response(response)
    except OptillmError as exc:
        if record:
            record.finish(None, exc.message)
        raise


def _keep(store, state: ResponseState, response: dict[str, Any], conversation: list[Message],
          completion: Completion) -> None:
    """Store a finished response when the request asks for it; a store failure is logged,
    never turned into a failed answer (the tokens are spent, the answer is good)."""
    if not state.req.store:
        return
    try:
        save(store, response, conversation + [Message("assistant", completion.text)])
    except OptillmError as exc:
        log.warning("response %s not stored: %s", state.id, exc.message)


@bp.get("/v1/responses/<response_id>")
@bp.get("/responses/<response_id>")
def get_response(response_id: str) -> Response:
    return json_response(load(services().store, response_id)["response"])


@bp.delete("/v1/responses/<response_id>")
@bp.delete("/responses/<response_id>")
def delete_response(response_id: str) -> Response:
    store = services().store
    load(store, response_id)
    _store_call(store, "delete", KEY_PREFIX + response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})


# -- streaming ------------------------------------------------------------------------------

_END = object()


class BackgroundRun:
    """``run(sink, cancelled)`` started at once on ``executor``; iterating yields
    ``("text", piece)`` for each piece the run sends to ``sink``, ``("keepalive", None)``
    after ``keepalive`` seconds without one, then ``("result", value)``, and raises what the
    run raised. ``close()`` sets ``cancelled`` (the run stops at its next upstream call, or
    the next piece it streams); closing after the result is harmless."""

    def __init__(self, run: Callable[[Callable[[str], None], threading.Event], Any],
                 executor, keepalive: float):
        self.cancelled = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._keepalive = keepalive
        self._future = executor.submit(self._work, run)

    def _sink(self, text: str) -> None:
        if self.cancelled.is_set():
            raise Cancelled("the client closed the request")
        self._queue.put(text)

    def _work(self, run) -> Any:
        try:
            return run(self._sink, self.cancelled)
        finally:
            self._queue.put(_END)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        while True:
            try:
                item = self._queue.get(timeout=self._keepalive)
            except queue.Empty:
                yield "keepalive", None
                continue
            if item is _END:
                break
            yield "text", item
        yield "result", self._future.result()

    def close(self) -> None:
        self.cancelled.set()


def _error_code(exc: OptillmError) -> str:
    """A ``ResponseErrorCode`` for ``response.failed`` (the spec's list is short)."""
    return "rate_limit_exceeded" if exc.status == 429 else "server_error"


def stream_events(svc, state: ResponseState, run, conversation: list[Message],
                  record) -> Iterator[bytes]:
    """The SSE bytes of a streamed response (see the module docstring for the order);
    ``svc`` is the app's ``Services`` (the generator runs outside the app context)."""
    seq = itertools.count()
    item_id = state.item_id

    def send(kind: str, **fields: Any) -> bytes:
        obj = {"type": kind, **fields, "sequence_number": next(seq)}
        return f"event: {kind}\ndata: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()

    def open_item() -> Iterator[bytes]:
        yield send("response.output_item.added", output_index=0,
                   item=message_item(item_id, "in_progress", []))
        yield send("response.content_part.added", item_id=item_id, output_index=0,
                   content_index=0, part=text_part(""))

    def delta(text: str) -> bytes:
        return send("response.output_text.delta", item_id=item_id, output_index=0,
                    content_index=0, delta=text, logprobs=[])

    background = BackgroundRun(run, svc.executor, svc.settings.keepalive_interval)
    opened = finished = False
    try:
        yield send("response.created", response=state.to_dict("in_progress"))
        yield send("response.in_progress", response=state.to_dict("in_progress"))
        result = None
        try:
            for kind, value in background:
                if kind == "keepalive":
                    yield KEEPALIVE
                elif kind == "text":
                    if not opened:
                        opened = True
                        yield from open_item()
                    yield delta(value)
                else:
                    result = value
        except Exception as exc:  # noqa: BLE001 - the stream is open: report, never a trace
            if not isinstance(exc, OptillmError):
                log.exception("approach failed while streaming a response")
                exc = UpstreamError(f"approach failed: {exc}", code="approach_error",
                                    status=500, type="server_error")
            finished = True
            if record:
                record.finish(None, exc.message)
            yield send("error", code=exc.code, message=exc.message, param=exc.param)
            yield send("response.failed", response=state.to_dict(
                "failed", error={"code": _error_code(exc), "message": exc.message}))
            return
        completion: Completion = result.completion
        text = completion.choices[0].text
        if text.startswith(result.sent):
            rest = text[len(result.sent):]
        else:
            log.warning("approach answer does not begin with what it streamed")
            rest = ""
        if not opened:
            opened = True
            yield from open_item()
        if rest:
            yield delta(rest)
        response, item = state.finished(completion)
        yield send("response.output_text.done", item_id=item_id, output_index=0,
                   content_index=0, text=text, logprobs=[])
        yield send("response.content_part.done", item_id=item_id, output_index=0,
                   content_index=0, part=text_part(text))
        yield send("response.output_item.done", output_index=0, item=item)
        _keep(svc.store, state, response, conversation, completion)  # stored before it is announced
        finished = True
        if record:
            record.finish(response, None)
        yield send("response.completed" if response["status"] == "completed"
                   else "response.incomplete", response=response)
    finally:
        background.close()
        if not finished and record:  # the client went away mid-stream
            record.finish(None, "the client closed the stream")
