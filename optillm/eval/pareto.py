"""Accuracy against cost: the Pareto frontier per dataset and for a mixed set, table and plot.

- ``frontier(rows) -> list[Point]``: per dataset group (``Row.dataset``), each approach's
  accuracy and mean tokens per problem (prompt + completion), marked ``on_frontier`` when no
  other approach of the group is at least as accurate and at most as costly (and strictly
  better in one); otherwise ``dominated_by`` names the most accurate such approach.
- ``mixed_rows(records, datasets=None) -> list[Row]``: the ``mixed`` group: several datasets
  pooled (default: every dataset in the records), test split only (records of the ``dev``
  split are left out), on the problems every included approach answered; an approach is
  included when, on every dataset of the mix, it answered at least half as many problems as
  the approach that answered most there (so a 10-problem trial run, or a row that covers one
  dataset fully and another by a third, does not shrink the mix).
- ``markdown(points)`` and ``plot(points, path)``: one panel per group, the frontier drawn as
  a step line, labels placed without overlaps (adjustText; a simple vertical stagger when it
  is missing), the y range fitted to the intervals shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import Row, group_of, latest, summarize

MIXED = "mixed"


@dataclass(frozen=True)
class Point:
    """One approach in one group: ``accuracy`` (0-1) with its 95% interval, ``tokens`` (mean
    per problem; None: unknown, never on the frontier), ``on_frontier``, ``dominated_by``."""

    group: str
    approach: str
    n: int
    accuracy: float
    low: float
    high: float
    tokens: float | None
    on_frontier: bool
    dominated_by: str | None


def _dominates(a: Row, b: Row) -> bool:
    ta, tb = a.total_tokens, b.total_tokens
    return (a.accuracy >= b.accuracy and ta <= tb  # type: ignore[operator]
            and (a.accuracy > b.accuracy or ta < tb))  # type: ignore[operator]


def frontier(rows: Sequence[Row]) -> list[Point]:
    """The rows as points, grouped by dataset in first-seen order, frontier marked."""
    out = []
    for group in dict.fromkeys(r.dataset for r in rows):
        members = [r for r in rows if r.dataset == group]
        costed = [r for r in members if r.total_tokens is not None]
        for r in sorted(members, key=lambda r: (r.total_tokens is None, r.total_tokens or 0)):
            better = [o for o in costed if o is not r and r.total_tokens is not None
                      and _dominates(o, r)]
            best = max(better, key=lambda o: (o.accuracy, -o.total_tokens), default=None)
            out.append(Point(group, r.approach, r.n, r.accuracy, r.low, r.high, r.total_tokens,
                             r.total_tokens is not None and not better,
                             best.approach if best else None))
    return out


def mixed_rows(records: Iterable[Mapping[str, Any]], datasets: Sequence[str] | None = None
               ) -> list[Row]:
    """The ``mixed`` group's rows (see the module docstring); [] with fewer than 2 datasets."""
    last = [r for r in latest(records).values() if r.get("split") != "dev"]
    names = list(datasets) if datasets else list(dict.fromkeys(r["dataset"] for r in last))
    last = [r for r in last if r["dataset"] in names]
    if len({r["dataset"] for r in last}) < 2:
        return []
    answered: dict[str, set[tuple[str, str]]] = {}
    counts: dict[tuple[str, str], int] = {}  # (approach, dataset) -> problems answered
    for r in last:
        answered.setdefault(r["approach"], set()).add((group_of(r), str(r["id"])))
        counts[r["approach"], r["dataset"]] = counts.get((r["approach"], r["dataset"]), 0) + 1
    present = {r["dataset"] for r in last}
    most = {d: max(n for (_, ds), n in counts.items() if ds == d) for d in present}
    kept = [a for a in answered if all(2 * counts.get((a, d), 0) >= most[d] for d in present)]
    if not kept:
        return []
    shared = set.intersection(*(answered[a] for a in kept))
    pooled = [{**r, "dataset": MIXED, "split": None, "id": f"{group_of(r)}/{r['id']}"}
              for r in last if r["approach"] in kept and (group_of(r), str(r["id"])) in shared]
    return summarize(pooled)


