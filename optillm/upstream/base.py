"""The upstream interface every layer of the stack implements, and the values it passes.

``Upstream`` has these calls:

- ``complete(request, meta) -> Completion``: one chat completion (all ``n`` choices).
- ``stream(request, meta) -> Iterator[Chunk]``: the same, streamed; closing the iterator
  closes the upstream connection (that is how a cut trace stops costing tokens).
- ``forward(body, meta, stream, model) -> RawResponse``: the passthrough hot path; the client's JSON
  bytes go up, the upstream's bytes come back unparsed.
- ``models(meta) -> list[dict]``: the upstream's ``/models`` entries.
- ``complete_text(prompt, model, params, meta) -> Completion``: one text completion of a raw
  prompt (``/v1/completions``), for approaches that continue a trace (s1 budget forcing).
- ``apply_template(messages, model, meta) -> str``: the chat rendered as the model's raw
  prompt, generation prompt included (llama-server's ``POST /apply-template``).
- ``count_tokens(text, model, meta) -> int``: how many tokens ``text`` is in the model's
  tokenizer (llama-server's ``POST /tokenize``).

The last three are optional: the base class raises ``CapabilityError`` (a 400 naming what is
missing), which is what an upstream without them answers.

Wrappers (logging, batching, ...) subclass ``UpstreamWrapper`` and are composed once in
``create_app``; each forwards what it does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CapabilityError
from ..types import ChatRequest, Chunk, Completion, Message


@dataclass(frozen=True)
class CallMeta:
    """Who a call is for: the proxy request it belongs to, and the key to send upstream.

    ``api_key`` is the client's own key, forwarded when the proxy has none of its own.
    ``on_call`` receives a record of every upstream call made for the request (the
    conversation logger sets it; other layers ignore it).
    """

    request_id: str = ""
    api_key: str | None = None
    on_call: Callable[[dict[str, Any]], None] | None = None


NO_META = CallMeta()


@dataclass
class RawResponse:
    """An upstream HTTP answer, unparsed. ``chunks`` yields the body; ``close()`` releases it.

    ``cache`` is ``"hit"`` or ``"miss"`` when the stack's cache layer handled the call
    (``optillm.upstream.cache.CachingUpstream``), else None; the face sends it to the client
    as ``X-Optillm-Cache``. A wrapper that rebuilds a response keeps it.
    """

    status: int
    content_type: str
    chunks: Iterator[bytes]
    close: Callable[[], None] = lambda: None
    headers: Mapping[str, str] = field(default_factory=dict)
    cache: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What the upstream supports. ``None`` means not known yet (found out on first use)."""

    n: bool | None = None
    logprobs: bool | None = None
    text_completions: bool | None = None
    chat_template: bool | None = None
    tokenize: bool | None = None


class Upstream:
    """Base class: an OpenAI-compatible chat completion provider."""

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        raise NotImplementedError

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        raise NotImplementedError

    def forward(self, body: bytes, meta: CallMeta = NO_META, stream: bool = False,
                model: str | None = None) -> RawResponse:
        raise NotImplementedError

    def models(self, meta: CallMeta = NO_META) -> list[dict[str, Any]]:
        return []

    def complete_text(self, prompt: str, model: str, params: Mapping[str, Any],
                      meta: CallMeta = NO_META) -> Completion:
        """One text completion of ``prompt`` (no chat template applied); the generated text
        is choice 0's message content, ``usage`` is the call's.

        ``params`` are sampling fields (``max_tokens``, ``temperature``, ``seed``, ...).
        Raises: ``CapabilityError`` when the upstream serves no text completions; the
        ``optillm.errors`` types of a failed call.
        """
        raise CapabilityError(f"the upstream ({type(self).__name__}) serves no text "
                              f"completions (/v1/completions)")

    def apply_template(self, messages: Sequence[Message], model: str,
                       meta: CallMeta = NO_META) -> str:
        """``messages`` rendered with the model's chat template as one prompt string, ending
        with the generation prompt (the assistant turn's opening).

        Raises: ``CapabilityError`` when the upstream cannot render chat templates.
        """
        raise CapabilityError(f"the upstream ({type(self).__name__}) cannot render chat "
                              f"templates (llama-server's POST /apply-template)")

    def count_tokens(self, text: str, model: str, meta: CallMeta = NO_META) -> int:
        """The number of tokens ``text`` is in ``model``'s tokenizer (no special tokens, no
        chat template: the text alone).

        Raises: ``CapabilityError`` when the upstream cannot count tokens (the caller decides
        whether an estimate will do); the ``optillm.errors`` types of a failed call.
        """
        raise CapabilityError(f"the upstream ({type(self).__name__}) cannot count tokens "
                              f"(llama-server's POST /tokenize)")

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    def close(self) -> None:
        pass


class UpstreamWrapper(Upstream):
    """An upstream that delegates to ``inner``; subclasses override what they change."""

    def __init__(self, inner: Upstream):
        self.inner = inner

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        return self.inner.complete(request, meta)

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        return self.inner.stream(request, meta)

    def forward(self, body: bytes, meta: CallMeta = NO_META, stream: bool = False,
                model: str | None = None) -> RawResponse:
        return self.inner.forward(body, meta, stream, model)

    def models(self, meta: CallMeta = NO_META) -> list[dict[str, Any]]:
        return self.inner.models(meta)

    def complete_text(self, prompt: str, model: str, params: Mapping[str, Any],
                      meta: CallMeta = NO_META) -> Completion:
        return self.inner.complete_text(prompt, model, params, meta)

    def apply_template(self, messages: Sequence[Message], model: str,
                       meta: CallMeta = NO_META) -> str:
        return self.inner.apply_template(messages, model, meta)

    def count_tokens(self, text: str, model: str, meta: CallMeta = NO_META) -> int:
        return self.inner.count_tokens(text, model, meta)

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def close(self) -> None:
        self.inner.close()
