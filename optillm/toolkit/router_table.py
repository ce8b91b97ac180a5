"""A learned router table: which approach (with options) to run for which kind of query.

``optillm-eval fit-router`` (``optillm.eval.router_fit``) writes the table from eval records;
``--router-table FILE`` makes ``auto`` (and the ``router`` plugin) read it. Everything here is
computed from the request alone, so the table is transparent: a reader can take a query,
compute its cell by hand and find the approach.

Features of a query (``features(query)``, the last user message's text):

- ``task``: ``code`` (a code fence, a ``def``/``class``/``import`` line, or "function" with a
  language word), ``choice`` (two or more lines ``A. ...``/``(B) ...``), ``arithmetic`` (a
  first paragraph of at most 12 words with an operation between digits, e.g. "What is
  12 + 7?" followed by any instruction), ``word_problem``
  (digits and a question or a quantity word), else ``other``; the first that applies.
- ``length``: ``short`` (< 200 characters), ``medium`` (< 800), ``long``.
- ``digits`` / ``code``: booleans (shown in the metadata, not part of the cell).

The cell is ``"<task>/<length>"``. ``RouterTable.choose(query)`` looks up the cell, else the
task alone (``tasks``), else ``default``, and returns the ``Choice``.

File format (YAML, ``version: 1``)::

    version: 1
    max_tokens_per_query: 1500        # the budget the choices were made within (or null)
    min_problems: 5                   # cells with fewer records fell back to a coarser key
    default: {approach: none, options: {}, params: {temperature: 0.0}, accuracy: 0.71,
              tokens: 310.0, n: 400}
    tasks:
      word_problem: {approach: majority_voting, options: {k: 5}, accuracy: 0.4, ...}
    cells:
      word_problem/medium: {approach: majority_voting, options: {k: 5}, ...,
                            considered: {none: [0.3, 290.0, 120], majority_voting: [...]}}

Raises ``RouterTableError`` (a ValueError) for a file that is not such a table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

VERSION = 1
TASKS = ("code", "choice", "arithmetic", "word_problem", "other")
LENGTHS = ((200, "short"), (800, "medium"))
LONG = "long"
#: The request fields an entry's ``params`` may set.
SAMPLING_PARAMS = frozenset({"temperature", "top_p", "max_tokens"})

_CODE = re.compile(r"(?m)```|^\s*(def|class|import|from\s+\S+\s+import|#include)\b")
_CODE_WORDS = re.compile(r"(?i)\b(python|javascript|typescript|java|c\+\+|rust|sql)\b")
_FUNCTION = re.compile(r"(?i)\bfunction\b")
_OPTION = re.compile(r"(?m)^\s*(\(?[A-J][.)]|[A-J]:)\s+\S")
_OPERATION = re.compile(r"\d\s*[-+*/×÷^]\s*-?\d")
_QUANTITY = re.compile(r"(?i)\b(how many|how much|how long|how far|total|each|per|percent|"
                       r"left|remain|more than|less than|times|cost|price)\b|[$%]")


class RouterTableError(ValueError):
    """The file is not a router table (the message says what is wrong and where)."""


def features(query: str) -> dict[str, Any]:
    """``{"task", "length", "digits", "code"}`` of a query (see the module docstring)."""
    text = query or ""
    has_code = bool(_CODE.search(text)) or bool(_FUNCTION.search(text)
                                                and _CODE_WORDS.search(text))
    digits = any(ch.isdigit() for ch in text)
    head = text.strip().split("\n\n", 1)[0]  # the question, before any instruction
    if has_code:
        task = "code"
    elif len(_OPTION.findall(text)) >= 2:
        task = "choice"
    elif digits and len(head.split()) <= 12 and _OPERATION.search(head):
        task = "arithmetic"
    elif digits and ("?" in text or _QUANTITY.search(text)):
        task = "word_problem"
    else:
        task = "other"
    length = next((name for limit, name in LENGTHS if len(text) < limit), LONG)
    return {"task": task, "length": length, "digits": digits, "code": has_code}


def cell_of(query: str) -> str:
    f = features(query)
    return f"{f['task']}/{f['length']}"


@dataclass(frozen=True)
class Choice:
    """One table entry: run ``approach`` with ``options`` (request body fields, below the
    client's own) and ``params`` (sampling fields such as ``temperature``: what the eval sent,
    below the client's own); ``accuracy`` / ``tokens`` (mean per problem) / ``n``: the eval figures
    that chose it; ``considered``: label -> ``[accuracy, tokens, n]`` of the candidates."""

    approach: str
    options: Mapping[str, Any] = field(default_factory=dict)
    accuracy: float | None = None
    tokens: float | None = None
    n: int | None = None
    considered: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"approach": self.approach, "options": dict(self.options),
                               "params": dict(self.params), "accuracy": self.accuracy,
                               "tokens": self.tokens, "n": self.n}
        if self.considered:
            out["considered"] = {k: list(v) for k, v in self.considered.items()}
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Choice:
        if not isinstance(data, Mapping) or not isinstance(data.get("approach"), str) \
                or not data["approach"].strip():
            raise RouterTableError(f"{where}: needs 'approach' (an approach slug)")
        if data["approach"] in ("router", "auto"):
            raise RouterTableError(f"{where}: may not route to {data['approach']!r} itself")
        options, params = data.get("options") or {}, data.get("params") or {}
        if not isinstance(options, Mapping) or not isinstance(params, Mapping):
            raise RouterTableError(f"{where}: 'options' and 'params' must be mappings")
        unknown = set(params) - SAMPLING_PARAMS
        if unknown:
            raise RouterTableError(f"{where}: params may set only "
                                   f"{', '.join(sorted(SAMPLING_PARAMS))}, not {sorted(unknown)}")
        return cls(data["approach"].strip(), MappingProxyType(dict(options)),
                   data.get("accuracy"), data.get("tokens"), data.get("n"),
                   MappingProxyType(dict(data.get("considered") or {})),
                   MappingProxyType(dict(params)))


@dataclass(frozen=True)
class RouterTable:
    """The learned table (see the module docstring for the file it reads and writes)."""

    default: Choice
    tasks: Mapping[str, Choice] = field(default_factory=dict)
    cells: Mapping[str, Choice] = field(default_factory=dict)
    max_tokens_per_query: float | None = None
    min_problems: int = 1

    def choose(self, query: str) -> tuple[Choice, str, dict[str, Any]]:
        """``(choice, key, features)``: the entry for ``query`` and the key it was found
        under (``task/length``, ``task`` or ``default``)."""
        f = features(query)
        cell = f"{f['task']}/{f['length']}"
        if cell in self.cells:
            return self.cells[cell], cell, f
        if f["task"] in self.tasks:
            return self.tasks[f["task"]], f["task"], f
        return self.default, "default", f

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "max_tokens_per_query": self.max_tokens_per_query,
                "min_problems": self.min_problems, "default": self.default.to_dict(),
                "tasks": {k: v.to_dict() for k, v in self.tasks.items()},
                "cells": {k: v.to_dict() for k, v in self.cells.items()}}

    @classmethod
    def from_dict(cls, data: Any, source: str = "router table") -> RouterTable:
        if not isinstance(data, Mapping) or data.get("version") != VERSION:
            raise RouterTableError(f"{source}: not a router table (needs 'version: {VERSION}'; "
                                   f"written by optillm-eval fit-router)")
        tasks, cells = data.get("tasks") or {}, data.get("cells") or {}
        if not isinstance(tasks, Mapping) or not isinstance(cells, Mapping):
            raise RouterTableError(f"{source}: 'tasks' and 'cells' must be mappings")
        for key in tasks:
            if key not in TASKS:
                raise RouterTableError(f"{source}: unknown task {key!r} (tasks: "
                                       f"{', '.join(TASKS)})")
        lengths = {name for _, name in LENGTHS} | {LONG}
        for key in cells:
            task, _, length = str(key).partition("/")
            if task not in TASKS or length not in lengths:
                raise RouterTableError(f"{source}: bad cell {key!r} (task/length, e.g. "
                                       f"word_problem/medium)")
        return cls(Choice.from_dict(data.get("default"), f"{source}: default"),
                   MappingProxyType({k: Choice.from_dict(v, f"{source}: tasks.{k}")
                                     for k, v in tasks.items()}),
                   MappingProxyType({k: Choice.from_dict(v, f"{source}: cells.{k}")
                                     for k, v in cells.items()}),
                   data.get("max_tokens_per_query"), int(data.get("min_problems") or 1))


def load(path: str) -> RouterTable:
    """Read a table file. Raises: RouterTableError (also for an unreadable file)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise RouterTableError(f"cannot read router table {path}: {exc}") from None
    return RouterTable.from_dict(data, path)


def dump(table: RouterTable, path: str) -> None:
    """Write ``table`` to ``path`` as YAML (keys in the documented order)."""
    import yaml

    with open(path, "w", encoding="utf-8") as fh:
        fh.write("# optillm router table: written by optillm-eval fit-router; used with "
                 "--router-table\n")
        yaml.safe_dump(table.to_dict(), fh, sort_keys=False, default_flow_style=None,
                       width=100)
