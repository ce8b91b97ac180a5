"""The OpenAI-compatible upstream: the ``openai`` SDK for approaches, pooled bytes for passthrough.

One ``OpenAIUpstream`` per app: one SDK client (its connection pool is reused by every call) and
one keep-alive ``HTTPPool`` per upstream origin for the passthrough
(``optillm.upstream.http_pool``), which relays the client's JSON bytes and the upstream's answer
without parsing them (shared/PERFORMANCE.md: the SDK's per-call cost alone
exceeds the passthrough's 1 ms budget). Works with OpenAI, Azure OpenAI, vLLM, SGLang,
llama.cpp's ``llama-server``, Cerebras, OpenRouter and LiteLLM proxies.

Both paths retry before any byte has reached the client, as ``optillm.upstream.retry`` says
(no answer, 429, 500, 502, 503; backoff with jitter, ``Retry-After`` honoured up to a cap);
the SDK's own retries are off. When the retries are spent: a 429 stays a 429 carrying the
upstream's ``Retry-After``, a timeout is a 504, any other failure a 502 - a non-streamed 200
whose body is not JSON included. A passthrough stream that breaks after its first bytes, or
ends without ``data: [DONE]``, raises ``UpstreamError`` from its chunks (the HTTP face turns
it into a final error event).

The gateway's router builds one per endpoint (``retries=0``: the router retries on another
endpoint) and passes ``on_headers`` to see the rate-limit headers of successful SDK calls;
failed calls raise errors that carry the upstream's status, headers and ``Retry-After``
(``optillm.errors``), and the passthrough hands its headers back in ``RawResponse``.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import urllib3

from ..errors import (
    CapabilityError,
    NotFoundError,
    UpstreamError,
    UpstreamUnreachableError,
    error_text,
    from_upstream_status,
    translate_upstream_errors,
)
from ..types import ChatRequest, Choice, Chunk, Completion, Message, Usage, new_id
from .base import NO_META, CallMeta, Capabilities, RawResponse, Upstream
from .http_pool import HTTPPool
from .passthrough import forward_once
from .passthrough import unreachable as _unreachable
from .retry import RETRY_STATUSES, RetryPolicy

log = logging.getLogger(__name__)

#: Sent upstream when neither the proxy nor the client has a key (local servers ignore it).
PLACEHOLDER_KEY = "sk-no-key-required"

#: Seconds a token count (``POST /tokenize``) may take before it counts as failed.
TOKENIZE_TIMEOUT = 5.0

#: Chat-only fields that a text completion (``/v1/completions``) does not take.
_CHAT_ONLY = frozenset({"chat_template_kwargs", "reasoning_effort", "max_completion_tokens",
                        "response_format", "tools", "tool_choice", "parallel_tool_calls",
                        "top_logprobs", "logprobs", "stream_options", "modalities", "audio"})


class OpenAIUpstream(Upstream):
    """An OpenAI-compatible HTTP upstream.

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8080/v1``.
        api_key: the proxy's own key for the upstream; None forwards each client's key.
        azure: ``(endpoint, api_version)`` to talk to Azure OpenAI instead.
        timeout: seconds per upstream call (a read that waits longer is a 504), also the
        retries' time budget. retries: retries of a failed call (``RetryPolicy``).
        pool_size: connections kept per host. retry: the whole policy, instead of
        ``retries``.
        on_headers: called with the response headers (a case-insensitive mapping) of every
        successful ``complete``/``stream``/``complete_text`` call; ``forward`` returns them.
    """

    def __init__(self, base_url: str | None, api_key: str | None = None, *,
                 azure: tuple[str, str] | None = None, timeout: float = 600.0,
                 retries: int = 2, pool_size: int = 32,
                 on_headers: Callable[[Mapping[str, str]], None] | None = None,
                 retry: RetryPolicy | None = None, verify: bool | str = True):
        """``verify``: check the upstream's TLS certificate against the system's CAs (True),
        against the CA bundle at that path (a str), or not at all (False; OptiLLM's
        ``--no-ssl-verify``), for the SDK's calls and the passthrough's alike."""
        import openai

        self.retry = retry or RetryPolicy(retries=max(0, retries), budget=timeout)

        self.on_headers = on_headers
        self.api_key = api_key
        self.azure = azure
        self.timeout = timeout
        if azure:
            endpoint, version = azure
            self.client = openai.AzureOpenAI(api_key=api_key or PLACEHOLDER_KEY,
                                             azure_endpoint=endpoint, api_version=version,
                                             timeout=timeout, max_retries=0,
                                             **_sdk_tls(verify))
            self.base_url = endpoint.rstrip("/") + "/openai"
        else:
            self.base_url = (base_url or "https://api.openai.com/v1").rstrip("/")
            self.client = openai.OpenAI(api_key=api_key or PLACEHOLDER_KEY,
                                        base_url=self.base_url, timeout=timeout,
                                        max_retries=0, **_sdk_tls(verify))
        self._retries = urllib3.Retry(total=0, connect=0, read=0, status=0, redirect=0,
                                      other=0, allowed_methods=None)  # ours do it
        self._timeout = urllib3.Timeout(connect=min(10.0, timeout), read=timeout)
        tls: dict[str, Any] = {}
        if verify is False:
            tls = {"cert_reqs": "CERT_NONE", "assert_hostname": False}
        elif isinstance(verify, str):
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": verify}
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, block=False,
                                         retries=self._retries, timeout=self._timeout, **tls)
        self._pool_size = pool_size
        self._ssl = _passthrough_tls(verify) if self.base_url.startswith("https") else None
        self._http_pools: dict[str, HTTPPool] = {}  # the passthrough's, by scheme://host:port
        self._targets: dict[str | None, tuple[HTTPPool, str]] = {}
        self._lock = threading.Lock()
        self._caps = Capabilities()

    # -- capabilities -------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def note_capability(self, **found: bool) -> None:
        """Record a capability found out from an upstream's answer."""
        import dataclasses
        with self._lock:
            self._caps = dataclasses.replace(self._caps, **found)

    # -- SDK calls (approaches) ---------------------------------------------------------

    def _headers(self, meta: CallMeta) -> dict[str, str]:
        if self.api_key or not meta.api_key:
            return {}
        if self.azure:
            return {"api-key": meta.api_key}
        return {"Authorization": f"Bearer {meta.api_key}"}

    def _create_args(self, request: ChatRequest, meta: CallMeta, stream: bool) -> dict[str, Any]:
        extra = dict(request.params)
        if request.n != 1:
            extra["n"] = request.n
        if stream:
            opts = dict(extra.get("stream_options") or {})
            opts["include_usage"] = True
            extra["stream_options"] = opts
        return {"model": request.model, "messages": [m.to_dict() for m in request.messages],
                "extra_body": extra, "extra_headers": self._headers(meta)}

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        args = self._create_args(request, meta, stream=False)

        def attempt():
            with translate_upstream_errors():
                raw = self.client.chat.completions.with_raw_response.create(**args)
                return raw, _json_body(raw.content)

        raw, data = self.retry.call(attempt)
        if self.on_headers is not None:
            self.on_headers(raw.headers)
        if not isinstance(data, dict) or "choices" not in data:
            raise UpstreamError(f"upstream returned no choices: {str(data)[:200]}")
        return Completion.from_dict(data)

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        args = self._create_args(request, meta, stream=True)

        def attempt() -> tuple[Any, Iterator[Chunk], Chunk]:
            with translate_upstream_errors():
                sdk_stream = self.client.chat.completions.create(stream=True, **args)
            chunks = self._iter_stream(sdk_stream)
            try:  # the first chunk is part of the attempt: a stream that dies at once is retried
                return sdk_stream, chunks, next(chunks)
            except StopIteration:
                raise UpstreamUnreachableError("upstream stream ended before its first "
                                               "chunk") from None

        sdk_stream, chunks, first = self.retry.call(attempt)
        if self.on_headers is not None:
            headers = getattr(getattr(sdk_stream, "response", None), "headers", None)
            if headers is not None:
                self.on_headers(headers)
        return _prepend(first, chunks)

    @staticmethod
    def _iter_stream(sdk_stream) -> Iterator[Chunk]:
        try:
            with translate_upstream_errors():
                try:
                    for item in sdk_stream:
                        yield Chunk.from_dict(item.to_dict())
                except ValueError as exc:  # an event that is not JSON
                    raise UpstreamError(f"upstream sent a malformed stream event: {exc}") \
                        from exc
        finally:
            sdk_stream.close()  # an abandoned stream stops the upstream's generation

    def complete_text(self, prompt: str, model: str, params: Mapping[str, Any],
                      meta: CallMeta = NO_META) -> Completion:
        """One ``/v1/completions`` call (see ``Upstream.complete_text``).

        Chat-only fields are left out (``max_completion_tokens`` becomes ``max_tokens``).
        Raises: ``CapabilityError`` when the upstream has no text completions for ``model``
        (a 404 from ``/v1/completions``); else as ``translate_upstream_errors``.
        """
        if self._caps.text_completions is False:
            raise CapabilityError(f"the upstream at {self.base_url} serves no text "
                                  f"completions (/v1/completions)")
        extra = {k: v for k, v in params.items() if k not in _CHAT_ONLY}
        if "max_tokens" not in extra and params.get("max_completion_tokens") is not None:
            extra["max_tokens"] = params["max_completion_tokens"]
        def attempt():
            with translate_upstream_errors():
                raw = self.client.completions.with_raw_response.create(
                    model=model, prompt=prompt, extra_body=extra,
                    extra_headers=self._headers(meta))
                return raw, _json_body(raw.content)

        try:
            raw, data = self.retry.call(attempt)
        except NotFoundError as exc:  # no such endpoint, or not for this (chat) model
            raise CapabilityError(f"the upstream serves no text completions "
                                  f"(/v1/completions) for model {model!r}: {exc.message}"
                                  ) from exc
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0], dict):
            raise UpstreamError(f"upstream returned no text completion: {str(data)[:200]}")
        if self.on_headers is not None:
            self.on_headers(raw.headers)
        self.note_capability(text_completions=True)
        first = choices[0]
        choice = Choice(0, Message("assistant", first.get("text") or ""),
                        first.get("finish_reason") or "stop", first.get("logprobs"))
        return Completion((choice,), Usage.from_dict(data.get("usage")),
                          model=data.get("model") or model, id=data.get("id") or new_id())

    def apply_template(self, messages: Sequence[Message], model: str,
                       meta: CallMeta = NO_META) -> str:
        """The chat rendered by llama-server's ``POST /apply-template`` (at the server's
        root, beside ``/v1``): ``{"messages": [...]}`` -> ``{"prompt": "..."}``.

        Raises: ``CapabilityError`` when the upstream has no such endpoint (remembered, so
        later requests fail without a call); else the mapped upstream error.
        """
        if self.azure or self._caps.chat_template is False:
            raise CapabilityError(f"the upstream at {self.base_url} cannot render chat "
                                  f"templates (llama-server's POST /apply-template)")
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {self.api_key or meta.api_key or PLACEHOLDER_KEY}"}
        body = json.dumps({"model": model, "messages": [m.to_dict() for m in messages]})
        def attempt():
            try:
                resp = self._pool.request("POST", root + "/apply-template", body=body.encode(),
                                          headers=headers, retries=self._retries,
                                          timeout=self._timeout)
            except urllib3.exceptions.HTTPError as exc:
                raise _unreachable(exc) from exc
            if resp.status in RETRY_STATUSES:
                raise from_upstream_status(resp.status, error_text(resp.data, resp.status),
                                           resp.headers)
            return resp

        resp = self.retry.call(attempt)
        try:
            data = json.loads(resp.data) if resp.data else None
        except ValueError:
            data = None
        if resp.status in (404, 405, 501) or (resp.status == 200 and not (
                isinstance(data, dict) and isinstance(data.get("prompt"), str))):
            self.note_capability(chat_template=False)
            raise CapabilityError(f"the upstream at {self.base_url} cannot render chat "
                                  f"templates (POST {root}/apply-template answered "
                                  f"{resp.status})")
        if resp.status >= 400:
            inner = data.get("error", data) if isinstance(data, dict) else None
            message = inner.get("message") if isinstance(inner, dict) else None
            raise from_upstream_status(resp.status, str(message or resp.data[:300].decode(
                "utf-8", "replace")), resp.headers)
        self.note_capability(chat_template=True)
        return data["prompt"]

    def count_tokens(self, text: str, model: str, meta: CallMeta = NO_META) -> int:
        """The tokens of ``text`` by llama-server's ``POST /tokenize`` (at the server's root,
        beside ``/v1``): ``{"content": text}`` -> ``{"tokens": [...]}``; one attempt, at most
        ``TOKENIZE_TIMEOUT`` seconds.

        Raises: ``CapabilityError`` for Azure and api.openai.com (no such endpoint; no call is
        made) and for an upstream that answers 404/405/501 or no token list (remembered, so
        later requests fail without a call); ``UpstreamError``/``UpstreamTimeoutError`` when
        it cannot be reached; else the mapped upstream error.
        """
        if self.azure or "api.openai.com" in self.base_url or self._caps.tokenize is False:
            raise CapabilityError(f"the upstream at {self.base_url} cannot count tokens "
                                  f"(llama-server's POST /tokenize)")
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {self.api_key or meta.api_key or PLACEHOLDER_KEY}"}
        limit = min(TOKENIZE_TIMEOUT, self.timeout)
        try:
            resp = self._pool.request("POST", root + "/tokenize",
                                      body=json.dumps({"content": text}).encode(),
                                      headers=headers, retries=False,
                                      timeout=urllib3.Timeout(connect=limit, read=limit))
        except urllib3.exceptions.HTTPError as exc:
            raise _unreachable(exc) from exc
        try:
            data = json.loads(resp.data) if resp.data else None
        except ValueError:
            data = None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if resp.status in (404, 405, 501) or (resp.status == 200 and not isinstance(tokens, list)):
            self.note_capability(tokenize=False)
            raise CapabilityError(f"the upstream at {self.base_url} cannot count tokens "
                                  f"(POST {root}/tokenize answered {resp.status})")
        if resp.status >= 400:
            inner = data.get("error", data) if isinstance(data, dict) else None
            message = inner.get("message") if isinstance(inner, dict) else None
            raise from_upstream_status(resp.status, str(message or resp.data[:300].decode(
                "utf-8", "replace")), resp.headers)
        self.note_capability(tokenize=True)
        return len(tokens)

    def models(self, meta: CallMeta = NO_META) -> list[dict[str, Any]]:
        with translate_upstream_errors():
            page = self.client.with_options(max_retries=0, timeout=10).models.list(
                extra_headers=self._headers(meta))
            return [m.to_dict() for m in page.data]

    # -- passthrough (bytes) ------------------------------------------------------------

    def _forward_target(self, model: str | None):
        """(connection pool, path) for the passthrough; cached so the hot path does not
        parse the URL and look up the pool on every request."""
        key = model if self.azure else None
        target = self._targets.get(key)
        if target is None:
            if self.azure:
                _, version = self.azure
                url = f"{self.base_url}/deployments/{model}/chat/completions?" + \
                    urlencode({"api-version": version})
            else:
                url = self.base_url + "/chat/completions"
            parsed = urllib3.util.parse_url(url)
            origin = f"{parsed.scheme}://{parsed.netloc}"
            with self._lock:
                pool = self._http_pools.get(origin)
                if pool is None:
                    pool = self._http_pools[origin] = HTTPPool(
                        origin, maxsize=self._pool_size, ssl_context=self._ssl,
                        connect_timeout=min(10.0, self.timeout), read_timeout=self.timeout)
            target = (pool, parsed.request_uri)
            if len(self._targets) < 1024:
                self._targets[key] = target
        return target

    def forward(self, body: bytes, meta: CallMeta = NO_META, stream: bool = False,
                model: str | None = None) -> RawResponse:
        """POST ``body`` to ``/chat/completions`` and hand back the answer unparsed, retried as
        the module docstring says. A 4xx other than 429 comes back as a ``RawResponse``;
        a stream comes back once its first bytes have arrived.

        Raises:
            RateLimitError: 429 after the retries (``retry_after`` from its header).
            UpstreamTimeoutError: no answer within the timeout, or an upstream 504/408.
            UpstreamError: no answer, a 5xx, or a non-streamed 200 that is not JSON.
        """
        headers = {"Content-Type": "application/json"}
        key = self.api_key or meta.api_key or PLACEHOLDER_KEY
        if self.azure:
            headers["api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
        pool, path = self._forward_target(model)
        return self.retry.call(lambda: forward_once(pool, path, body, headers, stream))

    def close(self) -> None:
        self.client.close()
        self._pool.clear()
        for pool in list(self._http_pools.values()):
            pool.clear()


def _prepend(first: Chunk, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    """``first`` then ``rest``; closing it closes ``rest`` (and so the SDK's stream)."""
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()


def _json_body(content: bytes) -> Any:
    """The parsed answer body. Raises: UpstreamError when it is not JSON."""
    try:
        return json.loads(content)
    except ValueError as exc:
        raise UpstreamError(f"upstream returned malformed JSON ({exc}): "
                            f"{content[:200].decode('utf-8', 'replace')!r}") from exc


def _passthrough_tls(verify: bool | str) -> ssl.SSLContext:
    """The passthrough pool's TLS context for ``verify`` (see ``OpenAIUpstream``)."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


def _sdk_tls(verify: bool | str) -> dict[str, Any]:
    """The SDK client's ``http_client`` for a non-default ``verify`` (else nothing)."""
    if verify is True:
        return {}
    import openai

    return {"http_client": openai.DefaultHttpxClient(verify=verify)}
