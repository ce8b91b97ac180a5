"""``web_search``: search the web and answer with the results in the prompt.

Backends are plain HTTP JSON APIs (no browser automation), chosen per request:

- ``searxng``: ``GET {web_search_url}/search?q=...&format=json`` (a SearXNG instance with the
  JSON format enabled); results ``{"results": [{"title", "url", "content"}]}``.
- ``brave``: Brave-style search API, ``GET {web_search_url}?q=...&count=N`` with the key in
  ``X-Subscription-Token``; results ``{"web": {"results": [{"title", "url", "description"}]}}``.
- ``serper``: Serper-style API, ``POST {web_search_url}`` with ``{"q", "num"}`` and the key in
  ``X-API-KEY``; results ``{"organic": [{"title", "link", "snippet"}]}``.

The search query is the last user message (first ``QUERY_CHARS`` characters). The results are
appended to it as numbered sources and the whole conversation is answered by one call
(``final=True``; streamed when the client streams; the client's parameters apply). With
``web_search_mode="augment"`` no model call is made: the answer is the query with the results
appended, for chains such as ``web_search&moa-<model>``. A failing or unreachable backend is
not fatal: the answer is made without results and the metadata says why.

Calls: 1 (``answer``) or 0 (``augment``), plus one HTTP search. Depth: 1.

Options (request body): ``web_search_backend`` (``searxng`` | ``brave`` | ``serper``, default
``searxng``), ``web_search_url`` (str: the instance or API endpoint, http(s); required; a
server may set it with the option defaults), ``web_search_api_key`` (str or null: for the key
APIs), ``web_search_max_results`` (int 1-20, default 5), ``web_search_timeout`` (seconds,
0.5-60, default 10), ``web_search_mode`` (``answer`` | ``augment``, default ``answer``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..context import Answer, RunContext
from ..errors import BadRequestError

SLUG = "web_search"
STREAMS = True

BACKENDS = ("searxng", "brave", "serper")
QUERY_CHARS = 400
SNIPPET_CHARS = 500
USER_AGENT = "optillm-web-search/1"


@dataclass(frozen=True)
class SearchOptions:
    """The search backend's options, shared with ``deep_research``."""

    web_search_backend: str = "searxng"
    web_search_url: str | None = None
    web_search_api_key: str | None = None
    web_search_max_results: int = 5
    web_search_timeout: float = 10.0

    def __post_init__(self):
        if self.web_search_backend not in BACKENDS:
            raise ValueError(f"web_search_backend must be one of {', '.join(BACKENDS)}")
        if self.web_search_url is not None:
            parts = urlsplit(self.web_search_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("web_search_url must be an http(s) URL")
        if not 1 <= self.web_search_max_results <= 20:
            raise ValueError("web_search_max_results must be between 1 and 20")
        if not 0.5 <= self.web_search_timeout <= 60:
            raise ValueError("web_search_timeout must be between 0.5 and 60 seconds")


@dataclass(frozen=True)
class Options(SearchOptions):
    web_search_mode: str = "answer"

    def __post_init__(self):
        super().__post_init__()
        if self.web_search_mode not in ("answer", "augment"):
            raise ValueError("web_search_mode must be 'answer' or 'augment'")


@dataclass(frozen=True)
class SearchResult:
    title: str
    url: str
    snippet: str


class SearchFailed(Exception):
    """The backend could not be reached or answered with something unusable."""


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


def search(query: str, opts: SearchOptions) -> list[SearchResult]:
    """Search ``query`` with the configured backend.

    Raises:
        BadRequestError: no ``web_search_url`` is configured.
        SearchFailed: the backend failed (connection, status, not JSON).
    """
    if not opts.web_search_url:
        raise BadRequestError(f"plugin {SLUG!r} needs web_search_url (the SearXNG instance or "
                              f"search API endpoint)", param="web_search_url")
    import httpx  # the upstream layer's dependency; imported where used

    n = opts.web_search_max_results
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    url = opts.web_search_url.rstrip("/")
    try:
        with httpx.Client(timeout=opts.web_search_timeout, follow_redirects=False,
                          trust_env=False) as http:
            if opts.web_search_backend == "searxng":
                resp = http.get(url + "/search", params={"q": query, "format": "json"},
                                headers=headers)
            elif opts.web_search_backend == "brave":
                if opts.web_search_api_key:
                    headers["X-Subscription-Token"] = opts.web_search_api_key
                resp = http.get(url, params={"q": query, "count": n}, headers=headers)
            else:
                if opts.web_search_api_key:
                    headers["X-API-KEY"] = opts.web_search_api_key
                resp = http.post(url, json={"q": query, "num": n}, headers=headers)
            resp.raise_for_status()
            data = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise SearchFailed(f"{opts.web_search_backend} search failed: "
                           f"{type(exc).__name__}: {exc}") from exc
    return parse_results(opts.web_search_backend, data, n)


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
    query = ctx.query.strip()[:QUERY_CHARS]
    error = None
    results: list[SearchResult] = []
    try:
        results = search(query, opts) if query else []
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
