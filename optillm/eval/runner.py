"""Running a benchmark through an OpenAI-compatible endpoint, one JSONL record per answer.

``run(client, problems, config, output) -> list[Result]`` asks every approach of
``config.approaches`` every problem (``config.concurrency`` requests at a time, a ``tqdm`` bar
per approach), scores each reply as it arrives (``scoring.score``) and appends its ``Result``
to ``output`` at once (one JSON line, flushed). A run that is interrupted resumes where it
stopped: on start, ``(dataset, id, approach)`` triples already in the file without an
``error`` are skipped; those that failed are asked again (the report keeps the last record
of each triple).

Each request is the problem's system message (word problems: reason first), if any, and its
prompt. The request model is ``f"{approach}-{model}"`` (just ``model`` for ``none``); the approach's
per-request ``options`` go in the body (not for ``none``: the passthrough forwards the body
to the upstream unchanged, and a strict upstream rejects unknown fields).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .datasets import Problem
from .scoring import score

Key = tuple[str, str, str]


@dataclass(frozen=True)
class RunConfig:
    """What to ask: ``model`` (the base model), ``approaches`` (slugs; ``none`` is the plain
    model; ``label=slug`` records the slug's answers under ``label``, so one approach with two
    option sets makes two rows), ``max_tokens`` / ``temperature`` (None: the endpoint's
    default; temperature 0 is greedy decoding), ``options`` (per-request body fields, e.g.
    ``{"k": 3}``), ``concurrency`` (requests in flight, >= 1), ``timeout`` (seconds per request)."""

    model: str
    approaches: tuple[str, ...] = ("none",)
    max_tokens: int | None = None
    temperature: float | None = 0.0
    options: Mapping[str, Any] = field(default_factory=dict)
    concurrency: int = 4
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if not self.approaches or any(not a or not isinstance(a, str) for a in self.approaches):
            raise ValueError("approaches must be a non-empty list of approach slugs")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        labels = [self.label(a) for a in self.approaches]
        if len(set(labels)) != len(labels) or not all(labels) or \
                not all(self.slug(a) for a in self.approaches):
            raise ValueError("approach labels must be distinct and non-empty")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")


    @staticmethod
    def label(approach: str) -> str:
        """The name ``approach`` is recorded under (``label`` of ``label=slug``)."""
        return approach.split("=", 1)[0].strip()

    @staticmethod
    def slug(approach: str) -> str:
        """The approach prefix sent to the endpoint (``slug`` of ``label=slug``)."""
        return approach.split("=", 1)[-1].strip()


@dataclass(frozen=True)
class Result:
    """One answered (or failed) problem; a line of the results file.

    ``prompt_tokens`` / ``completion_tokens``: the response's usage (the proxy sums every
    upstream call); ``upstream_calls``: the call count the response reports, 1 for ``none``,
    else None (unknown); ``wall_s``: seconds from request to scored answer; ``error``: why
    the request failed (then ``correct`` is False and the problem is retried on resume);
    ``split``: ``dev``/``test`` when the problem came from a split (None: a plain slice);
    ``slug`` / ``options``: what was sent (the approach prefix and the body options; for
    ``fit-router``, which learns "label -> slug with options"); ``router``: the
    ``optillm_router`` metadata of the answer (which approach ``auto``/``router`` chose, in
    which cell), when it has one; ``temperature``: the client temperature sent (None: none);
    ``samples``: the per-sample answers a voting approach reports (the ``answers`` list of
    its ``optillm_*`` metadata: majority_voting's ``optillm_votes``, pal's ``optillm_pal``),
    so votes over other subsets or mixtures can be studied offline; None when there is none.
    """

    dataset: str
    id: str
    approach: str
    model: str
    gold: str
    predicted: str | None
    correct: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    upstream_calls: int | None
    wall_s: float
    error: str | None = None
    score_error: str | None = None
    response: str | None = None
    split: str | None = None
    slug: str | None = None
    options: Mapping[str, Any] | None = None
    router: Mapping[str, Any] | None = None
    temperature: float | None = None
    samples: list[str | None] | None = None

    @property
    def key(self) -> Key:
        return (self.dataset, self.id, self.approach)


def request_model(approach: str, model: str) -> str:
    return model if approach == "none" else f"{approach}-{model}"


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Every well-formed record of a results file, in file order (a missing file: []).
    Lines that are not JSON objects (a line cut short by a kill) are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and {"dataset", "id", "approach"} <= record.keys():
            out.append(record)
    return out


def done_keys(records: Iterable[Mapping[str, Any]]) -> set[Key]:
    """The ``(dataset, id, approach)`` triples answered without an error."""
    return {(r["dataset"], str(r["id"]), r["approach"]) for r in records if not r.get("error")}


class ResultWriter:
    """Appends results to a JSONL file, one flushed line each, from many threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a line cut short by a kill must not swallow the next record
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as fh:
                fh.seek(-1, 2)
                if fh.read(1) != b"\n":
                    with open(self.path, "a", encoding="utf-8") as out:
                        out.write("\n")

    def write(self, result: Result) -> None:
        line = json.dumps(asdict(result), ensure_ascii=False)
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()


