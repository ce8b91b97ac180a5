"""``optillm-eval`` (also ``python -m optillm.eval``): run a benchmark, or report on results.

Run::

    optillm-eval --dataset gsm8k --limit 50 --seed 0 --approaches none,re2,moa \\
        --model Qwen2.5-Coder-0.5B-Instruct --base-url http://localhost:8000/v1 \\
        --option k=3 --max-tokens 512 --output results.jsonl

Splits (``--split``): ``test`` is the first ``TEST_SIZE`` (200) problems of each dataset's
seed-0 shuffle, for reporting; ``dev`` is every problem after the first ``DEV_START`` (300) of
the same shuffle, for tuning defaults; they never overlap (100 problems sit between them).
``--limit`` then takes the first N of the split; each record notes its ``split``.

Report::

    optillm-eval report results.jsonl --out docs/results.md --plot docs/results.png

Router (``optillm.eval.router_fit``)::

    optillm-eval fit-router results.jsonl [more.jsonl] --max-tokens-per-query 1500 -o router.yaml

``main(argv=None) -> int`` returns the exit status: 0 done, 1 some requests failed (they are
retried by the next run), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from collections.abc import Sequence
from typing import Any

from ..settings import LOCAL_MODEL_NAME
from . import datasets, pareto, report, runner

DEFAULT_BASE_URL = "http://localhost:8000/v1"
#: The splits: test = the first TEST_SIZE of the seed-0 shuffle, dev = after DEV_START.
SPLIT_SEED, TEST_SIZE, DEV_START = 0, 200, 300
SPLITS = ("dev", "test")


def parse_option(text: str) -> tuple[str, Any]:
    """``k=v`` -> ``(k, v)`` with ``v`` read as JSON (``3``, ``true``, ``"x"``, ``[1]``), else
    kept as a string. Raises: argparse.ArgumentTypeError without ``=`` or a key."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--option wants key=value, got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def parse_temperature(text: str) -> float | None:
    """``--temperature``: a number, or ``default`` (None: not sent)."""
    if text.strip().lower() in ("default", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a temperature: {text!r}") from None


def select(problems: Sequence[datasets.Problem], limit: int | None, seed: int | None
           ) -> list[datasets.Problem]:
    """The first ``limit`` problems, or with ``seed`` a seeded random ``limit`` of them (the
    same slice for the same seed, so a resumed run asks the same problems)."""
    chosen = list(problems)
    if seed is not None:
        chosen = random.Random(seed).sample(chosen, len(chosen))
    return chosen[:limit] if limit is not None else chosen


def split(problems: Sequence[datasets.Problem], name: str) -> list[datasets.Problem]:
    """The ``dev`` or ``test`` split of one dataset's problems (see the module docstring), each
    problem marked with its split, in the shuffled order.

    Raises: ValueError for an unknown split, or a dataset too small to have a dev split.
    """
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
    shuffled = random.Random(SPLIT_SEED).sample(list(problems), len(problems))
    chosen = shuffled[:TEST_SIZE] if name == "test" else shuffled[DEV_START:]
    if not chosen:
        raise ValueError(f"{problems[0].dataset if problems else 'the dataset'} has "
                         f"{len(problems)} problems: no dev split (it starts after "
                         f"{DEV_START})")
    return [dataclasses.replace(p, split=name) for p in chosen]


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="optillm-eval",
        description="Accuracy and cost of optillm approaches on benchmarks "
                    "(`optillm-eval report FILE` summarises a results file).")
    p.add_argument("--dataset", default="gsm8k",
                   help=f"comma-separated: {', '.join(datasets.DATASETS)} (default gsm8k)")
    p.add_argument("--limit", type=int, help="at most this many problems per dataset")
    p.add_argument("--seed", type=int, help="take a seeded random slice (default: the first)")
    p.add_argument("--split", choices=SPLITS,
                   help=f"test: the first {TEST_SIZE} of the seed-{SPLIT_SEED} shuffle (report);"
                        f" dev: the problems after its first {DEV_START} (tuning); not with "
                        f"--seed")
    p.add_argument("--approaches", default="none",
                   help="comma-separated approach slugs, none = the plain model (default none);"
                        " label=slug records a slug under its own name (deepconf_online=deepconf)")
    p.add_argument("--model", default=LOCAL_MODEL_NAME,
                   help=f"the base model (default {LOCAL_MODEL_NAME}, the embedded one)")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL,
                   help=f"any OpenAI-compatible endpoint (default {DEFAULT_BASE_URL})")
    p.add_argument("--api-key", help="its API key (default: OPENAI_API_KEY, else none)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--option", type=parse_option, action="append", default=[],
                   metavar="K=V", help="per-request body option, JSON value (repeatable)")
    p.add_argument("--max-tokens", type=int, help="max_tokens of each request")
    p.add_argument("--temperature", type=parse_temperature, default=0.0,
                   help="sampling temperature (default 0: greedy); 'default' sends none, so "
                        "each approach samples at its own default")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    p.add_argument("--output", default="results.jsonl",
                   help="JSONL results file, appended to and resumed (default results.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optillm-eval report",
                                description="Summarise a results file.")
    p.add_argument("results", help="the JSONL file written by optillm-eval")
    p.add_argument("--out", help="write the markdown here (default: print it)")
    p.add_argument("--plot", help="save a PNG of accuracy against tokens here")
    p.add_argument("--baseline", default="none", help="approach compared against (default none)")
    p.add_argument("--mixed", help="comma-separated datasets pooled into the 'mixed' group of "
                                   "the Pareto table (default: every dataset in the file)")
    return p


