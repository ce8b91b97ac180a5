"""``GET /stats`` (JSON) and ``GET /metrics`` (Prometheus text): what the gateway has seen.

Both read the app's services at request time: the router's ``snapshot()`` (per endpoint:
requests, failures by kind, consecutive failures, cooldown and its remaining seconds, the
rate-limit headers' remaining requests and tokens, the last minute's requests and tokens,
latency p50/p95 over the recent successful calls and a latency histogram) and the response
cache's ``stats()`` (``hits``, ``misses``) when a cache is configured. The figures are this
worker process's own (``pid`` says which): with several gunicorn workers each keeps its view.

``/metrics`` uses ``prometheus-client`` (``pip install 'optillm[gateway]'``) with a
``CollectorRegistry`` per app (never the process-global one), filled at scrape time by a
collector that reads the same snapshot, so the request path pays nothing for gateway metrics.
The request-path figures (``optillm.web.metrics``: requests, latency, upstream calls, tokens)
are there with or without ``--config``, summed over every gunicorn worker in multiprocess mode.
Both routes sit behind the proxy key like every route but ``/health*``.

``GET /health/readiness`` answers 200 ``{"status": "ready", "checks": {...}}`` when every
upstream base URL (or each model group's endpoints, one answering is enough; the embedded
model alike) answers ``GET <base>/models`` with any status under 500 within 2 s, and Redis
(when configured) answers PING; else 503 with an OpenAI error object whose message gives the
reason, and the same ``checks``. ``GET /health`` stays liveness (the process answers).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app

from ..errors import OptillmError
from . import metrics as request_metrics
from . import request_context

bp = Blueprint("optillm_observability", __name__)

_EXTENSION = "optillm.metrics"
_LABELS = ["group", "endpoint"]


def _services(app: Flask) -> Any:
    return app.extensions.get("optillm")


def cache_stats(services: Any) -> dict[str, Any] | None:
    """The response cache's ``stats()`` (``hits``, ``misses``, ...), None without a cache."""
    cache = getattr(services, "cache", None)
    stats = getattr(cache, "stats", None)
    if not callable(stats):
        return None
    try:
        return dict(stats())
    except Exception as exc:  # noqa: BLE001 - a store failure must not break /stats
        return {"error": f"{type(exc).__name__}: {exc}"}


def gateway_stats(services: Any) -> dict[str, Any]:
    """The ``/stats`` body."""
    router = getattr(services, "router", None)
    snapshot = router.snapshot() if router is not None else {"model_groups": {},
                                                             "router": None}
    return {"pid": os.getpid(), "scope": "this worker process", **snapshot,
            "cache": cache_stats(services)}


@bp.get("/stats")
def stats() -> Response:
    return Response(json.dumps(gateway_stats(_services(current_app))),
                    content_type="application/json")


class _Metrics:
    """The app's Prometheus registry and request metrics (prometheus-client is optional:
    without it ``request`` is None and ``/metrics`` answers 501)."""

    def __init__(self, multiprocess_dir: str | None = None):
        self.registry: Any = None
        self.request: request_metrics.RequestMetrics | None = None
        self.multiprocess_dir: str | None = None
        self._lock = threading.Lock()
        self._gateway_registered = False
        try:
            from prometheus_client import CollectorRegistry, values
        except ImportError:
            return
        if multiprocess_dir and values.ValueClass.__name__ == "MmapedValue":
            self.multiprocess_dir = multiprocess_dir  # prometheus-client saw the variable
        self.registry = CollectorRegistry(auto_describe=False)
        self.request = request_metrics.RequestMetrics(self.registry,
                                                      self.multiprocess_dir is not None)

    def render(self, app: Flask) -> tuple[bytes, str]:
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        except ImportError:
            raise OptillmError("GET /metrics needs prometheus-client: "
                               "pip install 'optillm[gateway]'", status=501,
                               type="server_error", code="missing_dependency") from None
        if self.multiprocess_dir is None:
            with self._lock:
                if not self._gateway_registered:
                    self.registry.register(GatewayCollector(app))
                    self._gateway_registered = True
            registry = self.registry
        else:  # every worker's files, read at scrape time, and this worker's gateway view
            from prometheus_client import multiprocess

            registry = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            registry.register(GatewayCollector(app))
        return generate_latest(registry), CONTENT_TYPE_LATEST


def new_metrics(multiprocess_dir: str | None) -> _Metrics:
    """The metrics state ``create_app`` keeps in ``app.extensions["optillm.metrics"]``
    (``multiprocess_dir``: ``Settings.metrics_dir``)."""
    return _Metrics(multiprocess_dir)


@bp.record_once
def _setup(state) -> None:
    app = state.app
    services = _services(app)
    settings = getattr(services, "settings", None)
    state_ = app.extensions.get(_EXTENSION)
    if state_ is None:
        state_ = app.extensions[_EXTENSION] = _Metrics(getattr(settings, "metrics_dir", None))
    request_context.install(app)
    if state_.request is not None:
        request_metrics.install(app, state_.request)


