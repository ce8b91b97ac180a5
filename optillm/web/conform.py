"""What the face adds to an upstream's answer bytes so they match OpenAI's schema and carry
``usage.completion_tokens_details.reasoning_tokens`` (the passthrough relays bytes unparsed).

- ``conform_completion(data)``: a chat completion body; untouched when it already conforms.
- ``with_reasoning_usage(chunks)``: a relayed SSE stream; only its usage event is rewritten,
  with the thinking share of the deltas before it (``types.reasoning_share``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from ..types import Message, generated_text, reasoning_share

_loads = orjson.loads
_dumps = orjson.dumps


def conform_completion(data: bytes) -> bytes:
    """The upstream's chat completion bytes, unchanged when they have the fields OpenAI's
    schema requires and ``usage.completion_tokens_details.reasoning_tokens``; else with
    ``choices[].logprobs`` and ``message.refusal`` added as null (llama-server leaves both
    out) and the reasoning figure added (``types.reasoning_share`` of the choices' thinking).
    Costs three substring searches on conforming bodies."""
    if b'"logprobs"' in data and b'"refusal"' in data and (
            b'"reasoning_tokens"' in data or b'"usage"' not in data):
        return data
    try:
        parsed = _loads(data)
    except ValueError:
        return data
    choices = parsed.get("choices") if isinstance(parsed, dict) else None
    if not isinstance(choices, list):
        return data
    for choice in choices:
        if isinstance(choice, dict):
            choice.setdefault("logprobs", None)
            if isinstance(choice.get("message"), dict):
                choice["message"].setdefault("refusal", None)
    add_reasoning_tokens(parsed.get("usage"), [c.get("message") for c in choices
                                               if isinstance(c, dict)],
                         thinks=b"<think>" in data or b'"reasoning_content"' in data)
    return _dumps(parsed)


def add_reasoning_tokens(usage: Any, messages: list[Any], thinks: bool = True) -> None:
    """Give an upstream ``usage`` dict ``completion_tokens_details.reasoning_tokens`` when it
    has none: the thinking share of ``messages`` (message or delta dicts), else 0.
    ``thinks=False``: the caller knows no message thinks (0 without measuring)."""
    if not isinstance(usage, dict):
        return
    details = usage.get("completion_tokens_details")
    if not isinstance(details, dict):
        details = usage["completion_tokens_details"] = {}
    if details.get("reasoning_tokens") is None and not thinks:
        details["reasoning_tokens"] = 0  # nothing thought: exact, and no texts to measure
    elif details.get("reasoning_tokens") is None:
        texts = [generated_text(Message("assistant", m.get("content"), m))
                 for m in messages if isinstance(m, dict)]
        details["reasoning_tokens"] = reasoning_share(texts,
                                                      int(usage.get("completion_tokens") or 0))


def with_reasoning_usage(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` of an SSE chat completion stream, re-cut at event boundaries, with
    ``completion_tokens_details.reasoning_tokens`` added to the usage event when the upstream
    left it out. Every other event passes byte for byte. Used only when the client asked for
    ``stream_options.include_usage`` (it parses each content event to see the thinking)."""
    content: list[str] = []
    thought: list[str] = []
    pending = b""
    for block in chunks:
        pending += block
        while True:
            end = pending.find(b"\n\n")
            if end < 0:
                break
            raw, pending = pending[:end + 2], pending[end + 2:]
            yield _fixed(raw, content, thought)
    if pending:
        yield pending


def _fixed(raw: bytes, content: list[str], thought: list[str]) -> bytes:
    if not raw.startswith(b"data: {"):
        return raw
    has_usage = b'"usage"' in raw and b'"reasoning_tokens"' not in raw
    if not has_usage and b'"content"' not in raw:
        return raw
    try:
        data: Any = _loads(raw[6:])
    except ValueError:
        return raw
    for choice in data.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict):
            if isinstance(delta.get("content"), str):
                content.append(delta["content"])
            if isinstance(delta.get("reasoning_content"), str):
                thought.append(delta["reasoning_content"])
    usage = data.get("usage")
    if not has_usage or not isinstance(usage, dict):
        return raw
    add_reasoning_tokens(usage, [{"content": "".join(content),
                                  "reasoning_content": "".join(thought) or None}])
    return b"data: " + _dumps(data) + b"\n\n"
