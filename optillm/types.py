"""Typed values that travel through the proxy: requests, messages, completions, chunks, usage,
and the ``Plan`` a request runs.

JSON dicts exist only at the edges (``from_body`` / ``to_dict``). Request fields we do not model
are kept in ``ChatRequest.params`` and passed to the upstream unchanged, so ``tools``,
``response_format``, ``seed``, ``top_k``, ``chat_template_kwargs`` and anything newer survive.
Shapes follow OpenAI's OpenAPI description (``CreateChatCompletionRequest``,
``CreateChatCompletionResponse``, ``CreateChatCompletionStreamResponse``, ``CompletionUsage``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import BadRequestError

#: Upper bound of ``n`` accepted from a client (OpenAI's own limit is 128).
MAX_N = 128

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}


def new_id(prefix: str = "chatcmpl-") -> str:
    """``prefix`` and 24 random hex digits (96 bits)."""
    return prefix + os.urandom(12).hex()


@dataclass(frozen=True)
class Message:
    """One chat message. ``content`` is a string, a list of content parts, or None (tool calls).

    ``extra`` holds the other fields (``name``, ``tool_calls``, ``tool_call_id``, ...).
    """

    role: str
    content: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The message's text: the string content, or its text parts joined by newlines."""
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "\n".join(p.get("text", "") for p in self.content
                             if isinstance(p, dict) and p.get("type") == "text")
        return ""

    @classmethod
    def from_dict(cls, d: Any, index: int = 0) -> Message:
        param = f"messages[{index}]"
        if not isinstance(d, dict):
            raise BadRequestError(f"{param} must be an object", param=param)
        role = d.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise BadRequestError(f"{param}.role must be one of {sorted(_ROLES)}",
                                  param=f"{param}.role")
        content = d.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise BadRequestError(f"{param}.content must be a string or an array of parts",
                                  param=f"{param}.content")
        extra = {k: v for k, v in d.items() if k not in ("role", "content")}
        return cls(role=role, content=content, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        d = {"role": self.role, "content": self.content}
        d.update(self.extra)
        return d


@dataclass(frozen=True)
class ChatRequest:
    """A chat completion request: model, messages, ``n``, ``stream`` and every other field.

    ``params`` are the remaining body fields, forwarded upstream as they are.
    """

    model: str
    messages: tuple[Message, ...]
    n: int = 1
    stream: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def check_envelope(body: Any) -> tuple[str, int, bool]:
        """The passthrough's cheap check: ``(model, n, stream)`` of a body whose top-level
        fields are valid; the messages' contents are left to the upstream.

        Raises:
            BadRequestError: as ``from_body`` does for the top-level fields.
        """
        if not isinstance(body, dict):
            raise BadRequestError("request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequestError("'model' is required and must be a non-empty string",
                                  param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequestError("'messages' is required and must be a non-empty array",
                                  param="messages")
        n = body.get("n", 1)
        if n is None:
            n = 1
        if isinstance(n, bool) or not isinstance(n, int):
            raise BadRequestError("'n' must be an integer", param="n")
        if not 1 <= n <= MAX_N:
            raise BadRequestError(f"'n' must be between 1 and {MAX_N}, got {n}", param="n",
                                  code="integer_out_of_range")
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise BadRequestError("'stream' must be a boolean", param="stream")
        return model, n, stream

    @classmethod
    def from_body(cls, body: Any) -> ChatRequest:
        """Validate a decoded JSON body.

        Raises:
            BadRequestError: the body is not an object, or ``model``/``messages``/``n``/
                ``stream`` are missing or of the wrong type or range.
        """
        model, n, stream = cls.check_envelope(body)
        messages = tuple(Message.from_dict(m, i) for i, m in enumerate(body["messages"]))
        for key, kind in (("temperature", (int, float)), ("top_p", (int, float)),
                          ("max_tokens", int), ("max_completion_tokens", int)):
            value = body.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
                raise BadRequestError(f"'{key}' must be a number", param=key)
        params = {k: v for k, v in body.items() if k not in ("model", "messages", "n", "stream")}
        return cls(model=model, messages=messages, n=n, stream=stream, params=params)

    def to_body(self) -> dict[str, Any]:
        """The JSON body for an upstream call (``n`` and ``stream`` only when not default)."""
        body: dict[str, Any] = {"model": self.model,
                                "messages": [m.to_dict() for m in self.messages]}
        body.update(self.params)
        if self.n != 1:
            body["n"] = self.n
        if self.stream:
            body["stream"] = True
        return body

    def replace(self, **changes: Any) -> ChatRequest:
        return dataclasses.replace(self, **changes)

    def with_params(self, **params: Any) -> ChatRequest:
        """A copy with ``params`` updated; a value of None removes that field."""
        merged = dict(self.params)
        for k, v in params.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        return dataclasses.replace(self, params=merged)


@dataclass(frozen=True)
class Usage:
    """Token counts (``CompletionUsage``); ``total_tokens`` is derived.

    ``reasoning_tokens`` is the part of ``completion_tokens`` spent thinking
    (``completion_tokens_details.reasoning_tokens``): the upstream's own figure when it reports
    one, else an estimate from the ``<think>...</think>`` spans of the answer text
    (``reasoning_share``); 0 when there is no thinking. Sums add it like the other counts.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens,
                     self.reasoning_tokens + other.reasoning_tokens)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, texts: Iterable[str] = ()) -> Usage:
        """A ``CompletionUsage`` dict as ``Usage``; without the upstream's reasoning figure,
        the thinking share of ``texts`` (the choices' contents) is estimated."""
        if not d:
            return cls()
        completion = int(d.get("completion_tokens") or 0)
        details = d.get("completion_tokens_details")
        reported = details.get("reasoning_tokens") if isinstance(details, Mapping) else None
        if reported is not None:
            reasoning = int(reported or 0)
        else:
            reasoning = reasoning_share(texts, completion)
        return cls(int(d.get("prompt_tokens") or 0), completion, reasoning)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens,
                "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens}}


_THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.DOTALL)


def thinking_text(text: str) -> str:
    """The text inside ``<think>...</think>`` spans (an unclosed span runs to the end)."""
    if "<think>" not in text:
        return ""
    return "".join(m.group(1) for m in _THINK.finditer(text))


def reasoning_share(texts: Iterable[str], completion_tokens: int) -> int:
    """Estimated thinking tokens among ``completion_tokens`` generated as ``texts``: the
    tokens, in proportion to characters, that fall inside ``<think>`` spans (tags included).
    Exact where no text thinks (0); never above ``completion_tokens``."""
    total = thinking = 0
    for text in texts:
        if not isinstance(text, str) or not text:
            continue
        total += len(text)
        inner = thinking_text(text)
        if inner:  # the tags are generated tokens of the thinking too
            thinking += len(inner) + len("<think>") * text.count("<think>") \
                + len("</think>") * text.count("</think>")
    if not total or not thinking:
        return 0
    return min(completion_tokens, round(completion_tokens * min(thinking, total) / total))


def generated_text(message: Message) -> str:
    """What the model generated for ``message``: its content, with a separate
    ``reasoning_content`` (llama-server, DeepSeek, vLLM reasoning parsers) as a ``<think>``
    span in front, so ``reasoning_share`` sees both."""
    text = message.text
    thought = message.extra.get("reasoning_content") if message.extra else None
    if isinstance(thought, str) and thought:
        return f"<think>{thought}</think>{text or ''}"
    return text or ""


@dataclass(frozen=True)
class Choice:
    """One choice of a completion. ``extra`` carries fields beyond OpenAI's (``tts_metadata``)."""

    index: int
    message: Message
    finish_reason: str | None = "stop"
    logprobs: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.message.text

    def to_dict(self) -> dict[str, Any]:
        message = self.message.to_dict()
        message.setdefault("refusal", None)
        logprobs = self.logprobs
        if isinstance(logprobs, dict) and ("content" not in logprobs
                                           or "refusal" not in logprobs):
            logprobs = {"content": None, "refusal": None, **logprobs}
        d = {"index": self.index, "message": message,
             "logprobs": logprobs, "finish_reason": self.finish_reason}
        d.update(self.extra)
        return d


@dataclass(frozen=True)
class Completion:
    """A chat completion (``CreateChatCompletionResponse``)."""

    choices: tuple[Choice, ...]
    usage: Usage = Usage()
    model: str = ""
    id: str = field(default_factory=new_id)
    created: int = field(default_factory=lambda: int(time.time()))
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.choices[0].text if self.choices else ""

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.choices]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Completion:
        choices = []
        for i, c in enumerate(d.get("choices") or []):
            msg = c.get("message") or {}
            extra = {k: v for k, v in msg.items() if k not in ("role", "content")}
            choices.append(Choice(
                index=c.get("index", i),
                message=Message(msg.get("role") or "assistant", msg.get("content"), extra),
                finish_reason=c.get("finish_reason"),
                logprobs=c.get("logprobs"),
                extra={k: v for k, v in c.items()
                       if k not in ("index", "message", "finish_reason", "logprobs")}))
        known = ("id", "object", "created", "model", "choices", "usage")
        texts = [generated_text(c.message) for c in choices]
        return cls(choices=tuple(choices), usage=Usage.from_dict(d.get("usage"), texts),
                   model=d.get("model") or "", id=d.get("id") or new_id(),
                   created=int(d.get("created") or time.time()),
                   extra={k: v for k, v in d.items() if k not in known})

    def replace(self, **changes: Any) -> Completion:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "object": "chat.completion",
                             "created": self.created, "model": self.model,
                             "choices": [c.to_dict() for c in self.choices],
                             "usage": self.usage.to_dict()}
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d


