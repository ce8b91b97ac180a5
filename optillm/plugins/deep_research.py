"""``deep_research``: Test-Time Diffusion Deep Researcher (TTD-DR; Han et al., "Deep Researcher
with Test-Time Diffusion", arXiv 2507.16075), bounded.

A research plan and a preliminary draft written from the model's own knowledge are the
"noisy" starting point; each iteration then denoises the draft with retrieval: the model names
what the draft still lacks as search queries, the queries run concurrently on the
``web_search`` backend (chosen and checked as ``web_search.backend_for`` says: the server's
``--web-search-url``, or a request URL whose host passes the address policy), the pages of the
first ``deep_research_read_pages`` new sources are read, and the model revises the draft with
the new numbered sources. The loop stops after ``deep_research_max_iterations``, when a round
finds no new sources, or once ``deep_research_max_sources`` sources are collected. A final call
writes the report with ``[n]`` citations and a source list.

Page reading: the pages are fetched concurrently through ``optillm.toolkit.net.fetch`` (pinned,
checked
addresses under the server's ``--allow-private-urls``, ``ctx.settings.private_networks``, never
widened for the search backend's result URLs; ``web_search_timeout`` and the fetcher's size
limit); a page's main text (as ``readurls`` extracts it, first ``PAGE_CHARS`` characters)
replaces the source's snippet in the revision prompt. A page that is refused, fails or is not
text keeps its snippet (the metadata's ``errors`` says why). The final report lists snippets.

Calls: 2 (plan, draft) + 2 per iteration (queries, revision) + 1 (report), at most
``2 * deep_research_max_iterations + 3``; searches: at most ``deep_research_queries`` per
iteration, concurrent; page fetches: at most ``deep_research_read_pages`` per iteration,
concurrent. Depth: the call count (each call needs the one before), plus one search and one
page fetch per iteration. The report call is ``final=True`` (streamed when the client streams)
with the client's parameters; the internal calls set ``temperature`` 0.3. When the request's
budget runs out the report is the latest draft (``optillm_budget.stopped_early``).

Options (request body): the ``web_search_*`` backend options, plus
``deep_research_max_iterations`` (int 1-10, default 2), ``deep_research_queries`` (int 1-5,
default 3), ``deep_research_max_sources`` (int 1-50, default 10),
``deep_research_read_pages`` (int 0-5, default 2: pages read per iteration; 0 = snippets only).
OptiLLM's ``max_iterations`` and ``max_sources`` are aliases of the two ``deep_research_`` ones.

Errors: as ``web_search`` (400 for no backend or a refused ``web_search_url``, before any call).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..options import opt
from ..toolkit.context import Answer, BudgetExhausted, RunContext
from . import readurls
from .web_search import QUERY_CHARS, SearchFailed, SearchOptions, SearchResult, backend_for, search

SLUG = "deep_research"
STREAMS = True
PAGE_CHARS = 2000

PLAN_PROMPT = ("You are planning a research report on the question below. Write a short plan: "
               "the sections of the report and the facts each needs.\n\nQuestion:\n{query}")
DRAFT_PROMPT = ("Question:\n{query}\n\nPlan:\n{plan}\n\nWrite a preliminary draft of the report "
                "from what you already know. Mark claims you are unsure of with (?).")
QUERIES_PROMPT = ("Question:\n{query}\n\nCurrent draft:\n{draft}\n\nWhat is missing, uncertain "
                  "or unsupported in the draft? Write up to {n} web search queries that would "
                  "fill those gaps, one per line, nothing else.")
REVISE_PROMPT = ("Question:\n{query}\n\nCurrent draft:\n{draft}\n\nNew sources:\n{sources}\n\n"
                 "Revise the draft using the sources: correct it, fill its gaps, cite sources "
                 "as [n]. Return the whole revised draft.")
REPORT_PROMPT = ("{query}\n\nResearch draft:\n{draft}\n\nSources:\n{sources}\n\nWrite the final "
                 "report answering the question, citing the sources as [n], and end with a "
                 "'Sources' list.")


@dataclass(frozen=True)
class Options(SearchOptions):
    deep_research_max_iterations: int = opt(2, ge=1, le=10, aliases=("max_iterations",))
    deep_research_queries: int = opt(3, ge=1, le=5)
    deep_research_max_sources: int = opt(10, ge=1, le=50, aliases=("max_sources",))
    deep_research_read_pages: int = opt(2, ge=0, le=5)


def parse_queries(text: str, limit: int) -> list[str]:
    """Search queries from a reply, one per line (numbering, bullets and quotes removed,
    duplicates and empty or over-long lines dropped), at most ``limit``."""
    out: list[str] = []
    for line in (text or "").splitlines():
        q = re.sub(r"^\s*(?:[-*•]+|\d+[.)]|query\s*\d*\s*:)\s*", "", line, flags=re.IGNORECASE)
        q = q.strip().strip("\"'`").strip()
        if len(q) < 3 or q.endswith(":") or q.lower() in (o.lower() for o in out):
            continue
        out.append(q[:QUERY_CHARS])
        if len(out) >= limit:
            break
    return out


def format_sources(sources: list[SearchResult], start: int = 1,
                   pages: dict[str, str] | None = None) -> str:
    """Numbered sources; a source whose page was read shows the page's text (``pages``, by
    URL) instead of its snippet."""
    if not sources:
        return "(none)"
    pages = pages or {}
    return "\n".join(f"[{i}] {s.title} ({s.url}): {pages.get(s.url) or s.snippet}"
                     for i, s in enumerate(sources, start))


def read_page(url: str, timeout: float, allow_private: bool | tuple[str, ...]) -> dict:
    """``readurls.read_url`` with deep_research's limits: ``{"url", "ok", "text" | "error"}``;
    never raises (a FetchError, a non-text or an empty page is ``ok: False``)."""
    opts = readurls.Options(readurls_max_chars=PAGE_CHARS, readurls_timeout=timeout)
    page = readurls.read_url(url, opts, allow_private)
    if page["ok"] and not page["text"].strip():
        return {"url": url, "ok": False, "error": f"{url} has no readable text"}
    return page


def run(ctx: RunContext) -> Answer:
    opts: Options = ctx.options
    backend = backend_for(ctx, opts)  # 400 before any call or connection when refused
    private = ctx.settings.private_networks  # result pages: the server's policy, never wider
    query = ctx.query
    sources: list[SearchResult] = []
    pages: dict[str, str] = {}
    seen: set[str] = set()
    log: list[dict[str, Any]] = []
    errors: list[str] = []
    draft = ""
    internal = {"temperature": 0.3}
    try:
        plan = ctx.complete(ctx.with_query(PLAN_PROMPT.format(query=query)), **internal).text
        draft = ctx.complete(ctx.with_query(DRAFT_PROMPT.format(query=query, plan=plan)),
                             **internal).text
        for _ in range(opts.deep_research_max_iterations):
            if len(sources) >= opts.deep_research_max_sources:
                break
            reply = ctx.complete(ctx.with_query(QUERIES_PROMPT.format(
                query=query, draft=draft, n=opts.deep_research_queries)), **internal)
            queries = parse_queries(reply.text, opts.deep_research_queries) or [query[:400]]

            def one(q: str) -> list[SearchResult]:
                try:
                    return search(q, opts, backend)
                except SearchFailed as exc:
                    errors.append(str(exc))
                    return []

            found = ctx.map(one, queries)
            new: list[SearchResult] = []
            for results in found:
                for r in results:
                    room = opts.deep_research_max_sources - len(sources) - len(new)
                    if r.url not in seen and room > 0:
                        seen.add(r.url)
                        new.append(r)
            to_read = new[:opts.deep_research_read_pages]
            reads = ctx.map(lambda r: read_page(r.url, opts.web_search_timeout, private),
                            to_read) if to_read else []
            for page in reads:
                if page["ok"]:
                    pages[page["url"]] = page["text"]
                else:
                    errors.append(page["error"])
            log.append({"queries": queries, "new_sources": [r.url for r in new],
                        "pages_read": [p["url"] for p in reads if p["ok"]]})
            if not new:
                break
            first = len(sources) + 1
            sources.extend(new)
            draft = ctx.complete(ctx.with_query(REVISE_PROMPT.format(
                query=query, draft=draft, sources=format_sources(new, first, pages))),
                **internal).text
        completion = ctx.complete(ctx.with_query(REPORT_PROMPT.format(
            query=query, draft=draft, sources=format_sources(sources))), final=True)
        text = completion.text
        finish = completion.choices[0].finish_reason if completion.choices else "stop"
    except BudgetExhausted:
        text = draft or "The research budget ran out before a draft was written."
        if sources:
            text += "\n\nSources:\n" + format_sources(sources)
        finish = "length"
    meta = {"iterations": log, "sources": [{"title": s.title, "url": s.url} for s in sources],
            "errors": errors[:10]}
    return Answer(text, finish_reason=finish or "stop",
                  reasoning=f"Draft:\n{draft}\n\nReport:\n{text}",
                  metadata={"optillm_deep_research": meta, **ctx.budget_metadata()})
