"""The Responses API's routes (Flask blueprint): ``POST /v1/responses``, ``GET`` and
``DELETE /v1/responses/<id>`` (also without the ``/v1`` prefix, as LLMProxy served it).

A request becomes a chat request (``mapping``) and runs exactly like ``/v1/chat/completions``:
the ``model`` may carry an approach prefix (``moa-gpt-4o-mini``, ``profile/<name>``, ...), the
plan is parsed the same way and ``Pipeline.run`` does the work; ``stream: true`` goes through
the shared engine (``optillm.web.runner``) with the Responses events (``events``). Errors
before a stream starts are OpenAI error objects (unknown ``previous_response_id``: 404).
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, request

from ...errors import BadRequestError, OptillmError
from ...plan.planner import parse_plan
from ...types import ChatRequest, Completion, Message
from ...upstream.base import CallMeta
from ...upstream.conversation_log import start_request
from .. import runner
from ..chat import _upstream_key, json_response, services
from ..request_context import current_request_id
from .events import ResponseEvents
from .mapping import ResponsesRequest, ResponseState
from .store import delete, keep, load

bp = Blueprint("responses", __name__)


@bp.post("/v1/responses")
@bp.post("/responses")
def create_response() -> Response:
    svc = services()
    settings = svc.settings
    raw = request.get_data(cache=False)
    request_id = current_request_id()  # the X-Request-ID of this request
    record = None
    try:
        body, error = json.loads(raw), None
    except ValueError as exc:
        body, error = None, BadRequestError(f"request body is not valid JSON: {exc}")
    if svc.conversation_logger is not None:
        record = start_request(svc.conversation_logger,
            request_id, raw.decode("utf-8", "replace") if error else body)
    try:
        if error is not None:
            raise error
        req = ResponsesRequest.from_body(body, settings.model)
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

            return Response(_stream(svc, state, run, conversation, record),
                            content_type="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        result = svc.pipeline.run(plan, chat, body, meta, full_response=full)
        response, _ = state.finished(result.completion)
        keep(svc.store, req.store, response, conversation, result.completion)
        if record:
            record.finish(response, None)
        return json_response(response)
    except OptillmError as exc:
        if record:
            record.finish(None, exc.message)
        raise


def _stream(svc, state: ResponseState, run: runner.Run, conversation: list[Message], record):
    """The SSE bytes of a streamed response; ``svc`` is the app's ``Services`` (the generator
    runs outside the app context). The response is stored before it is announced."""
    events = ResponseEvents(state)

    def on_done(completion: Completion | None, error: OptillmError | None) -> None:
        if completion is not None:
            keep(svc.store, state.req.store, events.response, conversation, completion)
        if record:
            record.finish(events.response if completion is not None else None,
                          error.message if error is not None else None)

    return runner.stream(run, svc.executor, events, keepalive=svc.settings.keepalive_interval,
                         on_done=on_done)


@bp.get("/v1/responses/<response_id>")
@bp.get("/responses/<response_id>")
def get_response(response_id: str) -> Response:
    return json_response(load(services().store, response_id)["response"])


@bp.delete("/v1/responses/<response_id>")
@bp.delete("/responses/<response_id>")
def delete_response(response_id: str) -> Response:
    delete(services().store, response_id)
    return json_response({"id": response_id, "object": "response", "deleted": True})
