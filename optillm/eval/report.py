"""Summaries of a results file: accuracy with confidence intervals, cost, paired tests, a plot.

- ``wilson(k, n, z=1.96) -> (low, high)``: the Wilson score interval of a binomial proportion
  (Wilson 1927), 95% by default.
- ``mcnemar(b, c) -> p``: the exact (binomial) two-sided McNemar test on the discordant pairs
  ``b`` (only the baseline right) and ``c`` (only the other approach right).
- ``summarize(records) -> list[Row]``: per (dataset, approach): accuracy and its interval,
  mean prompt/completion tokens, upstream calls and wall seconds per problem.
- ``compare(records, baseline="none") -> list[Pair]``: each approach against the baseline on
  the problems both answered.
- ``markdown(rows, pairs)`` and ``plot(rows, path)`` (matplotlib, Agg backend: accuracy
  against total tokens per problem).

Records are the dicts of ``runner.read_results``; when a (dataset, id, approach) triple occurs
more than once (a retried failure), the last record counts. A failed request counts as a
wrong answer in the accuracy (its tokens are unknown) and is left out of the paired test.
"""

from __future__ import annotations

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


def latest(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    """The last record of each (dataset, id, approach), in first-seen order."""
    out: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for r in records:
        out[(r["dataset"], str(r["id"]), r["approach"])] = r
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
    for (dataset, _, approach), r in latest(records).items():
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
    ``only_baseline``, ``only_approach``, the exact McNemar ``p`` value and a ``verdict``
    (``better``/``worse`` when p < 0.05, else ``not significant``)."""

    dataset: str
    approach: str
    baseline: str
    n: int
    both: int
    only_baseline: int
    only_approach: int
    p: float

    @property
    def verdict(self) -> str:
        if self.p >= ALPHA:
            return "not significant"
        return "better" if self.only_approach > self.only_baseline else "worse"


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
                  "Exact McNemar test (binomial, two-sided) on the problems both answered.", "",
                  "| dataset | approach | n | both right | only baseline | only approach "
                  "| p | verdict |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for p in pairs:
            lines.append(f"| {p.dataset} | {p.approach} | {p.n} | {p.both} | {p.only_baseline} "
                         f"| {p.only_approach} | {p.p:.3g} | {p.verdict} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Row], path: str | Path) -> None:
    """Save a PNG of accuracy (with its interval) against mean total tokens per problem, one
    point per (dataset, approach). Rows without token counts are left out."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in threads and on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    try:
        for dataset in dict.fromkeys(r.dataset for r in rows):
            pts = [r for r in rows if r.dataset == dataset and r.total_tokens]
            if not pts:
                continue
            xs = [r.total_tokens for r in pts]
            ys = [100 * r.accuracy for r in pts]
            # clamped: rounding can put an interval's end a hair inside the point
            err = [[max(0.0, 100 * (r.accuracy - r.low)) for r in pts],
                   [max(0.0, 100 * (r.high - r.accuracy)) for r in pts]]
            ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, label=dataset)
            for r, x, y in zip(pts, xs, ys, strict=True):
                ax.annotate(r.approach, (x, y), textcoords="offset points", xytext=(5, 4),
                            fontsize=8)
        if any(r.total_tokens for r in rows):
            ax.set_xscale("log")
        ax.set_xlabel("mean tokens per problem (prompt + completion, log scale)")
        ax.set_ylabel("accuracy (%) with 95% Wilson interval")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        if rows:
            ax.legend(title="dataset")
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
