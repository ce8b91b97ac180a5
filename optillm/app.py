"""The app factory: ``create_app(settings=None)`` builds every service and the Flask app.

gunicorn runs ``optillm.app:create_app()`` (settings from ``OPTILLM_*`` variables); the CLI and
the tests call it with explicit ``Settings``. Services live in ``app.extensions["optillm"]``
(a ``Services`` value), never in module globals. The upstream stack is composed here, once::

    RecordingUpstream (conversation log) ▸ BatchingUpstream (--batch-mode)
        ▸ CachingUpstream (deterministic requests; --cache-ttl / the config's cache_ttl)
        ▸ RouterUpstream (--config model_groups: weights, failover, cooldown, rate limits)
        ▸ ChoicesUpstream (n emulation, exact usage) ▸ OpenAIUpstream (SDK + pooled bytes)

The router and the cache exist only when configured; the store they share (Redis, else an
on-disk store) also holds the Responses API's conversations and opens on first use.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass
from typing import Any

from flask import Flask

from .concurrency import BoundedExecutor
from .plan.loader import build_registry
from .plan.pipeline import Pipeline
from .plan.profiles import install as install_profiles
from .plan.registry import Registry
from .settings import Settings
from .upstream.base import Upstream
from .upstream.config import GatewayConfig, load_config
from .upstream.local_model import LocalModel
from .upstream.store import LazyStore

log = logging.getLogger("optillm")
#: Answer headers a browser page on an allowed origin may read (CORS).
CORS_EXPOSE = ["X-Request-ID", "X-Optillm-Upstream-Calls", "X-Optillm-Cache", "Retry-After"]


@dataclass
class Services:
    """Everything a request needs, built once per app."""

    settings: Settings
    registry: Registry
    plugin_manager: Any
    upstream: Upstream
    executor: BoundedExecutor
    pipeline: Pipeline
    conversation_logger: Any  # optillm.web.traces.TracingLogger: log files and traced requests
    local_model: LocalModel | None
    base_url: str | None
    gateway: GatewayConfig | None = None
    store: LazyStore | None = None
    cache: Any = None    # optillm.upstream.cache.ResponseCache when caching is on
    router: Any = None   # optillm.upstream.router.RouterUpstream with model groups
    answers: Any = None  # optillm.plan.answer_cache.AnswerCache: the pipeline, answers cached

    def close(self) -> None:
        self.executor.shutdown()
        try:
            self.upstream.close()
            if self.store is not None:
                self.store.close()
        finally:
            if self.local_model is not None:
                self.local_model.release()


def http_upstream(settings: Settings, base_url: str | None) -> Upstream:
    """The OpenAI-compatible client at the bottom of the stack (OpenAI-style or Azure);
    with ``--upstream-provider litellm``, LiteLLM (``--base-url`` as its ``api_base``)."""
    if settings.upstream_provider == "litellm":
        from .upstream.litellm_client import LiteLLMUpstream

        return LiteLLMUpstream(base_url, settings.openai_api_key if base_url else None,
                               timeout=settings.upstream_timeout,
                               retries=settings.upstream_retries)
    from .upstream.openai_client import OpenAIUpstream

    azure = None
    key = settings.openai_api_key
    if settings.azure_api_base and not settings.base_url:
        azure = (settings.azure_api_base, settings.azure_api_version or "2024-10-21")
        key = settings.azure_api_key
    return OpenAIUpstream(base_url, key, azure=azure, timeout=settings.upstream_timeout,
                          retries=settings.upstream_retries,
                          pool_size=max(8, settings.max_parallel_calls * 2),
                          verify=settings.tls_verify)


def build_stack(settings: Settings, executor: BoundedExecutor, bottom: Upstream | None, *,
                gateway: Any = None, cache: Any = None, metrics: Any = None
                ) -> tuple[Upstream, Any]:
    """The wrappers around ``bottom`` in the order the module docstring draws; with a gateway
    config, the router (one client per endpoint) sits under the cache; with ``metrics``
    (``optillm.web.metrics.RequestMetrics``) a counter of upstream calls sits right under the
    cache. Returns the stack and the router (None without model groups)."""
    from .upstream.batching import BatchingUpstream
    from .upstream.choices import ChoicesUpstream
    from .upstream.recording import RecordingUpstream

    stack: Upstream | None = ChoicesUpstream(bottom, executor) if bottom is not None else None
    router = None
    if gateway is not None and gateway.model_groups:
        from .upstream.router import build_router

        router = build_router(gateway, stack, settings, executor)
        stack = router
    if stack is None:
        raise ValueError("no upstream: set --base-url, or model_groups in --config")
    if metrics is not None:
        from .web.metrics import CountingUpstream

        stack = CountingUpstream(stack, metrics)
    if cache is not None:
        from .upstream.cache import CachingUpstream

        stack = CachingUpstream(stack, cache)
    if settings.batch_mode:
        stack = BatchingUpstream(stack, executor, settings.batch_size, settings.batch_wait_ms)
    if gateway is not None and gateway.cli_agents:  # cli/<name>: local command-line agents
        from .upstream.cli_agent import CliAgentRouter, CliAgentUpstream

        stack = CliAgentRouter(stack, ChoicesUpstream(CliAgentUpstream(gateway.cli_agents),
                                                      executor))
    return RecordingUpstream(stack), router


def load_option_defaults(path: str | None) -> dict[str, Any]:
    """Approach option defaults from a ``--cepo-config`` YAML mapping (OptiLLM's
    ``cepo_config.yaml`` names, e.g. ``bestofn_n: 3``, or the prefixed ``cepo_bestofn_n``).

    Raises: ConfigError naming the file when it is unreadable or not a mapping.
    """
    if not path:
        return {}
    import yaml

    from .upstream.config import ConfigError

    try:
        with open(os.path.expanduser(path)) as fh:
            data = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{path}: must be a mapping of cepo option names to values")
    return {k if k.startswith("cepo_") else f"cepo_{k}": v for k, v in data.items()}


def check_option_defaults(registry: Registry, defaults: dict[str, Any]) -> None:
    """Server-side option defaults (``--cepo-config``, OptiLLM's ``--best-of-n``,
    ``--mcts-*``, ``--rstar-*``, ``--cepo_<field>``) checked against the approaches' declared
    options once, at start-up, so a bad one stops the server instead of failing requests.

    Raises: ConfigError naming the option and the allowed values.
    """
    if not defaults:
        return
    from .errors import OptillmError
    from .upstream.config import ConfigError

    used: set[str] = set()
    for slug in registry:
        approach = registry.get(slug)
        fields = registry.option_names(slug)
        mine = {k: v for k, v in defaults.items() if k in fields}
        if not mine or approach.options is None:
            continue
        used.update(mine)
        try:
            registry.build_options(approach, {}, mine)
        except OptillmError as exc:
            raise ConfigError(f"server option default for {slug}: {exc.message}") from exc
    unknown = sorted(set(defaults) - used)
    if unknown:
        raise ConfigError(f"server option defaults no approach declares: {', '.join(unknown)}")


def create_app(settings: Settings | None = None, *, upstream: Upstream | None = None) -> Flask:
    """Build the proxy. ``upstream`` replaces the HTTP client at the bottom of the stack
    (tests pass a scripted fake); everything above it is the real stack.

    Raises:
        PluginLoadError: a plugin failed to load (its path and the reason).
        LocalModelUnavailable: no upstream is configured and the embedded model cannot run.
    """
    settings = settings or Settings.from_env()
    from .web.request_context import configure_logging

    configure_logging(settings.log, settings.log_format)
    if settings.log != "debug":  # one line per upstream call from the HTTP libraries is noise
        for name in ("httpx", "httpx2", "openai", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)
    gateway = load_config(settings.config, settings.environ) if settings.config else None
    option_defaults = {**load_option_defaults(settings.cepo_config),
                       **settings.option_defaults}
    plugin_manager, registry = build_registry(settings.plugins_dir)
    check_option_defaults(registry, option_defaults)
    install_profiles(plugin_manager, registry, gateway)  # profile/<name>; bad one: ConfigError
    from .plan.cli_names import install as install_cli_names

    install_cli_names(plugin_manager, gateway.cli_agents if gateway is not None else ())
    executor = BoundedExecutor(settings.max_parallel_calls)
    local = None
    base_url = settings.base_url
    routed_only = gateway is not None and bool(gateway.model_groups)
    if upstream is None and settings.uses_local_model and not routed_only:
        local = LocalModel.from_settings(settings)
        base_url = local.acquire()
        if not settings.model:
            settings = settings.replace(model=local.alias)
        log.info("embedded local model at %s", base_url)
    general = gateway.general if gateway is not None else None
    store = LazyStore(settings.redis_url or (general.redis_url if general else None),
                      settings.cache_dir if (general is None or settings.cache_dir !=
                                             Settings.cache_dir) else general.cache_dir)
    ttl = settings.cache_ttl if settings.cache_ttl >= 0 else \
        (general.cache_ttl if general is not None else 0.0)
    cache = None
    if ttl > 0:
        from .upstream.cache import ResponseCache

        cache = ResponseCache(store, ttl)
    bottom = upstream
    if bottom is None and (base_url or settings.azure_api_base or not routed_only):
        bottom = http_upstream(settings, base_url)
    from .web.observability import new_metrics

    metrics = new_metrics(settings.metrics_dir)  # before the stack: it counts upstream calls
    stack, router = build_stack(settings, executor, bottom, gateway=gateway, cache=cache,
                                metrics=metrics.request)
    from .web.playground import conversation_logger  # the log files, the traced-requests ring

    logger = conversation_logger(settings, store)
    services = Services(settings=settings, registry=registry, plugin_manager=plugin_manager,
                        upstream=stack, executor=executor,
                        pipeline=Pipeline(registry, stack, executor, settings.upstream_timeout,
                                          option_defaults, settings),
                        conversation_logger=logger, local_model=local, base_url=base_url,
                        gateway=gateway, store=store, cache=cache, router=router)

    from .plan.answer_cache import AnswerCache

    services.answers = AnswerCache(services.pipeline, cache)  # the cache's approach answers
    app = Flask("optillm", static_folder=None)  # no dead /static route (web/static has its own)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["optillm"] = services
    app.extensions["optillm.metrics"] = metrics
    from .web.chat import bp, register_error_handlers
    from .web.observability import bp as observability_bp
    from .web.responses import bp as responses_bp

    app.register_blueprint(observability_bp)  # first: request ids before authentication
    app.register_blueprint(bp)
    app.register_blueprint(responses_bp)
    from .web.anthropic import bp as anthropic_bp  # POST /v1/messages (Anthropic's API)

    app.register_blueprint(anthropic_bp)
    from .web import docs, playground

    docs.register(app)  # GET /openapi.json, /docs (Redoc)
    playground.register(app)  # GET /, /playground, /playground/logs, /v1/optillm/...
    if settings.cors_origins:  # --cors-allow-origins; off by default
        from flask_cors import CORS

        CORS(app, origins=settings.cors_origins, expose_headers=CORS_EXPOSE, max_age=600,
             always_send=False,  # no Origin, no CORS headers
             send_wildcard=settings.cors_origins == ["*"])
    register_error_handlers(app)
    from .web.limits import install as install_rate_limit  # --rate-limit, per client key

    install_rate_limit(app, settings.rate_limit, store.redis_url)
    atexit.register(services.close)
    return app
