"""The approach-answer cache: a deterministic approach request's final ``Completion``, kept in
the response cache (``optillm.upstream.cache``, ``kind="approach"``) and replayed whole.

``AnswerCache.prepare(plan, request, body, meta)`` looks the request up once and returns an
``AnswerRun``: its ``status`` (``"hit"``, ``"miss"``, or None with the cache off) goes into the
answer's ``X-Optillm-Cache`` header before anything runs (a stream's headers go first);
``run(sink, cancelled)`` replays the stored answer or runs the pipeline; ``keep(completion)``
stores a complete answer (the face calls it once the answer reached the client, so a stream
the client left is not kept; an error is never kept).

The key is the body's answer-changing fields (``cache.answer_fields``), the plan (op, slugs,
upstream model, model-name options) and whether the full reasoning trace is returned, in the
scope of the upstream and the client's key (``ResponseCache.key``). The body's ``cache``
directive arrives with ``meta`` (``CacheCallMeta``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..types import ChatRequest, Completion, Plan
from ..upstream.base import CallMeta
from ..upstream.cache import ResponseCache, Slot, answer_fields
from .pipeline import Pipeline, PipelineResult


@dataclass(frozen=True)
class AnswerRun:
    """One approach request, looked up in the cache and ready to run (see the module
    docstring)."""

    pipeline: Pipeline
    plan: Plan
    request: ChatRequest
    body: Mapping[str, Any]
    meta: CallMeta
    full_response: bool = False
    slot: Slot | None = None
    cached: Completion | None = None
    #: ``"hit"``, ``"miss"``, or None when the cache is off.
    status: str | None = None

    def run(self, sink: Callable[[str], None] | None = None,
            cancelled: threading.Event | None = None) -> PipelineResult:
        """The stored answer on a hit (no upstream call), else ``Pipeline.run``.

        Raises: what ``Pipeline.run`` raises.
        """
        if self.cached is not None:
            return PipelineResult(self.cached)
        return self.pipeline.run(self.plan, self.request, self.body, self.meta,
                                 full_response=self.full_response, sink=sink,
                                 cancelled=cancelled)

    def keep(self, completion: Completion) -> None:
        """Store ``completion`` as this request's answer (nothing on a hit, for a request
        that is not cached, or under ``no-store``)."""
        if self.slot is not None and self.cached is None:
            self.slot.put_completion(completion)


class AnswerCache:
    """The pipeline behind the approach-answer cache (``cache`` None: the cache is off, every
    request runs)."""

    def __init__(self, pipeline: Pipeline, cache: ResponseCache | None = None):
        self.pipeline = pipeline
        self.cache = cache

    def prepare(self, plan: Plan, request: ChatRequest, body: Mapping[str, Any],
                meta: CallMeta, *, full_response: bool = False) -> AnswerRun:
        """Look the request up (one store read, counted as a hit or a miss) and return its
        ``AnswerRun``. ``body`` is the client's JSON object without its ``cache`` field."""
        args = (self.pipeline, plan, request, body, meta, full_response)
        if self.cache is None:
            return AnswerRun(*args)
        slot = self.cache.slot("approach", answer_fields(body), meta,
                               plan=[plan.op, list(plan.slugs), plan.model, dict(plan.options)],
                               full_response=full_response)
        data = slot.get_completion() if slot is not None else None
        cached = Completion.from_dict(orjson.loads(data)) if data is not None else None
        return AnswerRun(*args, slot=slot, cached=cached,
                         status="hit" if cached is not None else "miss")
