"""``web_search``: search the web and answer with the results in the prompt.

Backends are plain HTTP JSON APIs (no browser automation):

- ``searxng``: ``GET {url}/search?q=...&format=json`` (a SearXNG instance with the JSON format
  enabled); results ``{"results": [{"title", "url", "content"}]}``.
- ``brave``: Brave-style search API, ``GET {url}?q=...&count=N`` with the key in
  ``X-Subscription-Token``; results ``{"web": {"results": [{"title", "url", "description"}]}}``.
- ``serper``: Serper-style API, ``POST {url}`` with ``{"q", "num"}`` and the key in
  ``X-API-KEY``; results ``{"organic": [{"title", "link", "snippet"}]}``.

Where searches go is the server's choice (``backend_for``): the URL is the server's
``--web-search-url`` (``ctx.settings.web_search_url``). A request may name another one with
``web_search_url``, but only a host that passes ``optillm.toolkit.net``'s address policy under the
server's ``--allow-private-urls`` (``ctx.settings.private_networks``): loopback, private,
link-local, CGNAT and cloud metadata addresses (127.0.0.1, 10.x, 169.254.169.254, ...) are
refused with a 400 before any connection, so a client cannot aim the proxy at the server's own
network. The key is the server's ``--web-search-api-key`` (else the body's
``web_search_api_key``) with the server's URL; with a URL from the request only the request's
own key is sent, never the server's.

The SearXNG GET goes through ``optillm.toolkit.net.fetch``: the connection is pinned to the checked
address (no DNS rebinding), redirects are re-checked, the answer is capped at
``MAX_ANSWER_BYTES`` and the whole fetch at ``web_search_timeout``. The Brave and Serper
requests carry a key header (``net.fetch`` sends none), so they go through ``httpx`` (no
redirects, no environment proxies, the answer capped) behind the host check above.

The search query is the last user message (first ``QUERY_CHARS`` characters). The results are
appended to it as numbered sources and the whole conversation is answered by one call
(``final=True``; streamed when the client streams; the client's parameters apply). With
``web_search_mode="augment"`` no model call is made: the answer is the query with the results
appended, for chains such as ``web_search&moa-<model>``. A failing or unreachable backend is
not fatal: the answer is made without results and the metadata says why.

Calls: 1 (``answer``) or 0 (``augment``), plus one HTTP search. Depth: 1.

Options (request body): ``web_search_backend`` (``searxng`` | ``brave`` | ``serper``, default
``searxng``), ``web_search_url`` (str or null: http(s); overrides the server's URL when its
host passes the address policy, else 400), ``web_search_api_key`` (str or null: for the key
APIs; see above), ``web_search_max_results`` (int 1-20, default 5), ``web_search_timeout``
(seconds, 0.5-60, default 10), ``web_search_mode`` (``answer`` | ``augment``, default
``answer``). OptiLLM's ``num_results`` and ``timeout`` are aliases of
``web_search_max_results`` and ``web_search_timeout``; its browser options
(``delay_seconds``, ``headless``, ``session_manager``) are a 400 naming them
(``unsupported_option``).

Errors: ``BadRequestError`` (400) when no URL is configured (``web_search_url_required``) or
the request's URL is refused or does not resolve (``web_search_url_refused``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

from ..errors import BadRequestError
from ..options import opt
from ..toolkit import net
from ..toolkit.context import Answer, RunContext

SLUG = "web_search"
STREAMS = True

BACKENDS = ("searxng", "brave", "serper")
QUERY_CHARS = 400
SNIPPET_CHARS = 500
USER_AGENT = "optillm-web-search/1"
MAX_ANSWER_BYTES = 2_000_000


@dataclass(frozen=True)
class SearchOptions:
    """The search backend's options, shared with ``deep_research``."""

    web_search_backend: str = opt("searxng", choices=BACKENDS)
    web_search_url: str | None = None
    web_search_api_key: str | None = None
    web_search_max_results: int = opt(5, ge=1, le=20, aliases=("num_results",))
    web_search_timeout: float = opt(10.0, ge=0.5, le=60, unit="seconds", aliases=("timeout",))

    def __post_init__(self):
        if self.web_search_url is not None:
            parts = urlsplit(self.web_search_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("web_search_url must be an http(s) URL")


@dataclass(frozen=True)
class Options(SearchOptions):
    web_search_mode: str = opt("answer", choices=("answer", "augment"))

    #: OptiLLM's browser-driving options: no browser here (the backends are search APIs).
    UNSUPPORTED: ClassVar[Mapping[str, str]] = MappingProxyType(dict.fromkeys(
        ("delay_seconds", "headless", "session_manager"),
        "searches go to a search API (web_search_backend), not a driven browser"))


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str


class SearchFailed(Exception):
    """The backend could not be reached or answered with something unusable."""


@dataclass(frozen=True)
class Backend:
    """Where one request's searches go: ``url``, the ``api_key`` sent with them, the private
    networks a fetch may reach (``allow_private``, as ``optillm.toolkit.net.fetch`` takes it) and
    whether the URL came from the request (``from_client``)."""

    url: str
    api_key: str | None = None
    allow_private: bool | tuple[str, ...] = False
    from_client: bool = False


def backend_for(ctx: RunContext, opts: SearchOptions) -> Backend:
    """The backend of this request, checked before anything connects (see the module
    docstring).

    Raises: BadRequestError when there is no URL, or the request's URL is refused.
    """
    settings = ctx.settings
    private = settings.private_networks
    if opts.web_search_url:
        url = opts.web_search_url
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            port = None
        if port is None or not parts.hostname:
            raise BadRequestError("web_search_url must be an http(s) URL with a host and a "
                                  "valid port", param="web_search_url",
                                  code="web_search_url_refused")
        try:
            net.check_host(parts.hostname, port, url, allow_private=private)
        except net.FetchError as exc:
            raise BadRequestError(f"web_search_url is refused: {exc}", param="web_search_url",
                                  code="web_search_url_refused") from None
        # never the server's key: it is for the server's backend only
        return Backend(url, opts.web_search_api_key, private, from_client=True)
    if settings.web_search_url:
        # the operator's own backend may be local (a SearXNG on 127.0.0.1); metadata
        # addresses stay refused by net.fetch even so
        return Backend(settings.web_search_url,
                       settings.web_search_api_key or opts.web_search_api_key, True)
    raise BadRequestError(f"plugin {SLUG!r} needs a search backend: the server's "
                          f"--web-search-url, or web_search_url in the request (a SearXNG "
                          f"instance or search API endpoint)", param="web_search_url",
                          code="web_search_url_required")


def _text(value: Any, limit: int = SNIPPET_CHARS) -> str:
    text = re.sub(r"<[^>]+>", "", value if isinstance(value, str) else "")
    return re.sub(r"\s+", " ", text).strip()[:limit]


def parse_results(backend: str, data: Any, limit: int) -> list[SearchResult]:
    """The results of a backend's JSON answer (``data``), at most ``limit``; entries without
    a URL or text are skipped, an answer of the wrong shape gives no results."""
    if not isinstance(data, dict):
        return []
    if backend == "searxng":
        rows, keys = data.get("results"), ("title", "url", "content")
    elif backend == "brave":
        web = data.get("web")
        rows, keys = (web.get("results") if isinstance(web, dict) else None,
                      ("title", "url", "description"))
    else:
        rows, keys = data.get("organic"), ("title", "link", "snippet")
    out: list[SearchResult] = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict):
            continue
        title, url, snippet = (_text(row.get(k)) for k in keys)
        if url and (title or snippet):
            out.append(SearchResult(title or url, url, snippet))
        if len(out) >= limit:
            break
    return out


