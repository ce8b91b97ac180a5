"""The request batcher (``--batch-mode``): coalesce upstream calls to use the backend's batching.

Calls to ``complete`` that arrive within ``wait_ms`` of each other for the same model, sampling
parameters and credentials form a batch of at most ``max_size``. The first call of a batch
leads: it waits out the window (or until the batch is full), then sends the batch:

- identical prompts without a ``seed`` go as one call with ``n`` = their total, and the choices
  are dealt back in order (a seeded request is never merged: its result would change);
- everything else goes as concurrent calls, which a continuous-batching server (vLLM,
  llama-server's slots) serves as one batch.

A result is never changed by batching: each caller gets exactly its own choices, with the usage
its own call would have reported (prompt tokens once, its choices' completion tokens, counted
per choice through logprobs when several callers share a call). One failing call fails only
the requests it carried. Streams and the passthrough are not batched.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..concurrency import BoundedExecutor
from ..errors import BadRequestError
from ..types import ChatRequest, Choice, Completion, Usage, generated_text, reasoning_share
from .base import NO_META, CallMeta, UpstreamWrapper


@dataclass
class _Pending:
    request: ChatRequest
    meta: CallMeta
    future: Future = field(default_factory=Future)


@dataclass
class _Batch:
    items: list[_Pending] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)


class BatchingUpstream(UpstreamWrapper):
    """Coalesces ``complete`` calls (see the module docstring)."""

    def __init__(self, inner, executor: BoundedExecutor, max_size: int = 4,
                 wait_ms: float = 10.0):
        super().__init__(inner)
        self.executor = executor
        self.max_size = max(1, max_size)
        self.wait_s = max(0.0, wait_ms) / 1000.0
        self._lock = threading.Lock()
        self._open: dict[str, _Batch] = {}
        self.batches_sent = 0  # observability for tests and /stats

    @staticmethod
    def _key(request: ChatRequest, meta: CallMeta) -> str:
        params = {k: v for k, v in request.params.items()}
        return json.dumps([request.model, params, meta.api_key], sort_keys=True, default=str)

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        if self.max_size == 1:
            return self.inner.complete(request, meta)
        pending = _Pending(request, meta)
        key = self._key(request, meta)
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None
            if leader:
                batch = self._open[key] = _Batch()
            batch.items.append(pending)
            if len(batch.items) >= self.max_size:
                self._open.pop(key, None)
                batch.full.set()
        if leader:
            batch.full.wait(self.wait_s)
            with self._lock:
                if self._open.get(key) is batch:
                    del self._open[key]
            self._dispatch(batch.items)
        return pending.future.result()

    def _dispatch(self, items: list[_Pending]) -> None:
        self.batches_sent += 1
        groups: dict[str, list[_Pending]] = {}
        for p in items:
            mergeable = "seed" not in p.request.params and not p.request.params.get("logprobs")
            gkey = json.dumps([m.to_dict() for m in p.request.messages], sort_keys=True,
                              default=str) if mergeable else f"solo-{id(p)}"
            groups.setdefault(gkey, []).append(p)

        def send(group: list[_Pending]) -> None:
            try:
                if len(group) == 1:
                    p = group[0]
                    p.future.set_result(self.inner.complete(p.request, p.meta))
                    return
                self._send_merged(group)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting callers
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(exc)

        self.executor.map(send, list(groups.values()))

    def _send_merged(self, group: list[_Pending]) -> None:
        total_n = sum(p.request.n for p in group)
        first = group[0]
        merged = first.request.replace(n=total_n).with_params(logprobs=True)
        try:
            completion = self.inner.complete(merged, first.meta)
        except BadRequestError:  # n or logprobs refused: send them one by one
            completion = None
        if completion is None or len(completion.choices) < total_n:
            def alone(p: _Pending) -> None:
                try:
                    p.future.set_result(self.inner.complete(p.request, p.meta))
                except BaseException as exc:  # noqa: BLE001
                    p.future.set_exception(exc)
            self.executor.map(alone, group)
            return
        choices = list(completion.choices)
        offset = 0
        for p in group:
            mine = choices[offset:offset + p.request.n]
            offset += p.request.n
            tokens = sum(len((c.logprobs or {}).get("content") or []) for c in mine)
            own = tuple(Choice(i, c.message, c.finish_reason, None, c.extra)
                        for i, c in enumerate(mine))
            p.future.set_result(completion.replace(
                choices=own, usage=Usage(
                    completion.usage.prompt_tokens, tokens,
                    reasoning_share([generated_text(c.message) for c in own], tokens))))

