"""Anthropic Messages API shapes <-> ours: the request as a chat completion body, the
``Completion`` as a ``Message`` object, our errors as Anthropic error objects.

Request mapping (``POST /v1/messages``)::

    system (string or text blocks)     a system message first
    messages[].content (string)        the message's text
      text blocks                      text (joined by newlines when all are text)
      image blocks (base64 / url)      image_url parts (a data: URL for base64)
      tool_use blocks (assistant)      the assistant message's tool_calls (input as JSON)
      tool_result blocks (user)        one ``tool`` message each (tool_call_id = tool_use_id),
                                       before the rest of that user turn
      thinking / redacted_thinking     dropped (earlier turns' reasoning is not resent)
    max_tokens (required), temperature, top_p, top_k      the same names
    stop_sequences                     stop
    metadata.user_id                   user
    tools [{name, description, input_schema}]   OpenAI function tools
    tool_choice auto / any / tool / none        "auto" / "required" / the named function /
                                       "none"; disable_parallel_tool_use -> parallel_tool_calls
    other fields                       passed on as chat completions pass them (approach
                                       options, optillm_approach, seed, ...)

Response mapping: choice 0's text -> one ``text`` block (none when empty), its tool_calls ->
``tool_use`` blocks (arguments parsed as the ``input`` object); ``finish_reason`` stop ->
``end_turn`` (or ``stop_sequence`` when the upstream names the matched stop string, as vLLM's
``stop_reason`` does), length -> ``max_tokens``, tool_calls -> ``tool_use``,
content_filter -> ``refusal``; usage -> ``input_tokens`` / ``output_tokens``.

Errors: our status is kept, the Anthropic type chosen by it (``error_type``): 400/422
invalid_request_error, 401 authentication_error, 403 permission_error, 404 not_found_error,
413 request_too_large, 429 rate_limit_error, 504 timeout_error, 500/501/502 api_error; an
upstream that said it is overloaded (503 or Anthropic's 529) becomes 529 overloaded_error.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import BadRequestError, OptillmError
from ..types import Completion, new_id

#: Messages API fields this module reads; every other body field is passed on as it is.
OWN_FIELDS = frozenset({"model", "messages", "system", "max_tokens", "stop_sequences",
                        "stream", "metadata", "tools", "tool_choice", "thinking",
                        "container", "mcp_servers", "service_tier"})
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
         "function_call": "tool_use", "content_filter": "refusal"}
_ERROR_TYPES = {400: "invalid_request_error", 422: "invalid_request_error",
                401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error",
                529: "overloaded_error"}


def _bad(message: str, param: str | None = None) -> BadRequestError:
    return BadRequestError(message, param=param)


def _text_of(block: dict, where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _bad(f"{where}.text: must be a string", where)
    return text


def _image(block: dict, where: str) -> dict[str, Any]:
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        url = f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise _bad(f"{where}.source: expected a base64 or url image source", where)
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(b, f"{where}[{i}]") for i, b in enumerate(content)
                         if isinstance(b, dict) and b.get("type") == "text")
    raise _bad(f"{where}: must be a string or an array of text blocks", where)


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    if not parts:
        return None
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def message_dicts(role: str, content: Any, where: str) -> list[dict[str, Any]]:
    """One Messages API turn as chat message dicts (a user turn with tool results becomes a
    ``tool`` message per result, then the rest of the turn).

    Raises: BadRequestError naming the block.
    """
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _bad(f"{where}.content: must be a string or an array of content blocks",
                   f"{where}.content")
    parts: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    tool_messages: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}.content[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": _text_of(block, at)})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("name"), str) or not isinstance(block.get("id"), str):
                raise _bad(f"{at}: tool_use needs 'id' and 'name'", at)
            tool_calls.append({"id": block["id"], "type": "function",
                               "function": {"name": block["name"],
                                            "arguments": json.dumps(block.get("input") or {})}})
        elif kind == "tool_result" and role == "user":
            if not isinstance(block.get("tool_use_id"), str):
                raise _bad(f"{at}: tool_result needs 'tool_use_id'", at)
            text = _tool_result_text(block.get("content"), f"{at}.content")
            if block.get("is_error"):
                text = f"[tool error] {text}"
            tool_messages.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                                  "content": text})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise _bad(f"{at}.type: content blocks of type {kind!r} are not supported here "
                       f"(text, image, tool_use in assistant turns, tool_result in user "
                       f"turns)", f"{at}.type")
    out = list(tool_messages)
    if role == "assistant":
        if parts or tool_calls:
            msg: dict[str, Any] = {"role": "assistant", "content": _content(parts)}
            if tool_calls:
                msg["tool_calls"] = tool_calls
            out.append(msg)
    elif parts or not tool_messages:
        out.append({"role": role, "content": _content(parts) or ""})
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools: must be an array", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _bad(f"tools[{i}]: needs a 'name'", f"tools[{i}]")
        if tool.get("type") not in (None, "custom"):
            raise _bad(f"tools[{i}].type: server tools ({tool['type']!r}) are not supported "
                       f"by this proxy; define client tools with input_schema",
                       f"tools[{i}].type")
        fn: dict[str, Any] = {"name": tool["name"],
                              "parameters": tool.get("input_schema") or {"type": "object"}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise _bad("tool_choice: must be an object", "tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _bad("tool_choice.type: must be auto, any, tool (with a name) or none",
                   "tool_choice.type")
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False


def _number(body: dict, key: str, kind: type | tuple, what: str) -> Any:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise _bad(f"{key}: must be {what}", key)
    return value


def chat_body(body: Any, default_model: str | None = None) -> dict[str, Any]:
    """A Messages API body as the chat completion body it runs as.

    Raises: BadRequestError naming the field (missing ``model``, ``max_tokens`` or
    ``messages``, a wrong type, an unsupported block).
    """
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    model = body.get("model") or default_model
    if not isinstance(model, str) or not model:
        raise _bad("model: Field required (a non-empty string)", "model")
    max_tokens = _number(body, "max_tokens", int, "an integer")
    if max_tokens is None or max_tokens < 1:
        raise _bad("max_tokens: Field required (an integer of at least 1)", "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: Field required (a non-empty array)", "messages")
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        if isinstance(system, list):
            system = "\n".join(_text_of(b, f"system[{i}]") for i, b in enumerate(system)
                               if isinstance(b, dict))
        if not isinstance(system, str):
            raise _bad("system: must be a string or an array of text blocks", "system")
        if system:
            out.append({"role": "system", "content": system})
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise _bad(f"{where}.role: must be 'user' or 'assistant'", f"{where}.role")
        out.extend(message_dicts(m["role"], m.get("content"), where))
    chat = {k: v for k, v in body.items() if k not in OWN_FIELDS}
    chat.update(model=model, messages=out, max_tokens=max_tokens)
    for key, kind, what in (("temperature", (int, float), "a number"),
                            ("top_p", (int, float), "a number"), ("top_k", int, "an integer")):
        _number(body, key, kind, what)
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("stop_sequences: must be an array of strings", "stop_sequences")
        if stop:
            chat["stop"] = stop
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream: must be a boolean", "stream")
    if stream:
        chat["stream"] = True
    user = (body.get("metadata") or {}).get("user_id") \
        if isinstance(body.get("metadata"), dict) else None
    if isinstance(user, str):
        chat["user"] = user
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    return chat


# -- the response --------------------------------------------------------------------------

def tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI tool call as a ``tool_use`` block (arguments that are not a JSON object are
    kept under ``{"_raw": ...}`` rather than lost)."""
    fn = call.get("function") or {}
    raw = fn.get("arguments") or "{}"
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        args = {"_raw": raw}
    if not isinstance(args, dict):
        args = {"_raw": raw}
    return {"type": "tool_use", "id": call.get("id") or new_id("toolu_"),
            "name": fn.get("name") or "", "input": args}


