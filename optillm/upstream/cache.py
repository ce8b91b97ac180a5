"""The response cache for deterministic requests (LLMProxy's Redis cache, with an exact key).

What is cached: answers to requests with ``temperature`` 0 or an integer ``seed``, in the shared
store (``optillm.upstream.store``: Redis, else the on-disk store), for ``ttl`` seconds:

- the passthrough's upstream bytes (``CachingUpstream.forward``, which parses the JSON body it
  relays to key it): a JSON body whole, a stream as the pieces ``RawResponse.chunks`` gave, so
  a hit replays the same bytes with the same chunking; the answer's ``RawResponse.cache`` says
  ``hit`` or ``miss``;
- an approach request's final ``Completion`` (``kind="approach"``, keyed and kept by
  ``optillm.plan.answer_cache`` over the pipeline), replayed as JSON or as an approach stream;
- the typed calls of the stack (``CachingUpstream``: ``complete`` as a ``Completion``,
  ``stream`` as its ``Chunk`` sequence, ``complete_text``), i.e. an approach's own calls.

Composed once, in ``create_app``: ``CachingUpstream`` in the stack, the same ``ResponseCache``
under the plan layer's answer cache; the face only reads the directive and reports hit or miss.

Only complete 200 answers are stored: never an error status, a stream that did not end with
``data: [DONE]`` or carried an error event, a body without ``choices``, or a stream the client
or the approach closed early.

The key is the SHA-256 of canonical JSON (sorted keys) of the request's answer-changing fields
plus a scope: every body field except ``stream`` and ``stream_options`` (how the answer is
carried, not what it is; they are part of a passthrough key, whose value is the bytes), ``user``,
``safety_identifier`` and ``prompt_cache_key`` (identify the caller, never change the answer)
and ``cache`` (the directive itself). So ``model``, ``messages``, ``tools``, ``tool_choice``,
``response_format``, ``n``, ``stop``, ``logprobs``, ``top_logprobs``, every sampling parameter,
``seed``, ``metadata``, ``service_tier`` and unknown fields all count. The scope is the upstream's
identity (its ``cache_scope``, else its ``base_url``) and, when the proxy forwards the client's
own key upstream, a hash of that key (a client must not read what another's key paid for).
An approach key adds the plan (op, slugs, upstream model, model-name options) and whether the
full reasoning trace is returned.

The body field ``cache`` (``extra_body`` in the SDK) directs it: ``{"no-cache": true}`` neither
reads nor writes, ``{"no-store": true}`` reads but does not write. ``clear()`` (``DELETE
/cache``) removes every entry. A failing store is logged and counts as a miss; it is then left
alone for ``RETRY_AFTER`` seconds, so an unreachable Redis costs no request its answer.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import BadRequestError
from ..types import ChatRequest, Chunk, Completion
from .base import NO_META, CallMeta, RawResponse, Upstream, UpstreamWrapper

log = logging.getLogger(__name__)

#: Fields that identify the caller or carry the directive: never part of a key.
NEUTRAL_FIELDS = frozenset({"cache", "user", "safety_identifier", "prompt_cache_key"})
#: How an answer is carried: part of a key only where the value is the upstream's bytes.
TRANSPORT_FIELDS = frozenset({"stream", "stream_options"})
_LEFT_OUT = NEUTRAL_FIELDS | TRANSPORT_FIELDS
#: Seconds the store is left alone after it failed.
RETRY_AFTER = 10.0
_MAGIC = b"optillm-cache/1\n"
_HIT, _MISS = "hit", "miss"


def answer_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a request body that can change its answer (see the module docstring)."""
    return {k: v for k, v in body.items() if k not in _LEFT_OUT}


def is_deterministic(params: Mapping[str, Any]) -> bool:
    """True for ``temperature`` 0 or an integer ``seed`` (what the cache serves)."""
    temperature = params.get("temperature")
    if temperature == 0 and not isinstance(temperature, bool):
        return True
    seed = params.get("seed")
    return isinstance(seed, int) and not isinstance(seed, bool)


