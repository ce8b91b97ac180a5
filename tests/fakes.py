"""A scripted fake upstream for unit tests (after simonw/llm's ``MockModel``).

``enqueue(...)`` queues replies; each ``complete``/``stream`` call takes the next one (or a
matching rule's reply), and ``history`` records every request it received. Replies may be
texts, lists of texts (one per choice), ``Completion`` values, exceptions to raise, or
callables ``fn(request) -> reply``. ``delay`` seconds of simulated latency per call.

Text completions (``complete_text``) take their replies the same way, as if the prompt were one
user message (so ``when_contains`` matches prompts too), and are recorded in ``text_calls``;
``apply_template`` renders ``<|role|>text`` lines ending with ``<|assistant|>``. Pass
``text_completions=False`` / ``chat_template=False`` for an upstream that lacks them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from optillm.types import ChatRequest, Choice, Chunk, Completion, Message, Usage
from optillm.upstream.base import NO_META, CallMeta, RawResponse, Upstream


def words(text: str) -> int:
    return max(1, len(text.split()))


class FakeUpstream(Upstream):
    def __init__(self, default: Any = "ok", delay: float = 0.0, supports_n: bool = True,
                 count_all_choices: bool = True, max_n: int | None = None,
                 text_completions: bool = True, chat_template: bool = True):
        self.default = default
        self.text_completions = text_completions
        self.chat_template = chat_template
        self.text_calls: list[dict[str, Any]] = []  # {"prompt", "model", "params"}
        self.templates: list[tuple[Message, ...]] = []
        self.delay = delay
        self.supports_n = supports_n
        self.count_all_choices = count_all_choices
        self.max_n = max_n
        self.history: list[ChatRequest] = []
        self.metas: list[CallMeta] = []
        self.forwarded: list[bytes] = []
        self.rules: list[tuple[Callable[[ChatRequest], bool], Any]] = []
        self._queue: list[Any] = []
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.stream_closed = threading.Event()

    # -- scripting ------------------------------------------------------------------------

    def enqueue(self, *replies: Any) -> FakeUpstream:
        with self._lock:
            self._queue.extend(replies)
        return self

    def when(self, predicate: Callable[[ChatRequest], bool], reply: Any) -> FakeUpstream:
        """Answer requests matching ``predicate`` with ``reply`` (checked before the queue)."""
        self.rules.append((predicate, reply))
        return self

    def when_contains(self, text: str, reply: Any) -> FakeUpstream:
        return self.when(lambda r: any(text in m.text for m in r.messages), reply)

    def _next(self, request: ChatRequest) -> Any:
        for predicate, reply in self.rules:
            if predicate(request):
                return reply
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
        return self.default

    # -- the Upstream interface -------------------------------------------------------------

    def _reply(self, request: ChatRequest) -> Completion:
        reply = self._next(request)
        if callable(reply) and not isinstance(reply, type):
            reply = reply(request)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Completion):
            return reply
        n = request.n if self.supports_n else 1
        if self.max_n is not None and n > self.max_n:
            from optillm.errors import BadRequestError
            raise BadRequestError(f"upstream: Field 'n': Value must be between 1 <= value "
                                  f"<= {self.max_n}, but got {n}")
        texts = list(reply) if isinstance(reply, (list, tuple)) else [reply] * n
        texts = (texts * n)[:n] if len(texts) < n else texts[:n]
        prompt = sum(words(m.text) for m in request.messages)
        counts = [words(t) for t in texts]
        completion_tokens = sum(counts) if self.count_all_choices else counts[0]
        choices = []
        for i, t in enumerate(texts):
            logprobs = None
            if request.params.get("logprobs"):
                logprobs = {"content": [{"token": w, "logprob": -0.1, "bytes": None,
                                         "top_logprobs": []} for w in t.split() or [t]],
                            "refusal": None}
            choices.append(Choice(i, Message("assistant", t), "stop", logprobs))
        return Completion(tuple(choices), Usage(prompt, completion_tokens), model=request.model)

    def _enter(self) -> None:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def _leave(self) -> None:
        with self._lock:
            self.active -= 1

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        with self._lock:
            self.history.append(request)
            self.metas.append(meta)
        self._enter()
        try:
            if self.delay:
                time.sleep(self.delay)
            return self._reply(request)
        finally:
            self._leave()

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        with self._lock:
            self.history.append(request)
            self.metas.append(meta)
        completion = self._reply(request)  # raises before the stream starts, like the SDK
        return self._chunks(completion)

    def _chunks(self, completion: Completion) -> Iterator[Chunk]:
        try:
            text = completion.text
            pieces = [w + " " for w in text.split(" ")]
            pieces[-1] = pieces[-1][:-1]
            for piece in pieces:
                if self.delay:
                    time.sleep(self.delay / max(1, len(pieces)))
                yield Chunk(({"index": 0, "delta": {"content": piece},
                              "finish_reason": None},))
            yield Chunk(({"index": 0, "delta": {}, "finish_reason": "stop"},))
            yield Chunk((), usage=completion.usage)
        finally:
            self.stream_closed.set()

    def forward(self, body: bytes, meta: CallMeta = NO_META, stream: bool = False,
                model: str | None = None) -> RawResponse:
        with self._lock:
            self.forwarded.append(body)
            self.metas.append(meta)
        request = ChatRequest.from_body(json.loads(body))
        completion = self._reply(request)
        if not stream:
            data = json.dumps({**completion.to_dict(), "upstream_marker": True}).encode()
            return RawResponse(200, "application/json", iter((data,)))

        def sse() -> Iterator[bytes]:
            for chunk in self._chunks(completion):
                yield b"data: " + json.dumps({"object": "chat.completion.chunk",
                                              "choices": list(chunk.choices),
                                              "usage": chunk.usage.to_dict()
                                              if chunk.usage else None}).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return RawResponse(200, "text/event-stream", sse())

    def complete_text(self, prompt: str, model: str, params: Mapping[str, Any],
                      meta: CallMeta = NO_META) -> Completion:
        if not self.text_completions:
            return super().complete_text(prompt, model, params, meta)
        with self._lock:
            self.text_calls.append({"prompt": prompt, "model": model, "params": dict(params)})
            self.metas.append(meta)
        self._enter()
        try:
            if self.delay:
                time.sleep(self.delay)
            return self._reply(ChatRequest(model, (Message("user", prompt),),
                                           params=dict(params)))
        finally:
            self._leave()

    def apply_template(self, messages: Sequence[Message], model: str,
                       meta: CallMeta = NO_META) -> str:
        if not self.chat_template:
            return super().apply_template(messages, model, meta)
        with self._lock:
            self.templates.append(tuple(messages))
        return "".join(f"<|{m.role}|>{m.text}\n" for m in messages) + "<|assistant|>"

    def models(self, meta: CallMeta = NO_META) -> list[dict[str, Any]]:
        return [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]
