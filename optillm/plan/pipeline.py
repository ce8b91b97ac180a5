"""The pipeline: runs a ``Plan`` for one request and assembles the ``Completion``.

- single: the approach runs once per requested choice (``n`` runs, concurrently); ``none``
  (``Approach.serves_n``) serves all ``n`` choices in one run.
- sequence (``a&b``): each stage's answer replaces the last user message of the next stage.
- parallel (``a|b``): the approaches run concurrently, one choice each (per ``n``).

Usage is the sum over every run's context. The final upstream call of the last stage is
streamed to the client when the approach allows it (``Approach.streams``) and the request
streams with a single choice.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..concurrency import BoundedExecutor
from ..errors import BadRequestError, OptillmError, UpstreamError
from ..settings import Settings
from ..toolkit.context import Answer, Budget, Cancelled, RunContext
from ..types import ChatRequest, Choice, Completion, Message, Usage
from ..upstream.base import CallMeta, Upstream
from .planner import PARALLEL, SEQUENCE, Plan
from .registry import Registry


@dataclass(frozen=True)
class PipelineResult:
    completion: Completion
    sent: str = ""  # the start of choice 0's text that already went to the client
    calls: int = 0  # upstream calls made by every run of the request


@dataclass
class Pipeline:
    """Runs plans against one upstream stack on one executor (both owned by the app)."""

    registry: Registry
    upstream: Upstream
    executor: BoundedExecutor
    request_timeout: float | None = None
    #: Server-side option defaults (e.g. from ``--cepo-config``): under the model name's and
    #: the body's values, over the options' own defaults.
    option_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: The server's settings; every context gets ``settings.for_algorithms()``.
    settings: Settings | None = None

    def __post_init__(self) -> None:
        self._algorithm_settings = self.settings.for_algorithms() if self.settings else None

    def run(self, plan: Plan, request: ChatRequest, body: Mapping[str, Any], meta: CallMeta,
            *, full_response: bool = False, sink: Callable[[str], None] | None = None,
            cancelled: threading.Event | None = None) -> PipelineResult:
        """Run ``plan`` for ``request`` (messages already stripped of the approach tag).

        ``body`` is the client's JSON object (approach options are read from it).
        Raises: ``optillm.errors`` types.
        """
        deadline = time.monotonic() + self.request_timeout if self.request_timeout else None
        budget = request_budget(body)
        consumed = self.registry.consumed_fields(plan.slugs)
        upstream_params = {k: v for k, v in request.params.items() if k not in consumed}
        base = request.replace(model=plan.model, params=upstream_params)
        contexts: list[RunContext] = []
        lock = threading.Lock()
        streaming_single = sink is not None and request.n == 1 and plan.op != PARALLEL
        sent = [""]

        def make_ctx(slug: str, req: ChatRequest, may_stream: bool,
                     defaults: Mapping[str, Any] | None = None) -> RunContext:
            approach = self.registry.get(slug)
            if slug not in plan.slugs:  # run_approach's child consumes its own options too
                own = self.registry.option_names(slug)
                req = req.replace(params={k: v for k, v in req.params.items() if k not in own})
            ctx = RunContext(request=req, upstream=self.upstream, executor=self.executor,
                             meta=meta,
                             options=self.registry.build_options(
                                 approach, body, {**self.option_defaults, **plan.options,
                                                  **(defaults or {})}),
                             slug=slug, deadline=deadline,
                             # with return_full_response the answer is the whole trace,
                             # which no single upstream call streams: sent whole when ready
                             stream_sink=sink if (may_stream and approach.streams
                                                  and not full_response) else None,
                             cancelled=cancelled, budget=budget,
                             delegate=lambda child, creq, opts=None:
                             run_one(child, creq, False, opts)[0],
                             settings=self._algorithm_settings)
            with lock:
                contexts.append(ctx)
            return ctx

        def run_one(slug: str, req: ChatRequest, may_stream: bool,
                    defaults: Mapping[str, Any] | None = None) -> list[Choice]:
            ctx = make_ctx(slug, req, may_stream, defaults)
            result = self.registry.get(slug).run(ctx)
            if ctx.sent_text:
                sent[0] = ctx.sent_text
            return _to_choices(result, full_response)

        def run_sequence(req: ChatRequest, may_stream: bool) -> list[Choice]:
            current = req
            choices: list[Choice] = []
            for i, slug in enumerate(plan.slugs):
                last = i == len(plan.slugs) - 1
                choices = run_one(slug, current, may_stream and last)
                if not last:
                    current = current.replace(messages=_replace_query(current.messages,
                                                                      choices[0].text), n=1)
            return choices[:1]

        if plan.op == PARALLEL:
            runs = [(slug, i) for i in range(request.n) for slug in plan.slugs]

            def branch(r: tuple[str, int]) -> list[Choice] | OptillmError:
                try:
                    return run_one(r[0], base.replace(n=1), False)[:1]
                except OptillmError as exc:  # reported in its own choice, not a lost request
                    if isinstance(exc, Cancelled):
                        raise
                    return exc

            per = self.executor.map(branch, runs)
            failures = [e for e in per if isinstance(e, OptillmError)]
            if len(failures) == len(per):
                raise failures[0]
            choices = [c for (slug, _), group in zip(runs, per, strict=True)
                       for c in (_error_choice(slug, group) if isinstance(group, OptillmError)
                                 else group)]
        elif plan.op == SEQUENCE:
            per = self.executor.map(lambda i: run_sequence(base.replace(n=1), streaming_single),
                                    range(request.n))
            choices = [c for group in per for c in group]
        elif self.registry.get(plan.slugs[0]).serves_n or request.n == 1:
            choices = run_one(plan.slugs[0], base, streaming_single)[:request.n]
        else:  # one choice per run: n concurrent runs
            per = self.executor.map(
                lambda _: run_one(plan.slugs[0], base.replace(n=1), False)[:1],
                range(request.n))
            choices = [c for group in per for c in group]
        if not choices:
            raise UpstreamError(f"approach {plan.label!r} produced no answer")
        usage = Usage()
        for ctx in contexts:
            usage = usage + ctx.usage
        choices = [Choice(i, c.message, c.finish_reason, c.logprobs, c.extra)
                   for i, c in enumerate(choices)]
        completion = Completion(choices=tuple(choices), usage=usage, model=request.model)
        return PipelineResult(completion, sent[0], sum(ctx.calls for ctx in contexts))


def _error_choice(slug: str, exc: OptillmError) -> list[Choice]:
    """The choice of a ``|`` branch that failed: empty content, ``finish_reason`` "stop" and
    ``optillm_error`` = the branch's OpenAI error object plus its approach."""
    error = {**exc.to_dict()["error"], "approach": slug, "status": exc.status}
    return [Choice(0, Message("assistant", ""), "stop", None, {"optillm_error": error})]