def make_client(base_url: str, api_key: str | None, timeout: float) -> Any:
    """The official openai SDK client. Without a key it uses OPENAI_API_KEY (the SDK reads
    it), else a placeholder, since local endpoints need none."""
    import openai

    try:
        return openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout,
                             max_retries=2)
    except openai.OpenAIError:  # no key anywhere
        return openai.OpenAI(base_url=base_url, api_key="none", timeout=timeout,
                             max_retries=2)


def run_main(argv: Sequence[str]) -> int:
    parser = _run_parser()
    args = parser.parse_args(argv)
    names = [d.strip() for d in args.dataset.split(",") if d.strip()]
    try:
        for name in names:
            if name not in datasets.DATASETS:
                raise ValueError(f"unknown dataset {name!r}; choose from "
                                 f"{', '.join(datasets.DATASETS)}")
        if args.limit is not None and args.limit < 1:
            raise ValueError("--limit must be >= 1")
        if args.split and args.seed is not None:
            raise ValueError("--split has its own fixed shuffle; leave out --seed")
        config = runner.RunConfig(
            model=args.model,
            approaches=tuple(a.strip() for a in args.approaches.split(",") if a.strip()),
            max_tokens=args.max_tokens, temperature=args.temperature,
            options=dict(args.option), concurrency=args.concurrency, timeout=args.timeout)
        problems = [p for name in names
                    for p in (split(datasets.load(name), args.split)[:args.limit] if args.split
                              else select(datasets.load(name), args.limit, args.seed))]
    except (ValueError, datasets.DatasetUnavailable) as exc:
        parser.error(str(exc))  # exits with status 2
    client = make_client(args.base_url, args.api_key, args.timeout)
    try:
        results = runner.run(client, problems, config, args.output,
                             progress=not args.no_progress)
    finally:
        client.close()
    failed = [r for r in results if r.error]
    rows = report.summarize(runner.read_results(args.output))
    wanted = {(d, config.label(a)) for d in names for a in config.approaches}
    for row in rows:
        if (row.dataset, row.approach) in wanted:
            print(f"{row.dataset:10} {row.approach:20} {row.correct}/{row.n} "
                  f"= {row.accuracy:.1%} [{row.low:.1%}, {row.high:.1%}]", file=sys.stderr)
    if failed:
        print(f"{len(failed)} request(s) failed, e.g. {failed[0].error}; run again to retry "
              f"them", file=sys.stderr)
        return 1
    return 0


def report_main(argv: Sequence[str]) -> int:
    args = _report_parser().parse_args(argv)
    records = runner.read_results(args.results)
    rows, pairs = report.summarize(records), report.compare(records, args.baseline)
    mixed = pareto.mixed_rows(records, [d.strip() for d in args.mixed.split(",") if d.strip()]
                              if args.mixed else None)
    points = pareto.frontier(rows + mixed)
    text = report.markdown(rows, pairs) + "\n" + pareto.markdown(points)
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if args.plot:
        pareto.plot(points, args.plot)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``optillm-eval``; ``argv`` defaults to ``sys.argv[1:]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        return report_main(argv[1:])
    if argv[:1] == ["fit-router"]:
        from .router_fit import main as fit_main

        return fit_main(argv[1:])
    return run_main(argv)