@dataclass(frozen=True)
class CacheControl:
    """A request's ``cache`` directive: may the cache be read, may it be written."""

    read: bool = True
    write: bool = True

    @classmethod
    def parse(cls, directive: Any) -> CacheControl:
        """``{"no-cache": true}`` -> neither; ``{"no-store": true}`` -> read only.

        Raises: BadRequestError (not an object, or a flag that is not a boolean).
        """
        if directive is None:
            return cls()
        if not isinstance(directive, dict):
            raise BadRequestError('\'cache\' must be an object such as {"no-cache": true}',
                                  param="cache")
        for flag in ("no-cache", "no-store"):
            if not isinstance(directive.get(flag, False), bool):
                raise BadRequestError(f"'cache.{flag}' must be a boolean", param="cache")
        no_cache = directive.get("no-cache", False)
        return cls(read=not no_cache, write=not (no_cache or directive.get("no-store", False)))


DEFAULT_CONTROL = CacheControl()


@dataclass(frozen=True)
class CacheCallMeta(CallMeta):
    """A ``CallMeta`` that carries the request's directive down to ``CachingUpstream`` and
    the answer cache (made by the face only when the request has a ``cache`` field)."""

    cache: CacheControl = DEFAULT_CONTROL


def control_of(meta: CallMeta) -> CacheControl:
    return getattr(meta, "cache", None) or DEFAULT_CONTROL


@dataclass(frozen=True)
class Entry:
    """A stored answer: ``kind`` (``raw``, ``completion``, ``chunks``, ``text``), its pieces
    (raw: the upstream's byte pieces; completion/text: one JSON object; chunks: one JSON
    object per chunk) and, for raw entries, the upstream's content type."""

    kind: str
    pieces: tuple[bytes, ...]
    content_type: str = ""

    def encode(self, data: bytes | None = None) -> bytes:
        """``data`` is ``b"".join(self.pieces)`` when the caller already has it."""
        header = orjson.dumps({"kind": self.kind, "content_type": self.content_type,
                               "sizes": [len(p) for p in self.pieces]})
        return _MAGIC + header + b"\n" + (b"".join(self.pieces) if data is None else data)

    @classmethod
    def decode(cls, value: bytes) -> Entry:
        """Raises: ValueError (not an entry written by this module)."""
        if not value.startswith(_MAGIC):
            raise ValueError("not a cache entry")
        end = value.index(b"\n", len(_MAGIC))
        header = orjson.loads(value[len(_MAGIC):end])
        pieces, at = [], end + 1
        for size in header["sizes"]:
            pieces.append(value[at:at + size])
            at += size
        if at != len(value):
            raise ValueError("cache entry is truncated or too long")
        return cls(header["kind"], tuple(pieces), header.get("content_type") or "")


def complete_answer(data: bytes, stream: bool) -> bool:
    """Whether upstream bytes (status 200) are a whole answer worth keeping: a stream that
    ends with ``[DONE]`` and carries no error event; a JSON body with ``choices``."""
    if stream:
        return data.rstrip().endswith(b"data: [DONE]") and b'data: {"error"' not in data \
            and b'data:{"error"' not in data
    return b'"choices"' in data


class Slot:
    """One request's place in the cache: its key and what its directive allows."""

    def __init__(self, cache: ResponseCache, key: str, control: CacheControl):
        self.cache = cache
        self.key = key
        self.control = control

    def get(self, kind: str) -> Entry | None:
        """The stored entry of this kind (counted as a hit), else None (a miss)."""
        return self.cache.get(self.key, kind) if self.control.read else None

    def put(self, entry: Entry, data: bytes | None = None) -> None:
        if self.control.write:
            self.cache.put(self.key, entry, data)

    def get_completion(self) -> bytes | None:
        """A stored ``Completion`` as its JSON bytes (``to_dict()`` form)."""
        entry = self.get("completion")
        return entry.pieces[0] if entry is not None else None

    def put_completion(self, completion: Completion) -> None:
        self.put(Entry("completion", (orjson.dumps(completion.to_dict()),)))


