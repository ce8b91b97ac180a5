"""OptiLLM drop-in plugins, adapted at load time so they work unchanged.

An OptiLLM plugin file has a module-level ``SLUG`` and
``run(system_prompt, initial_query, client, model[, request_config]) -> (text, completion_tokens)``.
Its ``client`` here is ``ContextClient``: ``client.chat.completions.create(...)`` goes through the
request's ``RunContext`` (so logging, batching, ``n`` emulation and exact usage apply) and
returns the ``openai`` SDK's own ``ChatCompletion`` type, which such plugins already read.
The token count a plugin reports is used only when it made no call through the client.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..toolkit.context import Answer, RunContext
from ..types import Message
from .registry import Approach


class _Completions:
    def __init__(self, ctx: RunContext):
        self._ctx = ctx

    def create(self, *, model: str | None = None, messages: list, n: int = 1,
               stream: bool = False, extra_body: dict | None = None,
               extra_headers: Any = None, timeout: Any = None, **params: Any):
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        ctx = self._ctx
        params.update(extra_body or {})
        params.pop("stream_options", None)
        msgs = [Message.from_dict(m, i) for i, m in enumerate(messages)]
        request = ctx.build_request(msgs, n=n or 1, answer=True)
        request = request.with_params(**params)
        if model:
            request = request.replace(model=model)
        completion = ctx.complete_request(request)
        data = completion.to_dict()
        if not stream:
            return ChatCompletion.model_validate(data)
        chunks = []
        for c in data["choices"]:
            chunks.append(ChatCompletionChunk.model_validate({
                "id": data["id"], "object": "chat.completion.chunk", "created": data["created"],
                "model": data["model"], "choices": [{"index": c["index"], "delta": {
                    "role": "assistant", "content": c["message"]["content"]},
                    "finish_reason": c["finish_reason"]}]}))
        return iter(chunks)


class _Chat:
    def __init__(self, ctx: RunContext):
        self.completions = _Completions(ctx)


class ContextClient:
    """The subset of ``openai.OpenAI`` that OptiLLM plugins use, bound to one request."""

    def __init__(self, ctx: RunContext):
        self.chat = _Chat(ctx)
        self.base_url = "optillm://upstream"


def adapt_optillm_module(module: Any, source: str) -> Approach:
    """An ``Approach`` for an OptiLLM-style module (``SLUG`` + ``run``).

    Raises: ValueError when the module does not have that shape.
    """
    slug = getattr(module, "SLUG", None)
    run = getattr(module, "run", None)
    if not isinstance(slug, str) or not callable(run):
        raise ValueError("a drop-in plugin needs a string SLUG and a run() function, "
                         "or register_approaches() hook")
    params = inspect.signature(run).parameters
    takes_config = len(params) >= 5 or "request_config" in params or any(
        p.kind is p.VAR_POSITIONAL for p in params.values())

    def run_adapted(ctx: RunContext) -> Answer:
        client = ContextClient(ctx)
        args: list[Any] = [ctx.system_prompt, ctx.query, client, ctx.model]
        if takes_config:
            args.append(dict(ctx.request.params))
        result = run(*args)
        text, tokens = _unpack(result)
        if ctx.calls == 0 and tokens:
            from ..types import Usage
            ctx.add_usage(Usage(0, int(tokens)), calls=0)
        return Answer(text=text)

    return Approach(slug=slug, run=run_adapted,
                    description=(module.__doc__ or "").strip().splitlines()[0]
                    if module.__doc__ else "OptiLLM drop-in plugin",
                    source=source)


def _unpack(result: Any) -> tuple[str, int]:
    if isinstance(result, tuple) and len(result) == 2:
        text, tokens = result
    else:
        text, tokens = result, 0
    if isinstance(text, dict):  # some plugins return a full response dict
        choices = text.get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content") or ""
    return str(text), int(tokens or 0)

