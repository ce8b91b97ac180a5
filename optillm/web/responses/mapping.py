"""Responses API <-> chat completions: a ``/v1/responses`` body as the chat request it runs
as, and a finished ``Completion`` as the ``Response`` object.

The mapping::

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

Fields with no meaning here (``background``, ``conversation``, ``prompt``, ``tools``,
``messages``, ``n``) are a 400 rather than a silently different answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ...errors import BadRequestError
from ...types import Completion, Message, new_id

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


# -- the request -----------------------------------------------------------------------------

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


# -- the response object --------------------------------------------------------------------

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
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
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
