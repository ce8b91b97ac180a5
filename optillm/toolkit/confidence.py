"""Token and trace confidence from log-probabilities, after DeepConf.

Fu, Wang, Tian, Zhao, "Deep Think with Confidence", arXiv 2508.15260. Pure functions over
numbers, no I/O; ``optillm.approaches.deepconf`` uses them.

Units: every confidence here is in nats, the negated mean of log-probabilities, so it is at
least 0 and larger means more confident (a peaked next-token distribution leaves very
unlikely alternatives in its top k, whose log-probabilities are very negative).

- Token confidence ``C_i = -(1/k) * sum_{j=1..k} log P_i(j)`` over the top-k alternatives
  OpenAI's API returns for token ``i`` (``logprobs.content[i].top_logprobs``, k at most 20).
- Group confidence: the mean ``C`` over a sliding window of ``window`` consecutive tokens
  (the paper's windows are 2048 tokens; short answers need shorter ones, ``default_window``).
- Trace confidence: the lowest group confidence (the paper's default and the criterion of
  its online mode), the mean of the lowest 10% of groups (``bottom10``), the mean of the
  last ``window`` tokens (``tail``), or the plain mean over all tokens (``mean``).
- Online mode: ``threshold`` from warm-up traces (a percentile of their confidences) and a
  ``WindowMonitor`` that is fed one token at a time and trips as soon as the mean of its
  last ``window`` tokens falls below the threshold.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Trace-confidence methods ``trace_confidence`` knows.
METHODS = ("lowest", "bottom10", "tail", "mean")

#: The paper's window (tokens); an upper bound for ``default_window``.
PAPER_WINDOW = 2048
MIN_WINDOW = 16


def token_confidence(entry: Mapping[str, Any]) -> float:
    """``C_i`` of one token entry in OpenAI's shape
    ``{"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}``.

    The mean is over the ``top_logprobs`` alternatives (k = their number); alternatives
    whose logprob is missing are skipped. An entry without alternatives falls back to the
    sampled token's own ``-logprob`` (k = 1). Returns nats, >= 0 (0.0 when nothing is known).
    """
    values = [float(t["logprob"]) for t in entry.get("top_logprobs") or ()
              if isinstance(t, Mapping) and t.get("logprob") is not None]
    if not values and entry.get("logprob") is not None:
        values = [float(entry["logprob"])]
    if not values:
        return 0.0
    return max(0.0, -sum(values) / len(values))


def token_confidences(entries: Iterable[Mapping[str, Any]]) -> list[float]:
    """``token_confidence`` of each entry of ``logprobs.content``, in order."""
    return [token_confidence(e) for e in entries]


def group_confidences(confs: Sequence[float], window: int) -> list[float]:
    """Means of every run of ``window`` consecutive token confidences (``len - window + 1``
    groups, sliding by one token). A trace shorter than the window is one group: the mean of
    all its tokens. An empty trace gives ``[0.0]``.

    Raises: ValueError when ``window`` < 1.
    """
    if window < 1:
        raise ValueError("window must be at least 1")
    if not confs:
        return [0.0]
    if len(confs) <= window:
        return [sum(confs) / len(confs)]
    total = sum(confs[:window])
    means = [total / window]
    for i in range(window, len(confs)):
        total += confs[i] - confs[i - window]
        means.append(total / window)
    return means


def lowest_group_confidence(confs: Sequence[float], window: int) -> float:
    """The trace's lowest group confidence (its weakest stretch of ``window`` tokens)."""
    return min(group_confidences(confs, window))


def bottom_percent_confidence(confs: Sequence[float], window: int, share: float = 0.1) -> float:
    """Mean of the lowest ``share`` of the group confidences (at least one group)."""
    groups = sorted(group_confidences(confs, window))
    count = max(1, int(share * len(groups)))
    return sum(groups[:count]) / count


def tail_confidence(confs: Sequence[float], tail: int) -> float:
    """Mean token confidence over the last ``tail`` tokens (all of them when fewer)."""
    if not confs:
        return 0.0
    last = confs[-tail:] if tail > 0 else confs
    return sum(last) / len(last)


def mean_confidence(confs: Sequence[float]) -> float:
    """Mean token confidence over the whole trace (the global average the paper improves on)."""
    return sum(confs) / len(confs) if confs else 0.0


def trace_confidence(confs: Sequence[float], window: int, method: str = "lowest") -> float:
    """A trace's confidence by ``method`` (one of ``METHODS``); ``tail`` uses ``window``
    tokens.

    Raises: ValueError for an unknown method.
    """
    if method == "lowest":
        return lowest_group_confidence(confs, window)
    if method == "bottom10":
        return bottom_percent_confidence(confs, window, 0.1)
    if method == "tail":
        return tail_confidence(confs, window)
    if method == "mean":
        return mean_confidence(confs)
    raise ValueError(f"unknown confidence method {method!r}; known: {', '.join(METHODS)}")


def default_window(lengths: Iterable[int], share: float = 0.125) -> int:
    """A window scaled to the answers' length: ``share`` of the median length in tokens,
    between ``MIN_WINDOW`` and ``PAPER_WINDOW``. The paper's 2048-token windows sit on traces
    of roughly 10-20 thousand tokens; on a 100-token answer such a window never fills and
    the lowest group confidence degrades into the mean."""
    ordered = sorted(n for n in lengths if n > 0)
    if not ordered:
        return MIN_WINDOW
    median = ordered[len(ordered) // 2] if len(ordered) % 2 else \
        (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    return int(max(MIN_WINDOW, min(PAPER_WINDOW, round(median * share))))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks
    (NumPy's default method).

    Raises: ValueError for no values or ``q`` outside 0-100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError("q must be between 0 and 100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def threshold(warmup_confidences: Sequence[float], keep_share: float) -> float:
    """The online stopping threshold ``s``: the ``100 * (1 - keep_share)``-th percentile of
    the warm-up traces' confidences. DeepConf-low keeps the top 10% (the 90th percentile),
    DeepConf-high the top 90% (the 10th percentile).

    Raises: ValueError for no warm-up confidences or ``keep_share`` outside 0-1.
    """
    if not 0.0 <= keep_share <= 1.0:
        raise ValueError("keep_share must be between 0 and 1")
    return percentile(warmup_confidences, 100.0 * (1.0 - keep_share))


class WindowMonitor:
    """Watches one trace as it is generated: ``push`` each token's confidence; it returns True
    (and ``tripped`` becomes True) once the mean of the last ``window`` tokens is below
    ``threshold``. The check starts when the window is full, so a trace is judged by the same
    groups as ``group_confidences``; ``lowest`` is the lowest full-window mean seen so far.

    Raises (constructor): ValueError when ``window`` < 1.
    """

    def __init__(self, window: int, threshold: float):
        if window < 1:
            raise ValueError("window must be at least 1")
        self.window = window
        self.threshold = threshold
        self.count = 0
        self.lowest: float | None = None
        self.tripped = False
        self._recent: deque[float] = deque()
        self._sum = 0.0

    @property
    def full(self) -> bool:
        return len(self._recent) == self.window

    @property
    def mean(self) -> float | None:
        """Mean of the last ``window`` tokens (of all so far before it is full)."""
        return self._sum / len(self._recent) if self._recent else None

    def push(self, confidence: float) -> bool:
        """Add the next token's confidence; True when the window mean is below the threshold."""
        self.count += 1
        self._recent.append(confidence)
        self._sum += confidence
        if len(self._recent) > self.window:
            self._sum -= self._recent.popleft()
        if len(self._recent) < self.window:
            return False
        if self.count % 1024 == 0:  # bound the running sum's rounding drift on long traces
            self._sum = sum(self._recent)
        mean = self._sum / self.window
        self.lowest = mean if self.lowest is None else min(self.lowest, mean)
        if mean < self.threshold:
            self.tripped = True
        return self.tripped