@bp.get("/metrics")
def metrics() -> Response:
    body, content_type = current_app.extensions[_EXTENSION].render(current_app)
    return Response(body, content_type=content_type)


@bp.get("/health/readiness")
def readiness() -> Response:
    from .readiness import check

    ready, checks = check(_services(current_app))
    if ready:
        body: dict[str, Any] = {"status": "ready", "checks": checks}
        return Response(json.dumps(body), status=200, content_type="application/json")
    reason = "; ".join(f"{name}: {c['detail']}" for name, c in checks.items() if not c["ok"])
    err = OptillmError(f"not ready: {reason}", status=503, type="server_error",
                       code="not_ready")
    body = {**err.to_dict(), "status": "not ready", "checks": checks}
    return Response(json.dumps(body), status=503, content_type="application/json")


class GatewayCollector:
    """A prometheus-client collector over one app's router and cache (read at scrape time)."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        services = _services(self.app)
        router = getattr(services, "router", None)
        snap = router.snapshot() if router is not None else {"model_groups": {}, "router": {}}
        p = "optillm_gateway_"
        requests = CounterMetricFamily(p + "requests", "Calls sent to an endpoint", labels=_LABELS)
        failures = CounterMetricFamily(p + "failures", "Failed calls to an endpoint by kind "
                                       "(timeout, rate_limit, error)", labels=_LABELS + ["kind"])
        consecutive = GaugeMetricFamily(p + "consecutive_failures",
                                        "Failures since the endpoint's last success",
                                        labels=_LABELS)
        cooling = GaugeMetricFamily(p + "cooldown", "1 while the endpoint cools down",
                                    labels=_LABELS)
        cooldown_left = GaugeMetricFamily(p + "cooldown_remaining_seconds",
                                          "Seconds of cooldown left", labels=_LABELS)
        remaining_requests = GaugeMetricFamily(
            p + "ratelimit_remaining_requests",
            "x-ratelimit-remaining-requests (counted down locally), where known", labels=_LABELS)
        remaining_tokens = GaugeMetricFamily(
            p + "ratelimit_remaining_tokens",
            "x-ratelimit-remaining-tokens (counted down locally), where known", labels=_LABELS)
        minute_requests = GaugeMetricFamily(p + "last_minute_requests",
                                            "Requests sent in the last 60 s", labels=_LABELS)
        minute_tokens = GaugeMetricFamily(p + "last_minute_tokens",
                                          "Tokens (estimated, then corrected) in the last 60 s",
                                          labels=_LABELS)
        weight = GaugeMetricFamily(p + "endpoint_weight", "Configured weight (0: fallback)",
                                   labels=_LABELS)
        latency = HistogramMetricFamily(p + "latency_seconds", "Time to an endpoint's answer "
                                        "(first chunk when streamed), successful calls",
                                        labels=_LABELS)
        for group, endpoints in snap["model_groups"].items():
            for ep in endpoints:
                labels = [group, ep["name"]]
                requests.add_metric(labels, ep["requests"])
                for kind in ("timeout", "rate_limit", "error"):
                    failures.add_metric(labels + [kind], ep["failures_by_kind"].get(kind, 0))
                consecutive.add_metric(labels, ep["consecutive_fails"])
                cooling.add_metric(labels, 1 if ep["cooldown"]["active"] else 0)
                cooldown_left.add_metric(labels, ep["cooldown"]["remaining_s"])
                if ep["rate_limit"]["remaining_requests"] is not None:
                    remaining_requests.add_metric(labels, ep["rate_limit"]["remaining_requests"])
                if ep["rate_limit"]["remaining_tokens"] is not None:
                    remaining_tokens.add_metric(labels, ep["rate_limit"]["remaining_tokens"])
                minute_requests.add_metric(labels, ep["last_minute"]["requests"])
                minute_tokens.add_metric(labels, ep["last_minute"]["tokens"])
                weight.add_metric(labels, ep["weight"])
                hist = ep["latency_histogram"]
                cumulative, buckets = 0, []
                bounds = [repr(float(b)) for b in hist["buckets"]] + ["+Inf"]
                for bound, count in zip(bounds, hist["counts"], strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                latency.add_metric(labels, buckets, hist["sum_s"])
        yield from (requests, failures, consecutive, cooling, cooldown_left, remaining_requests,
                    remaining_tokens, minute_requests, minute_tokens, weight, latency)
        counters = snap.get("router") or {}
        for key, help_text in (("routed", "Requests routed to a model group"),
                               ("retried", "Extra attempts on another endpoint (failovers)"),
                               ("exhausted", "Requests no endpoint could serve")):
            family = CounterMetricFamily(p + key, help_text)
            family.add_metric([], counters.get(key, 0))
            yield family
        cache = cache_stats(services)
        if cache is not None:
            for key in ("hits", "misses"):
                if isinstance(cache.get(key), (int, float)):
                    family = CounterMetricFamily(f"optillm_cache_{key}", f"Response cache {key}")
                    family.add_metric([], cache[key])
                    yield family
