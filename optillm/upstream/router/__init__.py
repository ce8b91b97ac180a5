"""The gateway's router: a public model name -> a group of endpoints (LLMProxy's model groups).

What lives where (this package re-exports the public names):

- ``routing``: ``RouterUpstream`` (the ``Upstream`` over the groups: weighted round-robin,
  failover, the client's error when every endpoint failed) and ``ModelGroup`` (selection);
- ``health``: ``EndpointState``, ``Failure``, failure counts, cooldowns, ``Retry-After``;
- ``limits``: ``x-ratelimit-*`` headers, the ``rpm`` / ``tpm`` windows, ``parse_duration``;
- ``shared``: the same health and windows in Redis, shared by every worker and instance;
- ``relay``: stream chunks and passthrough bytes once an endpoint answered.

``build_router`` composes it for the app: one ``ChoicesUpstream(OpenAIUpstream(...))`` per
endpoint, its state in Redis when a URL is configured.
"""

from __future__ import annotations

from typing import Any

from ..base import Upstream
from ..config import Endpoint, GatewayConfig
from .health import EndpointState, Failure, failure_kind
from .limits import parse_duration
from .routing import EndpointFactory, HeaderSink, ModelGroup, RouterUpstream

__all__ = ["EndpointFactory", "EndpointState", "Failure", "HeaderSink", "ModelGroup",
           "RouterUpstream", "build_router", "failure_kind", "parse_duration"]


def build_router(gateway: GatewayConfig, default: Upstream | None, settings: Any,
                 executor: Any) -> RouterUpstream:
    """The router over ``gateway.model_groups``: one ``ChoicesUpstream(OpenAIUpstream(...))``
    per endpoint, each with its own connection pool and no retries of its own (the router
    retries on another endpoint). ``settings`` gives the default timeout and pool size, and
    with ``general_settings.redis_url`` (or ``--redis-url``) the health and limits are kept in
    Redis.

    Raises: StoreError when Redis is configured but cannot be reached (or ``limits`` is
    missing).
    """
    from ..choices import ChoicesUpstream
    from ..openai_client import OpenAIUpstream

    def factory(endpoint: Endpoint, on_headers: HeaderSink) -> Upstream:
        if endpoint.provider == "litellm":  # provider: litellm (optillm.upstream.litellm_client)
            from ..litellm_client import LiteLLMUpstream

            return ChoicesUpstream(LiteLLMUpstream(
                endpoint.base_url, endpoint.api_key,
                timeout=endpoint.timeout or settings.upstream_timeout), executor)
        azure = (endpoint.base_url, endpoint.azure_api_version) \
            if endpoint.azure_api_version else None
        client = OpenAIUpstream(endpoint.base_url, endpoint.api_key, azure=azure,
                                timeout=endpoint.timeout or settings.upstream_timeout,
                                retries=0, pool_size=max(8, settings.max_parallel_calls * 2),
                                on_headers=on_headers,
                                verify=getattr(settings, "tls_verify", True))
        return ChoicesUpstream(client, executor)

    url = getattr(settings, "redis_url", None) or gateway.general.redis_url
    shared = None
    if url:
        from .shared import SharedState

        shared = SharedState(url)
    return RouterUpstream(gateway.model_groups, default, factory, gateway.general,
                          shared=shared)