def search(query: str, opts: SearchOptions, backend: Backend) -> list[SearchResult]:
    """Search ``query`` on ``backend`` (from ``backend_for``) with ``opts``' backend kind.

    Raises: SearchFailed: the backend failed (refused, connection, status, size, not JSON).
    """
    n = opts.web_search_max_results
    kind = opts.web_search_backend
    url = backend.url.rstrip("/")
    if kind == "searxng":
        target = f"{url}/search?{urlencode({'q': query, 'format': 'json'})}"
        try:
            page = net.fetch(target, allow_private=backend.allow_private,
                             timeout=opts.web_search_timeout, max_bytes=MAX_ANSWER_BYTES)
        except net.FetchError as exc:
            raise SearchFailed(f"searxng search failed: {exc}") from exc
        if page.truncated:
            raise SearchFailed(f"searxng search failed: answer over {MAX_ANSWER_BYTES} bytes")
        body = page.body
    else:
        body = _keyed_request(kind, url, query, n, backend.api_key, opts.web_search_timeout,
                              backend.allow_private)
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise SearchFailed(f"{kind} search failed: the answer is not JSON ({exc})") from exc
    return parse_results(kind, data, n)


def _keyed_request(kind: str, url: str, query: str, n: int, key: str | None,
                   timeout: float, allow_private: bool | tuple[str, ...] = False) -> bytes:
    """The body of a Brave (GET) or Serper (POST) request with the key header, through the
    toolkit's address-checked fetcher (no redirect is followed with the key)."""
    headers = {"Accept": "application/json"}
    if kind == "brave":
        if key:
            headers["X-Subscription-Token"] = key
        target, method, body = f"{url}?{urlencode({'q': query, 'count': n})}", "GET", None
    else:
        if key:
            headers["X-API-KEY"] = key
        headers["Content-Type"] = "application/json"
        target, method = url, "POST"
        body = json.dumps({"q": query, "num": n}).encode()
    try:
        page = net.fetch(target, allow_private=allow_private, timeout=timeout,
                         max_bytes=MAX_ANSWER_BYTES, max_redirects=0 if key else 3,
                         method=method, headers=headers, body=body)
    except net.FetchError as exc:
        raise SearchFailed(f"{kind} search failed: {exc}") from exc
    if page.truncated:
        raise SearchFailed(f"{kind} search failed: answer over {MAX_ANSWER_BYTES} bytes")
    return page.body


