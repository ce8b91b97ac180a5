"""Summaries of a results file: accuracy with confidence intervals, cost, paired tests, a plot.

- ``wilson(k, n, z=1.96) -> (low, high)``: the Wilson score interval of a binomial proportion
  (Wilson 1927), 95% by default.
- ``mcnemar(b, c) -> p``: the exact (binomial) two-sided McNemar test on the discordant pairs
  ``b`` (only the baseline right) and ``c`` (only the other approach right).
- ``summarize(records) -> list[Row]``: per (dataset, approach): accuracy and its interval,
  mean prompt/completion tokens, upstream calls and wall seconds per problem.
- ``compare(records, baseline="none") -> list[Pair]``: each approach against the baseline on
  the problems both answered, with the Holm-adjusted p value (``holm``, Holm 1979) over the
  approaches compared on the same dataset (the family: one dataset, every approach against
  the same baseline).
- ``markdown(rows, pairs)`` and ``plot(rows, path)`` (matplotlib, Agg backend: accuracy
  against total tokens per problem, the Pareto frontier marked: ``pareto``).

Records of a split (``split``: dev/test) are grouped as ``<dataset>:<split>``, so a file with
both never mixes them. Records are the dicts of ``runner.read_results``; when a (dataset, id,
approach) triple occurs more than once (a retried failure), the last record counts. A failed
request counts as a wrong answer in the accuracy (its tokens are unknown) and is left out of
the paired test.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Z95 = 1.959963984540054
ALPHA = 0.05


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials; (0, 1) when ``n`` is 0.

    Raises: ValueError unless ``0 <= k <= n``.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: ``P(X <= min(b, c))`` doubled, ``X ~ Bin(b + c, 1/2)``,
    capped at 1 (1.0 when there are no discordant pairs).

    Raises: ValueError for negative counts.
    """
    if b < 0 or c < 0:
        raise ValueError("counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p values (Holm 1979, "A simple sequentially rejective multiple
    test procedure"), in the order given: the i-th smallest ``p`` times ``m - i + 1``, made
    monotone and capped at 1. Rejecting where the adjusted p < alpha keeps the family-wise
    error rate at alpha."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out = [1.0] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def group_of(record: Mapping[str, Any]) -> str:
    """The dataset a record is reported under: ``gsm8k``, or ``gsm8k:test`` for a split."""
    split = record.get("split")
    return f"{record['dataset']}:{split}" if split else str(record["dataset"])


def latest(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    """The last record of each (dataset group, id, approach), in first-seen order."""
    out: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for r in records:
        out[(group_of(r), str(r["id"]), r["approach"])] = r
    return out


def _mean(values: Iterable[Any]) -> float | None:
    known = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(known) / len(known) if known else None


@dataclass(frozen=True)
class Row:
    """One (dataset, approach): ``n`` problems, ``correct``, ``accuracy`` and its 95% Wilson
    interval (``low``, ``high``), means per problem (None when unknown for every problem),
    ``errors`` (failed requests)."""

    dataset: str
    approach: str
    n: int
    correct: int
    accuracy: float
    low: float
    high: float
    prompt_tokens: float | None
    completion_tokens: float | None
    upstream_calls: float | None
    wall_s: float | None
    errors: int

    @property
    def total_tokens(self) -> float | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return (self.prompt_tokens or 0.0) + (self.completion_tokens or 0.0)


def summarize(records: Iterable[Mapping[str, Any]]) -> list[Row]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for (dataset, _, approach), r in latest(records).items():  # dataset: its group_of
        groups.setdefault((dataset, approach), []).append(r)
    rows = []
    for (dataset, approach), rs in groups.items():
        k = sum(bool(r.get("correct")) for r in rs)
        low, high = wilson(k, len(rs))
        ok = [r for r in rs if not r.get("error")]
        rows.append(Row(dataset, approach, len(rs), k, k / len(rs), low, high,
                        _mean(r.get("prompt_tokens") for r in ok),
                        _mean(r.get("completion_tokens") for r in ok),
                        _mean(r.get("upstream_calls") for r in ok),
                        _mean(r.get("wall_s") for r in ok), len(rs) - len(ok)))
    return rows


@dataclass(frozen=True)
class Pair:
    """An approach against the baseline on ``n`` shared problems: ``both`` right,
    ``only_baseline``, ``only_approach``, the exact McNemar ``p`` value, ``p_holm`` (Holm-
    adjusted over the dataset's comparisons), a ``verdict`` on ``p`` and a ``holm_verdict``
    on ``p_holm`` (``better``/``worse`` when below 0.05, else ``not significant``)."""

    dataset: str
    approach: str
    baseline: str
    n: int
    both: int
    only_baseline: int
    only_approach: int
    p: float
    p_holm: float | None = None

    def _verdict(self, p: float) -> str:
        if p >= ALPHA:
            return "not significant"
        return "better" if self.only_approach > self.only_baseline else "worse"

    @property
    def verdict(self) -> str:
        return self._verdict(self.p)

    @property
    def holm_verdict(self) -> str:
        return self._verdict(self.p if self.p_holm is None else self.p_holm)


def compare(records: Iterable[Mapping[str, Any]], baseline: str = "none") -> list[Pair]:
    last = {k: r for k, r in latest(records).items() if not r.get("error")}
    approaches: dict[tuple[str, str], None] = {}
    for dataset, _, approach in last:
        if approach != baseline:
            approaches[(dataset, approach)] = None
    pairs = []
    for dataset, approach in approaches:
        both = only_base = only_appr = n = 0
        for (d, pid, a), r in last.items():
            base = last.get((d, pid, baseline))
            if d != dataset or a != approach or base is None:
                continue
            n += 1
            x, y = bool(base.get("correct")), bool(r.get("correct"))
            both += x and y
            only_base += x and not y
            only_appr += y and not x
        if n:
            pairs.append(Pair(dataset, approach, baseline, n, both, only_base, only_appr,
                              mcnemar(only_base, only_appr)))
    for dataset in dict.fromkeys(p.dataset for p in pairs):
        family = [i for i, p in enumerate(pairs) if p.dataset == dataset]
        for i, adjusted in zip(family, holm([pairs[i].p for i in family]), strict=True):
            pairs[i] = dataclasses.replace(pairs[i], p_holm=adjusted)
    return pairs


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def markdown(rows: Sequence[Row], pairs: Sequence[Pair], title: str = "Results") -> str:
    """A markdown report: the accuracy/cost table and the paired comparisons."""
    lines = [f"# {title}", "",
             "Accuracy with a 95% Wilson interval; tokens, upstream calls and wall time are "
             "means per problem (calls: n/a when the endpoint does not report them).", "",
             "| dataset | approach | n | accuracy | 95% CI | prompt tok | completion tok "
             "| calls | wall s | errors |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.dataset} | {r.approach} | {r.n} | {r.accuracy:.1%} "
                     f"| {r.low:.1%} – {r.high:.1%} | {_fmt(r.prompt_tokens)} "
                     f"| {_fmt(r.completion_tokens)} | {_fmt(r.upstream_calls, 2)} "
                     f"| {_fmt(r.wall_s, 2)} | {r.errors} |")
    if pairs:
        lines += ["", f"## Paired comparison against `{pairs[0].baseline}`", "",
                  "Exact McNemar test (binomial, two-sided) on the problems both answered; "
                  "Holm p: adjusted (Holm 1979) over the approaches compared on the same "
                  "dataset; the verdict is on the Holm p.", "",
                  "| dataset | approach | n | both right | only baseline | only approach "
                  "| p | Holm p | verdict |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for p in pairs:
            holm_p = p.p if p.p_holm is None else p.p_holm
            lines.append(f"| {p.dataset} | {p.approach} | {p.n} | {p.both} | {p.only_baseline} "
                         f"| {p.only_approach} | {p.p:.3g} | {holm_p:.3g} "
                         f"| {p.holm_verdict} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Row], path: str | Path) -> None:
    """Save a PNG of accuracy (with its interval) against mean total tokens per problem: a
    panel per dataset group, the Pareto frontier marked (``pareto.plot``). Rows without token
    counts are left out."""
    from .pareto import frontier
    from .pareto import plot as plot_points

    plot_points(frontier(rows), path)