def _calls_from(body: Mapping[str, Any], headers: Mapping[str, str], approach: str
                ) -> int | None:
    """The upstream call count the response reports, if any (see ``Result``)."""
    candidates = [headers.get("x-optillm-upstream-calls"),
                  (body.get("usage") or {}).get("upstream_calls"),
                  body.get("optillm_upstream_calls")]
    for choice in body.get("choices") or ():
        budget = choice.get("optillm_budget") if isinstance(choice, dict) else None
        if isinstance(budget, dict):
            candidates.append(budget.get("calls"))
    for value in candidates:
        try:
            if value is not None and int(value) >= 0:
                return int(value)
        except (TypeError, ValueError):
            continue
    return 1 if approach == "none" else None


def ask(client: Any, problem: Problem, approach: str, config: RunConfig) -> Result:
    """Ask one approach one problem and score the reply; never raises for a failed request
    (the error goes into the result)."""
    params: dict[str, Any] = {}
    if config.max_tokens is not None:
        params["max_tokens"] = config.max_tokens
    if config.temperature is not None:
        params["temperature"] = config.temperature
    label, approach = config.label(approach), config.slug(approach)
    extra = dict(config.options) if approach != "none" and config.options else None
    start = time.monotonic()
    base = dict(dataset=problem.dataset, id=problem.id, approach=label, model=config.model,
                gold=problem.gold, split=problem.split, slug=approach, options=extra,
                temperature=config.temperature)
    messages = ([{"role": "system", "content": problem.system}] if problem.system else []) \
        + [{"role": "user", "content": problem.prompt}]
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=request_model(approach, config.model),
            messages=messages,
            user=f"optillm-eval/{problem.dataset}/{problem.id}/{label}",
            extra_body=extra, timeout=config.timeout, **params)
        body = raw.http_response.json()
        headers = {k.lower(): v for k, v in raw.http_response.headers.items()}
    except Exception as exc:  # noqa: BLE001 - any failure is recorded, the run goes on
        return Result(**base, predicted=None, correct=False, prompt_tokens=None,
                      completion_tokens=None, upstream_calls=None,
                      wall_s=round(time.monotonic() - start, 3),
                      error=f"{type(exc).__name__}: {exc}"[:500])
    choices = body.get("choices") or [{}]
    text = ((choices[0] or {}).get("message") or {}).get("content") or ""
    usage = body.get("usage") or {}
    scored = score(problem, text)
    return Result(**base, predicted=scored.predicted, correct=scored.correct,
                  prompt_tokens=usage.get("prompt_tokens"),
                  completion_tokens=usage.get("completion_tokens"),
                  upstream_calls=_calls_from(body, headers, approach),
                  wall_s=round(time.monotonic() - start, 3), score_error=scored.error,
                  response=text[:4000], router=(choices[0] or {}).get("optillm_router"),
                  samples=sample_answers(choices[0] or {}))


def sample_answers(choice: Mapping[str, Any]) -> list[str | None] | None:
    """The ``answers`` list (strings or None, at most 64) of the first ``optillm_*`` metadata
    object on ``choice`` that has one; None when none does."""
    for key, value in choice.items():
        if not key.startswith("optillm_") or not isinstance(value, Mapping):
            continue
        found = value.get("answers")
        if isinstance(found, list):
            return [a if a is None else str(a) for a in found[:64]]
    return None


def run(client: Any, problems: Sequence[Problem], config: RunConfig, output: str | Path, *,
        progress: bool = True) -> list[Result]:
    """Ask every approach every problem not already answered in ``output``; returns the new
    results (also appended to ``output`` as they finish). Approaches run one after the other,
    each problem of one approach ``config.concurrency`` at a time."""
    from tqdm import tqdm

    done = done_keys(read_results(output))
    writer = ResultWriter(output)
    results: list[Result] = []
    for approach in config.approaches:
        todo = [p for p in problems if (p.dataset, p.id, config.label(approach)) not in done]
        correct = finished = 0
        with tqdm(total=len(todo), desc=config.label(approach), unit="problem",
                  disable=not progress, dynamic_ncols=True) as bar, \
                ThreadPoolExecutor(config.concurrency, thread_name_prefix="optillm-eval") as pool:
            futures = [pool.submit(ask, client, p, approach, config) for p in todo]
            try:
                for future in as_completed(futures):
                    result = future.result()
                    writer.write(result)
                    results.append(result)
                    correct += result.correct
                    finished += 1
                    bar.update(1)
                    bar.set_postfix(acc=f"{correct / finished:.1%}")
            except BaseException:  # Ctrl-C: stop asking; what finished is on disk
                for f in futures:
                    f.cancel()
                raise
    return results
