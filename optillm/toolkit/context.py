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

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..concurrency import BoundedExecutor
from ..errors import BadRequestError, OptillmError, UpstreamTimeoutError
from ..settings import Settings
from ..types import ChatRequest, Choice, Completion, Message, Usage
from ..upstream.base import CallMeta, Upstream

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


class BudgetExhausted(OptillmError):
    """The request's budget (``max_total_tokens`` / ``max_upstream_calls``) is spent. An
    approach that can answer with what it has catches it; otherwise it reaches the client as
    a 400 with code ``budget_exceeded``."""

    status = 400
    type = "invalid_request_error"
    code = "budget_exceeded"


class Budget:
    """A per-request bound on upstream work, shared by every ``RunContext`` of the request.

    ``max_total_tokens`` bounds prompt + completion tokens summed over every upstream call;
    ``max_upstream_calls`` bounds their number (a call with ``n`` counts once). None means
    unbounded. Thread-safe; one per request, never shared between requests.
    """

    def __init__(self, max_total_tokens: int | None = None,
                 max_upstream_calls: int | None = None):
        self.max_total_tokens = max_total_tokens
        self.max_upstream_calls = max_upstream_calls
        self._lock = threading.Lock()
        self.tokens = 0
        self.calls = 0
        self.stopped_early = False

    @property
    def bounded(self) -> bool:
        return self.max_total_tokens is not None or self.max_upstream_calls is not None

    def spend(self, usage: Usage, calls: int = 1) -> None:
        with self._lock:
            self.tokens += usage.total_tokens
            self.calls += calls

    @property
    def exhausted(self) -> bool:
        """True once either bound is reached."""
        return ((self.max_total_tokens is not None and self.tokens >= self.max_total_tokens)
                or (self.max_upstream_calls is not None
                    and self.calls >= self.max_upstream_calls))

    @property
    def tokens_left(self) -> int | None:
        if self.max_total_tokens is None:
            return None
        return max(0, self.max_total_tokens - self.tokens)

    @property
    def calls_left(self) -> int | None:
        if self.max_upstream_calls is None:
            return None
        return max(0, self.max_upstream_calls - self.calls)

    def check(self, slug: str) -> None:
        """Raises: BudgetExhausted (and marks the run as stopped early) once spent."""
        if self.exhausted:
            self.stopped_early = True
            raise BudgetExhausted(
                f"approach {slug!r} spent the request's budget "
                f"({self.tokens} of {self.max_total_tokens} tokens, {self.calls} of "
                f"{self.max_upstream_calls} calls)")

    def report(self) -> dict[str, Any]:
        """``{"max_total_tokens", "max_upstream_calls", "tokens", "calls", "stopped_early"}``."""
        return {"max_total_tokens": self.max_total_tokens,
                "max_upstream_calls": self.max_upstream_calls,
                "tokens": self.tokens, "calls": self.calls,
                "stopped_early": self.stopped_early}