class ResponseCache:
    """Deterministic answers in a shared ``KVStore`` for ``ttl`` seconds.

    ``scope`` is the upstream's identity (``CachingUpstream`` fills it in from the stack it
    wraps when it is empty). ``stats()`` counts this process's hits, misses and writes.
    """

    def __init__(self, store: Any, ttl: float, *, scope: str = "", namespace: str = "cache:"):
        self.store = store
        self.ttl = ttl
        self.scope = scope
        self.namespace = namespace
        self._lock = threading.Lock()
        self._counts = {"hits": 0, "misses": 0, "writes": 0}
        self._down_until = 0.0

    # -- keys ---------------------------------------------------------------------------------

    def key(self, kind: str, fields: Mapping[str, Any], meta: CallMeta = NO_META,
            **extra: Any) -> str | None:
        """The store key of a request (None when its fields cannot be serialised)."""
        doc = {"v": 1, "kind": kind, "scope": self.scope, "fields": fields, **extra}
        if meta.api_key:
            doc["client"] = hashlib.sha256(meta.api_key.encode()).hexdigest()
        try:
            canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return None
        return self.namespace + hashlib.sha256(canonical).hexdigest()

    def slot(self, kind: str, fields: Mapping[str, Any], meta: CallMeta = NO_META,
             control: CacheControl | None = None, **extra: Any) -> Slot | None:
        """The request's slot, or None when it is not cached at all (not deterministic,
        ``no-cache``, or unserialisable)."""
        control = control or control_of(meta)
        if not (control.read or control.write) or not is_deterministic(fields):
            return None
        key = self.key(kind, fields, meta, **extra)
        return Slot(self, key, control) if key is not None else None

    # -- the store ----------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _failed(self, what: str, exc: Exception) -> None:
        first = self._down_until <= time.monotonic()
        self._down_until = time.monotonic() + RETRY_AFTER
        if first:
            log.warning("response cache: %s failed (%s: %s); not using the store for %g s",
                        what, type(exc).__name__, exc, RETRY_AFTER)

    def get(self, key: str, kind: str) -> Entry | None:
        """The entry at ``key`` when it is of ``kind``; counts a hit or a miss."""
        entry = None
        if self._down_until <= time.monotonic():
            try:
                value = self.store.get(key)
                entry = Entry.decode(value) if value is not None else None
            except ValueError as exc:
                log.warning("response cache: unreadable entry %s: %s", key, exc)
            except Exception as exc:  # noqa: BLE001 - a broken store is a miss, not a failure
                self._failed("read", exc)
        if entry is not None and entry.kind != kind:
            entry = None
        self._count("hits" if entry is not None else "misses")
        return entry

    def put(self, key: str, entry: Entry, data: bytes | None = None) -> None:
        if self._down_until > time.monotonic():
            return
        try:
            self.store.set(key, entry.encode(data), self.ttl)
        except Exception as exc:  # noqa: BLE001 - losing a write must not fail the request
            self._failed("write", exc)
            return
        self._count("writes")

    def clear(self) -> int:
        """Remove every cached answer (of every process sharing the store); returns how many.

        Raises: the store's errors (``StoreError``, Redis errors).
        """
        removed = self.store.clear(self.namespace)
        self._down_until = 0.0
        return removed

    def stats(self) -> dict[str, Any]:
        """``{"hits", "misses", "writes", "backend"}``: this process's counts since start."""
        with self._lock:
            counts = dict(self._counts)
        return {**counts, "backend": backend_name(self.store)}

    # -- the passthrough ----------------------------------------------------------------------

    def forward(self, upstream: Upstream, raw: bytes, body: Mapping[str, Any], meta: CallMeta,
                stream: bool, model: str | None) -> RawResponse:
        """``upstream.forward(raw, ...)`` through the cache, marked ``cache`` hit or miss.

        ``body`` is ``raw`` parsed (the fields sent upstream); the directive comes with
        ``meta``. A hit replays the stored pieces; a miss of a cacheable request stores the
        answer once the caller has read all of it.
        """
        form = {"form": "sse", "stream_options": body.get("stream_options")} if stream \
            else {"form": "json"}
        slot = self.slot("raw", answer_fields(body), meta, **form)
        if slot is not None:
            entry = slot.get("raw")
            if entry is not None:
                return RawResponse(200, entry.content_type, iter(entry.pieces), cache=_HIT)
        response = upstream.forward(raw, meta, stream, model)
        chunks = response.chunks
        if slot is not None and slot.control.write and response.status == 200:
            chunks = _keep_raw(slot, response, stream)
        return RawResponse(response.status, response.content_type, chunks, response.close,
                           response.headers, cache=_MISS)


def _keep_raw(slot: Slot, response: RawResponse, stream: bool) -> Iterator[bytes]:
    """Relay ``response``'s pieces; once all went through, store them if they are a whole
    answer."""
    pieces: list[bytes] = []
    chunks = response.chunks
    finished = False
    try:
        for piece in chunks:
            pieces.append(piece)
            yield piece
        finished = True
    finally:
        if not finished:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
    data = b"".join(pieces)
    if complete_answer(data, stream):
        slot.put(Entry("raw", tuple(pieces), response.content_type), data)