def stop_reason(finish_reason: str | None, extra: Any, stops: list[str] | None
                ) -> tuple[str, str | None]:
    """(Anthropic ``stop_reason``, ``stop_sequence``) for an OpenAI finish reason; ``extra``
    is the choice's other fields (vLLM's ``stop_reason`` names the matched stop string)."""
    matched = extra.get("stop_reason") if hasattr(extra, "get") else None
    if finish_reason == "stop" and stops and isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return _STOP.get(finish_reason or "stop", "end_turn"), None


def message_object(completion: Completion, model: str, stops: list[str] | None = None,
                   message_id: str | None = None) -> dict[str, Any]:
    """The ``Message`` object of choice 0 of ``completion`` (see the module docstring)."""
    choice = completion.choices[0]
    content: list[dict[str, Any]] = []
    if choice.message.text:
        content.append({"type": "text", "text": choice.message.text})
    calls = choice.message.extra.get("tool_calls") or []
    content.extend(tool_use_block(c) for c in calls)
    reason, sequence = stop_reason(choice.finish_reason, choice.extra, stops)
    if calls and reason == "end_turn":
        reason = "tool_use"
    out = {"id": message_id or new_id("msg_"), "type": "message", "role": "assistant",
           "content": content, "model": model, "stop_reason": reason,
           "stop_sequence": sequence,
           "usage": {"input_tokens": completion.usage.prompt_tokens,
                     "output_tokens": completion.usage.completion_tokens}}
    for key, value in choice.extra.items():  # approach metadata (council_metadata, ...)
        if key.endswith("_metadata") or key.startswith("optillm"):
            out.setdefault(key, value)
    return out


def error_type(exc: OptillmError) -> tuple[str, int]:
    """(Anthropic error type, HTTP status) for one of our errors (module docstring)."""
    if exc.upstream_status in (503, 529) or exc.status in (503, 529):
        return "overloaded_error", 529
    return _ERROR_TYPES.get(exc.status, "api_error" if exc.status >= 500
                            else "invalid_request_error"), exc.status


def error_object(exc: OptillmError) -> tuple[dict[str, Any], int]:
    """``({"type": "error", "error": {"type", "message"}}, status)`` for ``exc``."""
    kind, status = error_type(exc)
    return {"type": "error", "error": {"type": kind, "message": exc.message}}, status
