"""The app factory: ``create_app(settings=None)`` builds every service and the Flask app.

gunicorn runs ``optillm.app:create_app()`` (settings from ``OPTILLM_*`` variables); the CLI and
the tests call it with explicit ``Settings``. Services live in ``app.extensions["optillm"]``
(a ``Services`` value), never in module globals. The upstream stack is composed here, once::

    RecordingUpstream (conversation log) ▸ BatchingUpstream (--batch-mode)
        ▸ ChoicesUpstream (n emulation, exact usage) ▸ OpenAIUpstream (SDK + pooled bytes)
"""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask

from .concurrency import BoundedExecutor
from .conversation_log import ConversationLogger
from .local_model import LocalModel
from .pipeline import Pipeline
from .plugin_manager import build_registry
from .registry import Registry
from .settings import Settings
from .upstream.base import Upstream

log = logging.getLogger("optillm")


@dataclass
class Services:
    """Everything a request needs, built once per app."""

    settings: Settings
    registry: Registry
    plugin_manager: Any
    upstream: Upstream
    executor: BoundedExecutor
    pipeline: Pipeline
    conversation_logger: ConversationLogger | None
    local_model: LocalModel | None
    base_url: str | None

    def close(self) -> None:
        self.executor.shutdown()
        try:
            self.upstream.close()
        finally:
            if self.local_model is not None:
                self.local_model.release()


def http_upstream(settings: Settings, base_url: str | None) -> Upstream:
    """The OpenAI-compatible client at the bottom of the stack (OpenAI-style or Azure)."""
    from .upstream.openai_client import OpenAIUpstream

    azure = None
    key = settings.openai_api_key
    if settings.azure_api_base and not settings.base_url:
        azure = (settings.azure_api_base, settings.azure_api_version or "2024-10-21")
        key = settings.azure_api_key
    return OpenAIUpstream(base_url, key, azure=azure, timeout=settings.upstream_timeout,
                          retries=settings.upstream_retries,
                          pool_size=max(8, settings.max_parallel_calls * 2))


def build_stack(settings: Settings, executor: BoundedExecutor, bottom: Upstream) -> Upstream:
    """The wrappers around ``bottom``, in the order the module docstring draws."""
    from .upstream.batching import BatchingUpstream
    from .upstream.choices import ChoicesUpstream
    from .upstream.recording import RecordingUpstream

    stack: Upstream = ChoicesUpstream(bottom, executor)
    if settings.batch_mode:
        stack = BatchingUpstream(stack, executor, settings.batch_size, settings.batch_wait_ms)
    return RecordingUpstream(stack)


def create_app(settings: Settings | None = None, *, upstream: Upstream | None = None) -> Flask:
    """Build the proxy. ``upstream`` replaces the HTTP client at the bottom of the stack
    (tests pass a scripted fake); everything above it is the real stack.

    Raises:
        PluginLoadError: a plugin failed to load (its path and the reason).
        LocalModelUnavailable: no upstream is configured and the embedded model cannot run.
    """
    settings = settings or Settings.from_env()
    logging.basicConfig(level=settings.log.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log != "debug":  # one line per upstream call from the HTTP libraries is noise
        for name in ("httpx", "httpx2", "openai", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)
    plugin_manager, registry = build_registry(settings.plugins_dir)
    executor = BoundedExecutor(settings.max_parallel_calls)
    local = None
    base_url = settings.base_url
    if upstream is None and settings.uses_local_model:
        local = LocalModel(settings.local_model, settings.local_slots, settings.local_ctx_size)
        base_url = local.acquire()
        if not settings.model:
            settings = settings.replace(model=local.alias)
        log.info("embedded local model at %s", base_url)
    stack = build_stack(settings, executor, upstream or http_upstream(settings, base_url))
    logger = ConversationLogger(settings.conversation_log_dir) \
        if settings.log_conversations else None
    services = Services(settings=settings, registry=registry, plugin_manager=plugin_manager,
                        upstream=stack, executor=executor,
                        pipeline=Pipeline(registry, stack, executor, settings.upstream_timeout),
                        conversation_logger=logger, local_model=local, base_url=base_url)

    app = Flask("optillm")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions["optillm"] = services
    from .routes import bp, register_error_handlers

    app.register_blueprint(bp)
    register_error_handlers(app)
    atexit.register(services.close)
    return app
