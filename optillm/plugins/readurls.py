"""``readurls``: fetch the web pages a prompt names and add their text to it (OptiLLM's readurls
plugin, rewritten on the safe fetcher ``optillm.toolkit.net``).

The URLs (``http``/``https``) of the last user message are fetched concurrently through
``optillm.toolkit.net.fetch``: time, size and redirect limits, every redirect re-checked, and no
loopback, private, link-local, multicast, reserved or cloud metadata address. The page's main
text comes from ``trafilatura`` (the ``readurls`` extra), else BeautifulSoup, else a plain tag
strip; ``text/plain`` and JSON are taken as they are. Each page's text (cut to
``readurls_max_chars``) follows its URL in the message: ``<url> [Content: ...]``. A URL that is
refused or fails gets a one-line note instead, so the answer never depends on a crash.

Like OptiLLM's plugin, the answer is the augmented message and no model call is made, so in
a chain (``readurls&memory-<model>``) the next stage reads the pages. With
``readurls_answer=true`` the plugin answers the augmented conversation itself (one final call).

Which private networks may be fetched is the server's ``--allow-private-urls``
(``ctx.settings.private_networks``: none by default), never the client's choice; no body
field widens it.

Calls: 0 (1 with ``readurls_answer``), plus ``min(urls, readurls_max_urls)`` HTTP fetches,
concurrent. Critical path: one fetch (plus the answer call).

Options (request body): ``readurls_max_urls`` (int, 1-20, default 5), ``readurls_max_chars``
(int, 100-200000, default 8000), ``readurls_timeout`` (float seconds, 0-60, default 10),
``readurls_answer`` (bool, default false).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass

from ..options import opt
from ..toolkit import net
from ..toolkit.context import Answer, RunContext

SLUG = "readurls"
EXTRA = "readurls"

URL_RE = re.compile(r"https?://[^\s<>\"'`\])}]+", re.I)


@dataclass(frozen=True)
class Options:
    readurls_max_urls: int = opt(5, ge=1, le=20)
    readurls_max_chars: int = opt(8000, ge=100, le=200_000, unit="characters")
    readurls_timeout: float = opt(10.0, gt=0, le=60, unit="seconds")
    readurls_answer: bool = False


def find_urls(text: str) -> list[str]:
    """The distinct URLs of ``text`` in order, trailing punctuation removed."""
    out: list[str] = []
    for m in URL_RE.finditer(text or ""):
        url = m.group(0).rstrip(".,;:!?")
        if url not in out:
            out.append(url)
    return out


def _bs4_text(markup: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "footer", "header", "svg"]):
        tag.decompose()
    return soup.get_text(" ")


def _strip_tags(markup: str) -> str:
    markup = re.sub(r"(?is)<(script|style|noscript).*?</\1>", " ", markup)
    return html.unescape(re.sub(r"(?s)<[^>]+>", " ", markup))


def _trafilatura_text(markup: str) -> str | None:
    """trafilatura's main text, or None when it is missing, fails to import or finds none."""
    try:
        import trafilatura
    except Exception:  # noqa: BLE001 - ImportError of any kind: not installed, or lxml
        return None    # without lxml_html_clean (lxml.html.clean split off); fall back
    try:
        return trafilatura.extract(markup, include_comments=False)
    except Exception:  # noqa: BLE001 - a page it cannot parse
        return None


def page_text(page: net.Fetched) -> str:
    """The readable text of a fetched page, whitespace collapsed."""
    raw = page.text
    if page.content_type in ("text/plain", "text/markdown", "text/csv"):
        text = raw
    elif page.content_type in ("application/json",) or page.content_type.endswith("+json"):
        try:
            text = json.dumps(json.loads(raw), ensure_ascii=False)
        except ValueError:
            text = raw
    else:
        text = _trafilatura_text(raw)
        if not text:
            try:
                text = _bs4_text(raw)
            except Exception:  # noqa: BLE001 - missing bs4 or unparsable markup
                text = _strip_tags(raw)
    return re.sub(r"[ \t\r\f\v]+", " ", re.sub(r"\n\s*\n+", "\n", text or "")).strip()


def read_url(url: str, opts: Options, allow_private: bool | tuple[str, ...] = False) -> dict:
    """``{"url", "ok", "text" | "error", "truncated"}``; never raises for a bad page.
    ``allow_private`` is the server's ``private_networks`` (see ``optillm.toolkit.net.fetch``)."""
    try:
        page = net.fetch(url, allow_private=allow_private, timeout=opts.readurls_timeout)
    except net.FetchError as exc:
        return {"url": url, "ok": False, "error": str(exc),
                "refused": isinstance(exc, net.FetchRefused)}
    if not (page.content_type.startswith("text/") or "json" in page.content_type
            or "xml" in page.content_type or not page.content_type):
        return {"url": url, "ok": False, "refused": False,
                "error": f"{url} is {page.content_type}, not a text page"}
    text = page_text(page)
    cut = len(text) > opts.readurls_max_chars
    return {"url": url, "ok": True, "text": text[:opts.readurls_max_chars],
            "truncated": cut or page.truncated}


def augment(query: str, results: list[dict]) -> str:
    """``query`` with each URL followed by its page's text (or why it could not be read)."""
    out = query
    for r in results:
        if r["ok"]:
            note = f"{r['url']} [Content: {r['text']}{' ...' if r['truncated'] else ''}]"
        else:
            note = f"{r['url']} [Could not read this page: {r['error']}]"
        out = out.replace(r["url"], note, 1)
    return out


def run(ctx: RunContext) -> Answer:
    opts = ctx.options
    allow_private = ctx.settings.private_networks  # server policy, never the request's
    urls = find_urls(ctx.query)[:opts.readurls_max_urls]
    results = ctx.map(lambda u: read_url(u, opts, allow_private), urls) if urls else []
    text = augment(ctx.query, results)
    meta = {"optillm_readurls": [{k: v for k, v in r.items() if k != "text"}
                                 | ({"chars": len(r["text"])} if r["ok"] else {})
                                 for r in results]}
    if opts.readurls_answer:
        final = ctx.complete(ctx.with_query(text), final=True)
        return Answer(final.text, finish_reason=final.choices[0].finish_reason or "stop",
                      metadata=meta)
    return Answer(text, metadata=meta)
