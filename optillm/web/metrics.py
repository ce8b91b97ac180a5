"""Request-path Prometheus metrics: requests, latency, upstream calls and tokens.

``RequestMetrics`` holds the app's metric objects (prometheus-client; without it nothing is
counted and ``/metrics`` answers 501):

- ``optillm_requests_total{route, approach, model, status}``: answered requests (``approach``
  and ``model`` are the plan's label and base model, ``-`` before a plan was made);
- ``optillm_request_duration_seconds{route, approach}``: a histogram, from the request's start
  to its answer (to the last byte of a streamed one, counted when the server closes it);
- ``optillm_upstream_calls_total{model, call, outcome}``: calls that reached the upstream stack
  below the cache (``call``: complete, stream, forward, text; ``outcome``: ok or error);
- ``optillm_upstream_tokens_total{model, kind}``: ``prompt`` and ``completion`` tokens of
  their usage (a streamed passthrough counts what its ``usage`` chunk says, when it has one).

Under gunicorn the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts, so every
worker writes its figures to files there and a scrape on any worker reads all of them
(prometheus-client's multiprocess mode; a dead worker's gauges are dropped by the
``child_exit`` hook in ``optillm.serve``). Elsewhere (``--dev``, tests) the objects live in
the app's own ``CollectorRegistry``. ``/health*`` and ``/metrics`` are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from flask import Flask, Response, g, request

from ..types import ChatRequest, Chunk, Completion
from ..upstream.base import NO_META, CallMeta, RawResponse, UpstreamWrapper
from .request_context import after_body, planned

_loads = orjson.loads

#: Seconds; passthrough answers land in the first buckets, approach runs in the last.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_UNCOUNTED = ("/health", "/metrics")
_MAX_LABEL = 100
_MAX_CHILDREN = 4096


def _label(value: Any) -> str:
    return str(value)[:_MAX_LABEL] if value not in (None, "") else "-"


class RequestMetrics:
    """The app's request and upstream metric objects.

    Args:
        multiprocess: write to ``PROMETHEUS_MULTIPROC_DIR`` (objects registered nowhere,
            read back by a ``MultiProcessCollector``) instead of ``registry``.
        registry: the app's ``CollectorRegistry`` (ignored with ``multiprocess``).
    Raises: ImportError when prometheus-client is missing.
    """

    def __init__(self, registry: Any, multiprocess: bool):
        from prometheus_client import Counter, Histogram

        reg = None if multiprocess else registry
        self.requests = Counter("optillm_requests", "Requests answered",
                                ["route", "approach", "model", "status"], registry=reg)
        self.latency = Histogram("optillm_request_duration_seconds",
                                 "Request start to the end of its answer's body",
                                 ["route", "approach"], buckets=LATENCY_BUCKETS, registry=reg)
        self.upstream_calls = Counter("optillm_upstream_calls",
                                      "Calls to the upstream stack below the cache",
                                      ["model", "call", "outcome"], registry=reg)
        self.tokens = Counter("optillm_upstream_tokens", "Tokens in upstream usage",
                              ["model", "kind"], registry=reg)

        # labelled children by label values: ``labels()`` costs a few µs a call, and the
        # passthrough makes five a request (bounded: beyond it, labels() every time)
        self._children: dict[tuple, Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*values)
            if len(self._children) < _MAX_CHILDREN:
                self._children[key] = child
        return child

    def observe_request(self, route: str, approach: str, model: str, status: int,
                        seconds: float) -> None:
        self._child(self.requests, route, approach, model, str(status)).inc()
        self._child(self.latency, route, approach).observe(seconds)

    def observe_call(self, model: str | None, call: str, ok: bool) -> None:
        self._child(self.upstream_calls, _label(model), call, "ok" if ok else "error").inc()

    def observe_usage(self, model: str | None, usage: Mapping[str, Any] | None) -> None:
        if not isinstance(usage, Mapping):
            return
        for kind, field in (("prompt", "prompt_tokens"), ("completion", "completion_tokens")):
            value = usage.get(field)
            if isinstance(value, int) and value > 0:
                self._child(self.tokens, _label(model), kind).inc(value)


def install(app: Flask, metrics: RequestMetrics) -> None:
    """Count every answered request of ``app`` (but ``/health*`` and ``/metrics``) when its
    body has been sent (``g.request_start`` from ``optillm.web.request_context``)."""

    def count(response: Response) -> Response:
        req = request._get_current_object()  # one proxy lookup, not one per attribute
        if req.path.startswith(_UNCOUNTED):
            return response
        rule = req.url_rule
        route = rule.rule if rule is not None else "unmatched"
        ns = g._get_current_object()
        plan = planned(ns)
        approach, model = (plan if plan is not None else ("-", "-"))
        start = ns.get("request_start") or time.perf_counter()
        status = response.status_code
        labels = (route, _label(approach), _label(model), status)
        if response.is_streamed:  # counted once the last byte has gone
            after_body(response, lambda: metrics.observe_request(
                *labels, time.perf_counter() - start))
        else:
            metrics.observe_request(*labels, time.perf_counter() - start)
        return response

    app.after_request(count)


def _usage_of(data: bytes) -> Mapping[str, Any] | None:
    """The ``usage`` object of a chat completion's (or a final stream chunk's) JSON bytes."""
    try:
        body = _loads(data)
    except ValueError:
        return None
    return body.get("usage") if isinstance(body, dict) else None


def _stream_usage(data: bytes) -> Mapping[str, Any] | None:
    """The ``usage`` of the SSE event in ``data`` that carries one."""
    for line in data.splitlines():
        if line.startswith(b"data: {") and b'"usage"' in line:
            usage = _usage_of(line[6:])
            if usage:
                return usage
    return None


class CountingUpstream(UpstreamWrapper):
    """Counts each call (and its usage's tokens) into ``RequestMetrics``; changes nothing."""

    def __init__(self, inner: Any, metrics: RequestMetrics):
        super().__init__(inner)
        self.metrics = metrics

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        try:
            result = self.inner.complete(request, meta)
        except Exception:
            self.metrics.observe_call(request.model, "complete", False)
            raise
        self.metrics.observe_call(request.model, "complete", True)
        self.metrics.observe_usage(request.model, _usage_dict(result))
        return result

    def complete_text(self, prompt: str, model: str, params: Mapping[str, Any],
                      meta: CallMeta = NO_META) -> Completion:
        try:
            result = self.inner.complete_text(prompt, model, params, meta)
        except Exception:
            self.metrics.observe_call(model, "text", False)
            raise
        self.metrics.observe_call(model, "text", True)
        self.metrics.observe_usage(model, _usage_dict(result))
        return result

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        return self._count_stream(request, meta)

    def _count_stream(self, request: ChatRequest, meta: CallMeta) -> Iterator[Chunk]:
        ok = False
        usage = None
        try:
            for chunk in self.inner.stream(request, meta):
                if getattr(chunk, "usage", None) is not None:
                    usage = chunk.usage
                yield chunk
            ok = True
        finally:
            self.metrics.observe_call(request.model, "stream", ok)
            if usage is not None:
                self.metrics.observe_usage(request.model, _usage_dict(usage))

    def forward(self, body: bytes, meta: CallMeta = NO_META, stream: bool = False,
                model: str | None = None) -> RawResponse:
        try:
            raw = self.inner.forward(body, meta, stream, model)
        except Exception:
            self.metrics.observe_call(model, "forward", False)
            raise
        metrics = self.metrics

        def counted() -> Iterator[bytes]:
            tail = b""
            whole: list[bytes] = []
            try:
                for part in raw.chunks:
                    if stream:
                        tail = (tail + part)[-4096:]  # the usage event is near the end
                    else:
                        whole.append(part)
                    yield part
            finally:
                metrics.observe_call(model, "forward", raw.status < 400)
                if raw.status < 400:
                    metrics.observe_usage(model, _stream_usage(tail) if stream
                                          else _usage_of(b"".join(whole)))

        return RawResponse(raw.status, raw.content_type, counted(), raw.close, raw.headers)


def _usage_dict(value: Any) -> Mapping[str, Any] | None:
    usage = getattr(value, "usage", value)
    if usage is None or isinstance(usage, Mapping):
        return usage
    to_dict = getattr(usage, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return {k: getattr(usage, k, None) for k in ("prompt_tokens", "completion_tokens")}
