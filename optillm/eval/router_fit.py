"""``optillm-eval fit-router``: learn a router table from eval records.

::

    optillm-eval fit-router results.jsonl [more.jsonl ...] [--split dev]
        [--max-tokens-per-query 1500] [--min-problems 5] -o router.yaml

Each record's query (its ``query`` field, else the problem's prompt from its dataset) gets its
features (``optillm.toolkit.router_table.features``: task guess and length bucket). Then, for
each cell ``task/length``, for each task, and over everything (the ``default``):

1. candidates: the approach labels that answered at least half as many of the key's problems
   as the label that answered most; they are compared on the problems all of them answered
   (a failed request counts as wrong, as in the report);
2. within ``--max-tokens-per-query`` (mean prompt + completion tokens per problem, every
   upstream call; no limit by default), the most accurate candidate wins, the cheaper on a tie;
3. a key with fewer than ``--min-problems`` shared problems, or no candidate within the
   budget, gets no entry (the lookup falls back: cell -> task -> default). The default, if
   nothing fits the budget, is the cheapest candidate.

Entries equal to their fallback are left out, so the table stays small. A label maps to the
slug, options and client temperature it was run with (``slug`` / ``options`` /
``temperature`` of its records, the entry's ``options`` and ``params``; older records: the
label itself, no options). Returns 0, or 2 for bad arguments / no usable records.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..toolkit.router_table import Choice, RouterTable, dump, features
from . import datasets
from .report import group_of, latest, summarize

Key = tuple[str, str]  # (dataset group, id)


def _queries(records: Iterable[Mapping[str, Any]]) -> dict[Key, str]:
    """The query text of each problem: the record's ``query``, else its dataset's prompt."""
    out: dict[Key, str] = {}
    loaded: dict[str, dict[str, str]] = {}
    for r in records:
        key = (group_of(r), str(r["id"]))
        if key in out:
            continue
        if isinstance(r.get("query"), str):
            out[key] = r["query"]
            continue
        name = r["dataset"]
        if name not in loaded:
            try:
                loaded[name] = {p.id: p.prompt for p in datasets.load(name)}
            except (ValueError, datasets.DatasetUnavailable):
                loaded[name] = {}
        if str(r["id"]) in loaded[name]:
            out[key] = loaded[name][str(r["id"])]
    return out


def _tokens(r: Mapping[str, Any]) -> float | None:
    if r.get("error"):
        return None
    values = [r.get("prompt_tokens"), r.get("completion_tokens")]
    known = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(sum(known)) if known else None


def _pick(by_label: Mapping[str, Mapping[Key, Mapping[str, Any]]], problems: set[Key],
          budget: float | None, min_problems: int, fallback_cheapest: bool
          ) -> tuple[str, float, float | None, int, dict[str, list]] | None:
    """``(label, accuracy, tokens, n, considered)`` for one key (see the module docstring)."""
    coverage = {a: problems & rs.keys() for a, rs in by_label.items()}
    most = max((len(v) for v in coverage.values()), default=0)
    if most == 0:
        return None
    kept = [a for a, v in coverage.items() if v and 2 * len(v) >= most]
    shared = set.intersection(*(coverage[a] for a in kept))
    if len(shared) < min_problems:
        return None
    stats: dict[str, list] = {}
    for a in kept:
        rs = [by_label[a][k] for k in shared]
        known = [t for t in map(_tokens, rs) if t is not None]
        stats[a] = [round(sum(bool(r.get("correct")) and not r.get("error") for r in rs)
                          / len(rs), 4),
                    round(sum(known) / len(known), 1) if known else None, len(rs)]
    fits = [a for a in kept if budget is None or (stats[a][1] is not None
                                                  and stats[a][1] <= budget)]
    if not fits:
        if not fallback_cheapest:
            return None
        fits = [min(kept, key=lambda a: (stats[a][1] is None, stats[a][1] or 0.0))]
    best = max(fits, key=lambda a: (stats[a][0], -(stats[a][1] or 0.0)))
    return best, stats[best][0], stats[best][1], len(shared), stats


def fit(records: Iterable[Mapping[str, Any]], *, max_tokens_per_query: float | None = None,
        min_problems: int = 5) -> RouterTable:
    """The router table learned from ``records`` (runner result dicts; see the module
    docstring). Raises: ValueError when no record has a known query."""
    last = list(latest(records).values())
    queries = _queries(last)
    by_label: dict[str, dict[Key, Mapping[str, Any]]] = {}
    sent: dict[str, tuple[str, dict]] = {}
    params: dict[str, dict] = {}
    for r in last:
        key = (group_of(r), str(r["id"]))
        if key in queries:
            by_label.setdefault(r["approach"], {})[key] = r
            sent[r["approach"]] = (r.get("slug") or r["approach"], dict(r.get("options") or {}))
            temperature = r.get("temperature")
            params[r["approach"]] = {} if temperature is None else {"temperature": temperature}
    if not by_label:
        raise ValueError("no record with a known query (install the datasets, or give each "
                         "record a 'query')")
    cells: dict[str, set[Key]] = {}
    tasks: dict[str, set[Key]] = {}
    for key, query in queries.items():
        f = features(query)
        cells.setdefault(f"{f['task']}/{f['length']}", set()).add(key)
        tasks.setdefault(f["task"], set()).add(key)

    def choice(picked) -> Choice:
        label, acc, tokens, n, considered = picked
        slug, options = sent[label]
        return Choice(slug, options, acc, tokens, n, considered, params[label])

    everything = set(queries)
    top = _pick(by_label, everything, max_tokens_per_query, 1, True)
    default = choice(top)
    task_entries: dict[str, Choice] = {}
    for task in sorted(tasks):
        picked = _pick(by_label, tasks[task], max_tokens_per_query, min_problems, False)
        if picked and (sent[picked[0]] != (default.approach, dict(default.options))):
            task_entries[task] = choice(picked)
    cell_entries: dict[str, Choice] = {}
    for cell in sorted(cells):
        picked = _pick(by_label, cells[cell], max_tokens_per_query, min_problems, False)
        parent = task_entries.get(cell.split("/")[0], default)
        if picked and sent[picked[0]] != (parent.approach, dict(parent.options)):
            cell_entries[cell] = choice(picked)
    return RouterTable(default, task_entries, cell_entries, max_tokens_per_query, min_problems)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optillm-eval fit-router",
                                description="Learn a router table (for --router-table) from "
                                            "optillm-eval results.")
    p.add_argument("results", nargs="+", help="JSONL files written by optillm-eval")
    p.add_argument("-o", "--output", required=True, help="the router table to write (YAML)")
    p.add_argument("--max-tokens-per-query", type=float,
                   help="mean tokens per problem an approach may spend (default: no limit)")
    p.add_argument("--min-problems", type=int, default=5,
                   help="fewest shared problems for a cell or task entry (default 5)")
    p.add_argument("--split", choices=("dev", "test"),
                   help="use only records of this split (fit on dev, report on test)")
    return p


def main(argv: Sequence[str]) -> int:
    from .runner import read_results

    parser = _parser()
    args = parser.parse_args(argv)
    records = [r for path in args.results for r in read_results(path)]
    if args.split:
        records = [r for r in records if r.get("split") == args.split]
    if args.min_problems < 1:
        parser.error("--min-problems must be >= 1")
    try:
        table = fit(records, max_tokens_per_query=args.max_tokens_per_query,
                    min_problems=args.min_problems)
    except ValueError as exc:
        parser.error(str(exc))
    dump(table, args.output)
    rows = summarize(records)
    print(f"fit-router: {len(rows)} (dataset, approach) rows -> {args.output}", file=sys.stderr)
    for key, c in [("default", table.default), *table.tasks.items(), *table.cells.items()]:
        print(f"  {key:24} {c.approach:20} {dict(c.options)} acc={c.accuracy} "
              f"tokens={c.tokens} n={c.n}", file=sys.stderr)
    return 0