def format_results(query: str, results: list[SearchResult], start: int = 1) -> str:
    """Numbered sources ``[i] title (url)`` with their snippets."""
    if not results:
        return f'No web search results were found for "{query}".'
    lines = [f'Web search results for "{query}":']
    for i, r in enumerate(results, start):
        lines.append(f"[{i}] {r.title} ({r.url})\n{r.snippet}".rstrip())
    return "\n\n".join(lines)


def run(ctx: RunContext) -> Answer:
    opts: Options = ctx.options
    backend = backend_for(ctx, opts)  # a refused URL is a 400 before any connection
    query = ctx.query.strip()[:QUERY_CHARS]
    error = None
    results: list[SearchResult] = []
    try:
        results = search(query, opts, backend) if query else []
    except SearchFailed as exc:
        error = str(exc)
    augmented = ctx.query
    if results:
        augmented = (f"{ctx.query}\n\n{format_results(query, results)}\n\nUse the search "
                     f"results above where relevant and cite them as [n].")
    meta = {"optillm_web_search": {"query": query, "backend": opts.web_search_backend,
                                   "results": [r.url for r in results], "error": error}}
    if opts.web_search_mode == "augment":
        return Answer(augmented, metadata=meta)
    completion = ctx.complete(ctx.with_query(augmented), final=True)
    finish = completion.choices[0].finish_reason if completion.choices else "stop"
    return Answer(completion.text, finish_reason=finish or "stop", metadata=meta)
