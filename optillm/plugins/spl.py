"""``spl``: system prompt learning. The model classifies the problem, the strategies learned for
that kind of problem are added to the system prompt, and (with ``spl_learning``) the answer is
used to create or refine the strategy for next time.

After OptiLLM's system-prompt-learning plugin (the idea of learning a system prompt of
problem-solving strategies from experience; cf. Karpathy's "system prompt learning" note). The
strategies live in a JSON store, ``<data folder>/spl/strategies.json`` (the data folder is the
server's ``--data-dir``, ``ctx.settings.data_path``; never chosen by the request), shared by
every worker and request; each update takes an exclusive ``fcntl`` lock on
``strategies.json.lock``, reads the store, changes it and writes it back with an atomic
``os.replace``, so concurrent workers never lose each other's updates and readers never see
half a file (reads take no lock).

Calls: 2 + (1 if ``spl_learning``): classify, answer (``final=True``, streamed when the client
streams) and, when learning, one call that writes or refines the strategy. Depth: the same
(each call needs the previous one). The classify and learn calls set ``temperature`` 0.1 and
their own ``max_tokens``; the answer call gets the client's parameters.

Options (request body): ``spl_learning`` (bool, default false), ``spl_max_strategies`` (int
1-10, default 3: strategies injected into the prompt).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..options import opt
from ..toolkit.context import Answer, RunContext
from ..types import Message

SLUG = "spl"
STREAMS = True

PROBLEM_TYPES = ("arithmetic", "algebra", "geometry", "probability", "word_problem", "logic",
                 "coding", "writing", "factual", "analysis", "general")
MAX_STRATEGY_CHARS = 1200
STORE_VERSION = 1

CLASSIFY_PROMPT = ("Classify the problem below into exactly one of these types: {types}.\n"
                   "Reply with the type name only.\n\nProblem:\n{query}")
LEARN_PROMPT = ("You improve a library of problem-solving strategies.\n"
                "Problem type: {ptype}\nProblem:\n{query}\n\nAn answer that was given:\n{answer}"
                "\n\n{existing}Write one short, general strategy (at most 5 numbered steps) for "
                "solving {ptype} problems like this one. Do not mention the specific numbers or "
                "names of this problem. Start with 'Strategy:'.")


@dataclass(frozen=True)
class Options:
    spl_learning: bool = False
    spl_max_strategies: int = opt(3, ge=1, le=10)


def store_dir(data_path: str) -> str:
    """The store's folder, ``<data_path>/spl`` (the server's data folder, never site-packages)."""
    return os.path.join(data_path, "spl")


# -- the store ------------------------------------------------------------------------------------

class StrategyStore:
    """The JSON strategy store in ``directory`` (created on first write)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(self.directory, "strategies.json")

    def load(self) -> dict[str, Any]:
        """The store's content: ``{"version": 1, "strategies": [...]}``; an empty store when
        the file is missing or unreadable (a corrupt file is not fatal to answering)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {"version": STORE_VERSION, "strategies": []}
        if not isinstance(data, dict) or not isinstance(data.get("strategies"), list):
            return {"version": STORE_VERSION, "strategies": []}
        data["strategies"] = [s for s in data["strategies"]
                              if isinstance(s, dict) and isinstance(s.get("text"), str)]
        return data

    def for_type(self, ptype: str, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` most used strategies for ``ptype``."""
        found = [s for s in self.load()["strategies"] if s.get("problem_type") == ptype]
        found.sort(key=lambda s: (-int(s.get("uses") or 0), str(s.get("id"))))
        return found[:limit]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self.directory, exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply ``change`` to the store under the lock and write it back atomically."""
        with self._locked():
            data = self.load()
            change(data)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".strategies-",
                                       suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, indent=1)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        return data

    def learn(self, ptype: str, text: str, refines: str | None, used: list[str]) -> str:
        """Add a strategy for ``ptype`` (or replace the text of ``refines``, an id) and count
        a use of each id in ``used``; returns the id of the written strategy."""
        now = time.time()
        result = {"id": refines or uuid.uuid4().hex[:12]}

        def change(data: dict[str, Any]) -> None:
            strategies = data["strategies"]
            target = next((s for s in strategies if s.get("id") == refines), None)
            if target is None:
                strategies.append({"id": result["id"], "problem_type": ptype, "text": text,
                                   "created": now, "updated": now, "uses": 0,
                                   "refinements": 0})
            else:
                target.update(text=text, updated=now,
                              refinements=int(target.get("refinements") or 0) + 1)
            for s in strategies:
                if s.get("id") in used:
                    s["uses"] = int(s.get("uses") or 0) + 1

        self.update(change)
        return result["id"]


# -- parsing model output ------------------------------------------------------------------------

def parse_type(text: str) -> str:
    """The first known problem type named in ``text`` (spaces or hyphens for ``_`` allowed);
    ``general`` when none is."""
    low = (text or "").lower().replace("-", "_")
    best: tuple[int, str] | None = None
    for ptype in PROBLEM_TYPES:
        for form in {ptype, ptype.replace("_", " ")}:
            pos = low.replace(" ", "_").find(form.replace(" ", "_"))
            if pos >= 0 and (best is None or pos < best[0]):
                best = (pos, ptype)
    return best[1] if best else "general"


def parse_strategy(text: str) -> str | None:
    """The strategy text of a learn reply (after ``Strategy:`` where present), trimmed to
    ``MAX_STRATEGY_CHARS``; None when there is nothing usable."""
    text = (text or "").strip()
    m = re.search(r"strategy\s*:\s*", text, re.IGNORECASE)
    if m:
        text = text[m.end():]
    text = text.strip().strip("`").strip()
    if len(re.findall(r"[A-Za-z]{2,}", text)) < 4:
        return None
    return text[:MAX_STRATEGY_CHARS].rstrip()


def strategy_prompt(ptype: str, strategies: list[dict[str, Any]]) -> str:
    lines = [f"Strategies that worked before for {ptype.replace('_', ' ')} problems:"]
    lines += [f"{i}. {s['text']}" for i, s in enumerate(strategies, 1)]
    return "\n".join(lines)


def with_system(messages: list[Message], addition: str) -> list[Message]:
    """``messages`` with ``addition`` appended to the first system message (one is added at
    the start when there is none)."""
    out = list(messages)
    for i, m in enumerate(out):
        if m.role in ("system", "developer") and isinstance(m.content, str):
            out[i] = Message(m.role, f"{m.content}\n\n{addition}", m.extra)
            return out
    return [Message("system", addition)] + out


def run(ctx: RunContext) -> Answer:
    opts: Options = ctx.options
    store = StrategyStore(store_dir(ctx.settings.data_path))
    query = ctx.query
    reply = ctx.complete([Message("user", CLASSIFY_PROMPT.format(
        types=", ".join(PROBLEM_TYPES), query=query))], temperature=0.1, max_tokens=16)
    ptype = parse_type(reply.text)
    strategies = store.for_type(ptype, opts.spl_max_strategies)
    messages = list(ctx.messages)
    if strategies:
        messages = with_system(messages, strategy_prompt(ptype, strategies))
    completion = ctx.complete(messages, final=True)
    answer = completion.text
    meta: dict[str, Any] = {"problem_type": ptype,
                            "strategies_used": [s["id"] for s in strategies],
                            "learned": None}
    if opts.spl_learning:
        refines = strategies[0] if strategies else None
        existing = (f"The current strategy for this type, to refine:\n{refines['text']}\n\n"
                    if refines else "")
        learned = ctx.complete([Message("user", LEARN_PROMPT.format(
            ptype=ptype, query=query, answer=answer, existing=existing))],
            temperature=0.1, max_tokens=300)
        text = parse_strategy(learned.text)
        if text:
            sid = store.learn(ptype, text, refines["id"] if refines else None,
                              meta["strategies_used"])
            meta["learned"] = {"id": sid, "refined": refines is not None}
    finish = completion.choices[0].finish_reason if completion.choices else "stop"
    return Answer(answer, finish_reason=finish or "stop", metadata={"optillm_spl": meta})