def _fmt_tokens(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def markdown(points: Sequence[Point]) -> str:
    """The frontier table: per group, approaches by cost, the frontier marked."""
    if not points:
        return ""
    lines = ["## Accuracy against tokens (Pareto frontier)", "",
             "Mean tokens per problem (prompt + completion, every upstream call). **frontier**: "
             "no other approach of the group is at least as accurate and at most as costly. "
             f"`{MIXED}`: the datasets pooled, test split only, on the problems every listed "
             "approach answered.", "",
             "| group | approach | n | accuracy | 95% CI | tokens | Pareto |",
             "|---|---|---:|---:|---|---:|---|"]
    for p in points:
        mark = "**frontier**" if p.on_frontier else (
            f"dominated by {p.dominated_by}" if p.dominated_by else "n/a")
        lines.append(f"| {p.group} | {p.approach} | {p.n} | {p.accuracy:.1%} "
                     f"| {p.low:.1%} – {p.high:.1%} | {_fmt_tokens(p.tokens)} | {mark} |")
    return "\n".join(lines) + "\n"


def _stagger(ax, texts, points) -> None:
    """Fallback label placement: labels sorted by height, each pushed up until it no longer
    overlaps the previous ones (in display coordinates)."""
    fig = ax.figure
    fig.canvas.draw()
    placed: list[Any] = []
    for text in sorted(texts, key=lambda t: t.get_position()[1]):
        box = text.get_window_extent()
        while any(box.overlaps(b) for b in placed):
            x, y = text.get_position()
            offset = text.get_transform().transform((0, 0))
            text.set_position((x, ax.transData.inverted().transform(
                (offset[0], ax.transData.transform((x, y))[1] + box.height + 1))[1]))
            box = text.get_window_extent()
        placed.append(box)


def plot(points: Sequence[Point], path: str | Path) -> None:
    """Save a PNG: a panel per group, accuracy (%) with its interval against mean tokens per
    problem (log x), frontier points filled and joined by a step line, the others hollow."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in threads and on servers
    import matplotlib.pyplot as plt

    groups = [g for g in dict.fromkeys(p.group for p in points)
              if any(q.tokens for q in points if q.group == g)] or ["(no token counts)"]
    cols = min(2, len(groups))
    rows = (len(groups) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.6 * rows), dpi=110,
                             squeeze=False)
    try:
        for ax, group in zip(axes.flat, groups, strict=False):
            pts = [p for p in points if p.group == group and p.tokens]
            texts = []
            for p in pts:
                ax.errorbar([p.tokens], [100 * p.accuracy], capsize=3, fmt="o",
                            yerr=[[max(0.0, 100 * (p.accuracy - p.low))],
                                  [max(0.0, 100 * (p.high - p.accuracy))]],
                            color="tab:blue" if p.on_frontier else "tab:gray",
                            mfc="tab:blue" if p.on_frontier else "white")
                texts.append(ax.text(p.tokens, 100 * p.accuracy, f" {p.approach}", fontsize=8,
                                     weight="bold" if p.on_frontier else "normal"))
            front = sorted((p for p in pts if p.on_frontier), key=lambda p: p.tokens)
            if len(front) > 1:
                ax.step([p.tokens for p in front], [100 * p.accuracy for p in front],
                        where="post", color="tab:blue", alpha=0.5, label="Pareto frontier")
                ax.legend(loc="lower right", fontsize=8)
            if pts:
                ax.set_xscale("log")
                lo = min(100 * p.low for p in pts)
                hi = max(100 * p.high for p in pts)
                pad = max(3.0, 0.08 * (hi - lo))
                # a little past 0 and 100, so points there do not sit on the frame
                ax.set_ylim(max(-2.0, lo - pad), min(102.0, hi + pad))
                xs = [p.tokens for p in pts]
                ax.set_xlim(min(xs) / 1.4, max(xs) * 2.2)  # room for labels on the right
            ax.set_title(group)
            ax.set_xlabel("mean tokens per problem (log)")
            ax.set_ylabel("accuracy (%), 95% Wilson interval")
            ax.grid(True, alpha=0.3)
            if texts:
                try:
                    from adjustText import adjust_text

                    adjust_text(texts, ax=ax, only_move={"text": "xy"},
                                arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
                except ImportError:  # the eval extra brings adjustText; stagger without it
                    _stagger(ax, texts, pts)
        for ax in list(axes.flat)[len(groups):]:
            ax.set_visible(False)
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