def counted_usage(completion: Completion) -> Usage:
    """``completion.usage`` with its thinking counted: the upstream's reasoning figure when it
    gave one, else the ``<think>`` share of the choices' texts (``reasoning_share``)."""
    usage = completion.usage
    if usage.reasoning_tokens:
        return usage
    share = reasoning_share([generated_text(c.message) for c in completion.choices],
                            usage.completion_tokens)
    return Usage(usage.prompt_tokens, usage.completion_tokens, share) if share else usage


@dataclass(frozen=True)
class Chunk:
    """One streamed chunk (``CreateChatCompletionStreamResponse``) as the upstream sent it.

    ``choices`` are dicts with ``index``, ``delta``, ``finish_reason`` (and ``logprobs``);
    ``usage`` is set on the final usage chunk only.
    """

    choices: tuple[Mapping[str, Any], ...]
    usage: Usage | None = None
    model: str = ""
    id: str = ""
    created: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Chunk:
        usage = d.get("usage")
        return cls(choices=tuple(d.get("choices") or ()),
                   usage=Usage.from_dict(usage) if usage else None,
                   model=d.get("model") or "", id=d.get("id") or "",
                   created=int(d.get("created") or 0))

    @property
    def content(self) -> str:
        """Content text of choice 0's delta in this chunk."""
        for c in self.choices:
            if c.get("index", 0) == 0:
                return (c.get("delta") or {}).get("content") or ""
        return ""


#: A plan's operators: one approach, a chain (``a&b``), branches (``a|b``).
SINGLE, SEQUENCE, PARALLEL = "single", "sequence", "parallel"


@dataclass(frozen=True)
class Plan:
    """What to run for a request (decided by ``optillm.plan.planner``).

    ``op`` is ``SINGLE``, ``SEQUENCE`` or ``PARALLEL``; ``slugs`` the approaches (one entry
    for ``SINGLE``); ``model`` the upstream's model. ``options`` carries values a model-name
    form implies (``x-wait-6`` -> ``{"wait_rounds": 6}``); request body fields override them.
    """

    op: str
    slugs: tuple[str, ...]
    model: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_passthrough(self) -> bool:
        return self.op == SINGLE and self.slugs == ("none",)

    @property
    def label(self) -> str:
        joiner = "&" if self.op == SEQUENCE else "|"
        return joiner.join(self.slugs)