def request_budget(body: Mapping[str, Any]) -> Budget:
    """The request's ``Budget`` from ``max_total_tokens`` / ``max_upstream_calls`` (flat or
    under ``optillm``; positive integers).

    Raises: BadRequestError naming the field when a value is not a positive integer.
    """
    nested = body.get("optillm") if isinstance(body.get("optillm"), dict) else {}
    values: dict[str, int | None] = {}
    for name in ("max_total_tokens", "max_upstream_calls"):
        raw = body.get(name, nested.get(name))
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int) or raw < 1):
            raise BadRequestError(f"'{name}' must be a positive integer", param=name)
        values[name] = raw
    return Budget(**values)


def _replace_query(messages: tuple[Message, ...], text: str) -> tuple[Message, ...]:
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        if out[i].role == "user":
            out[i] = Message("user", text, out[i].extra)
            return tuple(out)
    return tuple(out) + (Message("user", text),)


def _to_choices(result: Any, full_response: bool) -> list[Choice]:
    """An approach's return value -> choices. Accepts ``str``, ``Answer``, ``Completion``,
    or a list of ``str``/``Answer`` (OptiLLM's ``n`` form)."""
    if isinstance(result, Completion):
        return list(result.choices)
    if isinstance(result, (list, tuple)):
        return [c for r in result for c in _to_choices(r, full_response)]
    if isinstance(result, str):
        return [Choice(0, Message("assistant", result))]
    if isinstance(result, Answer):
        text = result.reasoning if (full_response and result.reasoning) else result.text
        if result.message is not None and not (full_response and result.reasoning):
            message = result.message
        else:
            message = Message("assistant", text)
        return [Choice(0, message, result.finish_reason, result.logprobs,
                       dict(result.metadata))]
    raise TypeError(f"an approach returned {type(result).__name__}; expected str, Answer "
                    f"or Completion")
