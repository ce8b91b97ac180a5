"""optillm as a LiteLLM custom provider: ``litellm.completion(model="optillm/<approach>/<model>")``
runs that approach in this process, with LiteLLM itself as the approach's upstream.

After Composite LLM's ``composite/<strategy>/<provider>/<model>`` provider. Model forms (after
LiteLLM's ``optillm/`` provider prefix)::

    optillm/moa/openai/gpt-4o-mini               moa, its calls to LiteLLM's openai/gpt-4o-mini
    optillm/bon&re2/anthropic/claude-3-5-haiku   a sequence (``|``: parallel), as in the proxy
    optillm/profile/<name>                       a profile of the config given to register()
    optillm/<any model name form>                moa-openai/gpt-4o-mini, council/..., cli/...

Use::

    from optillm.integrations.litellm import register
    register()                                   # once; register(config="optillm.yaml")
    litellm.completion(model="optillm/moa/openai/gpt-4o-mini", messages=[...],
                       api_base="http://127.0.0.1:8080/v1", api_key="sk-...")

``api_base`` / ``api_key`` of the call go to every inner LiteLLM call. Approach options ride in
the call's extra fields (``moa_candidates=2``, or ``extra_body={...}``). The answer's usage is
the exact sum over every inner call; ``stream=True`` streams the approach's final call as it is
generated (the rest of the answer when ready, for approaches that cannot stream), its last chunk
carrying that usage. Errors are LiteLLM ``CustomLLMError`` values with our status and message.

LiteLLM's proxy loads this provider from its config (``docs/litellm.md``)::

    litellm_settings:
      custom_provider_map:
        - {provider: optillm, custom_handler: optillm.integrations.litellm.handler}

``handler`` is made on each access (``__getattr__``), so this module holds no state; each
``OptillmLLM`` keeps its registry and executor for its own life.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ..concurrency import BoundedExecutor
from ..errors import NotFoundError, OptillmError
from ..plan.loader import build_registry
from ..plan.pipeline import Pipeline
from ..plan.planner import Plan, parse_plan, split_slugs
from ..plan.profiles import install as install_profiles
from ..settings import Settings
from ..types import ChatRequest, Completion, Message, new_id
from ..upstream.base import CallMeta
from ..upstream.choices import ChoicesUpstream
from ..upstream.litellm_client import LiteLLMUpstream, load_litellm

PROVIDER = "optillm"
#: ``optional_params`` LiteLLM adds for a custom provider that are no request fields.
_NOT_FIELDS = frozenset({"stream", "stream_options", "extra_body", "extra_headers", "api_base",
                         "api_key", "timeout", "num_retries", "drop_params"})


def _custom_llm_base():
    return load_litellm().CustomLLM


class _Engine:
    """The registry, plugin manager and executor of one provider instance."""

    def __init__(self, settings: Settings, config: str | None):
        from ..upstream.config import load_config

        self.settings = settings
        self.gateway = load_config(config, settings.environ) if config else None
        self.plugin_manager, self.registry = build_registry(settings.plugins_dir)
        install_profiles(self.plugin_manager, self.registry, self.gateway)
        self.executor = BoundedExecutor(settings.max_parallel_calls)

    def plan(self, model: str, body: dict[str, Any],
             messages: tuple[Message, ...]) -> tuple[Plan, tuple[Message, ...]]:
        """``<slugs>/<model>`` when the first segment names registered approaches, else every
        model-name form the proxy knows (``profile/<name>``, ``moa-<model>``, ...).

        Raises: NotFoundError for unknown approaches."""
        head, _, rest = model.partition("/")
        if rest and head not in ("profile", "composite", "council", "cli"):
            op, slugs = split_slugs(head)
            if all(s in self.registry for s in slugs):
                plan, messages = parse_plan(rest, body, messages, self.registry, hook=None,
                                            default_approach="auto")
                if plan.is_passthrough:
                    return Plan(op, slugs, rest), messages
                return plan, messages
            if op != "single":
                unknown = [s for s in slugs if s not in self.registry]
                raise NotFoundError(f"unknown approach {unknown[0]!r} in {model!r}")
        return parse_plan(model, body, messages, self.registry, hook=self.plugin_manager.hook,
                          default_approach=self.settings.approach)

    def pipeline(self, api_base: str | None, api_key: str | None, timeout: Any) -> Pipeline:
        seconds = float(timeout) if isinstance(timeout, (int, float)) else \
            self.settings.upstream_timeout
        upstream = ChoicesUpstream(LiteLLMUpstream(api_base, api_key, timeout=seconds),
                                   self.executor)
        return Pipeline(self.registry, upstream, self.executor, self.settings.upstream_timeout,
                        {}, self.settings)


def _body(model: str, messages: list, optional_params: dict) -> dict[str, Any]:
    body = {k: v for k, v in (optional_params or {}).items() if k not in _NOT_FIELDS}
    body.update((optional_params or {}).get("extra_body") or {})
    body.update(model=model, messages=messages)
    return body


def _usage_block(completion: Completion) -> dict[str, int]:
    return completion.usage.to_dict()


def make_handler(settings: Settings | None = None, config: str | None = None):
    """A new ``OptillmLLM`` (a ``litellm.CustomLLM``). Raises: MissingExtraError without
    litellm; ConfigError for a bad ``config``."""
    base = _custom_llm_base()

    class OptillmLLM(base):
        """optillm's approaches as LiteLLM's ``optillm`` provider (module docstring)."""

        def __init__(self) -> None:
            super().__init__()
            self.engine = _Engine(settings or Settings(), config)

        def _prepare(self, model, messages, optional_params, api_base, api_key, timeout):
            body = _body(model, messages, optional_params)
            try:
                request = ChatRequest.from_body({**body, "stream": False})
                plan, msgs = self.engine.plan(model, body, request.messages)
            except OptillmError as exc:
                raise _error(exc) from None
            return (self.engine.pipeline(api_base, api_key, timeout), plan,
                    request.replace(messages=msgs), body)

        def completion(self, model, messages, api_base, custom_prompt_dict, model_response,
                       print_verbose, encoding, api_key, logging_obj, optional_params,
                       acompletion=None, litellm_params=None, logger_fn=None, headers=None,
                       timeout=None, client=None):
            pipeline, plan, request, body = self._prepare(model, messages, optional_params,
                                                          api_base, api_key, timeout)
            try:
                result = pipeline.run(plan, request, body, CallMeta(new_id("req-")))
            except OptillmError as exc:
                raise _error(exc) from None
            return _model_response(result.completion, model)

        def streaming(self, model, messages, api_base, custom_prompt_dict, model_response,
                      print_verbose, encoding, api_key, logging_obj, optional_params,
                      acompletion=None, litellm_params=None, logger_fn=None, headers=None,
                      timeout=None, client=None) -> Iterator[dict[str, Any]]:
            pipeline, plan, request, body = self._prepare(model, messages, optional_params,
                                                          api_base, api_key, timeout)
            return _stream(self.engine.executor, pipeline, plan, request, body)

        async def acompletion(self, *args, **kwargs):
            import asyncio

            return await asyncio.to_thread(self.completion, *args, **kwargs)

        async def astreaming(self, *args, **kwargs):
            import asyncio

            chunks = await asyncio.to_thread(self.streaming, *args, **kwargs)
            end = object()
            while True:
                item = await asyncio.to_thread(next, chunks, end)
                if item is end:
                    return
                yield item

    return OptillmLLM()


def _error(exc: OptillmError):
    load_litellm()
    from litellm.llms.custom_llm import CustomLLMError

    return CustomLLMError(status_code=exc.status, message=exc.message)


def _model_response(completion: Completion, model: str):
    litellm = load_litellm()
    data = completion.to_dict()
    data["model"] = model
    return litellm.ModelResponse(**data)


def _chunk(text: str, finished: bool = False, finish_reason: str = "",
           usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {"text": text, "tool_use": None, "is_finished": finished,
            "finish_reason": finish_reason, "usage": usage, "index": 0}


def _stream(executor, pipeline: Pipeline, plan: Plan, request: ChatRequest,
            body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """LiteLLM's ``GenericStreamingChunk`` dicts of a streamed run: the final call's pieces as
    generated, the rest of the answer when ready, then the finish chunk with the usage."""
    from ..web.runner import BackgroundRun, unsent  # no Flask: the shared run-on-executor loop

    def run(sink, cancelled: threading.Event):
        return pipeline.run(plan, request, body, CallMeta(new_id("req-")), sink=sink,
                            cancelled=cancelled)

    background = BackgroundRun(run, executor, keepalive=3600.0)
    try:
        for kind, value in background:
            if kind == "text":
                yield _chunk(value)
            elif kind == "result":
                rest = unsent(value)
                if rest:
                    yield _chunk(rest)
                choice = value.completion.choices[0]
                yield _chunk("", True, choice.finish_reason or "stop",
                             _usage_block(value.completion))
    except OptillmError as exc:
        raise _error(exc) from None
    finally:
        background.close()


def register(settings: Settings | None = None, config: str | None = None):
    """Add the ``optillm`` provider to LiteLLM (once; a second call replaces the first) and
    return its handler. ``settings``: the approaches' server settings (defaults otherwise);
    ``config``: a gateway YAML for ``optillm/profile/<name>``.

    Raises: MissingExtraError (501) without litellm; ConfigError for a bad config."""
    litellm = load_litellm()
    handler = make_handler(settings, config)
    litellm.custom_provider_map = [p for p in litellm.custom_provider_map
                                   if p.get("provider") != PROVIDER]
    litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": handler})
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
    return handler


def __getattr__(name: str):
    """``handler``: a new provider instance, for LiteLLM proxy's ``custom_handler``
    (``OPTILLM_CONFIG`` through ``Settings`` names a gateway YAML for profiles)."""
    if name == "handler":
        settings = Settings.from_env()
        return make_handler(settings, settings.config)
    raise AttributeError(name)