def backend_name(store: Any) -> str:
    """``redis`` or ``disk`` for the stores of ``optillm.upstream.store``, else the type."""
    from .store import DiskStore, LazyStore, RedisStore

    if isinstance(store, LazyStore):
        return "redis" if store.redis_url else "disk"
    if isinstance(store, RedisStore):
        return "redis"
    if isinstance(store, DiskStore):
        return "disk"
    return type(store).__name__


def upstream_identity(upstream: Any) -> str:
    """What a cache scope names an upstream stack by: the first ``cache_scope`` or
    ``base_url`` down its ``inner`` chain, else the innermost upstream's type."""
    node = upstream
    for _ in range(64):
        for attr in ("cache_scope", "base_url"):
            value = getattr(node, attr, None)
            if isinstance(value, str) and value:
                return value
        inner = getattr(node, "inner", None)
        if inner is None:
            break
        node = inner
    return type(node).__qualname__


def _chunk_dict(chunk: Chunk) -> dict[str, Any]:
    return {"choices": list(chunk.choices), "usage": chunk.usage.to_dict() if chunk.usage
            else None, "model": chunk.model, "id": chunk.id, "created": chunk.created}


class CachingUpstream(UpstreamWrapper):
    """The stack's cache layer: deterministic typed calls (``complete``, ``stream``,
    ``complete_text``) and passthrough bytes (``forward``) are answered from ``cache`` when
    stored, and stored when answered.
    """

    def __init__(self, inner: Upstream, cache: ResponseCache):
        super().__init__(inner)
        self.cache = cache
        if not cache.scope:
            cache.scope = upstream_identity(inner)

    def _slot(self, kind: str, request: ChatRequest, meta: CallMeta) -> Slot | None:
        if not is_deterministic(request.params):
            return None
        fields = answer_fields(request.params)
        fields.update(model=request.model, messages=[m.to_dict() for m in request.messages],
                      n=request.n)
        if kind == "chunks":  # include_usage changes the chunks
            fields["stream_options"] = request.params.get("stream_options")
        return self.cache.slot(kind, fields, meta)

    def forward(self, body: bytes, meta: CallMeta = NO_META, stream: bool = False,
                model: str | None = None) -> RawResponse:
        """The passthrough through ``ResponseCache.forward`` (one ``orjson`` parse of the body
        to key it); a body that is not a JSON object goes upstream uncached, a miss."""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return self.cache.forward(self.inner, body, parsed, meta, stream, model)
        response = self.inner.forward(body, meta, stream, model)
        response.cache = _MISS
        return response

    def complete(self, request: ChatRequest, meta: CallMeta = NO_META) -> Completion:
        slot = self._slot("completion", request, meta)
        if slot is None:
            return self.inner.complete(request, meta)
        data = slot.get_completion()
        if data is not None:
            return Completion.from_dict(orjson.loads(data))
        result = self.inner.complete(request, meta)
        slot.put_completion(result)
        return result

    def stream(self, request: ChatRequest, meta: CallMeta = NO_META) -> Iterator[Chunk]:
        slot = self._slot("chunks", request, meta)
        if slot is None:
            return self.inner.stream(request, meta)
        entry = slot.get("chunks")
        if entry is not None:
            return iter([Chunk.from_dict(orjson.loads(p)) for p in entry.pieces])
        # started here, so an upstream that refuses raises before the stream, as it would
        return _keep_chunks(slot, self.inner.stream(request, meta))

    def complete_text(self, prompt: str, model: str, params: Mapping[str, Any],
                      meta: CallMeta = NO_META) -> Completion:
        slot = self.cache.slot("text", {**answer_fields(params), "prompt": prompt,
                                        "model": model}, meta)
        if slot is None:
            return self.inner.complete_text(prompt, model, params, meta)
        entry = slot.get("text")
        if entry is not None:
            return Completion.from_dict(orjson.loads(entry.pieces[0]))
        result = self.inner.complete_text(prompt, model, params, meta)
        slot.put(Entry("text", (orjson.dumps(result.to_dict()),)))
        return result


def _keep_chunks(slot: Slot, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """Relay ``chunks``; store them once the stream ended normally (a stream closed early,
    e.g. a cut trace, or one that failed is not kept)."""
    kept: list[Chunk] = []
    finished = False
    try:
        for chunk in chunks:
            kept.append(chunk)
            yield chunk
        finished = True
    finally:
        if not finished:
            close: Callable[[], None] | None = getattr(chunks, "close", None)
            if close is not None:
                close()
    slot.put(Entry("chunks", tuple(orjson.dumps(_chunk_dict(c)) for c in kept)))

