"""``n`` handling: emulation where the upstream lacks it, and exact usage where it misreports.

Some upstreams refuse ``n`` (a 400 naming it), some ignore it (one choice back), some serve
fewer choices than asked (llama-server: at most its ``-np`` slots). ``ChoicesUpstream`` fills
the missing choices with concurrent single calls and remembers what it found out.

llama-server answers an ``n > 1`` call with the token count of one choice only in
``usage.completion_tokens``. Until an upstream has shown that it counts all choices, ``n > 1``
calls ask for ``logprobs`` (one entry per generated token, so exact per-choice counts) and drop
them again when the client did not ask for them; a reported count below their sum is replaced
by the sum. An upstream that refuses ``logprobs`` is taken at its word.
"""

from __future__ import annotations

import re
import threading

from ..concurrency import BoundedExecutor
from ..errors import BadRequestError
from ..types import ChatRequest, Choice, Completion, Usage, generated_text, reasoning_share
from .base import NO_META, CallMeta, UpstreamWrapper

_BOUND = re.compile(r"(?:<=|at most|maximum(?: of| is)?|max(?:imum)?\s*[:=]?|up to)\s*(\d+)",
                    re.IGNORECASE)


def _mentions_n(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in ("'n'", '"n"', "`n`", " n ", "n must",
                                                "parameter n", "field n"))


def _bound(message: str) -> int:
    """The largest ``n`` an upstream's refusal names ("between 1 <= value <= 4"), else 1."""
    found = [int(m) for m in _BOUND.findall(message)]
    return max(1, min(found)) if found else 1


class ChoicesUpstream(UpstreamWrapper):
    """Guarantees ``n`` choices and exact usage for ``complete`` calls with ``n > 1``.

    ``max_n`` is what the upstream serves in one call (None until found out); larger ``n``
    is split into concurrent calls of at most ``max_n`` choices.
    """

    def __init__(self, inner, executor: BoundedExecutor):
        super().__init__(inner)
        self.executor = executor
        self._lock = threading.Lock()
        self.max_n: int | None = None
        self.counts_one_choice: bool | None = None  # llama-server style usage under-report

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        if request.n <= 1:
            return self.inner.complete(request, meta)
        if self.max_n is not None and request.n > self.max_n:
            return self._split(request, meta)
        try:
            completion = self._native(request, meta)
        except BadRequestError as exc:
            if not _mentions_n(exc.message):
                raise
            with self._lock:
                self.max_n = min(_bound(exc.message), request.n - 1)
            return self._split(request, meta)
        got = len(completion.choices)
        if got >= request.n:
            return completion.replace(choices=completion.choices[:request.n])
        with self._lock:  # it ignored n (or served fewer): remember what it serves
            self.max_n = max(1, got)
        rest = self._split(request.replace(n=request.n - got), meta)
        return _merge([completion, rest])

    def _native(self, request: ChatRequest, meta: CallMeta) -> Completion:
        """One call with ``n``; asks for logprobs to count each choice's tokens until the
        upstream has shown that its usage counts all choices."""
        wants_logprobs = bool(request.params.get("logprobs"))
        probe = request
        if self.counts_one_choice is not False and not wants_logprobs:
            probe = request.with_params(logprobs=True)
        try:
            completion = self.inner.complete(probe, meta)
        except BadRequestError as exc:
            if probe is request or "logprob" not in exc.message.lower():
                raise
            with self._lock:
                self.counts_one_choice = False  # cannot check; trust its usage
            probe = request
            completion = self.inner.complete(request, meta)
        return self._fix_usage(completion, drop_logprobs=probe is not request)

    def _split(self, request: ChatRequest, meta: CallMeta) -> Completion:
        size = max(1, self.max_n or 1)
        sizes = [min(size, request.n - i) for i in range(0, request.n, size)]

        def one(k: int) -> Completion:
            part = request.replace(n=k)
            return self._native(part, meta) if k > 1 else self.inner.complete(part, meta)

        return _merge(self.executor.map(one, sizes))

    def _fix_usage(self, completion: Completion, drop_logprobs: bool) -> Completion:
        counts = []
        for c in completion.choices:
            content = (c.logprobs or {}).get("content") if isinstance(c.logprobs, dict) else None
            counts.append(len(content) if content is not None else None)
        choices = completion.choices
        if drop_logprobs:
            choices = tuple(Choice(c.index, c.message, c.finish_reason, None, c.extra)
                            for c in choices)
        if len(choices) > 1 and all(n is not None for n in counts):
            total = sum(counts)
            reported = completion.usage.completion_tokens
            if reported < total:
                with self._lock:
                    self.counts_one_choice = True
                usage = Usage(completion.usage.prompt_tokens, total,
                              reasoning_share([generated_text(c.message) for c in choices],
                                              total))
                return completion.replace(choices=choices, usage=usage)
            with self._lock:
                if self.counts_one_choice is None:
                    self.counts_one_choice = False
        return completion.replace(choices=choices)


def _merge(parts: list[Completion]) -> Completion:
    """One completion holding every part's choices (re-indexed) and the summed usage."""
    choices = []
    usage = Usage()
    for part in parts:
        usage = usage + part.usage
        for c in part.choices:
            choices.append(Choice(len(choices), c.message, c.finish_reason, c.logprobs, c.extra))
    return parts[0].replace(choices=tuple(choices), usage=usage)
