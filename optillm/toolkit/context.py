"""``RunContext``, the one argument an approach receives, and ``Answer``, what it returns.

The context holds the conversation (``messages``, ``system_prompt``, ``query``), the client's
parameters, the approach's typed ``options``, and the calls an approach makes:

- ``complete(messages, **params) -> Completion``: one upstream call.
- ``sample(k, messages, **params) -> list[str]``: k samples (one call with ``n`` where the
  upstream supports it, concurrent calls where not).
- ``map(fn, items) -> list``: bounded concurrent fan-out on the app's executor.
- ``stream(messages, **params) -> TraceStream``: a streamed call the approach may cut short.
- ``complete_text(prompt, **params) -> Completion``: a raw text completion (no chat template).
- ``emit(text)``: send the start of the answer to a streaming client now.
- ``apply_template(messages) -> str``, ``count_tokens(text) -> int``, ``capabilities``: what
  the upstream can tell about the model (its chat template, its tokenizer, what it serves).

The upstream stack, the call's ``CallMeta`` (the client's key) and the executor are private
(``RunContext._wiring``): an approach reaches the upstream only through these methods, so
every call is checked (cancellation, deadline, budget), counted and logged.

Every call's usage is added up here (``ctx.usage``); approaches never count tokens. A
request's ``Budget`` (body fields ``max_total_tokens`` and ``max_upstream_calls``) is shared by
every context of the request: once it is spent, the next upstream call raises
``BudgetExhausted``, which the expensive approaches catch to answer with what they have
(``ctx.budget.report()`` goes into their metadata as ``optillm_budget``). Internal
calls get the client's sampling parameters only (temperature, max_tokens, seed, ...); calls
made with ``answer=True`` (candidate answers) or ``final=True`` also get the answer-shaping
ones (``response_format``, ``tools``, ``logprobs``, ...). ``final=True`` marks the call whose
text the approach returns unchanged: when the client streams, that call is streamed to it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..concurrency import BoundedExecutor
from ..errors import BadRequestError, OptillmError, UpstreamTimeoutError
from ..settings import Settings
from ..types import (
    ChatRequest,
    Choice,
    Completion,
    Message,
    Usage,
    counted_usage,
)
from ..upstream.base import CallMeta, Capabilities, Upstream
from .budget import Budget, BudgetExhausted  # noqa: F401 - re-exported for approaches
from .trace import TraceStream

T = TypeVar("T")
R = TypeVar("R")

#: Client parameters that shape sampling; they apply to every upstream call of an approach.
SAMPLING_PARAMS = frozenset({
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens", "seed",
    "frequency_penalty", "presence_penalty", "repeat_penalty", "repetition_penalty",
    "chat_template_kwargs", "reasoning_effort", "user", "logit_bias", "typical_p"})

#: Parameters the proxy controls itself on upstream calls.
CONTROLLED_PARAMS = frozenset({"stream", "stream_options", "n"})


@dataclass(frozen=True)
class Answer:
    """What an approach returns for one choice.

    Attributes:
        text: the answer shown to the client.
        finish_reason: OpenAI's finish reason of the answer.
        reasoning: the full trace, returned instead of ``text`` with ``return_full_response``.
        metadata: extra fields on the choice (e.g. ``{"tts_metadata": {...}}``).
        message: a whole assistant message (tool calls, refusal) when the approach has one.
        logprobs: the choice's logprobs, where the answer is one upstream choice.
    """

    text: str
    finish_reason: str = "stop"
    reasoning: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    message: Message | None = None
    logprobs: Any = None


class Cancelled(OptillmError):
    """The client went away; the approach stops at its next upstream call."""

    status = 499
    type = "client_closed_request"


@dataclass(frozen=True)
class _Wiring:
    """What the pipeline hands a context and no algorithm touches: the upstream stack, the
    request's ``CallMeta`` (its id, the client's key, the call log) and the executor."""

    upstream: Upstream
    meta: CallMeta
    executor: BoundedExecutor


class RunContext:
    """Everything one approach run sees (see the module docstring)."""

    def __init__(self, *, request: ChatRequest, upstream: Upstream, executor: BoundedExecutor,
                 meta: CallMeta, options: Any = None, slug: str = "",
                 deadline: float | None = None, max_calls: int | None = None,
                 stream_sink: Callable[[str], None] | None = None,
                 cancelled: threading.Event | None = None, budget: Budget | None = None,
                 delegate: Callable[[str, ChatRequest], Any] | None = None,
                 settings: Settings | None = None):
        self.request = request
        self.model = request.model
        self.messages: tuple[Message, ...] = request.messages
        self.params: Mapping[str, Any] = {k: v for k, v in request.params.items()
                                          if k not in CONTROLLED_PARAMS}
        self.sampling: Mapping[str, Any] = {k: v for k, v in self.params.items()
                                            if k in SAMPLING_PARAMS}
        self.options = options
        self.slug = slug
        self._wiring = _Wiring(upstream, meta, executor)
        self.deadline = deadline
        self.max_calls = max_calls
        self.budget = budget or Budget()
        self._delegate = delegate
        #: The server's frozen settings: where plugins keep data (``data_path``), read configs
        #: (``config_path``), which private networks they may fetch (``private_networks``).
        #: Server policy, never taken from the request.
        self.settings = settings or Settings()
        self._sink = stream_sink
        self._cancelled = cancelled or threading.Event()
        self._lock = threading.Lock()
        self._usage = Usage()
        self._calls = 0
        self.streamed_text: str | None = None
        self._sent: list[str] = []

    # -- the conversation ---------------------------------------------------------------

    @property
    def system_prompt(self) -> str:
        """System and developer messages joined (empty when there are none)."""
        return "\n\n".join(m.text for m in self.messages if m.role in ("system", "developer"))

    @property
    def query(self) -> str:
        """The last user message's text."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text
        return ""

    def with_query(self, text: str) -> list[Message]:
        """The conversation with the last user message's text replaced by ``text``."""
        out = list(self.messages)
        for i in range(len(out) - 1, -1, -1):
            if out[i].role == "user":
                out[i] = Message("user", text, out[i].extra)
                return out
        return out + [Message("user", text)]

    def conversation(self, *extra: Message) -> list[Message]:
        """The whole conversation followed by ``extra`` messages."""
        return list(self.messages) + list(extra)

    # -- accounting -----------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        return self._usage

    @property
    def calls(self) -> int:
        return self._calls

    def add_usage(self, usage: Usage, calls: int = 1) -> None:
        with self._lock:
            self._usage = self._usage + usage
            self._calls += calls
        self.budget.spend(usage, calls)

    def budget_metadata(self) -> dict[str, Any]:
        """``{"optillm_budget": ...}`` when the request has a budget, else ``{}``."""
        return {"optillm_budget": self.budget.report()} if self.budget.bounded else {}

    def _check(self, reserve: bool = False) -> None:
        if self._cancelled.is_set():
            raise Cancelled("the client closed the request")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise UpstreamTimeoutError("the request's deadline passed before the approach "
                                       "finished")
        if self.max_calls is not None and self._calls >= self.max_calls:
            raise BadRequestError(f"approach {self.slug!r} exceeded its budget of "
                                  f"{self.max_calls} upstream calls", code="budget_exceeded")
        self.budget.check(self.slug, reserve=reserve)

    def _reserved(self) -> contextlib.AbstractContextManager:
        """Check before an upstream call and hold one call of the request's budget for it;
        a call that fails before it is charged gives the reservation back."""
        self._check(reserve=True)
        return _ReleaseOnError(self.budget)

    # -- streaming to the client ------------------------------------------------------------

    @property
    def streaming(self) -> bool:
        """True when the client streams and this run's answer goes to it as generated."""
        return self._sink is not None

    def emit(self, text: str) -> None:
        """Send ``text`` to a streaming client now, as the start of the answer (a trace
        prefix before a ``final=True`` call, say). The approach's returned answer must begin
        with everything emitted; without a streaming client this does nothing."""
        if self._sink is not None and text:
            self._sent.append(text)
            self._sink(text)

    @property
    def sent_text(self) -> str:
        """What already went to the client (``emit`` and the streamed final call)."""
        return "".join(self._sent)

    # -- upstream calls -------------------------------------------------------------------

    def build_request(self, messages: Iterable[Message] | None = None, *, n: int = 1,
                      answer: bool = False, model: str | None = None,
                      **params: Any) -> ChatRequest:
        """The upstream request for ``messages`` (default: the whole conversation) on
        ``model`` (default: the request's base model)."""
        merged = dict(self.params if answer else self.sampling)
        for k, v in params.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        msgs = tuple(self.messages if messages is None else messages)
        return ChatRequest(model=model or self.model, messages=msgs, n=n, params=merged)

    def complete(self, messages: Iterable[Message] | None = None, *, n: int = 1,
                 answer: bool = False, final: bool = False, model: str | None = None,
                 **params: Any) -> Completion:
        """One upstream call on ``model`` (default: the base model); its usage is added to
        ``ctx.usage``.

        ``params`` override the client's (None removes one). ``final=True``: this call's
        text ends the answer (after anything sent with ``emit``) and is returned unchanged;
        it is streamed to the client when the client streams.

        Raises: the ``optillm.errors`` types of the upstream stack; ``Cancelled``.
        """
        request = self.build_request(messages, n=n, answer=answer or final, model=model,
                                     **params)
        if final and n == 1 and self._sink is not None and self.streamed_text is None:
            return self._complete_streamed(request)
        return self.complete_request(request)

    def complete_request(self, request: ChatRequest) -> Completion:
        """One upstream call of a whole ``request`` (made with ``build_request``, say); its
        usage is added to ``ctx.usage``. Never streamed to the client.

        Raises: the ``optillm.errors`` types of the upstream stack; ``Cancelled``.
        """
        with self._reserved():
            completion = self._wiring.upstream.complete(request, self._wiring.meta)
        self.add_usage(counted_usage(completion))
        return completion

    def _complete_streamed(self, request: ChatRequest) -> Completion:
        parts: list[str] = []
        usage = None
        finish = "stop"
        logprobs: list = []
        calls: dict[int, dict[str, Any]] = {}  # streamed tool calls, by their index
        self.streamed_text = ""
        with self._reserved():  # charged in the finally below once the stream has begun
            chunks = self._wiring.upstream.stream(request, self._wiring.meta)
        try:
            for chunk in chunks:
                if chunk.usage is not None:
                    usage = chunk.usage
                for c in chunk.choices:
                    if c.get("finish_reason"):
                        finish = c["finish_reason"]
                    if (c.get("logprobs") or {}).get("content"):
                        logprobs.extend(c["logprobs"]["content"])
                    add_tool_call_deltas(calls, (c.get("delta") or {}).get("tool_calls"))
                text = chunk.content
                if text:
                    parts.append(text)
                    self._sent.append(text)
                    self._sink(text)  # raises Cancelled when the client went away
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
            self.streamed_text = "".join(parts)
            usage = counted_usage(Completion((Choice(0, Message("assistant",
                                                               self.streamed_text)),),
                                             usage or Usage()))
            self.add_usage(usage)
        extra = {"tool_calls": [calls[i] for i in sorted(calls)]} if calls else {}
        choice = Choice(0, Message("assistant", self.streamed_text or (None if calls else ""),
                                   extra), finish,
                        {"content": logprobs, "refusal": None} if logprobs else None)
        return Completion((choice,), usage, model=self.model)

    def complete_text(self, prompt: str, *, model: str | None = None,
                      **params: Any) -> Completion:
        """One text completion of a raw ``prompt`` (no chat template; the upstream's
        ``/v1/completions``) on ``model`` (default: the context's); its usage is added to
        ``ctx.usage``. Gets the client's sampling parameters; ``params`` override them (None
        removes one). The generated text is the completion's ``text``.

        Raises: ``CapabilityError`` (400) when the upstream serves no text completions; the
        ``optillm.errors`` types of the upstream stack; ``Cancelled``.
        """
        reservation = self._reserved()
        merged = dict(self.sampling)
        for k, v in params.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        with reservation:
            completion = self._wiring.upstream.complete_text(prompt, model or self.model,
                                                             merged, self._wiring.meta)
        self.add_usage(counted_usage(completion))
        return completion

    def stream(self, messages: Iterable[Message] | None = None, *, answer: bool = True,
               prompt_tokens: int | None = None, **params: Any) -> TraceStream:
        """One streamed upstream call the approach reads chunk by chunk and may cut short.

        Use it as a context manager (or call ``close()``): closing stops the upstream's
        generation and adds the call's usage to ``ctx.usage`` (the upstream's usage chunk
        when it came; else ``prompt_tokens`` and the tokens received, counted exactly from
        the logprobs entries when ``logprobs`` was requested).
        """
        with self._reserved():
            request = self.build_request(messages, answer=answer, **params)
            chunks = self._wiring.upstream.stream(request, self._wiring.meta)
        return TraceStream(self, chunks, prompt_tokens)  # charged when it closes

    def sample(self, k: int, messages: Iterable[Message] | None = None, *,
               answer: bool = True, **params: Any) -> list[str]:
        """``k`` sampled texts for ``messages`` (one call with ``n=k``; the upstream stack
        emulates ``n`` with concurrent calls where the upstream lacks it)."""
        if k < 1:
            return []
        completion = self.complete(messages, n=k, answer=answer, **params)
        return completion.texts[:k]

    def run_approach(self, slug: str, messages: Iterable[Message] | None = None, *,
                     options: Mapping[str, Any] | None = None,
                     params: Mapping[str, Any] | None = None) -> Answer:
        """Run another registered approach on this request (``messages`` default: this
        conversation) and return its first choice as an ``Answer``. It reads its options from
        the same request body (``options`` / ``params``: defaults below the body's option and
        sampling fields, e.g. a learned router table's choice), shares the request's budget,
        and its usage is added to the request's total by the pipeline (not to ``ctx.usage``).
        Used by routers and composite strategies.

        Raises: NotFoundError for an unknown slug; whatever the approach raises.
        """
        if self._delegate is None:
            raise OptillmError("run_approach needs a context made by the pipeline")
        self._check()
        request = self.request if messages is None else self.request.replace(
            messages=tuple(messages))
        if params:
            request = request.replace(params={**params, **request.params})
        choice = self._delegate(slug, request.replace(n=1), dict(options or {}))
        return Answer(choice.message.text, finish_reason=choice.finish_reason or "stop",
                      metadata=dict(choice.extra or {}), logprobs=choice.logprobs)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]`` concurrently on the app's bounded executor."""
        return self._wiring.executor.map(fn, items)

    # -- what the upstream knows about the model --------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        """What the upstream serves (``n``, ``logprobs``, ...; None: not known yet)."""
        return self._wiring.upstream.capabilities

    def apply_template(self, messages: Iterable[Message] | None = None, *,
                       model: str | None = None) -> str:
        """``messages`` (default: the conversation) rendered with ``model``'s (default: the
        base model's) chat template as one raw prompt, ending with the generation prompt.

        Raises: ``CapabilityError`` when the upstream cannot render templates; ``Cancelled``.
        """
        self._check()
        msgs = list(self.messages if messages is None else messages)
        return self._wiring.upstream.apply_template(msgs, model or self.model,
                                                    self._wiring.meta)

    def count_tokens(self, text: str, *, model: str | None = None) -> int:
        """How many tokens ``text`` is in ``model``'s (default: the base model's) tokenizer,
        counted by the upstream (llama-server's ``POST /tokenize``). Costs no budget.

        Raises: ``CapabilityError`` when the upstream cannot count tokens (an approach that
        can do with an estimate catches it); the ``optillm.errors`` types of a failed call.
        """
        return self._wiring.upstream.count_tokens(text, model or self.model, self._wiring.meta)


def add_tool_call_deltas(calls: dict[int, dict[str, Any]], deltas: Any) -> None:
    """Fold a stream chunk's ``delta.tool_calls`` pieces into whole tool calls (``calls``, by
    index): the id, type and name as they come, the arguments concatenated."""
    if not isinstance(deltas, list):
        return
    for piece in deltas:
        if not isinstance(piece, dict):
            continue
        call = calls.setdefault(int(piece.get("index") or 0),
                                {"id": "", "type": "function",
                                 "function": {"name": "", "arguments": ""}})
        if piece.get("id"):
            call["id"] = piece["id"]
        if piece.get("type"):
            call["type"] = piece["type"]
        function = piece.get("function") or {}
        if function.get("name"):
            call["function"]["name"] = function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]


class _ReleaseOnError:
    """``with``: on an exception, give the budget's reservation back (no call was charged)."""

    def __init__(self, budget: Budget):
        self.budget = budget

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None:
            self.budget.release()