class Cancelled(OptillmError):
    """The client went away; the approach stops at its next upstream call."""

    status = 499
    type = "client_closed_request"


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
        self.meta = meta
        self.upstream = upstream
        self.executor = executor
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

    def _check(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled("the client closed the request")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise UpstreamTimeoutError("the request's deadline passed before the approach "
                                       "finished")
        if self.max_calls is not None and self._calls >= self.max_calls:
            raise BadRequestError(f"approach {self.slug!r} exceeded its budget of "
                                  f"{self.max_calls} upstream calls", code="budget_exceeded")
        self.budget.check(self.slug)

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
        self._check()
        request = self.build_request(messages, n=n, answer=answer or final, model=model,
                                     **params)
        if final and n == 1 and self._sink is not None and self.streamed_text is None:
            return self._complete_streamed(request)
        completion = self.upstream.complete(request, self.meta)
        self.add_usage(completion.usage)
        return completion

    def _complete_streamed(self, request: ChatRequest) -> Completion:
        parts: list[str] = []
        usage = None
        finish = "stop"
        logprobs: list = []
        self.streamed_text = ""
        chunks = self.upstream.stream(request, self.meta)
        try:
            for chunk in chunks:
                if chunk.usage is not None:
                    usage = chunk.usage
                for c in chunk.choices:
                    if c.get("finish_reason"):
                        finish = c["finish_reason"]
                    if (c.get("logprobs") or {}).get("content"):
                        logprobs.extend(c["logprobs"]["content"])
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
            self.add_usage(usage or Usage())
        choice = Choice(0, Message("assistant", self.streamed_text), finish,
                        {"content": logprobs, "refusal": None} if logprobs else None)
        return Completion((choice,), usage or Usage(), model=self.model)

    def complete_text(self, prompt: str, *, model: str | None = None,
                      **params: Any) -> Completion:
        """One text completion of a raw ``prompt`` (no chat template; the upstream's
        ``/v1/completions``) on ``model`` (default: the context's); its usage is added to
        ``ctx.usage``. Gets the client's sampling parameters; ``params`` override them (None
        removes one). The generated text is the completion's ``text``.

        Raises: ``CapabilityError`` (400) when the upstream serves no text completions; the
        ``optillm.errors`` types of the upstream stack; ``Cancelled``.
        """
        self._check()
        merged = dict(self.sampling)
        for k, v in params.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        completion = self.upstream.complete_text(prompt, model or self.model, merged, self.meta)
        self.add_usage(completion.usage)
        return completion

    def stream(self, messages: Iterable[Message] | None = None, *, answer: bool = True,
               prompt_tokens: int | None = None, **params: Any) -> TraceStream:
        """One streamed upstream call the approach reads chunk by chunk and may cut short.

        Use it as a context manager (or call ``close()``): closing stops the upstream's
        generation and adds the call's usage to ``ctx.usage`` (the upstream's usage chunk
        when it came; else ``prompt_tokens`` and the tokens received, counted exactly from
        the logprobs entries when ``logprobs`` was requested).
        """
        self._check()
        request = self.build_request(messages, answer=answer, **params)
        return TraceStream(self, self.upstream.stream(request, self.meta), prompt_tokens)

    def sample(self, k: int, messages: Iterable[Message] | None = None, *,
               answer: bool = True, **params: Any) -> list[str]:
        """``k`` sampled texts for ``messages`` (one call with ``n=k``; the upstream stack
        emulates ``n`` with concurrent calls where the upstream lacks it)."""
        if k < 1:
            return []
        completion = self.complete(messages, n=k, answer=answer, **params)
        return completion.texts[:k]

    def run_approach(self, slug: str, messages: Iterable[Message] | None = None) -> Answer:
        """Run another registered approach on this request (``messages`` default: this
        conversation) and return its first choice as an ``Answer``. It reads its options from
        the same request body, shares the request's budget, and its usage is added to the
        request's total by the pipeline (not to ``ctx.usage``). Used by routers and
        composite strategies.

        Raises: NotFoundError for an unknown slug; whatever the approach raises.
        """
        if self._delegate is None:
            raise OptillmError("run_approach needs a context made by the pipeline")
        self._check()
        request = self.request if messages is None else self.request.replace(
            messages=tuple(messages))
        choice = self._delegate(slug, request.replace(n=1))
        return Answer(choice.message.text, finish_reason=choice.finish_reason or "stop",
                      metadata=dict(choice.extra or {}), logprobs=choice.logprobs)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``[fn(x) for x in items]`` concurrently on the app's bounded executor."""
        return self.executor.map(fn, items)


class TraceStream:
    """A streamed call under an approach's control (see ``RunContext.stream``).

    Iterating yields ``Chunk`` values; ``text``, ``logprobs`` (the token entries received so
    far), ``finish_reason`` and ``cut`` (closed before the upstream finished) describe it.
    """

    def __init__(self, ctx: RunContext, chunks, prompt_tokens: int | None):
        self._ctx = ctx
        self._chunks = chunks
        self._prompt_tokens = prompt_tokens
        self._parts: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._content_chunks = 0
        self._closed = False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def cut(self) -> bool:
        return self._closed and self.finish_reason is None

    def __iter__(self):
        for chunk in self._chunks:
            if chunk.usage is not None:
                self.usage = chunk.usage
            for c in chunk.choices:
                if c.get("finish_reason"):
                    self.finish_reason = c["finish_reason"]
                entries = (c.get("logprobs") or {}).get("content")
                if entries:
                    self.logprobs.extend(entries)
            text = chunk.content
            if text:
                self._parts.append(text)
                self._content_chunks += 1
            yield chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._chunks, "close", None)
        if close:
            close()
        usage = self.usage
        if usage is None:
            generated = len(self.logprobs) if self.logprobs else self._content_chunks
            usage = Usage(self._prompt_tokens or 0, generated)
        self.usage = usage
        self._ctx.add_usage(usage)

    def __enter__(self) -> TraceStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
