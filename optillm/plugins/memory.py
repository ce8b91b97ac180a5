"""``memory``: answer over a long input by taking notes chunk by chunk, then answering from the
notes that best match the question (OptiLLM's memory plugin, rewritten).

The last user message is read as *context* followed by a *question*: the question is its last
non-empty line (OptiLLM's convention for long-context prompts), the context everything before.
The context is cut into chunks of about ``memory_chunk_chars`` characters at paragraph or
sentence boundaries (at most ``memory_max_chunks``; longer inputs get bigger chunks). For every
chunk one call, concurrently, asks for the facts relevant to the question as short notes, one
per line (or ``NONE``). The notes are ranked against the question with BM25 (``rank-bm25``,
the ``memory`` extra) and the best ``memory_top_k`` go, in their original order, into the final
call, which keeps the rest of the conversation (system prompt, earlier turns) as it was and is
streamed (``final=True``). A message without context (a single line) is answered directly.

Persistence is opt-in: with ``memory_persist_path`` (a relative name, resolved under
``<data folder>/memory``, the data folder being the server's ``--data-dir``,
``ctx.settings.data_path``; a name that leaves that folder by ``..``, an absolute path or a
symlink is a 400) earlier notes are loaded for retrieval and this request's notes appended
(file lock plus atomic replace, so several gunicorn workers can share the file; the newest
``MAX_STORED`` notes are kept). Only then does an answer depend on earlier requests, by the
client's choice. The client names a file; where the folder is stays the server's decision.

Calls: ``chunks + 1`` (chunks = ``min(ceil(len(context) / memory_chunk_chars),
memory_max_chunks)``; 1 without context). Critical path: 2 calls. The note calls set
``temperature=0``; the final call keeps the client's sampling parameters.

Options (request body): ``memory_chunk_chars`` (int, 200-100000, default 4000),
``memory_max_chunks`` (int, 1-256, default 32), ``memory_top_k`` (int, 1-100, default 8),
``memory_persist_path`` (str or None).

Errors: ``MissingExtraError`` (501, ``missing_extra``) when ranking needs ``rank-bm25`` and it
is not installed (extra ``memory``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import BadRequestError, MissingExtraError
from ..options import opt
from ..toolkit.context import Answer, RunContext
from ..types import Completion

SLUG = "memory"
STREAMS = True
EXTRA = "memory"
MAX_STORED = 2000


@dataclass(frozen=True)
class Options:
    memory_chunk_chars: int = opt(4000, ge=200, le=100_000, unit="characters")
    memory_max_chunks: int = opt(32, ge=1, le=256)
    memory_top_k: int = opt(8, ge=1, le=100)
    memory_persist_path: str | None = None

    def __post_init__(self):
        path = self.memory_persist_path
        if path is not None:
            parts = PurePosixPath(path).parts
            if (not path.strip() or path.startswith(("/", "~", "\\")) or ".." in parts
                    or "\\" in path or ":" in path):
                raise ValueError("memory_persist_path must be a relative path inside the "
                                 "user's data directory (no '..', not absolute)")


def split_query(text: str) -> tuple[str, str]:
    """``(context, question)``: the question is the last non-empty line."""
    lines = text.rstrip().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return "", ""
    return "\n".join(lines[:-1]).strip(), lines[-1].strip()


def chunk_text(text: str, size: int, max_chunks: int) -> list[str]:
    """``text`` in pieces of about ``size`` characters (at most ``max_chunks``), cut at a
    paragraph, line or sentence end where one lies in the last third of a piece."""
    if not text:
        return []
    size = max(size, math.ceil(len(text) / max_chunks))
    chunks, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            window = text[start + size * 2 // 3:end]
            for sep in ("\n\n", "\n", ". "):
                cut = window.rfind(sep)
                if cut >= 0:
                    end = start + size * 2 // 3 + cut + len(sep)
                    break
        piece = text[start:end].strip()
        if piece:
            chunks.append(piece)
        start = end
    while len(chunks) > max_chunks:  # boundary cuts can leave one piece too many
        chunks[-2:] = [chunks[-2] + "\n" + chunks[-1]]
    return chunks


def notes_prompt(chunk: str, question: str) -> str:
    return (f"Read the text below and write down every fact from it that helps answer the "
            f"question. Write short, self-contained notes, one per line. If nothing in the "
            f"text is relevant, write NONE.\n\nQuestion: {question}\n\nText:\n{chunk}\n\n"
            f"Notes:")


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s*")


def parse_notes(reply: str) -> list[str]:
    """Notes from a reply: one per non-empty line, bullets stripped; ``NONE`` and headings
    dropped; tolerant of any text."""
    notes = []
    for line in (reply or "").splitlines():
        line = _BULLET.sub("", line).strip()
        if not line or line.rstrip(".").upper() in ("NONE", "N/A", "NOTES:", "NOTES"):
            continue
        notes.append(line[:1000])
    return notes


#: Words too common to say which note answers a question (BM25 would still weigh them).
STOPWORDS = frozenset("a an and are as at be by can do does for from has have how i in is it "
                      "its of on or that the this to was were what when where which who why "
                      "will with you your".split())


def _tokens(text: str) -> list[str]:
    return [w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS]


def rank(notes: list[str], question: str, k: int) -> list[int]:
    """Indices of the ``k`` notes BM25 ranks best for ``question``, in their original order
    (the first ``k`` when no note shares a word with the question).

    Raises: MissingExtraError (501) when ``rank-bm25`` is not installed.
    """
    if len(notes) <= k:
        return list(range(len(notes)))
    try:
        from rank_bm25 import BM25Okapi
    except ImportError:
        raise MissingExtraError.for_extra(SLUG, EXTRA, "rank-bm25") from None
    bm25 = BM25Okapi([_tokens(n) or ["_"] for n in notes])
    scores = bm25.get_scores(_tokens(question) or ["_"])
    if not any(s > 0 for s in scores):
        return list(range(k))
    best = sorted(range(len(notes)), key=lambda i: (-scores[i], i))[:k]
    return sorted(best)


# -- persistence ---------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    notes = data.get("notes") if isinstance(data, dict) else None
    return [n for n in notes if isinstance(n, str)] if isinstance(notes, list) else []


def load_notes(path: Path) -> list[str]:
    """The notes stored at ``path`` ([] when there are none or the file is unreadable)."""
    with _locked(path):
        return _read(path)


def store_notes(path: Path, notes: list[str]) -> None:
    """Append ``notes`` to ``path`` under the lock, replacing the file atomically."""
    with _locked(path):
        merged = (_read(path) + notes)[-MAX_STORED:]
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"notes": merged}, fh)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def persist_file(option: str, data_path: str) -> Path:
    """The notes file ``option`` names: under ``<data_path>/memory``, symlinks resolved.

    Raises: BadRequestError when it would lie outside that folder.
    """
    root = Path(data_path) / "memory"
    path = (root / option).resolve()
    if root.resolve() not in path.parents:
        raise BadRequestError("memory_persist_path must stay inside the user's data directory",
                              param="memory_persist_path")
    return path


def run(ctx: RunContext) -> Answer | Completion:
    opts = ctx.options
    context, question = split_query(ctx.query)
    if not context:
        return ctx.complete(final=True)
    path = (persist_file(opts.memory_persist_path, ctx.settings.data_path)
            if opts.memory_persist_path else None)  # refused before any call
    chunks = chunk_text(context, opts.memory_chunk_chars, opts.memory_max_chunks)
    replies = ctx.map(lambda c: ctx.complete(ctx.with_query(notes_prompt(c, question)),
                                             temperature=0).text, chunks)
    new_notes = [n for r in replies for n in parse_notes(r)]
    old_notes = load_notes(path) if path else []
    notes = old_notes + new_notes
    chosen = rank(notes, question, opts.memory_top_k)
    listing = "\n".join(f"- {notes[i]}" for i in chosen) or "- (no relevant notes)"
    final = ctx.complete(ctx.with_query(
        f"Notes taken from a long document:\n{listing}\n\nUsing these notes, answer the "
        f"question.\n\nQuestion: {question}"), final=True)
    if path and new_notes:
        store_notes(path, new_notes)
    meta = {"chunks": len(chunks), "notes": len(new_notes), "stored_notes": len(old_notes),
            "used_notes": len(chosen)}
    return Answer(final.text, finish_reason=final.choices[0].finish_reason or "stop",
                  metadata={"optillm_memory": meta})
