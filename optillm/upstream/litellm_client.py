"""LiteLLM as an upstream: every call goes through ``litellm.completion``, so any of LiteLLM's
providers (``anthropic/...``, ``bedrock/...``, ``vertex_ai/...``, ``ollama/...``, ``openai/...``)
serves the approaches.

Used for ``--upstream-provider litellm`` (the request's model is LiteLLM's model string; a
``--base-url`` becomes ``api_base``) and for gateway endpoints with ``provider: litellm``
(the endpoint's ``model`` is LiteLLM's; ``base_url`` / ``api_key`` are optional and passed as
``api_base`` / ``api_key``). Without a key LiteLLM finds the provider's own (its variables,
``ANTHROPIC_API_KEY`` and the like).

Mapping: the request's messages and parameters go as they are (``drop_params`` on, so a
parameter a provider lacks is dropped by LiteLLM rather than refused); the answer is read as
an OpenAI chat completion (``Completion.from_dict`` of LiteLLM's ``ModelResponse``), its usage
as ours; streams ask for the usage chunk (``stream_options.include_usage``). Errors: LiteLLM's
exceptions are the ``openai`` SDK's subclasses and go through ``translate_upstream_errors``
(their status kept: 400, 401, 404, 429 as they are, 5xx as 502, timeouts as 504); anything
else LiteLLM raises is a 502 naming it. ``passthrough`` bytes are served by the typed calls
(``typed_forward``). Retries are LiteLLM's (``num_retries``).

``litellm`` is the optional extra of that name; without it every call is a 501
``MissingExtraError`` naming ``pip install 'optillm[litellm]'``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import MissingExtraError, OptillmError, UpstreamError, translate_upstream_errors
from ..types import ChatRequest, Chunk, Completion
from .base import NO_META, CallMeta, RawResponse, Upstream
from .typed_forward import forward_typed

EXTRA = "litellm"


def load_litellm():
    """The ``litellm`` module. Raises: MissingExtraError (501) naming the extra."""
    from ..settings import prepare_litellm_import

    prepare_litellm_import()  # no price-list download at import
    try:
        return importlib.import_module("litellm")
    except ImportError:
        raise MissingExtraError.for_extra("the litellm upstream", EXTRA, "litellm") from None


@contextlib.contextmanager
def translate_litellm_errors() -> Iterator[None]:
    """LiteLLM's exceptions as ours (see the module docstring)."""
    try:
        with translate_upstream_errors():
            yield
    except OptillmError:
        raise
    except Exception as exc:  # noqa: BLE001 - a LiteLLM failure that is no openai error
        raise UpstreamError(f"litellm: {type(exc).__name__}: {exc}") from exc


def _dump(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return dict(obj)


class LiteLLMUpstream(Upstream):
    """An ``Upstream`` over ``litellm.completion``.

    Args:
        api_base / api_key: passed to every call when set. timeout: seconds per call.
        retries: LiteLLM's ``num_retries``. extra: further ``litellm.completion`` arguments
        (``custom_llm_provider``, ``drop_params``, ...).
    """

    def __init__(self, api_base: str | None = None, api_key: str | None = None, *,
                 timeout: float = 600.0, retries: int = 0,
                 extra: Mapping[str, Any] | None = None):
        self.api_base = api_base or None
        self.api_key = api_key or None
        self.timeout = timeout
        self.retries = retries
        self.extra = {"drop_params": True, **(extra or {})}

    def _args(self, request: ChatRequest, meta: CallMeta) -> dict[str, Any]:
        args: dict[str, Any] = {**request.params, **self.extra}
        for key in ("stream", "stream_options"):
            args.pop(key, None)
        args.update(model=request.model, messages=[m.to_dict() for m in request.messages],
                    timeout=self.timeout, num_retries=self.retries)
        if request.n != 1:
            args["n"] = request.n
        if self.api_base:
            args["api_base"] = self.api_base
        key = self.api_key or meta.api_key
        if key:
            args["api_key"] = key
        return args

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        litellm = load_litellm()
        with translate_litellm_errors():
            response = litellm.completion(**self._args(request, meta))
            data = _dump(response)
        if not data.get("choices"):
            raise UpstreamError(f"litellm returned no choices: {str(data)[:200]}")
        data["model"] = data.get("model") or request.model
        return Completion.from_dict(data)

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        litellm = load_litellm()
        with translate_litellm_errors():
            chunks = litellm.completion(**self._args(request, meta), stream=True,
                                        stream_options={"include_usage": True})
        return self._chunks(chunks)

    @staticmethod
    def _chunks(chunks) -> Iterator[Chunk]:
        try:
            with translate_litellm_errors():
                for item in chunks:
                    data = _dump(item)
                    usage = data.get("usage")
                    if usage and data.get("choices"):  # usage riding on a content chunk
                        yield Chunk.from_dict({**data, "usage": None})
                        yield Chunk.from_dict({**data, "choices": []})
                        continue
                    yield Chunk.from_dict(data)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def forward(self, body: bytes, meta: CallMeta = NO_META, stream: bool = False,
                model: str | None = None) -> RawResponse:
        return forward_typed(self, body, meta, stream)
